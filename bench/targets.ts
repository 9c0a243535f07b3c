import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import type { MigrateResult } from '../processors/db/migrate.js';
import { ADMIN_URL, createDatabaseOn, type TestDatabase } from '../test/helpers/db.js';
import { RESULTS } from './lib.js';

/**
 * The database servers a benchmark runs against (issue 14/7): the machine's plain PostgreSQL and a real
 * TimescaleDB, in the same run. BENCH_DB_TARGETS=postgres or =timescaledb runs one of them only.
 */
export type TargetKey = 'postgres' | 'timescaledb';

export interface DbTarget {
  key: TargetKey;
  name: 'PostgreSQL' | 'TimescaleDB';
  /** server and extension versions, for the record */
  label: string;
  adminUrl: string;
  /** the server settings that decide these benchmarks, for the record */
  settings: string;
}

// The shared script that starts the machine's TimescaleDB (idempotent; prints its admin URL).
export const TIMESCALE_START = path.resolve(path.dirname(RESULTS), '../../shared/timescaledb/start');
const START_TIMEOUT_MS = 180_000; // a first start lays out a private server tree and runs initdb
const SETTINGS = [
  'shared_buffers',
  'work_mem',
  'max_wal_size',
  'synchronous_commit',
  'fsync',
  'autovacuum',
  'jit',
  'max_parallel_workers_per_gather',
];

let cached: Promise<DbTarget[]> | undefined;

/** The targets of this run, each checked: plain PostgreSQL must not offer TimescaleDB, and TimescaleDB must. */
export function benchTargets(): Promise<DbTarget[]> {
  cached ??= (async () => {
    const keys = (process.env.BENCH_DB_TARGETS ?? 'postgres,timescaledb')
      .split(',')
      .map((k) => k.trim())
      .filter(Boolean);
    const targets: DbTarget[] = [];
    for (const key of keys) {
      if (key === 'postgres') targets.push(await describe('postgres', ADMIN_URL));
      else if (key === 'timescaledb')
        targets.push(await describe('timescaledb', process.env.TIMESCALE_URL ?? (await startTimescale())));
      else throw new Error(`BENCH_DB_TARGETS: unknown target ${key}; known: postgres, timescaledb`);
    }
    if (targets.length === 0) throw new Error('BENCH_DB_TARGETS names no target');
    return targets;
  })();
  return cached;
}

/** Starts the shared TimescaleDB (a no-op when it runs) and returns its admin URL; fails saying how to get one. */
async function startTimescale(): Promise<string> {
  const help = `set TIMESCALE_URL to a TimescaleDB server, or BENCH_DB_TARGETS=postgres to run on plain PostgreSQL only`;
  if (!fs.existsSync(TIMESCALE_START)) throw new Error(`TimescaleDB: ${TIMESCALE_START} not found; ${help}`);
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>(
    (resolve) =>
      execFile(TIMESCALE_START, [], { timeout: START_TIMEOUT_MS, encoding: 'utf8' }, (err, out, errOut) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout: out, stderr: errOut }),
      ),
  );
  const url = stdout.trim().split('\n').pop() ?? '';
  if (code !== 0 || !url.startsWith('postgres://')) {
    throw new Error(
      `TimescaleDB: ${TIMESCALE_START} failed (exit ${code}); its stderr ends:\n${stderr.trim().split('\n').slice(-10).join('\n')}\n${help}`,
    );
  }
  return url;
}

async function describe(key: TargetKey, adminUrl: string): Promise<DbTarget> {
  const c = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 5_000 });
  try {
    await c.connect();
  } catch (err) {
    const help =
      key === 'timescaledb'
        ? `; start it with ${TIMESCALE_START}, or unset TIMESCALE_URL to let the benchmark start it`
        : '';
    throw new Error(`${key}: no server at ${adminUrl} (${(err as Error).message})${help}`);
  }
  try {
    const { rows } = await c.query<{ version: string; timescale: string | null }>(
      `SELECT current_setting('server_version') AS version, (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb') AS timescale`,
    );
    const { version, timescale } = rows[0] as { version: string; timescale: string | null };
    const settings = await c.query<{ name: string; setting: string; unit: string | null }>(
      `SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1) ORDER BY name`,
      [SETTINGS],
    );
    const described = settings.rows
      .map(
        (s) => `${s.name}=${s.unit === '8kB' ? `${(Number(s.setting) * 8) / 1024}MB` : `${s.setting}${s.unit ?? ''}`}`,
      )
      .join(', ');
    const pgVersion = version.split(' ')[0] as string;
    if (key === 'postgres') {
      // migrate() turns TimescaleDB on wherever it is installable: then "plain" would not be plain.
      if (timescale !== null)
        throw new Error(
          `postgres: ${adminUrl} offers TimescaleDB ${timescale}; the plain target needs a server without it`,
        );
      return { key, name: 'PostgreSQL', label: `PostgreSQL ${pgVersion}`, adminUrl, settings: described };
    }
    if (timescale === null) throw new Error(`timescaledb: ${adminUrl} does not offer the timescaledb extension`);
    return {
      key,
      name: 'TimescaleDB',
      label: `TimescaleDB ${timescale} (PostgreSQL ${pgVersion})`,
      adminUrl,
      settings: described,
    };
  } finally {
    await c.end();
  }
}

