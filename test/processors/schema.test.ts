import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import { migrate } from '../../processors/db/migrate.js';
import { createPool } from '../../processors/db/pool.js';
import { ADMIN_URL, createTestDatabase, timescaleSkip, type TestDatabase } from '../helpers/db.js';

// npm test runs this file twice: on the machine's plain PostgreSQL, then with TEST_DATABASE_URL on TimescaleDB.
describe(`schema on the pass's server (${new URL(ADMIN_URL).host})`, () => {
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

  it('migrates twice, concurrently, to the same version, with the hourly-movements view the server allows', async () => {
    const [a, b] = await Promise.all([migrate(pool), migrate(pool)]);
    assert.equal(a.version, b.version);
    assert.equal(a.timescale, a.storage.kind === 'timescaledb');
    if (a.timescale) {
      const caggs = await pool.query(`SELECT view_name FROM timescaledb_information.continuous_aggregates`);
      assert.deepEqual(
        caggs.rows.map((r) => r.view_name),
        ['movements_hourly'],
      );
      return; // its policies are checked below
    }
    const { rows } = await pool.query(`SELECT relkind FROM pg_class WHERE relname = 'movements_hourly'`);
    assert.equal(rows[0]?.relkind, 'v');
    await pool.query(`INSERT INTO events (ts, wh, device, id, type, sku, qty, delta, payload, received_at)
      VALUES ('2026-01-01T10:15:00Z', 'W', 'd', '1', 'received', 'S', 5, 5, '{}', now()), ('2026-01-01T10:45:00Z', 'W', 'd', '2', 'shipped', 'S', 2, -2, '{}', now())`);
    const hour = await pool.query(`SELECT type, qty, delta FROM movements_hourly WHERE sku = 'S' ORDER BY type`);
    assert.deepEqual(hour.rows, [
      { type: 'received', qty: 5, delta: 5 },
      { type: 'shipped', qty: 2, delta: -2 },
    ]);
    // Whole UTC hours, as on TimescaleDB, whatever the session's time zone (India is UTC+5:30).
    const client = await pool.connect();
    try {
      await client.query(`SET TIME ZONE 'Asia/Kolkata'`);
      const buckets = await client.query<{ bucket: Date }>(
        `SELECT DISTINCT bucket FROM movements_hourly WHERE sku = 'S'`,
      );
      assert.deepEqual(
        buckets.rows.map((r) => r.bucket.toISOString()),
        ['2026-01-01T10:00:00.000Z'],
      );
    } finally {
      client.release();
    }
  });
});

// Whatever the pass, on TIMESCALE_URL's server, in a database of its own (the server is shared with other files and engineers).
describe('schema on TimescaleDB', { skip: timescaleSkip() }, () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  before(async () => {
    db = await createTestDatabase('schema_ts', { server: 'timescale' });
    pool = createPool({ url: db.url, max: 2 });
  });
  after(async () => {
    await pool?.end();
    await db?.drop();
  });

  it('makes hypertables with compression and retention policies and a continuous aggregate', async () => {
    const result = await migrate(pool);
    assert.equal(result.timescale, true);
    const hypertables = await pool.query(`SELECT hypertable_name FROM timescaledb_information.hypertables ORDER BY 1`);
    assert.deepEqual(
      hypertables.rows.map((r) => r.hypertable_name),
      ['events', 'shelf_readings'],
    );
    const jobs = await pool.query(
      `SELECT proc_name, hypertable_name FROM timescaledb_information.jobs WHERE job_id >= 1000 ORDER BY 1, 2`,
    );
    const names = jobs.rows.map((r) => `${r.proc_name}:${r.hypertable_name ?? ''}`);
    for (const job of [
      'policy_compression:events',
      'policy_compression:shelf_readings',
      'policy_retention:shelf_readings',
      'stockwire_archive_job:',
    ])
      assert.ok(names.includes(job), job);
    assert.ok(
      !names.includes('policy_retention:events'),
      'events are archived into the stock baseline, never dropped by a plain retention policy',
    );
    const caggs = await pool.query(`SELECT view_name FROM timescaledb_information.continuous_aggregates`);
    assert.deepEqual(
      caggs.rows.map((r) => r.view_name),
      ['movements_hourly'],
    );
    assert.equal((await migrate(pool)).timescale, true, 'idempotent');
  });
});
