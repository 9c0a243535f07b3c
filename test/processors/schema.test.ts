import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import { migrate } from '../../processors/db/migrate.js';
import { createPool } from '../../processors/db/pool.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

describe('schema on plain PostgreSQL', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  before(async () => {
    db = await createTestDatabase('schema');
    pool = createPool({ url: db.url, max: 3 });
  });
  after(async () => {
    await pool.end();
    await db.drop();
  });

  it('migrates twice, concurrently, to the same version, with an ordinary hourly-movements view', async () => {
    const [a, b] = await Promise.all([migrate(pool), migrate(pool)]);
    assert.equal(a.version, b.version);
    assert.equal(a.timescale, a.storage.kind === "timescaledb");
    if (a.timescale) return; // the TimescaleDB path is checked below, against TIMESCALE_URL
    const { rows } = await pool.query(`SELECT relkind FROM pg_class WHERE relname = 'movements_hourly'`);
    assert.equal(rows[0]?.relkind, 'v');
    await pool.query(`INSERT INTO events (ts, wh, device, id, type, sku, qty, delta, payload, received_at)
      VALUES ('2026-01-01T10:15:00Z', 'W', 'd', '1', 'received', 'S', 5, 5, '{}', now()), ('2026-01-01T10:45:00Z', 'W', 'd', '2', 'shipped', 'S', 2, -2, '{}', now())`);
    const hour = await pool.query(`SELECT type, qty, delta FROM movements_hourly WHERE sku = 'S' ORDER BY type`);
    assert.deepEqual(hour.rows, [{ type: 'received', qty: 5, delta: 5 }, { type: 'shipped', qty: 2, delta: -2 }]);
    // Whole UTC hours, as on TimescaleDB, whatever the session's time zone (India is UTC+5:30).
    const client = await pool.connect();
    try {
      await client.query(`SET TIME ZONE 'Asia/Kolkata'`);
      const buckets = await client.query<{ bucket: Date }>(`SELECT DISTINCT bucket FROM movements_hourly WHERE sku = 'S'`);
      assert.deepEqual(buckets.rows.map((r) => r.bucket.toISOString()), ['2026-01-01T10:00:00.000Z']);
    } finally {
      client.release();
    }
  });
});

const TIMESCALE_URL = process.env.TIMESCALE_URL;
describe('schema on TimescaleDB', { skip: TIMESCALE_URL ? false : 'TIMESCALE_URL is not set: TimescaleDB cannot be installed on this machine; set it to a TimescaleDB server to run this' }, () => {
  it('makes hypertables with compression and retention policies and a continuous aggregate', async () => {
    const pool = createPool({ url: TIMESCALE_URL as string, max: 2 });
    try {
      await pool.query('DROP TABLE IF EXISTS stockwire_schema_version, inbox, events, stock, sku_versions, shelf_readings, shelf_latest, dead_letters, reservations, transfers, idempotency_keys CASCADE');
      const result = await migrate(pool);
      assert.equal(result.timescale, true);
      const hypertables = await pool.query(`SELECT hypertable_name FROM timescaledb_information.hypertables ORDER BY 1`);
      assert.deepEqual(hypertables.rows.map((r) => r.hypertable_name), ['events', 'shelf_readings']);
      const jobs = await pool.query(`SELECT proc_name, hypertable_name FROM timescaledb_information.jobs WHERE hypertable_name IS NOT NULL ORDER BY 1, 2`);
      const names = jobs.rows.map((r) => `${r.proc_name}:${r.hypertable_name}`);
      for (const job of ['policy_compression:events', 'policy_compression:shelf_readings', 'policy_retention:events', 'policy_retention:shelf_readings']) assert.ok(names.includes(job), job);
      const caggs = await pool.query(`SELECT view_name FROM timescaledb_information.continuous_aggregates`);
      assert.deepEqual(caggs.rows.map((r) => r.view_name), ['movements_hourly']);
      assert.equal((await migrate(pool)).timescale, true, 'idempotent');
    } finally {
      await pool.end();
    }
  });
});