/** A fresh database on the target's server. */
export function createTargetDatabase(target: DbTarget, label: string): Promise<TestDatabase> {
  return createDatabaseOn(target.adminUrl, `${label}_${target.key}`);
}

/** Throws when migrate() did not take the path the target stands for. */
export function expectSchema(target: DbTarget, result: MigrateResult): void {
  if (result.timescale !== (target.key === 'timescaledb'))
    throw new Error(`${target.name}: migrate() ran the ${result.timescale ? 'TimescaleDB' : 'plain PostgreSQL'} path`);
}

/**
 * Stops the TimescaleDB policy jobs of this database (compression, retention, aggregate refresh; ids ≥ 1000), so
 * nothing compresses or refreshes behind a measurement; the benchmark does it itself, at a known moment.
 */
export async function pauseTimescaleJobs(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM timescaledb_information.jobs j, LATERAL alter_job(j.job_id, scheduled => false) WHERE j.job_id >= 1000`,
  );
  return rows[0]?.n ?? 0;
}

/** Compresses every chunk of `events` that ends before `before`, as the compression policy would have. */
export async function compressEventsBefore(pool: pg.Pool, before: Date): Promise<{ chunks: number; seconds: number }> {
  const t0 = performance.now();
  const { rows } = await pool.query<{ n: number }>(
    `SELECT count(compress_chunk(c, if_not_compressed => true))::int AS n FROM show_chunks('events', older_than => $1::timestamptz) c`,
    [before.toISOString()],
  );
  return { chunks: rows[0]?.n ?? 0, seconds: (performance.now() - t0) / 1000 };
}

export interface EventsSize {
  /** bytes of `events` with its indexes (and TOAST), compressed chunks as stored */
  total: number;
  /** TimescaleDB: bytes of the compressed chunks before and after compression */
  compression?: { chunks: number; before: number; after: number };
}

export async function eventsSize(pool: pg.Pool, target: DbTarget): Promise<EventsSize> {
  if (target.key === 'postgres') {
    const { rows } = await pool.query<{ total: number }>(`SELECT pg_total_relation_size('events')::bigint AS total`);
    return { total: rows[0]?.total ?? NaN };
  }
  const { rows } = await pool.query<{
    total: number;
    chunks: number | null;
    before: number | null;
    after: number | null;
  }>(
    `SELECT hypertable_size('events')::bigint AS total, s.number_compressed_chunks::bigint AS chunks,
            s.before_compression_total_bytes::bigint AS before, s.after_compression_total_bytes::bigint AS after
     FROM (SELECT) one LEFT JOIN hypertable_compression_stats('events') s ON true`,
  );
  const r = rows[0];
  if (!r) return { total: NaN };
  return {
    total: r.total,
    ...(r.chunks ? { compression: { chunks: r.chunks, before: r.before ?? NaN, after: r.after ?? NaN } } : {}),
  };
}

export const mib = (bytes: number): string =>
  `${(bytes / 2 ** 20).toLocaleString('en', { maximumFractionDigits: 0 })} MiB`;

/** "93%" — b as a share of a; "–" when either is missing. */
export function ratio(a: number, b: number): string {
  return Number.isFinite(a) && Number.isFinite(b) && a !== 0 ? `${((b / a) * 100).toFixed(0)}%` : '–';
}

/** One line per target: which server, which settings; and the settings in which they differ. */
export function describeTargets(targets: DbTarget[]): string[] {
  const lines = targets.map((t) => `- ${t.name}: ${t.label} at ${new URL(t.adminUrl).host}; ${t.settings}`);
  const sets = targets.map((t) => new Set(t.settings.split(', ')));
  const differ = [...new Set(targets.flatMap((t) => t.settings.split(', ')))]
    .filter((s) => !sets.every((set) => set.has(s)))
    .map((s) => s.split('=')[0]);
  if (differ.length > 0) lines.push(`- the servers' settings differ in: ${[...new Set(differ)].join(', ')}`);
  return lines;
}
