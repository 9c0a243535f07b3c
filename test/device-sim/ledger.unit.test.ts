import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ALL_FAULTS, DEFAULT_MIX, Planner, parseMix, type SimDeviceRef } from '../../device-sim/plan.js';
import { SentLedger, expectedStock, rowKey } from '../../device-sim/ledger.js';
import { summaryText, type SimSummary } from '../../device-sim/report.js';
import { applyToBook, emptyBook } from '../../processors/ledger/ledger.js';
import { MAX_CLOCK_AHEAD_MS, parseEvent, type StockEvent } from '../../protocol/index.js';
import { pinFastCheck } from '../helpers/seed.js';
import { arbitraryEvents } from '../processors/arbitraries.js';

pinFastCheck('device-sim/ledger');

const T0 = 1_700_000_000_000;
const DEVICES: SimDeviceRef[] = [
  { id: 'scan-1', wh: 'W1', kind: 'scanner', index: 0 },
  { id: 'scan-2', wh: 'W1', kind: 'scanner', index: 1 },
  { id: 'scan-3', wh: 'W2', kind: 'scanner', index: 0 },
  { id: 'shelf-1', wh: 'W1', kind: 'shelf', index: 0 },
];

describe('device-sim ledger: the oracle of CONTRACT section 4', () => {
  it("property: expectedStock agrees with the processor's decide/evolve model on any event set", () => {
    fc.assert(
      fc.property(arbitraryEvents(60), (events) => {
        const book = events.reduce((b, e) => applyToBook(b, e).book, emptyBook);
        const oracle = expectedStock(events);
        for (const [key, s] of book.stock) assert.equal(oracle.stock.get(key)?.onHand, s.onHand, key);
        assert.equal(oracle.stock.size, book.stock.size);
      }),
      { numRuns: 300 },
    );
  });

  it('given a count and later deltas, a repeat of an event changes nothing and a late delta before the count is ignored', () => {
    const l = new SentLedger(0);
    const base = { wh: 'W1', sku: 'S', device: 'd' };
    l.record({ ...base, id: 'a', type: 'received', qty: 5, ts: T0 }, T0);
    l.record({ ...base, id: 'c', type: 'counted', qty: 10, ts: T0 + 1000 }, T0);
    l.record({ ...base, id: 'b', type: 'shipped', qty: 3, ts: T0 + 2000 }, T0);
    l.record({ ...base, id: 'b', type: 'shipped', qty: 3, ts: T0 + 2000 }, T0); // a duplicate publish
    l.record({ ...base, id: 'late', type: 'received', qty: 100, ts: T0 + 500 }, T0);
    assert.deepEqual(l.expected(), [{ wh: 'W1', sku: 'S', onHand: 7 }]);
    assert.equal(l.events, 4);
  });

  it('an edge-stamped event is unknown until its PUBACK, then ordered by it; counts keep clear of its window', () => {
    const l = new SentLedger(2_000);
    const base = { wh: 'W1', sku: 'S', device: 'd' };
    l.record({ ...base, id: 'c1', type: 'counted', qty: 50, ts: T0 }, T0);
    assert.equal(
      l.canLeaveTimeToEdge('W1', 'S', T0 + 1_000),
      false,
      'a count within the tolerance could fall on either side',
    );
    assert.equal(l.canLeaveTimeToEdge('W1', 'S', T0 + 10_000), true);
    l.record({ ...base, id: 'x', type: 'received', qty: 4, ts: null }, T0 + 10_000);
    assert.throws(() => l.expected(), /never acknowledged/);
    // a count made now would land inside the open window: it is moved before it
    assert.equal(l.countTime('W1', 'S', T0 + 11_000), T0 + 10_000 - 2_000 - 1);
    l.settle('d', 'x', T0 + 10_050);
    assert.equal(
      l.countTime('W1', 'S', T0 + 11_000),
      T0 + 10_000 - 2_000 - 1,
      'still within the tolerance after the PUBACK',
    );
    assert.equal(l.countTime('W1', 'S', T0 + 20_000), T0 + 20_000, 'well after the PUBACK: unambiguous');
    assert.deepEqual(l.expected(), [{ wh: 'W1', sku: 'S', onHand: 54 }]);
    l.record({ ...base, id: 'c2', type: 'counted', qty: 9, ts: T0 + 10_020 }, T0); // placed inside the window by hand
    assert.throws(() => l.expected(), /cannot order/);
  });

  it("property: for any seed, what the edge makes of the planned events gives exactly the ledger's expectations", () => {
    // The edge's rule (CONTRACT 3) applied for real by parseEvent, with receipt and PUBACK times anywhere
    // in their windows: the ledger must predict central's stock without knowing those times.
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.infiniteStream(fc.nat({ max: 400 })), (seed, noise) => {
        const jitter = noise[Symbol.iterator]();
        const next = () => jitter.next().value as number;
        const ledger = new SentLedger(2_000);
        const faults = { ...ALL_FAULTS, skew: 0.5, reorder: 0.3, duplicate: 0.2, malformed: 0.1 };
        const planner = new Planner({
          seed,
          runId: 'r1',
          skuPrefix: 'P-',
          skus: 3,
          mix: DEFAULT_MIX,
          faults,
          ledger,
          devices: DEVICES,
        });
        const accepted: StockEvent[] = [];
        const settles: { at: number; device: string; id: string }[] = [];
        let now = T0;
        for (let i = 0; i < 150; i++) {
          now += next();
          for (const s of settles.filter((x) => x.at <= now)) ledger.settle(s.device, s.id, s.at);
          settles.splice(0, settles.length, ...settles.filter((x) => x.at > now));
          const p = planner.next(now);
          const receivedAt = now + (p.kind === 'event' ? p.delayMs : 0) + (next() % 50); // held back, then the hop to the edge
          const parsed = parseEvent(Buffer.from(p.payload), { wh: p.device.wh, device: p.device.id, receivedAt });
          if (p.kind === 'malformed') {
            assert.equal(parsed.ok, false, `${p.reason} must be rejected: ${p.payload.slice(0, 80)}`);
            if (!parsed.ok) assert.equal(parsed.id, p.id, `readable id of ${p.reason}`);
            continue;
          }
          assert.ok(parsed.ok, `planned event must be valid: ${p.payload} ${parsed.ok ? '' : parsed.error.message}`);
          if (!parsed.ok) continue;
          if (p.skew === 'far-ahead')
            assert.ok(Date.parse(String(parsed.event.payload.ts)) > receivedAt + MAX_CLOCK_AHEAD_MS);
          accepted.push(parsed.event);
          if (p.duplicateAfterMs !== null) accepted.push(parsed.event); // central dedupes it
          settles.push({ at: receivedAt + (next() % 100), device: p.device.id, id: p.id }); // PUBACK after the fsync
        }
        for (const s of settles) ledger.settle(s.device, s.id, s.at);
        const central = accepted.reduce((b, e) => applyToBook(b, e).book, emptyBook);
        const expected = ledger.expected();
        for (const e of expected)
          assert.equal(central.stock.get(rowKey(e.wh, e.sku))?.onHand, e.onHand, `${e.wh}/${e.sku} (seed ${seed})`);
        assert.equal(expected.length, central.stock.size);
      }),
      { numRuns: 150 },
    );
  });

  it('the same seed plans the same events', () => {
    const plan = (seed: number) => {
      const planner = new Planner({
        seed,
        runId: 'r',
        skuPrefix: 'P-',
        skus: 5,
        mix: DEFAULT_MIX,
        faults: ALL_FAULTS,
        ledger: new SentLedger(2_000),
        devices: DEVICES,
      });
      return Array.from({ length: 50 }, (_, i) => planner.next(T0 + i * 100)).map((p) => p.payload);
    };
    assert.deepEqual(plan(7), plan(7));
    assert.notDeepEqual(plan(7), plan(8));
  });

  it('a mix of shelf readings only needs shelf sensors; one no device can send is refused', () => {
    const scanners = DEVICES.filter((d) => d.kind === 'scanner');
    const o = { seed: 1, runId: 'r', skuPrefix: 'P-', skus: 2, faults: ALL_FAULTS, ledger: new SentLedger(0) };
    assert.throws(
      () => new Planner({ ...o, mix: parseMix('level=1'), devices: scanners }),
      /no event type that these devices can send/,
    );
    const p = new Planner({ ...o, mix: parseMix('level=1'), devices: DEVICES }).next(T0);
    assert.equal(p.device.kind, 'shelf');
  });

  it('parseMix reads weights and names what is wrong', () => {
    assert.deepEqual(parseMix('received=2,shipped=1.5'), {
      received: 2,
      shipped: 1.5,
      returned: 0,
      adjusted: 0,
      counted: 0,
      level: 0,
    });
    assert.throws(() => parseMix('stolen=3'), /"stolen=3"/);
    assert.throws(() => parseMix('received=0'), /at least one type/);
  });

  it('the text summary names every difference and every valid event central rejected', () => {
    const stats = {
      planned: 3,
      events: 3,
      publishes: 3,
      duplicates: 0,
      malformed: 0,
      reordered: 0,
      skewed: 0,
      skews: { behind: 0, ahead: 0, 'far-ahead': 0, absent: 0 },
      acked: 3,
      committed: 3,
      malformedWithId: 0,
      rejectedAsExpected: 0,
      drops: 0,
      reconnects: 0,
      republished: 0,
    };
    const summary: SimSummary = {
      runId: 'abc123',
      seed: 1,
      skuPrefix: 'p-',
      warehouses: ['WH1'],
      devices: 1,
      faults: ALL_FAULTS,
      elapsedMs: 1000,
      stats,
      error: null,
      verify: {
        rows: 2,
        events: 3,
        committed: true,
        outstanding: 0,
        differences: [
          { wh: 'WH1', sku: 'p-001', expected: 5, actual: 1005 },
          { wh: 'WH1', sku: 'p-002', expected: 2, actual: null },
        ],
        unexpectedRejections: [{ wh: 'WH1', device: 'd', id: 'abc123-1', error: 'schema_violation: qty' }],
      },
    };
    const text = summaryText(summary);
    assert.match(text, /DIFFERENCE WH1 p-001: expected onHand 5, central 1005/);
    assert.match(text, /DIFFERENCE WH1 p-002: expected onHand 2, central has no stock row/);
    assert.match(text, /REJECTED WH1 d\/abc123-1: schema_violation: qty/);
    assert.match(text, /verify: 2 differences, 1 valid events rejected/);
  });
});
