import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type pg from 'pg';
import type { StockEvent } from '../../protocol/index.js';
import { migrate } from '../../processors/db/migrate.js';
import { createPool } from '../../processors/db/pool.js';
import { applyBatch } from '../../processors/ingest/batch.js';
import type { Parsed } from '../../processors/ingest/types.js';
import { applyToBook, emptyBook, stockKey, type Book } from '../../processors/ledger/ledger.js';
import { rebuild } from '../../processors/rebuild.js';
import { ADMIN_URL, createDatabaseOn, type TestDatabase } from '../helpers/db.js';
import { pauseJobs, timescaleAdminUrl } from '../helpers/timescale.js';

const DAY = 86_400_000; // ms
const NOW = Date.now();

const parsed = (e: StockEvent): Parsed => ({
  delivery: {
    topic: `wh/${e.wh}/dev/${e.device}/event`,
    payload: Buffer.from('{}'),
    wh: e.wh,
    device: e.device,
    source: 'test',
    receivedAt: e.receivedAt,
  },
  ok: true,
  event: e,
});

/** 40 days of a ledger: receipts and shipments on three skus, counts now and then, two devices. Deterministic. */
function history(): StockEvent[] {
  const out: StockEvent[] = [];
  let n = 0;
  for (let d = 40; d >= 1; d--) {
    for (const [sku, device] of [
      ['A', 'd1'],
      ['B', 'd2'],
      ['C', 'd1'],
    ] as const) {
      const ts = NOW - d * DAY + (n % 7) * 3_600_000;
      out.push({
        wh: 'W1',
        device,
        sku,
        id: `h${++n}`,
        type: 'received',
        qty: 10 + (n % 5),
        ts,
        receivedAt: ts,
        payload: {},
      } as StockEvent);
      out.push({
        wh: 'W1',
        device,
        sku,
        id: `h${++n}`,
        type: 'shipped',
        qty: 4 + (n % 3),
        ts: ts + 60_000,
        receivedAt: ts,
        payload: {},
      } as StockEvent);
      // A is counted every 9 days, C once early on, B never: the baseline holds an anchor, an old anchor, or none.
      if ((sku === 'A' && d % 9 === 0) || (sku === 'C' && d === 35)) {
        out.push({
          wh: 'W1',
          device,
          sku,
          id: `h${++n}`,
          type: 'counted',
          qty: 100 + d,
          ts: ts + 120_000,
          receivedAt: ts,
          payload: {},
        } as StockEvent);
      }
    }
  }
  return out;
}

/** The order events reach central in: a fixed interleaving, not the order they happened. */
const scrambled = <T>(xs: T[]): T[] =>
  xs
    .map((x, i) => ({ x, k: (i * 7919) % 1009 }))
    .sort((a, b) => a.k - b.k)
    .map((p) => p.x);

const onHandOf = (book: Book) => new Map([...book.stock].map(([k, s]) => [k, s.onHand]));

async function stored(pool: pg.Pool): Promise<Map<string, number>> {
  const { rows } = await pool.query<{ wh: string; sku: string; on_hand: number }>('SELECT wh, sku, on_hand FROM stock');
  return new Map(rows.map((r) => [stockKey(r.wh, r.sku), r.on_hand]));
}

async function horizonMs(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ h: Date }>('SELECT archived_before AS h FROM ledger_horizon');
  return (rows[0] as { h: Date }).h.getTime();
}

async function apply(pool: pg.Pool, events: StockEvent[]): Promise<void> {
  for (let i = 0; i < events.length; i += 50) {
    const r = await applyBatch(pool, events.slice(i, i + 50).map(parsed));
    assert.ok(
      r.decisions.every((d) => d.status === 'applied'),
      JSON.stringify(r.decisions.filter((d) => d.status !== 'applied')),
    );
  }
}

