import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import Postgrator from 'postgrator';
import type { StockEvent } from '../../protocol/index.js';
import { migrate } from '../../processors/db/migrate.js';
import { createPool } from '../../processors/db/pool.js';
import { applyBatch } from '../../processors/ingest/batch.js';
import { contentDigest } from '../../processors/ingest/sql.js';
import type { Parsed } from '../../processors/ingest/types.js';
import { rebuild } from '../../processors/rebuild.js';
import { ADMIN_URL, createDatabaseOn, latestSchemaVersion, type TestDatabase } from '../helpers/db.js';
import { pauseJobs, timescaleAdminUrl } from '../helpers/timescale.js';

const MIGRATIONS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../processors/db/migrations/*.sql');
const DAY = 86_400_000; // ms

/** What schema v2 (the release before the archive, c304a39^) did on TimescaleDB after its SQL migrations, frozen. */
const V2_TIMESCALE = [
  `CREATE EXTENSION IF NOT EXISTS timescaledb`,
  `SELECT create_hypertable('events', by_range('ts', INTERVAL '1 day'), if_not_exists => TRUE, migrate_data => TRUE)`,
  `SELECT create_hypertable('shelf_readings', by_range('ts', INTERVAL '1 day'), if_not_exists => TRUE, migrate_data => TRUE)`,
  `ALTER TABLE events SET (timescaledb.compress, timescaledb.compress_segmentby = 'wh, sku', timescaledb.compress_orderby = 'ts, id, device')`,
  `ALTER TABLE shelf_readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'wh, location, sku', timescaledb.compress_orderby = 'ts')`,
  `SELECT add_compression_policy('events', INTERVAL '7 days', if_not_exists => TRUE)`,
  `SELECT add_compression_policy('shelf_readings', INTERVAL '7 days', if_not_exists => TRUE)`,
  `SELECT add_retention_policy('events', INTERVAL '3650 days', if_not_exists => TRUE)`,
  `SELECT add_retention_policy('shelf_readings', INTERVAL '90 days', if_not_exists => TRUE)`,
  `DROP VIEW IF EXISTS movements_hourly`,
  `CREATE MATERIALIZED VIEW IF NOT EXISTS movements_hourly WITH (timescaledb.continuous) AS
     SELECT time_bucket(INTERVAL '1 hour', ts) AS bucket, wh, sku, type,
            sum(qty)::bigint AS qty, sum(delta)::bigint AS delta, count(*)::bigint AS events
     FROM events GROUP BY 1, 2, 3, 4 WITH NO DATA`,
  `SELECT add_continuous_aggregate_policy('movements_hourly', start_offset => INTERVAL '30 days',
     end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes', if_not_exists => TRUE)`,
];
const V2_PLAIN = [
  `CREATE OR REPLACE VIEW movements_hourly AS
     SELECT date_trunc('hour', ts) AS bucket, wh, sku, type,
            sum(qty)::bigint AS qty, sum(delta)::bigint AS delta, count(*)::bigint AS events
     FROM events GROUP BY 1, 2, 3, 4`,
];

/** A database as schema v2 left it. */
async function migrateToV2(pool: pg.Pool, timescale: boolean): Promise<void> {
  await migrateSqlTo(pool, '002', timescale ? V2_TIMESCALE : V2_PLAIN);
}

/** Schema v4's SQL migrations, then what it did on TimescaleDB that the batch's statements meet: hypertables. */
async function migrateToV4(pool: pg.Pool, timescale: boolean): Promise<void> {
  const hypertables = [
    `CREATE EXTENSION IF NOT EXISTS timescaledb`,
    `SELECT create_hypertable('events', by_range('ts', INTERVAL '1 day'), if_not_exists => TRUE, migrate_data => TRUE)`,
    `SELECT create_hypertable('shelf_readings', by_range('ts', INTERVAL '1 day'), if_not_exists => TRUE, migrate_data => TRUE)`,
  ];
  await migrateSqlTo(pool, '004', timescale ? hypertables : V2_PLAIN);
}

