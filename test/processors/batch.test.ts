import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import type pg from 'pg';
import { createPool } from '../../processors/db/pool.js';
import { migrate } from '../../processors/db/migrate.js';
import { applyBatch } from '../../processors/ingest/batch.js';
import type { Publisher } from '../../processors/publish/publisher.js';
import { publishBatch } from '../../processors/ingest/publish.js';
import { ErrorCode, ValidationError, type StockEvent, type TransferState } from '../../protocol/index.js';
import type { Delivery, Parsed } from '../../processors/ingest/types.js';
import { applyToBook, compareKeys, emptyBook, stockKey, type BookEvent } from '../../processors/ledger/ledger.js';
import { consume, isOpen, receiveCheck, transferState, type Hold } from '../../processors/ledger/reservations.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { pauseJobs } from '../helpers/timescale.js';
import { pinFastCheck } from '../helpers/seed.js';
import { arbitraryEvents, numbers, shuffledWithDuplicates } from './arbitraries.js';

pinFastCheck('processors/batch');

let db: TestDatabase;
let pool: pg.Pool;

const delivery = (e: StockEvent): Delivery => ({
  topic: `wh/${e.wh}/dev/${e.device}/event`,
  payload: Buffer.from(JSON.stringify(e.payload)),
  wh: e.wh,
  device: e.device,
  source: 'test',
  receivedAt: e.receivedAt,
});
const parsed = (e: StockEvent): Parsed => ({ delivery: delivery(e), ok: true, event: e });

async function stockRows(): Promise<Map<string, number>> {
  const { rows } = await pool.query<{ wh: string; sku: string; on_hand: number }>('SELECT wh, sku, on_hand FROM stock');
  return new Map(rows.map((r) => [stockKey(r.wh, r.sku), r.on_hand]));
}