for (const server of ['PostgreSQL', 'TimescaleDB'] as const) {
  const timescale = server === 'TimescaleDB';
  describe(`the archive on ${server}: retention never changes stock or makes rebuild report drift`, () => {
    let db: TestDatabase;
    let pool: pg.Pool;
    after(async () => {
      await pool?.end();
      await db?.drop();
    });

    it('folds dropped events into the baseline; late events older than the horizon apply as of it', async () => {
      db = await createDatabaseOn(timescale ? timescaleAdminUrl() : ADMIN_URL, 'archive');
      pool = createPool({ url: db.url, max: 3 });
      assert.equal((await migrate(pool)).timescale, timescale);
      if (timescale) await pauseJobs(pool); // the test runs the archive job itself, below
      const events = history();
      await apply(pool, scrambled(events));
      let book = events.reduce((b, e) => applyToBook(b, e).book, emptyBook);
      assert.deepEqual(await stored(pool), onHandOf(book));
      if (timescale)
        await pool.query(
          `SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('events', older_than => INTERVAL '7 days') c`,
        );

      // 1. Archive everything older than 12 days.
      const total = (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM events')).rows[0]?.n as number;
      const { rows } = await pool.query<{ archived_before: Date; archived: string }>(
        `SELECT * FROM stockwire_archive_events(now() - INTERVAL '12 days')`,
      );
      const cutoff = (rows[0] as { archived_before: Date }).archived_before.getTime();
      const archived = Number(rows[0]?.archived);
      assert.ok(
        cutoff <= NOW - 12 * DAY + 60_000 && cutoff > NOW - 14 * DAY,
        `cutoff ${new Date(cutoff).toISOString()}`,
      );
      assert.equal(archived, events.filter((e) => e.ts < cutoff).length, 'every event before the cutoff was folded');
      assert.equal(
        (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM events')).rows[0]?.n,
        total - archived,
        'and dropped',
      );
      assert.equal(
        (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE ts < $1', [new Date(cutoff)]))
          .rows[0]?.n,
        0,
      );
      if (timescale) {
        const old = await pool.query(`SELECT c FROM show_chunks('events', older_than => $1::timestamptz) c`, [
          new Date(cutoff),
        ]);
        assert.equal(old.rows.length, 0, 'whole chunks were dropped');
      }
      assert.equal(await horizonMs(pool), cutoff);
      assert.deepEqual(await stored(pool), onHandOf(book), 'stock did not change');
      assert.deepEqual((await rebuild(pool)).drift, [], 'rebuild = baseline + the log: no drift');

      // Without the baseline the log alone disagrees: the mechanism, not luck, keeps rebuild clean.
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await client.query('DELETE FROM stock_baseline');
        const alone = await rebuild(client as unknown as pg.Pool);
        assert.ok(alone.drift.length >= 2, `the log alone drifts on ${alone.drift.length} rows`);
      } finally {
        await client.query('ROLLBACK');
        client.release();
      }
      assert.equal(
        Number(
          (await pool.query(`SELECT * FROM stockwire_archive_events(now() - INTERVAL '12 days')`)).rows[0]?.archived,
        ),
        0,
        'idempotent',
      );

      // 2. An edge that was offline for a month sends events older than the horizon: a receipt, a count, a shipment.
      const late: StockEvent[] = [
        {
          wh: 'W1',
          device: 'd9',
          sku: 'A',
          id: 'late1',
          type: 'received',
          qty: 1_000,
          ts: NOW - 30 * DAY,
          receivedAt: NOW,
          payload: {},
        } as StockEvent,
        {
          wh: 'W1',
          device: 'd9',
          sku: 'B',
          id: 'late2',
          type: 'counted',
          qty: 500,
          ts: NOW - 25 * DAY,
          receivedAt: NOW,
          payload: {},
        } as StockEvent,
        {
          wh: 'W1',
          device: 'd9',
          sku: 'C',
          id: 'late3',
          type: 'shipped',
          qty: 3,
          ts: NOW - 20 * DAY,
          receivedAt: NOW,
          payload: {},
        } as StockEvent,
        {
          wh: 'W1',
          device: 'd9',
          sku: 'B',
          id: 'now1',
          type: 'received',
          qty: 2,
          ts: NOW - 1_000,
          receivedAt: NOW,
          payload: {},
        } as StockEvent,
      ];
      await apply(pool, late);
      const h = await horizonMs(pool);
      // The contract's order, with each late event's time raised to the horizon (README "Retention").
      for (const e of late) book = applyToBook(book, { ...e, ts: Math.max(e.ts, h) }).book;
      assert.deepEqual(await stored(pool), onHandOf(book));
      const clamped = await pool.query<{ id: string; ts: Date }>(
        `SELECT id, ts FROM events WHERE id LIKE 'late%' ORDER BY id`,
      );
      assert.deepEqual(
        clamped.rows.map((r) => r.ts.getTime()),
        [h, h, h],
        'stored at the horizon',
      );
      assert.deepEqual((await rebuild(pool)).drift, []);
      const dup = await applyBatch(pool, late.map(parsed));
      assert.deepEqual(
        dup.decisions.map((d) => d.status),
        ['duplicate', 'duplicate', 'duplicate', 'duplicate'],
        'dedupe holds across the archive',
      );

      // 3. The next archive folds them too; on TimescaleDB through the scheduled job itself.
      if (timescale) {
        const job = (
          await pool.query<{ job_id: number }>(
            `SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'stockwire_archive_job'`,
          )
        ).rows[0]?.job_id;
        assert.ok(job !== undefined, 'the archive job is scheduled');
        await pool.query(`SELECT alter_job($1, config => '{"retention_days": 3}')`, [job]);
        await pool.query('CALL run_job($1)', [job]);
      } else {
        await pool.query(`SELECT * FROM stockwire_archive_events(now() - INTERVAL '3 days')`);
      }
      assert.ok((await horizonMs(pool)) > h, 'the horizon moved on');
      assert.equal(
        (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM events WHERE id LIKE 'late%'`)).rows[0]?.n,
        0,
        'the late events were archived',
      );
      assert.deepEqual(await stored(pool), onHandOf(book));
      assert.deepEqual((await rebuild(pool)).drift, []);
      const baseline = await pool.query<{ sku: string; events: string }>(
        'SELECT sku, events FROM stock_baseline ORDER BY sku',
      );
      assert.deepEqual(
        baseline.rows.map((r) => r.sku),
        ['A', 'B', 'C'],
      );
    });
  });
}