async function migrateSqlTo(pool: pg.Pool, version: string, then: string[]): Promise<void> {
  const client = await pool.connect();
  try {
    const postgrator = new Postgrator({
      migrationPattern: MIGRATIONS,
      driver: 'pg',
      schemaTable: 'stockwire_schema_version',
      execQuery: (sql: string) => client.query(sql),
    });
    await postgrator.migrate(version);
    for (const sql of then) await client.query(sql);
  } finally {
    client.release();
  }
}

let seq = 0;
const event = (e: Partial<StockEvent> & Pick<StockEvent, 'type' | 'qty' | 'ts'>): Parsed => {
  const full = { wh: 'W1', device: 'd1', sku: 'A', id: `e${++seq}`, receivedAt: e.ts, payload: {}, ...e } as StockEvent;
  return {
    delivery: {
      topic: `wh/${full.wh}/dev/${full.device}/event`,
      payload: Buffer.from('{}'),
      wh: full.wh,
      device: full.device,
      source: 'test',
      receivedAt: full.ts,
    },
    ok: true,
    event: full,
  };
};

async function snapshot(pool: pg.Pool) {
  const stock = await pool.query('SELECT wh, sku, on_hand, reserved, version FROM stock ORDER BY 1, 2');
  const movements = await pool.query(
    'SELECT bucket, wh, sku, type, qty, delta, events FROM movements_hourly ORDER BY 1, 2, 3, 4',
  );
  return { stock: stock.rows, movements: movements.rows };
}

