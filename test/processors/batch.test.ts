import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import pg from 'pg';
import type { StockEvent } from '../../protocol/index.js';
import { createPool } from '../../processors/db/pool.js';
import { migrate } from '../../processors/db/migrate.js';
import { applyBatch } from '../../processors/ingest/batch.js';
import type { Delivery, Parsed } from '../../processors/ingest/types.js';
import { applyToBook, emptyBook, stockKey } from '../../processors/ledger/ledger.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { pauseJobs } from '../helpers/timescale.js';
import { pinFastCheck } from '../helpers/seed.js';
import { arbitraryEvents, numbers, shuffledWithDuplicates } from './arbitraries.js';

pinFastCheck('processors/batch');

let db: TestDatabase;
let pool: pg.Pool;

const delivery = (e: StockEvent): Delivery => ({ topic: `wh/${e.wh}/dev/${e.device}/event`, payload: Buffer.from(JSON.stringify(e.payload)), wh: e.wh, device: e.device, source: 'test', receivedAt: e.receivedAt });
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
    const e1 = { wh: 'W9', device: 'd1', sku: 'A', id: 'x1', type: 'received', qty: 5, ts: 1000, receivedAt: 1000, payload: {} } as StockEvent;
    const e2 = { ...e1, id: 'x2', type: 'shipped', qty: 2 } as StockEvent;
    const r1 = await applyBatch(pool, [parsed(e1), parsed(e2), parsed(e1)]);
    assert.deepEqual(r1.decisions.map((d) => d.status), ['applied', 'applied', 'duplicate']);
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
    const r = (id: string, type: string, qty: number, ts: number) => parsed({ ...base, id, type, qty, ts } as StockEvent);
    await applyBatch(pool, [r('a', 'received', 10, 1000), r('b', 'received', 5, 3000)]);
    await applyBatch(pool, [r('c', 'counted', 100, 2000)]);
    assert.equal((await stockRows()).get(stockKey('W1', 'S')), 105);
    await applyBatch(pool, [r('d', 'shipped', 1, 1500)]); // before the anchor: stored, no change
    assert.equal((await stockRows()).get(stockKey('W1', 'S')), 105);
  });

  // Central commits two batches at once (processors/ingest/ingest.ts), as two processors do: batches that
  // share keys, in any order, must neither deadlock nor apply a key twice.
  it('concurrent batches with the same keys in opposite orders: no deadlock, each key applied once', { timeout: 60_000 }, async () => {
    const deadlocks = async () => Number((await pool.query<{ n: string }>('SELECT deadlocks::text AS n FROM pg_stat_database WHERE datname = current_database()')).rows[0]?.n);
    const before = await deadlocks();
    const events = Array.from({ length: 300 }, (_, i) => ({ wh: 'WX', device: `d${i % 7}`, sku: `K${i % 40}`, id: `cc-${i}`, type: 'received', qty: 1, ts: 1000 + i, receivedAt: 1000 + i, payload: {} }) as StockEvent);
    const statuses: string[] = [];
    for (let round = 0; round < 5; round++) {
      const slice = events.slice(round * 60, round * 60 + 60);
      const results = await Promise.all([applyBatch(pool, slice.map(parsed)), applyBatch(pool, [...slice].reverse().map(parsed)), applyBatch(pool, slice.filter((_, i) => i % 2 === 0).map(parsed))]);
      for (const r of results) statuses.push(...r.decisions.map((d) => d.status));
    }
    assert.equal(statuses.filter((s) => s === 'applied').length, 300, 'each key applied once');
    assert.equal(statuses.filter((s) => s === 'duplicate').length, 300 + 150);
    const { rows } = await pool.query<{ total: string }>("SELECT sum(on_hand)::text AS total FROM stock WHERE wh = 'WX'");
    assert.equal(Number(rows[0]?.total), 300);
    // pg_stat counters are reported when a backend's transaction ends; give the collector a moment.
    await new Promise((r) => setTimeout(r, 600));
    assert.equal((await deadlocks()) - before, 0, 'deadlocks detected by PostgreSQL');
  });
});
