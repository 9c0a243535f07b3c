import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import type { StockEvent } from '../../protocol/index.js';
import { migrate } from '../../processors/db/migrate.js';
import { createPool } from '../../processors/db/pool.js';
import { applyBatch } from '../../processors/ingest/batch.js';
import type { Parsed } from '../../processors/ingest/types.js';
import { applyToBook, emptyBook, stockKey, type Book } from '../../processors/ledger/ledger.js';
import { rebuild } from '../../processors/rebuild.js';
import type { TestDatabase } from '../helpers/db.js';
import { createTimescaleDatabase, pauseJobs } from '../helpers/timescale.js';

const HOUR = 3_600_000; // ms
const DAY = 24 * HOUR;
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
let n = 0;
let wh = 'W1'; // each test its own warehouse: TRUNCATE leaves a continuous aggregate's materialized rows behind
const ev = (type: StockEvent['type'], sku: string, qty: number, ts: number, device = 'd1'): StockEvent =>
  ({ wh, device, sku, id: `t${++n}`, type, qty, ts, receivedAt: NOW, payload: {} }) as StockEvent;

const onHandOf = (book: Book) => new Map([...book.stock].map(([k, s]) => [k, s.onHand]));
async function stored(pool: pg.Pool): Promise<Map<string, number>> {
  const { rows } = await pool.query<{ wh: string; sku: string; on_hand: number }>('SELECT wh, sku, on_hand FROM stock');
  return new Map(rows.map((r) => [stockKey(r.wh, r.sku), r.on_hand]));
}

