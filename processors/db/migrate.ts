import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import Postgrator from 'postgrator';

const MIGRATIONS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'migrations', '*.sql');
// Serialises concurrent `migrate` runs of several processes against one database.
const MIGRATION_LOCK = 0x5707c3; // advisory lock key

export interface MigrateOptions {
  /** days of book events kept by the TimescaleDB retention policy */
  eventRetentionDays?: number;
  /** days of shelf readings kept by the TimescaleDB retention policy */
  shelfRetentionDays?: number;
}

export interface MigrateResult {
  version: number;
  timescale: boolean;
}

export async function timescaleAvailable(pool: pg.Pool | pg.PoolClient): Promise<boolean> {
  const { rows } = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_available_extensions WHERE name = 'timescaledb'`);
  return (rows[0]?.n ?? 0) > 0;
}

/** Creates or upgrades the schema; idempotent, safe to run from several processes at once. */
export async function migrate(pool: pg.Pool, options: MigrateOptions = {}): Promise<MigrateResult> {
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    const postgrator = new Postgrator({
      migrationPattern: MIGRATIONS,
      driver: 'pg',
      schemaTable: 'stockwire_schema_version',
      execQuery: (sql: string) => client.query(sql),
    });
    const applied = await postgrator.migrate();
    const version = applied.length > 0 ? Number(applied[applied.length - 1]?.version) : Number(await postgrator.getDatabaseVersion());
    const timescale = await timescaleAvailable(client);
    if (timescale) await applyTimescale(client, options);
    else await applyPlainViews(client);
    return { version, timescale };
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => {});
    client.release();
  }
}

/**
 * TimescaleDB features, applied only where the extension is installable. Each statement
 * runs on its own (continuous aggregates cannot be created inside a transaction) and is idempotent.
 */
async function applyTimescale(client: pg.PoolClient, options: MigrateOptions): Promise<void> {
  const eventDays = options.eventRetentionDays ?? 3650;
  const shelfDays = options.shelfRetentionDays ?? 90;
  const statements = [
    `CREATE EXTENSION IF NOT EXISTS timescaledb`,
    `SELECT create_hypertable('events', by_range('ts', INTERVAL '1 day'), if_not_exists => TRUE, migrate_data => TRUE)`,
    `SELECT create_hypertable('shelf_readings', by_range('ts', INTERVAL '1 day'), if_not_exists => TRUE, migrate_data => TRUE)`,
    `ALTER TABLE events SET (timescaledb.compress, timescaledb.compress_segmentby = 'wh, sku', timescaledb.compress_orderby = 'ts, id, device')`,
    `ALTER TABLE shelf_readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'wh, location, sku', timescaledb.compress_orderby = 'ts')`,
    `SELECT add_compression_policy('events', INTERVAL '7 days', if_not_exists => TRUE)`,
    `SELECT add_compression_policy('shelf_readings', INTERVAL '7 days', if_not_exists => TRUE)`,
    `SELECT add_retention_policy('events', INTERVAL '${Math.trunc(eventDays)} days', if_not_exists => TRUE)`,
    `SELECT add_retention_policy('shelf_readings', INTERVAL '${Math.trunc(shelfDays)} days', if_not_exists => TRUE)`,
    // The plain view of an earlier start without TimescaleDB makes way for the continuous aggregate; a continuous
    // aggregate is a view in pg_class too, but DROP VIEW refuses it, so only a plain one is dropped.
    `DO $$ BEGIN
       IF EXISTS (SELECT 1 FROM pg_views WHERE viewname = 'movements_hourly' AND schemaname = current_schema())
          AND NOT EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates WHERE view_name = 'movements_hourly' AND view_schema = current_schema())
       THEN DROP VIEW movements_hourly; END IF; END $$`,
    `CREATE MATERIALIZED VIEW IF NOT EXISTS movements_hourly WITH (timescaledb.continuous) AS
       SELECT time_bucket(INTERVAL '1 hour', ts) AS bucket, wh, sku, type,
              sum(qty)::bigint AS qty, sum(delta)::bigint AS delta, count(*)::bigint AS events
       FROM events GROUP BY 1, 2, 3, 4 WITH NO DATA`,
    `SELECT add_continuous_aggregate_policy('movements_hourly', start_offset => INTERVAL '30 days',
       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes', if_not_exists => TRUE)`,
  ];
  for (const sql of statements) await client.query(sql);
}

/**
 * Plain PostgreSQL: the same hourly movements as an ordinary view. Hours are cut in UTC, as time_bucket cuts them:
 * date_trunc without a zone would use the session's TimeZone and, in a zone such as Asia/Kolkata, cut at :30.
 */
async function applyPlainViews(client: pg.PoolClient): Promise<void> {
  const { rows } = await client.query<{ kind: string }>(`SELECT relkind AS kind FROM pg_class WHERE relname = 'movements_hourly' AND relnamespace = current_schema()::regnamespace`);
  if (rows[0] && rows[0].kind !== 'v') return; // a continuous aggregate is already there
  await client.query(`CREATE OR REPLACE VIEW movements_hourly AS
    SELECT date_trunc('hour', ts, 'UTC') AS bucket, wh, sku, type,
           sum(qty)::bigint AS qty, sum(delta)::bigint AS delta, count(*)::bigint AS events
    FROM events GROUP BY 1, 2, 3, 4`);
}
