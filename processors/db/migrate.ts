import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import Postgrator from 'postgrator';

const MIGRATIONS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'migrations', '*.sql');
// Serialises concurrent `migrate` runs of several processes against one database.
const MIGRATION_LOCK = 0x5707c3; // advisory lock key

/** TIMESCALEDB: `auto` uses TimescaleDB when the server can load it, `on` refuses to start without it, `off` never uses it. */
export type TimescaleMode = 'auto' | 'on' | 'off';
export const TIMESCALE_MODES = ['auto', 'on', 'off'] as const;

export const DEFAULT_EVENT_RETENTION_DAYS = 3650;
export const DEFAULT_SHELF_RETENTION_DAYS = 90;

export interface MigrateOptions {
  /** default `auto` */
  timescale?: TimescaleMode;
  /** days of book events kept in the log on TimescaleDB; older ones are folded into stock_baseline, then dropped */
  eventRetentionDays?: number;
  /** days of shelf readings kept by the TimescaleDB retention policy */
  shelfRetentionDays?: number;
  /** the one line `auto` writes when it falls back to plain PostgreSQL */
  warn?: (message: string) => void;
}

/** Which storage a database runs on, for the start log line and /readyz. */
export interface Storage {
  kind: 'timescaledb' | 'postgresql';
  /** the server's PostgreSQL version */
  postgres: string;
  /** the TimescaleDB extension's version, when in use */
  timescaledb?: string;
}

export interface MigrateResult {
  version: number;
  timescale: boolean;
  storage: Storage;
}

/** What the server and the database say of TimescaleDB. */
export interface TimescaleProbe {
  /** the extension's version in this database, null when it is not created here */
  installed: string | null;
  /** the server has the extension's files (pg_available_extensions) */
  available: boolean;
  /** shared_preload_libraries names it: without that, CREATE EXTENSION and every hypertable refuse to work */
  preloaded: boolean;
  postgres: string;
}

/** A configuration that cannot run: central, processor and migrate stop with this message. */
export class StorageError extends Error {}

export async function probeTimescale(db: pg.Pool | pg.PoolClient): Promise<TimescaleProbe> {
  const { rows } = await db.query<{ installed: string | null; available: boolean; preload: string; postgres: string }>(
    `SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS installed,
            EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') AS available,
            current_setting('shared_preload_libraries') AS preload,
            current_setting('server_version') AS postgres`,
  );
  const r = rows[0] as (typeof rows)[number];
  return {
    installed: r.installed,
    available: r.available,
    preloaded: preloads(r.preload, 'timescaledb'),
    postgres: r.postgres,
  };
}