describe('SQL batch ledger', () => {
  before(async () => {
    db = await createTestDatabase('batch');
    pool = createPool({ url: db.url, max: 4 });
    // On TimescaleDB the archive job (10 years' retention) would fold these tests' 1970 events into the baseline
    // and move the horizon under them: later events of 1970 would then apply as of 1970-01-02 (migrations/003).
    if ((await migrate(pool)).timescale) await pauseJobs(pool);
  });
  after(async () => {
    await pool.end();
    await db.drop();
  });

  it('applies a batch, marks repeats duplicate, and bumps versions once per change', async () => {
    const e1 = {
      wh: 'W9',
      device: 'd1',
      sku: 'A',
      id: 'x1',
      type: 'received',
      qty: 5,
      ts: 1000,
      receivedAt: 1000,
      payload: {},
    } as StockEvent;
    const e2 = { ...e1, id: 'x2', type: 'shipped', qty: 2 } as StockEvent;
    const r1 = await applyBatch(pool, [parsed(e1), parsed(e2), parsed(e1)]);
    assert.deepEqual(
      r1.decisions.map((d) => d.status),
      ['applied', 'applied', 'duplicate'],
    );
    assert.deepEqual(r1.decisions[0], { status: 'applied', id: 'x1', stock: { onHand: 3, available: 3 } });
    assert.equal(r1.warehouseStock.length, 1);
    assert.equal(r1.warehouseStock[0]?.version, 1);
    assert.equal(r1.globalStock[0]?.version, 1);
    const r2 = await applyBatch(pool, [parsed(e2)]);
    assert.deepEqual(r2.decisions, [{ status: 'duplicate', id: 'x2', stock: { onHand: 3, available: 3 } }]);
    assert.equal(r2.warehouseStock.length, 0, 'a duplicate changes nothing and publishes nothing');
    const { rows } = await pool.query('SELECT count(*)::int AS n FROM events WHERE wh = $1', ['W9']);
    assert.equal(rows[0].n, 2);
  });

  it('a new row whose first events add up to nothing is published at 0 (version 1), not left unknown', async () => {
    const r1 = {
      wh: 'W8',
      device: 'd1',
      sku: 'ZERO',
      id: 'z1',
      type: 'received',
      qty: 5,
      ts: 2000,
      receivedAt: 2000,
      payload: {},
    } as StockEvent;
    const s1 = { ...r1, id: 'z2', type: 'shipped', qty: 5 } as StockEvent;
    const r = await applyBatch(pool, [parsed(r1), parsed(s1)]);
    assert.deepEqual(
      r.decisions.map((d) => d.status),
      ['applied', 'applied'],
    );
    assert.deepEqual(
      r.warehouseStock.map((s) => [s.warehouse, s.sku, s.onHand, s.version]),
      [['W8', 'ZERO', 0, 1]],
    );
    assert.deepEqual(
      r.globalStock.map((g) => [g.sku, g.onHand, g.version]),
      [['ZERO', 0, 1]],
    );
    const again = await applyBatch(pool, [
      parsed({ ...r1, id: 'z3', type: 'adjusted', qty: 1 } as StockEvent),
      parsed({ ...r1, id: 'z4', type: 'adjusted', qty: -1 } as StockEvent),
    ]);
    assert.deepEqual(again.warehouseStock, [], 'a known row whose events add up to nothing changes no version');
  });

  it('property: any split into batches, any order, any duplicates gives the pure model stock', async () => {
    await fc.assert(
      fc.asyncProperty(arbitraryEvents(30), fc.infiniteStream(fc.nat()), async (events, noise) => {
        await pool.query('TRUNCATE inbox, events, stock, sku_versions');
        const expected = events.reduce((b, e) => applyToBook(b, e).book, emptyBook);
        const next = numbers(noise);
        const delivered = shuffledWithDuplicates(events, next);
        let applied = 0;
        for (let i = 0; i < delivered.length; ) {
          const size = 1 + (next() % 8);
          const r = await applyBatch(pool, delivered.slice(i, i + size).map(parsed));
          applied += r.decisions.filter((d) => d.status === 'applied').length;
          i += size;
        }
        assert.equal(applied, events.length, 'each key applied exactly once');
        const actual = await stockRows();
        for (const [key, s] of expected.stock) assert.equal(actual.get(key), s.onHand, key);
      }),
      { numRuns: 40 },
    );
  });

  it('a count recomputes from the log: a late count before later deltas', async () => {
    await pool.query('TRUNCATE inbox, events, stock, sku_versions');
    const base = { wh: 'W1', device: 'd1', sku: 'S', receivedAt: 0, payload: {} };
    const r = (id: string, type: string, qty: number, ts: number) =>
      parsed({ ...base, id, type, qty, ts } as StockEvent);
    await applyBatch(pool, [r('a', 'received', 10, 1000), r('b', 'received', 5, 3000)]);
    await applyBatch(pool, [r('c', 'counted', 100, 2000)]);
    assert.equal((await stockRows()).get(stockKey('W1', 'S')), 105);
    await applyBatch(pool, [r('d', 'shipped', 1, 1500)]); // before the anchor: stored, no change
    assert.equal((await stockRows()).get(stockKey('W1', 'S')), 105);
  });

  // Central commits two batches at once (processors/ingest/ingest.ts), as two processors do: batches that
  // share keys, in any order, must neither deadlock nor apply a key twice.
  it('concurrent batches with the same keys in opposite orders: no deadlock, each key applied once', {
    timeout: 60_000,
  }, async () => {
    const deadlocks = async () =>
      Number(
        (
          await pool.query<{ n: string }>(
            'SELECT deadlocks::text AS n FROM pg_stat_database WHERE datname = current_database()',
          )
        ).rows[0]?.n,
      );
    const before = await deadlocks();
    const events = Array.from(
      { length: 300 },
      (_, i) =>
        ({
          wh: 'WX',
          device: `d${i % 7}`,
          sku: `K${i % 40}`,
          id: `cc-${i}`,
          type: 'received',
          qty: 1,
          ts: 1000 + i,
          receivedAt: 1000 + i,
          payload: {},
        }) as StockEvent,
    );
    const statuses: string[] = [];
    // A pool of their own, ended before the count is read: PostgreSQL 15 keeps a backend's counters (a deadlock
    // it detected) until it flushes them, up to 10 s later when idle, but always when the backend exits.
    const racing = createPool({ url: db.url, max: 4 });
    try {
      for (let round = 0; round < 5; round++) {
        const slice = events.slice(round * 60, round * 60 + 60);
        const results = await Promise.all([
          applyBatch(racing, slice.map(parsed)),
          applyBatch(racing, [...slice].reverse().map(parsed)),
          applyBatch(racing, slice.filter((_, i) => i % 2 === 0).map(parsed)),
        ]);
        for (const r of results) statuses.push(...r.decisions.map((d) => d.status));
      }
    } finally {
      await racing.end();
    }
    assert.equal(statuses.filter((s) => s === 'applied').length, 300, 'each key applied once');
    assert.equal(statuses.filter((s) => s === 'duplicate').length, 300 + 150);
    const { rows } = await pool.query<{ total: string }>(
      "SELECT sum(on_hand)::text AS total FROM stock WHERE wh = 'WX'",
    );
    assert.equal(Number(rows[0]?.total), 300);
    assert.equal((await deadlocks()) - before, 0, 'deadlocks detected by PostgreSQL');
  });

  // issue 17: a batch is one statement, whatever it holds (inbox, dead letter, events, levels, stock, versions,
  // a reservation consumed). Counted at the client: every query a pooled connection sends.
  it('a mixed batch costs one round trip to the database', async () => {
    let statements = 0;
    const counting = createPool({ url: db.url, max: 2 });
    counting.on('connect', (client) => {
      const query = client.query.bind(client) as (...args: unknown[]) => unknown;
      (client as unknown as { query: typeof query }).query = (...args: unknown[]) => {
        statements++;
        return query(...args);
      };
    });
    try {
      await pool.query(`INSERT INTO stock (wh, sku, on_hand, reserved, version) VALUES ('RT', 'R', 10, 4, 1)`);
      await pool.query(
        `INSERT INTO reservations (id, wh, sku, qty, remaining, state, expires_at) VALUES ('rt-hold', 'RT', 'R', 4, 4, 'active', now() + interval '1 hour')`,
      );
      const at = (id: string, type: string, qty: number, sku: string, extra: object = {}) =>
        parsed({
          wh: 'RT',
          device: 'd1',
          id,
          type,
          qty,
          sku,
          ts: 5_000,
          receivedAt: 5_000,
          payload: { v: 1, id, type, sku, qty, ...extra },
          ...extra,
        } as StockEvent);
      const old = at('rt-0', 'received', 1, 'A');
      await applyBatch(pool, [old]);
      const bad: Parsed = {
        delivery: {
          ...delivery(old.ok ? old.event : ({} as StockEvent)),
          payload: Buffer.from('{"v":1,"id":"rt-bad"'),
        },
        ok: false,
        id: null,
        error: new ValidationError(ErrorCode.invalidJson, 'payload is not JSON'),
      };
      const batch = [
        at('rt-1', 'received', 5, 'A'),
        at('rt-2', 'counted', 20, 'A', { ts: 4_000 }),
        at('rt-3', 'level', 7, 'A', { location: 'L1' }),
        bad,
        old,
        at('rt-4', 'shipped', 3, 'R', { reservation: 'rt-hold' }),
      ];
      statements = 0;
      const r = await applyBatch(counting, batch);
      assert.equal(statements, 1, 'statements sent for one batch');
      assert.deepEqual(
        r.decisions.map((d) => d.status),
        ['applied', 'applied', 'applied', 'rejected', 'duplicate', 'applied'],
      );
      assert.deepEqual(
        r.decisions[5],
        { status: 'applied', id: 'rt-4', stock: { onHand: 7, available: 6 } },
        'the shipment took 3 of the hold of 4',
      );
      assert.deepEqual(
        r.deadLetters.map((d) => d.code),
        [ErrorCode.invalidJson],
      );
      assert.deepEqual(
        r.shelves.map((s) => [s.location, s.qty]),
        [['L1', 7]],
      );
      const hold = (await pool.query(`SELECT remaining, consumed, state FROM reservations WHERE id = 'rt-hold'`))
        .rows[0];
      assert.deepEqual(hold, { remaining: 1, consumed: 3, state: 'active' });
      assert.deepEqual(r.warehouseStock.map((s) => [s.sku, s.onHand, s.reserved, s.version]).sort(), [
        ['A', 26, 0, 2],
        ['R', 7, 1, 2],
      ]);
    } finally {
      await counting.end();
    }
  });

  // issue 17: the retained topics of a batch are published once each, with their final values, however often the
  // batch changed them, and also when a poison event split the batch into several transactions.
  for (const poison of [false, true]) {
    it(`a batch that changes one sku 50 times publishes each retained topic once, with its final version${poison ? ' (split by a poison event)' : ''}`, async () => {
      const wh = poison ? 'PB2' : 'PB1';
      const sent: { topic: string; payload: string; retain: boolean }[] = [];
      const publisher: Publisher = {
        publish: async (topic, payload, retain) => void sent.push({ topic, payload, retain }),
      };
      const ev = (n: number, type: string, extra: object = {}) =>
        parsed({
          wh,
          device: 'd1',
          id: `pb-${n}`,
          type,
          qty: 1 + (n % 3),
          sku: 'P',
          ts: 10_000 + n,
          receivedAt: 10_000 + n,
          payload: { v: 1, type, n },
          ...extra,
        } as StockEvent);
      const batch: Parsed[] = [];
      for (let n = 0; n < 50; n++)
        batch.push(ev(n, n % 2 ? 'shipped' : 'received'), ev(100 + n, 'level', { location: 'L1' }));
      // Text PostgreSQL refuses (U+0000 in jsonb): the statement fails, and the batch is split around the event.
      if (poison) batch.splice(50, 0, ev(999, 'received', { payload: { v: 1, note: 'a\u0000b' } }));
      const result = await applyBatch(pool, batch);
      await publishBatch(publisher, batch, result);

      const retained = sent
        .filter((m) => m.retain)
        .map((m) => m.topic)
        .sort();
      assert.deepEqual(retained, [`stock/P`, `wh/${wh}/shelf/L1/P`, `wh/${wh}/stock/P`], 'each retained topic once');
      const last = (topic: string) => JSON.parse(sent.find((m) => m.topic === topic)?.payload ?? '{}');
      const row = (await pool.query(`SELECT on_hand, version FROM stock WHERE wh = $1 AND sku = 'P'`, [wh])).rows[0];
      assert.deepEqual(
        [last(`wh/${wh}/stock/P`).onHand, last(`wh/${wh}/stock/P`).version],
        [row.on_hand, row.version],
        'the final value and version',
      );
      const global = (await pool.query(`SELECT version FROM sku_versions WHERE sku = 'P'`)).rows[0];
      assert.equal(last('stock/P').version, global.version);
      assert.deepEqual(
        [last(`wh/${wh}/shelf/L1/P`).qty, last(`wh/${wh}/shelf/L1/P`).ts],
        [1 + (149 % 3), new Date(10_149).toISOString()],
        'the latest reading',
      );
      assert.equal(sent.filter((m) => m.topic === `wh/${wh}/dev/d1/ack`).length, batch.length, 'one ack per event');
      if (poison)
        assert.deepEqual(
          result.decisions.filter((d) => d.status === 'rejected').map((d) => d.id),
          ['pb-999'],
        );
    });
  }

  // The batch's statement decides reservations and transfers in PL/pgSQL (migrations/005); the rules are the pure
  // functions of processors/ledger/reservations.ts. Random holds, transfers and events: both must agree.
  it('property: shipped and received events change holds and transfers as consume, receiveCheck and transferState decide', async () => {
    const HOUR = 3_600_000; // ms
    const whs = ['RX1', 'RX2'];
    const skus = ['A', 'B'];
    const arbHold = fc.record({
      wh: fc.constantFrom(...whs),
      sku: fc.constantFrom(...skus),
      qty: fc.integer({ min: 1, max: 9 }),
      used: fc.nat(9),
      ended: fc.constantFrom('consumed', 'released', 'expired'),
      lapsed: fc.boolean(),
      transfer: fc.option(
        fc.record({
          state: fc.constantFrom('reserved', 'in_transit', 'completed', 'cancelled'),
          shipped: fc.nat(5),
          received: fc.nat(5),
        }),
        { nil: undefined },
      ),
    });
    // Most events name a link of their own warehouse and sku (for a receipt: the transfer's destination), some do not.
    const arbEvent = fc.record({
      type: fc.constantFrom('shipped', 'received'),
      link: fc.nat(4),
      fits: fc.nat(3),
      wh: fc.constantFrom(...whs),
      sku: fc.constantFrom(...skus),
      qty: fc.integer({ min: 1, max: 6 }),
      ts: fc.nat(5),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.array(arbHold, { minLength: 1, maxLength: 4 }),
        fc.array(arbEvent, { minLength: 1, maxLength: 8 }),
        async (hs, es) => {
          await pool.query('TRUNCATE inbox, events, stock, sku_versions, reservations, transfers');
          const now = Date.now();
          const holds = new Map<string, Hold>();
          const transfers = new Map<
            string,
            {
              id: string;
              sku: string;
              from: string;
              to: string;
              state: TransferState;
              shipped: number;
              received: number;
            }
          >();
          for (const [n, h] of hs.entries()) {
            const id = `h${n}`;
            const remaining = Math.max(0, h.qty - h.used);
            const hold: Hold = {
              id,
              wh: h.wh,
              sku: h.sku,
              qty: h.qty,
              remaining,
              consumed: h.qty - remaining,
              state: remaining > 0 ? 'active' : h.ended,
              expiresAt: now + (h.lapsed ? -HOUR : HOUR),
              transfer: h.transfer ? id : null,
            };
            holds.set(id, hold);
            if (h.transfer)
              transfers.set(id, {
                id,
                sku: h.sku,
                from: h.wh,
                to: h.wh === 'RX1' ? 'RX2' : 'RX1',
                ...h.transfer,
                state: h.transfer.state as TransferState,
              });
          }
          const reservedAt = new Map<string, number>();
          for (const h of holds.values())
            if (h.state === 'active')
              reservedAt.set(stockKey(h.wh, h.sku), (reservedAt.get(stockKey(h.wh, h.sku)) ?? 0) + h.remaining);
          for (const wh of whs)
            for (const sku of skus)
              await pool.query(`INSERT INTO stock (wh, sku, on_hand, reserved) VALUES ($1, $2, 100, $3)`, [
                wh,
                sku,
                reservedAt.get(stockKey(wh, sku)) ?? 0,
              ]);
          for (const h of holds.values()) {
            await pool.query(
              `INSERT INTO reservations (id, wh, sku, qty, remaining, consumed, state, transfer, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
              [h.id, h.wh, h.sku, h.qty, h.remaining, h.consumed, h.state, h.transfer, new Date(h.expiresAt)],
            );
          }
          for (const t of transfers.values()) {
            await pool.query(
              `INSERT INTO transfers (id, sku, qty, from_wh, to_wh, state, shipped, received, deadline) VALUES ($1, $2, 9, $3, $4, $5, $6, $7, now() + interval '1 day')`,
              [t.id, t.sku, t.from, t.to, t.state, t.shipped, t.received],
            );
          }
          const events = es.map((e, n): BookEvent => {
            const id = `x${n}`;
            const link = e.link < hs.length ? `h${e.link}` : 'h-unknown';
            const linked = holds.get(link);
            const fits = linked && e.fits > 0;
            const wh = fits ? (e.type === 'shipped' ? linked.wh : (transfers.get(link)?.to ?? linked.wh)) : e.wh;
            const base = {
              wh,
              device: 'd1',
              id,
              sku: fits ? linked.sku : e.sku,
              qty: e.qty,
              ts: now - 60_000 + e.ts,
              receivedAt: now,
            };
            return e.type === 'shipped'
              ? ({
                  ...base,
                  type: 'shipped',
                  reservation: link,
                  payload: { v: 1, id, type: 'shipped', sku: base.sku, qty: e.qty, reservation: link },
                } as BookEvent)
              : ({
                  ...base,
                  type: 'received',
                  payload: { v: 1, id, type: 'received', sku: base.sku, qty: e.qty, transfer: link },
                } as BookEvent);
          });

          // The rules, run over the same state in the batch's order (processors/reservations/consume.ts before issue 17).
          const reserved = new Map(reservedAt);
          const kinds: string[] = [];
          const transitions: { id: string; state: string }[] = [];
          const shippedFor = new Map<string, number>();
          const ordered = [...events].sort(compareKeys);
          for (const e of ordered) {
            if (e.type !== 'shipped') continue;
            const out = consume(holds.get(e.reservation as string), e, now);
            if (out.kind === 'mismatch') {
              kinds.push(`reservation-mismatch ${e.id} ${out.reason}`);
              continue;
            }
            holds.set(out.hold.id, out.hold);
            const freed = out.kind === 'lapsed' ? out.freed : out.taken;
            reserved.set(
              stockKey(out.hold.wh, out.hold.sku),
              (reserved.get(stockKey(out.hold.wh, out.hold.sku)) ?? 0) - freed,
            );
            if (out.kind === 'lapsed') kinds.push(`reservation-mismatch ${e.id} expired`);
            else if (out.hold.transfer !== null)
              shippedFor.set(out.hold.transfer, (shippedFor.get(out.hold.transfer) ?? 0) + e.qty);
          }
          const before = new Map([...transfers].map(([id, t]) => [id, { ...t }]));
          const touched = new Set<string>();
          for (const [id, qty] of shippedFor) {
            const t = transfers.get(id);
            if (t && isOpen(t.state)) {
              t.shipped += qty;
              touched.add(id);
            }
          }
          for (const e of ordered) {
            if (e.type !== 'received') continue;
            const id = e.payload.transfer as string;
            const t = before.get(id);
            const mismatch = receiveCheck(t && { sku: t.sku, to: t.to, state: t.state }, e);
            if (mismatch !== null) kinds.push(`transfer-mismatch ${e.id} ${mismatch}`);
            else {
              (transfers.get(id) as { received: number }).received += e.qty;
              touched.add(id);
            }
          }
          for (const id of [...touched].sort()) {
            const t = transfers.get(id) as NonNullable<ReturnType<typeof transfers.get>>;
            const h = holds.get(id);
            const state = transferState({
              state: t.state,
              shipped: t.shipped,
              received: t.received,
              held: h && h.state === 'active' ? h.remaining : 0,
            });
            if (state !== t.state) transitions.push({ id, state });
            t.state = state;
          }

          const r = await applyBatch(pool, events.map(parsed));
          const reason = (n: { message: string }) => /\((\w[\w-]*)\)|is already/.exec(n.message)?.[1] ?? 'closed';
          assert.deepEqual(
            r.notices.map((n) => `${n.kind} ${n.message.split(' ')[1]} ${reason(n)}`).sort(),
            kinds.sort(),
            'notices',
          );
          assert.deepEqual(r.transitions, transitions, 'transitions');
          const rows = (await pool.query(`SELECT id, remaining, consumed, state FROM reservations ORDER BY id`)).rows;
          assert.deepEqual(
            rows,
            [...holds.values()].map((h) => ({
              id: h.id,
              remaining: h.remaining,
              consumed: h.consumed,
              state: h.state,
            })),
            'holds',
          );
          const trows = (await pool.query(`SELECT id, shipped, received, state FROM transfers ORDER BY id`)).rows;
          assert.deepEqual(
            trows,
            [...transfers.values()].map((t) => ({
              id: t.id,
              shipped: t.shipped,
              received: t.received,
              state: t.state,
            })),
            'transfers',
          );
          const srows = (
            await pool.query<{ wh: string; sku: string; reserved: number }>(`SELECT wh, sku, reserved FROM stock`)
          ).rows;
          for (const s of srows)
            assert.equal(s.reserved, reserved.get(stockKey(s.wh, s.sku)) ?? 0, `reserved of ${s.wh}/${s.sku}`);
        },
      ),
      { numRuns: 60 },
    );
  });
});
