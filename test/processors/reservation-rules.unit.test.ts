import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  allocate,
  availableOf,
  candidateOrder,
  consume,
  defaultPolicy,
  inTransitOf,
  receiveCheck,
  transferState,
  type AllocationPolicy,
  type Hold,
  type Level,
} from '../../processors/ledger/reservations.js';
import { pinFastCheck } from '../helpers/seed.js';

pinFastCheck('processors/reservation-rules');

const lv = (wh: string, onHand: number, reserved = 0): Level => ({ wh, onHand, reserved });
const priority = (list: string[], channels: Record<string, string[]> = {}): AllocationPolicy => ({
  strategy: 'priority',
  priority: list,
  channels,
});
const hold = (over: Partial<Hold> = {}): Hold => ({
  id: 'r1',
  wh: 'W1',
  sku: 'S',
  qty: 5,
  remaining: 5,
  consumed: 0,
  state: 'active',
  expiresAt: 10_000,
  transfer: null,
  ...over,
});

describe('allocation (which warehouse holds a reservation)', () => {
  const levels = [lv('W1', 10, 7), lv('W2', 6), lv('W3', 4)]; // available 3, 6, 4

  it('a named warehouse must hold all of it, whatever the others have', () => {
    assert.deepEqual(allocate(levels, { qty: 3, warehouse: 'W1' }, defaultPolicy), [{ wh: 'W1', qty: 3 }]);
    assert.equal(allocate(levels, { qty: 4, warehouse: 'W1' }, defaultPolicy), null);
    assert.equal(allocate(levels, { qty: 1, warehouse: 'W9' }, defaultPolicy), null);
    assert.equal(
      allocate(levels, { qty: 4, warehouse: 'W1', split: true }, defaultPolicy),
      null,
      'split never leaves the named warehouse',
    );
  });

  it('most-available: the warehouse with the most available, ties by id', () => {
    assert.deepEqual(allocate(levels, { qty: 2 }, defaultPolicy), [{ wh: 'W2', qty: 2 }]);
    assert.deepEqual(allocate([lv('W2', 5), lv('W1', 5)], { qty: 5 }, defaultPolicy), [{ wh: 'W1', qty: 5 }]);
  });

  it('no single warehouse can hold it: refused, not split silently', () => {
    assert.equal(allocate(levels, { qty: 7 }, defaultPolicy), null);
  });

  it('split: a single warehouse when one can hold it, else the largest shares first; all or nothing', () => {
    assert.deepEqual(allocate(levels, { qty: 5, split: true }, defaultPolicy), [{ wh: 'W2', qty: 5 }]);
    assert.deepEqual(allocate(levels, { qty: 12, split: true }, defaultPolicy), [
      { wh: 'W2', qty: 6 },
      { wh: 'W3', qty: 4 },
      { wh: 'W1', qty: 2 },
    ]);
    assert.equal(allocate(levels, { qty: 14, split: true }, defaultPolicy), null);
  });

  it('priority: listed warehouses in order, then the rest by most available; a channel has its own list', () => {
    const policy = priority(['W3', 'W1'], { store: ['W1'] });
    assert.deepEqual(allocate(levels, { qty: 4 }, policy), [{ wh: 'W3', qty: 4 }]);
    assert.deepEqual(
      allocate(levels, { qty: 5 }, policy),
      [{ wh: 'W2', qty: 5 }],
      'W3 and W1 cannot: the unlisted W2 follows',
    );
    assert.deepEqual(allocate(levels, { qty: 3, channel: 'store' }, policy), [{ wh: 'W1', qty: 3 }]);
    assert.deepEqual(
      allocate(levels, { qty: 3, channel: 'unknown-channel' }, policy),
      [{ wh: 'W3', qty: 3 }],
      'an unconfigured channel uses the default list',
    );
    assert.deepEqual(
      candidateOrder(levels, policy, 'store').map((l) => l.wh),
      ['W1', 'W2', 'W3'],
    );
    assert.deepEqual(allocate(levels, { qty: 9, split: true }, policy), [
      { wh: 'W3', qty: 4 },
      { wh: 'W1', qty: 3 },
      { wh: 'W2', qty: 2 },
    ]);
  });

  it('negative availability (stock oversold by events) is never taken', () => {
    assert.equal(allocate([lv('W1', -3), lv('W2', 1)], { qty: 2, split: true }, defaultPolicy), null);
  });

  it("property: a grant never exceeds any warehouse's available and gives exactly qty; a refusal only when the rule cannot be met", () => {
    const arbLevels = fc.uniqueArray(
      fc.record({
        wh: fc.constantFrom('W1', 'W2', 'W3', 'W4'),
        onHand: fc.integer({ min: -5, max: 30 }),
        reserved: fc.integer({ min: 0, max: 10 }),
      }),
      { selector: (l) => l.wh, maxLength: 4 },
    );
    const arbPolicy = fc.oneof(
      fc.constant(defaultPolicy),
      fc.shuffledSubarray(['W1', 'W2', 'W3', 'W4']).map((list) => priority(list, { web: list.slice(0, 1) })),
    );
    fc.assert(
      fc.property(
        arbLevels,
        arbPolicy,
        fc.integer({ min: 1, max: 40 }),
        fc.option(fc.constantFrom('W1', 'W2', 'W5'), { nil: undefined }),
        fc.boolean(),
        fc.option(fc.constant('web'), { nil: undefined }),
        (levels, policy, qty, warehouse, split, channel) => {
          const parts = allocate(levels, { qty, warehouse, split, channel }, policy);
          const avail = (wh: string) => availableOf(levels.find((l) => l.wh === wh) as Level);
          const best = Math.max(0, ...levels.map(availableOf));
          const total = levels.reduce((n, l) => n + Math.max(0, availableOf(l)), 0);
          if (parts === null) {
            if (warehouse !== undefined) assert.ok(!levels.some((l) => l.wh === warehouse && availableOf(l) >= qty));
            else if (split) assert.ok(total < qty, `refused though ${total} are available in all`);
            else assert.ok(best < qty, `refused though one warehouse has ${best}`);
            return;
          }
          assert.equal(
            parts.reduce((n, p) => n + p.qty, 0),
            qty,
          );
          assert.equal(new Set(parts.map((p) => p.wh)).size, parts.length, 'one part per warehouse');
          for (const p of parts)
            assert.ok(p.qty > 0 && p.qty <= avail(p.wh), `${p.wh} gives ${p.qty} of ${avail(p.wh)}`);
          if (warehouse !== undefined) assert.deepEqual(parts, [{ wh: warehouse, qty }]);
          if (!split) assert.equal(parts.length, 1);
          if (best >= qty) assert.equal(parts.length, 1, 'split only when no single warehouse can');
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('consumption by shipped events (CONTRACT section 4)', () => {
  it('takes up to its qty from a live hold of its own warehouse and sku', () => {
    const partial = consume(hold(), { wh: 'W1', sku: 'S', qty: 2 }, 0);
    assert.deepEqual(partial.kind === 'consumed' && [partial.taken, partial.hold.remaining, partial.hold.state], [
      2,
      3,
      'active',
    ]);
    const whole = consume(hold(), { wh: 'W1', sku: 'S', qty: 9 }, 0);
    assert.deepEqual(
      whole.kind === 'consumed' && [whole.taken, whole.hold.remaining, whole.hold.consumed, whole.hold.state],
      [5, 0, 5, 'consumed'],
    );
  });

  it('names the reason when it cannot take anything', () => {
    const reason = (h: Hold | undefined, wh = 'W1', sku = 'S') => {
      const out = consume(h, { wh, sku, qty: 1 }, 0);
      return out.kind === 'mismatch' ? out.reason : out.kind;
    };
    assert.equal(reason(undefined), 'unknown');
    assert.equal(reason(hold(), 'W2'), 'other-warehouse');
    assert.equal(reason(hold(), 'W1', 'T'), 'other-sku');
    assert.equal(reason(hold({ state: 'released', remaining: 0 })), 'released');
    assert.equal(reason(hold({ state: 'expired', remaining: 0 })), 'expired');
    assert.equal(reason(hold({ state: 'consumed', remaining: 0, consumed: 5 })), 'consumed');
  });

  it("a hold past its expiry that no sweeper ended yet ends now, freeing what it held; a transfer's hold does not expire", () => {
    const out = consume(hold({ expiresAt: 100 }), { wh: 'W1', sku: 'S', qty: 1 }, 100);
    assert.deepEqual(out.kind === 'lapsed' && [out.freed, out.hold.state, out.hold.remaining], [5, 'expired', 0]);
    const transfer = consume(hold({ expiresAt: 100, transfer: 't1' }), { wh: 'W1', sku: 'S', qty: 1 }, 100);
    assert.equal(transfer.kind, 'consumed');
  });
});

describe('transfer saga state', () => {
  it('reserved → in transit on a shipment → completed when everything shipped was received and nothing is held', () => {
    assert.equal(transferState({ state: 'reserved', shipped: 0, received: 0, held: 5 }), 'reserved');
    assert.equal(transferState({ state: 'reserved', shipped: 3, received: 0, held: 2 }), 'in_transit');
    assert.equal(
      transferState({ state: 'in_transit', shipped: 3, received: 3, held: 2 }),
      'in_transit',
      'part still held at the source',
    );
    assert.equal(transferState({ state: 'in_transit', shipped: 5, received: 4, held: 0 }), 'in_transit');
    assert.equal(transferState({ state: 'in_transit', shipped: 5, received: 5, held: 0 }), 'completed');
  });

  it('a receipt before its shipment is counted; the shipment then completes the transfer', () => {
    assert.equal(transferState({ state: 'reserved', shipped: 0, received: 5, held: 5 }), 'reserved');
    assert.equal(transferState({ state: 'reserved', shipped: 5, received: 5, held: 0 }), 'completed');
  });

  it('terminal states never change, and only an open transfer is in transit', () => {
    for (const state of ['completed', 'compensated', 'cancelled'] as const) {
      assert.equal(transferState({ state, shipped: 9, received: 0, held: 0 }), state);
      assert.equal(inTransitOf({ state, shipped: 9, received: 0 }), 0);
    }
    assert.equal(inTransitOf({ state: 'in_transit', shipped: 5, received: 2 }), 3);
    assert.equal(inTransitOf({ state: 'in_transit', shipped: 5, received: 7 }), 0);
  });

  it('a receipt counts only at the destination, for its sku, while the transfer is open', () => {
    const t = { sku: 'S', to: 'W2', state: 'in_transit' as const };
    assert.equal(receiveCheck(t, { wh: 'W2', sku: 'S' }), null);
    assert.equal(receiveCheck(undefined, { wh: 'W2', sku: 'S' }), 'unknown');
    assert.equal(receiveCheck(t, { wh: 'W1', sku: 'S' }), 'other-warehouse');
    assert.equal(receiveCheck(t, { wh: 'W2', sku: 'T' }), 'other-sku');
    assert.equal(receiveCheck({ ...t, state: 'completed' }, { wh: 'W2', sku: 'S' }), 'closed');
  });
});