describe('TimescaleDB time series', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  before(async () => {
    db = await createTimescaleDatabase('tsdb');
    pool = createPool({ url: db.url, max: 3 });
    const schema = await migrate(pool);
    assert.equal(schema.storage.kind, 'timescaledb', 'this file runs on TimescaleDB');
    await pauseJobs(pool); // compression and refreshes run when the tests say, not when the scheduler does
  });
  after(async () => {
    await pool.end();
    await db.drop();
  });

  it('events arriving late into compressed chunks are applied exactly once, whatever their order', async () => {
    wh = 'W1';
    // Three weeks of history 10-30 days old: every chunk of it is older than the compression age (7 days).
    const history: StockEvent[] = [];
    for (let d = 30; d >= 10; d--) {
      history.push(
        ev('received', 'P', 20, NOW - d * DAY),
        ev('shipped', 'P', 5, NOW - d * DAY + HOUR, 'd2'),
        ev('received', 'Q', 3, NOW - d * DAY + 2 * HOUR),
      );
      if (d === 20) history.push(ev('counted', 'P', 400, NOW - d * DAY + 3 * HOUR));
    }
    const first = await applyBatch(pool, history.map(parsed));
    assert.ok(first.decisions.every((d) => d.status === 'applied'));
    await pool.query(
      `SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('events', older_than => INTERVAL '7 days') c`,
    );
    const chunks = await pool.query<{ compressed: boolean; n: number }>(
      `SELECT is_compressed AS compressed, count(*)::int AS n FROM timescaledb_information.chunks WHERE hypertable_name = 'events' AND hypertable_schema = current_schema() GROUP BY 1`,
    );
    assert.deepEqual(chunks.rows, [{ compressed: true, n: 21 }], 'every chunk of the history is compressed');

    // An edge offline for two weeks comes back: deltas before and after the count, a count older than it (changes
    // nothing), then a newer count (recounts over compressed rows) — with repeats of compressed events mixed in.
    const late = [
      ev('received', 'P', 7, NOW - 25 * DAY, 'd3'),
      ev('shipped', 'P', 11, NOW - 15 * DAY, 'd3'),
      ev('counted', 'P', 999, NOW - 22 * DAY, 'd3'),
      ev('adjusted', 'Q', -2, NOW - 12 * DAY, 'd3'),
      ev('counted', 'P', 250, NOW - 14 * DAY, 'd3'),
      ev('received', 'P', 1, NOW - 11 * DAY, 'd3'),
    ];
    const repeats = [history[0], history[30], history[history.length - 1]] as StockEvent[];
    const mixed = [
      late[0],
      repeats[0],
      late[1],
      late[2],
      repeats[1],
      late[3],
      late[3],
      late[4],
      repeats[2],
      late[5],
    ] as StockEvent[];
    const r = await applyBatch(pool, mixed.slice(0, 5).map(parsed));
    const r2 = await applyBatch(pool, mixed.slice(5).map(parsed));
    assert.deepEqual(
      [...r.decisions, ...r2.decisions].map((d) => d.status),
      [
        'applied',
        'duplicate',
        'applied',
        'applied',
        'duplicate',
        'applied',
        'duplicate',
        'applied',
        'duplicate',
        'applied',
      ],
    );
    const book = [...history, ...late].reduce((b, e) => applyToBook(b, e).book, emptyBook);
    assert.deepEqual(await stored(pool), onHandOf(book), 'stock as the contract orders it');
    assert.equal(
      (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM events')).rows[0]?.n,
      history.length + late.length,
      'each event stored once',
    );
    assert.deepEqual((await rebuild(pool)).drift, []);

    // The whole outage resent (the edge never saw the acks): nothing changes.
    const again = await applyBatch(pool, [...late, ...history].map(parsed));
    assert.ok(again.decisions.every((d) => d.status === 'duplicate'));
    assert.deepEqual(await stored(pool), onHandOf(book));
    assert.equal(
      (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM events')).rows[0]?.n,
      history.length + late.length,
    );
  });

  it('movements_hourly agrees with the event log after its refresh policy runs, late events and the last hour included', async () => {
    wh = 'W2';
    const raw = `SELECT time_bucket(INTERVAL '1 hour', ts) AS bucket, wh, sku, type, sum(qty)::bigint AS qty, sum(delta)::bigint AS delta, count(*)::bigint AS events
                 FROM events WHERE wh = 'W2' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4`;
    const agg = `SELECT bucket, wh, sku, type, qty, delta, events FROM movements_hourly WHERE wh = 'W2' ORDER BY 1, 2, 3, 4`;
    const policy = (
      await pool.query<{ job_id: number }>(
        `SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_refresh_continuous_aggregate' AND hypertable_name = 'movements_hourly'`,
      )
    ).rows[0]?.job_id;
    assert.ok(policy !== undefined, 'movements_hourly has a refresh policy');

    const twoDays: StockEvent[] = [];
    for (let h = 48; h >= 0; h -= 3)
      twoDays.push(
        ev('received', 'M', 10 + h, NOW - h * HOUR - 60_000),
        ev('shipped', 'M', 4, NOW - h * HOUR - 30_000),
        ev('counted', 'N', h, NOW - h * HOUR - 10_000),
      );
    twoDays.push(ev('adjusted', 'M', -3, NOW - 5 * 60_000)); // inside the last hour: not materialized (end_offset)
    await applyBatch(pool, twoDays.map(parsed));
    await pool.query('CALL run_job($1)', [policy]);
    assert.deepEqual((await pool.query(agg)).rows, (await pool.query(raw)).rows, 'after the first refresh');
    const recent = (
      await pool.query(
        `SELECT count(*)::int AS n FROM movements_hourly WHERE wh = 'W2' AND bucket > now() - INTERVAL '1 hour'`,
      )
    ).rows[0]?.n;
    assert.ok(recent > 0, 'the last hour is there (real-time aggregation)');

    // Late events into hours the aggregate already materialized, then the policy's next run.
    const late = [
      ev('received', 'M', 1_000, NOW - 30 * HOUR, 'd7'),
      ev('shipped', 'M', 1, NOW - 30 * HOUR + 1, 'd7'),
      ev('received', 'Z', 5, NOW - 40 * HOUR, 'd7'),
    ];
    await applyBatch(pool, [...late, ...late].map(parsed)); // with their repeats, which add nothing
    await pool.query('CALL run_job($1)', [policy]);
    const rows = (await pool.query(agg)).rows;
    assert.deepEqual(rows, (await pool.query(raw)).rows, 'after the late events and the next refresh');
    assert.ok(
      rows.some((r) => r.sku === 'Z' && Number(r.qty) === 5),
      'the late sku is in the aggregate once',
    );
  });
});