/** shared_preload_libraries is a comma list of names or paths, optionally quoted: `'timescaledb', "$libdir/timescaledb"`. */
export function preloads(setting: string, library: string): boolean {
  return setting
    .split(',')
    .map((s) => s.trim().replace(/^["']|["']$/g, ''))
    .some((s) => s === library || s.endsWith(`/${library}`) || s.endsWith(`/${library}.so`));
}

const HOW_TO_PRELOAD =
  "add timescaledb to shared_preload_libraries in postgresql.conf (shared_preload_libraries = 'timescaledb') and restart PostgreSQL";

/**
 * Decides whether to use TimescaleDB; throws StorageError for a setting the server cannot honour, and hands back the
 * one warning `auto` gives when it runs on plain PostgreSQL.
 */
export function chooseStorage(mode: TimescaleMode, p: TimescaleProbe): { timescale: boolean; warning?: string } {
  if (p.installed !== null && !p.preloaded) {
    throw new StorageError(
      `this database uses TimescaleDB ${p.installed}, but the server does not preload it: ${HOW_TO_PRELOAD}`,
    );
  }
  if (mode === 'off') {
    if (p.installed !== null) {
      throw new StorageError(
        `TIMESCALEDB=off, but this database already uses TimescaleDB ${p.installed} (its event log is a hypertable, which cannot be turned back into a table): use TIMESCALEDB=auto or on, or a new database`,
      );
    }
    return { timescale: false };
  }
  if (p.installed !== null || (p.available && p.preloaded)) return { timescale: true };
  const why = p.available
    ? `TimescaleDB is installed on this PostgreSQL server but not preloaded; to use it, ${HOW_TO_PRELOAD}`
    : 'TimescaleDB is not installed on this PostgreSQL server; to use it, install the TimescaleDB package for PostgreSQL ' +
      `${p.postgres.split('.')[0] ?? ''} and ${HOW_TO_PRELOAD}`;
  if (mode === 'on') throw new StorageError(`TIMESCALEDB=on: ${why}`);
  return {
    timescale: false,
    warning: `running on plain PostgreSQL (no hypertables, compression, retention or continuous aggregates): ${why}; TIMESCALEDB=off silences this, TIMESCALEDB=on makes it an error`,
  };
}

/** Creates or upgrades the schema; idempotent, safe to run from several processes at once. */
export async function migrate(pool: pg.Pool, options: MigrateOptions = {}): Promise<MigrateResult> {
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    const probe = await probeTimescale(client);
    const choice = chooseStorage(options.timescale ?? 'auto', probe);
    if (choice.warning) options.warn?.(choice.warning);
    const postgrator = new Postgrator({
      migrationPattern: MIGRATIONS,
      driver: 'pg',
      schemaTable: 'stockwire_schema_version',
      execQuery: (sql: string) => client.query(sql),
    });
    const applied = await postgrator.migrate();
    const version =
      applied.length > 0 ? Number(applied[applied.length - 1]?.version) : Number(await postgrator.getDatabaseVersion());
    if (choice.timescale) await applyTimescale(client, options);
    else await applyPlainViews(client);
    const installed = choice.timescale ? (await probeTimescale(client)).installed : null;
    const storage: Storage = installed
      ? { kind: 'timescaledb', postgres: probe.postgres, timescaledb: installed }
      : { kind: 'postgresql', postgres: probe.postgres };
    return { version, timescale: choice.timescale, storage };
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => {});
    client.release();
  }
}

/**
 * TimescaleDB features, applied at every start where TimescaleDB is in use. Each statement runs on its own
 * (continuous aggregates cannot be created inside a transaction) and is idempotent, so a restart, a second
 * `migrate` or an upgrade of a database that already has compressed chunks and a filled aggregate changes only
 * what differs.
 */
async function applyTimescale(client: pg.PoolClient, options: MigrateOptions): Promise<void> {
  const eventDays = Math.trunc(options.eventRetentionDays ?? DEFAULT_EVENT_RETENTION_DAYS);
  const shelfDays = Math.trunc(options.shelfRetentionDays ?? DEFAULT_SHELF_RETENTION_DAYS);
  const statements = [
    `CREATE EXTENSION IF NOT EXISTS timescaledb`,
    `SELECT create_hypertable('events', by_range('ts', INTERVAL '1 day'), if_not_exists => TRUE, migrate_data => TRUE)`,
    `SELECT create_hypertable('shelf_readings', by_range('ts', INTERVAL '1 day'), if_not_exists => TRUE, migrate_data => TRUE)`,
    // Segments by warehouse, ordered by sku: a day holds only a few events of one (wh, sku), and segments that
    // small compressed 123 MiB into 144 (bench/RESULTS.md, history); each batch's sku range keeps a sku's reads
    // to its own batches. Chunks compressed under older settings keep theirs.
    `ALTER TABLE events SET (timescaledb.compress, timescaledb.compress_segmentby = 'wh', timescaledb.compress_orderby = 'sku, ts, id, device')`,
    `ALTER TABLE shelf_readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'wh', timescaledb.compress_orderby = 'location, sku, ts')`,
    `SELECT add_compression_policy('events', INTERVAL '7 days', if_not_exists => TRUE)`,
    `SELECT add_compression_policy('shelf_readings', INTERVAL '7 days', if_not_exists => TRUE)`,
    // Book events are never dropped by a plain retention policy (schema v2 had one): rebuild would then see less
    // history than stock did. The archive job folds them into stock_baseline in the transaction that drops them.
    `SELECT remove_retention_policy('events', if_exists => TRUE)`,
    `SELECT add_retention_policy('shelf_readings', INTERVAL '${shelfDays} days', if_not_exists => TRUE)`,
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
    // Real time: readers get the materialized buckets plus the raw events not yet materialized, so the last hour
    // and events that arrived late since the last refresh are never missing from an answer.
    `ALTER MATERIALIZED VIEW movements_hourly SET (timescaledb.materialized_only = false)`,
    `SELECT add_continuous_aggregate_policy('movements_hourly', start_offset => INTERVAL '30 days',
       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes', if_not_exists => TRUE)`,
  ];
  for (const sql of statements) await client.query(sql);
  await scheduleArchive(client, eventDays);
}

/** The archive job (migrations/003): one per database, its retention taken from this start's setting. */
async function scheduleArchive(client: pg.PoolClient, retentionDays: number): Promise<void> {
  const config = JSON.stringify({ retention_days: retentionDays });
  const { rows } = await client.query<{ job_id: number; config: { retention_days?: number } | null }>(
    `SELECT job_id, config FROM timescaledb_information.jobs WHERE proc_name = 'stockwire_archive_job' AND proc_schema = current_schema() ORDER BY job_id`,
  );
  const [first, ...extra] = rows;
  for (const job of extra) await client.query('SELECT delete_job($1)', [job.job_id]);
  if (!first) {
    // First run a day from now, not at once: a database just created (a test's, or one loaded with old history
    // by an import) is not archived under the feet of whatever writes it first.
    await client.query(
      `SELECT add_job('stockwire_archive_job', INTERVAL '1 day', config => $1::jsonb, initial_start => now() + INTERVAL '1 day')`,
      [config],
    );
  } else if (first.config?.retention_days !== retentionDays) {
    await client.query('SELECT alter_job($1, config => $2::jsonb)', [first.job_id, config]);
  }
}

/**
 * Plain PostgreSQL: the same hourly movements as an ordinary view. Hours are cut in UTC, as time_bucket cuts them:
 * date_trunc without a zone would use the session's TimeZone and, in a zone such as Asia/Kolkata, cut at :30.
 */
async function applyPlainViews(client: pg.PoolClient): Promise<void> {
  const { rows } = await client.query<{ kind: string }>(
    `SELECT relkind AS kind FROM pg_class WHERE relname = 'movements_hourly' AND relnamespace = current_schema()::regnamespace`,
  );
  if (rows[0] && rows[0].kind !== 'v') return; // a continuous aggregate is already there
  await client.query(`CREATE OR REPLACE VIEW movements_hourly AS
    SELECT date_trunc('hour', ts, 'UTC') AS bucket, wh, sku, type,
           sum(qty)::bigint AS qty, sum(delta)::bigint AS delta, count(*)::bigint AS events
    FROM events GROUP BY 1, 2, 3, 4`);
}