for (const server of ['PostgreSQL', 'TimescaleDB'] as const) {
  const timescale = server === 'TimescaleDB';
  describe(`migrations on ${server}`, () => {
    const dbs: TestDatabase[] = [];
    const pools: pg.Pool[] = [];
    const fresh = async (label: string) => {
      const db = await createDatabaseOn(timescale ? timescaleAdminUrl() : ADMIN_URL, label);
      dbs.push(db);
      const pool = createPool({ url: db.url, max: 4 });
      pools.push(pool);
      return pool;
    };
    before(() => {
      seq = 0;
    });
    after(async () => {
      for (const p of pools) await p.end();
      for (const d of dbs) await d.drop();
    });

    it('migrates twice in a row and twice at once to the same version and storage', async () => {
      const pool = await fresh('mig_twice');
      const first = await migrate(pool);
      assert.equal(first.storage.kind, timescale ? 'timescaledb' : 'postgresql');
      assert.equal(first.timescale, timescale);
      const again = await migrate(pool);
      const both = await Promise.all([migrate(pool), migrate(pool)]);
      for (const r of [again, ...both]) assert.deepEqual(r, first);
      const jobs = timescale
        ? (
            await pool.query(
              `SELECT proc_name FROM timescaledb_information.jobs WHERE proc_name = 'stockwire_archive_job'`,
            )
          ).rows
        : [];
      assert.equal(jobs.length, timescale ? 1 : 0, 'one archive job, however often migrated');
    });

    it('upgrades a v2 database with data (compressed chunks, a filled continuous aggregate) without changing stock', async () => {
      const pool = await fresh('mig_upgrade');
      await migrateToV2(pool, timescale);
      if (timescale) await pauseJobs(pool);
      const now = Date.now();
      // Twenty days of movements, a count in the middle: chunks older than 7 days exist to compress.
      const batch: Parsed[] = [];
      for (let d = 20; d >= 1; d--) {
        batch.push(event({ type: 'received', qty: 10, ts: now - d * DAY }));
        batch.push(event({ type: 'shipped', qty: 3, ts: now - d * DAY + 3_600_000, sku: 'B' }));
        if (d === 10) batch.push(event({ type: 'counted', qty: 50, ts: now - d * DAY + 1 }));
      }
      // v2's batch did not know the horizon table; the rows it wrote are what a v2 central left.
      for (const p of batch) {
        const e = (p as Parsed & { ok: true }).event;
        await pool.query(`INSERT INTO inbox (wh, device, id, sku) VALUES ($1, $2, $3, $4)`, [
          e.wh,
          e.device,
          e.id,
          e.sku,
        ]);
        await pool.query(
          `INSERT INTO events (ts, wh, device, id, type, sku, qty, delta, payload, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '{}', $1)`,
          [
            new Date(e.ts),
            e.wh,
            e.device,
            e.id,
            e.type,
            e.sku,
            e.qty,
            e.type === 'received' ? e.qty : e.type === 'shipped' ? -e.qty : 0,
          ],
        );
      }
      // Stock as v2 stored it: A = 50 counted on day 10 + 9 receipts after it; B = 20 shipments of 3.
      await pool.query(
        `INSERT INTO stock (wh, sku, on_hand, version) VALUES ('W1', 'A', 140, 21), ('W1', 'B', -60, 20)`,
      );
      await pool.query(
        `UPDATE stock SET anchor_ts = e.ts, anchor_id = e.id, anchor_device = e.device, anchor_qty = e.qty FROM events e WHERE e.type = 'counted' AND stock.sku = 'A' AND e.sku = 'A'`,
      );
      if (timescale) {
        await pool.query(
          `SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('events', older_than => INTERVAL '7 days') c`,
        );
        await pool.query(`CALL refresh_continuous_aggregate('movements_hourly', NULL, NULL)`);
      }
      const before = await snapshot(pool);
      assert.ok(before.movements.length >= 40, `v2's aggregate is filled (${before.movements.length} rows)`);
      const compressedBefore = timescale
        ? (
            await pool.query(
              `SELECT count(*)::int AS n FROM timescaledb_information.chunks WHERE hypertable_name = 'events' AND is_compressed`,
            )
          ).rows[0].n
        : 0;
      if (timescale) assert.ok(compressedBefore >= 12, `compressed chunks: ${compressedBefore}`);

      const result = await migrate(pool);
      assert.equal(result.version, latestSchemaVersion());
      assert.deepEqual((await rebuild(pool)).drift, [], 'no drift after the upgrade');
      assert.deepEqual(await snapshot(pool), before, 'stock and movements as they were');
      if (timescale) {
        const jobs = (
          await pool.query(`SELECT proc_name, hypertable_name FROM timescaledb_information.jobs ORDER BY 1, 2`)
        ).rows.map((r) => `${r.proc_name}:${r.hypertable_name ?? ''}`);
        assert.ok(!jobs.includes('policy_retention:events'), `v2's retention policy on events is gone: ${jobs}`);
        assert.ok(jobs.includes('stockwire_archive_job:'), `the archive job took its place: ${jobs}`);
        assert.ok(jobs.includes('policy_retention:shelf_readings'), 'shelf readings keep theirs');
        const compressedAfter = (
          await pool.query(
            `SELECT count(*)::int AS n FROM timescaledb_information.chunks WHERE hypertable_name = 'events' AND is_compressed`,
          )
        ).rows[0].n;
        assert.equal(compressedAfter, compressedBefore, 'compressed chunks stay compressed');
      }

      // The upgraded ledger goes on: a late receipt into a compressed day, a new count, a repeat.
      const late = event({ type: 'received', qty: 7, ts: now - 15 * DAY, sku: 'B' });
      const count = event({ type: 'counted', qty: 30, ts: now - 1000 });
      const r = await applyBatch(pool, [late, count, batch[0] as Parsed]);
      assert.deepEqual(
        r.decisions.map((d) => d.status),
        ['applied', 'applied', 'duplicate'],
      );
      const stock = (await pool.query(`SELECT sku, on_hand FROM stock ORDER BY sku`)).rows;
      assert.deepEqual(stock, [
        { sku: 'A', on_hand: 30 },
        { sku: 'B', on_hand: -53 },
      ]);
      assert.deepEqual((await rebuild(pool)).drift, []);
      // migrations/004: new keys keep a digest of their content, v2's have none and are not checked for reuse.
      const kept = (
        await pool.query(
          `SELECT count(*) FILTER (WHERE content IS NULL)::int AS unchecked, count(*) FILTER (WHERE content IS NOT NULL)::int AS checked FROM inbox`,
        )
      ).rows[0];
      assert.deepEqual(kept, { unchecked: batch.length, checked: 2 });
      const other = (p: Parsed): Parsed =>
        ({ ...p, event: { ...(p as Parsed & { ok: true }).event, qty: 99 } }) as Parsed;
      const repeats = await applyBatch(pool, [other(late), other(batch[1] as Parsed)]);
      assert.deepEqual(
        repeats.decisions.map((d) => d.status),
        ['duplicate', 'duplicate'],
      );
      assert.deepEqual(
        repeats.deadLetters.map((d) => d.code),
        ['id_reused'],
        'only the key decided after the upgrade is checked',
      );
      assert.deepEqual(await migrate(pool), result, 'and migrates again to the same');
    });

    // migrations/005: the batch is one call of stockwire_apply_batch, which a v4 database does not have.
    it('upgrades a v4 database: the batch function is installed and a batch applies, dedupes and finds reused ids', async () => {
      const pool = await fresh('mig_v4');
      await migrateToV4(pool, timescale);
      if (timescale) await pauseJobs(pool);
      const installed = async () =>
        (await pool.query(`SELECT to_regprocedure('stockwire_apply_batch(jsonb)') IS NOT NULL AS ok`)).rows[0].ok;
      assert.equal(await installed(), false, 'v4 has no batch function');
      // What a v4 central left: a key with its content digest, its event, its stock row.
      const now = Date.now();
      const first = event({ type: 'received', qty: 10, ts: now - 2 * DAY, wh: 'W4' });
      const e = (first as Parsed & { ok: true }).event;
      await pool.query(`INSERT INTO inbox (wh, device, id, sku, content) VALUES ($1, $2, $3, $4, $5)`, [
        e.wh,
        e.device,
        e.id,
        e.sku,
        contentDigest(e),
      ]);
      await pool.query(
        `INSERT INTO events (ts, wh, device, id, type, sku, qty, delta, payload, received_at) VALUES ($1, $2, $3, $4, 'received', $5, 10, 10, '{}', $1)`,
        [new Date(e.ts), e.wh, e.device, e.id, e.sku],
      );
      await pool.query(`INSERT INTO stock (wh, sku, on_hand, version) VALUES ('W4', 'A', 10, 1)`);

      const result = await migrate(pool);
      assert.equal(result.version, latestSchemaVersion());
      assert.equal(await installed(), true, 'the upgrade installs it');
      const count = event({ type: 'counted', qty: 30, ts: now - DAY, wh: 'W4' });
      const after = event({ type: 'shipped', qty: 4, ts: now - 1000, wh: 'W4' });
      const reused: Parsed = { ...first, event: { ...e, qty: 11 } } as Parsed;
      const r = await applyBatch(pool, [count, after, first, reused]);
      assert.deepEqual(
        r.decisions.map((d) => d.status),
        ['applied', 'applied', 'duplicate', 'duplicate'],
      );
      assert.deepEqual(r.decisions[2], { status: 'duplicate', id: e.id, stock: { onHand: 26, available: 26 } });
      assert.deepEqual(
        r.deadLetters.map((d) => d.code),
        ['id_reused'],
        "v4's digest is compared",
      );
      assert.deepEqual(
        r.warehouseStock.map((s) => [s.warehouse, s.sku, s.onHand, s.version]),
        [['W4', 'A', 26, 2]],
      );
      assert.deepEqual((await rebuild(pool)).drift, []);
      assert.deepEqual(await migrate(pool), result, 'and migrates again to the same');
    });
  });
}
