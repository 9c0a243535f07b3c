import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ADMIN_URL, createDatabaseOn, createTestDatabase, type TestDatabase } from './db.js';

export { timescaleAdminUrl } from './db.js';

/** ../shared/timescaledb/start beside the checkout: a private PostgreSQL 15 + TimescaleDB 2.28.3 (its README). */
export const TIMESCALE_START = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '../../../shared/timescaledb/start',
);

/** A database of the test file's own on the TimescaleDB server (TIMESCALE_URL, which npm test sets). */
export function createTimescaleDatabase(label: string): Promise<TestDatabase> {
  return createTestDatabase(label, { server: 'timescale' });
}

/** A database server the tests run on: the machine's PostgreSQL, and TimescaleDB. */
export interface TestServer {
  name: string;
  /** whether `migrate` must find TimescaleDB there */
  timescale: boolean;
  createDatabase(label: string): Promise<TestDatabase>;
}

export const TEST_SERVERS: TestServer[] = [
  { name: 'plain PostgreSQL', timescale: false, createDatabase: (label) => createDatabaseOn(ADMIN_URL, label) },
  { name: 'TimescaleDB', timescale: true, createDatabase: createTimescaleDatabase },
];

/**
 * A second cluster of the same binaries where the extension is installed but not preloaded (TIMESCALE_PRELOAD=0),
 * the usual state right after installing the package. Returns its admin URL.
 */
export function startUnpreloadedCluster(port: number, dir: string): string {
  if (!existsSync(TIMESCALE_START))
    throw new Error(
      `${TIMESCALE_START} is missing: the TimescaleDB tests need ../shared/timescaledb beside the checkout`,
    );
  const out = execFileSync(TIMESCALE_START, [], {
    env: { ...process.env, TIMESCALE_PORT: String(port), TIMESCALE_PRELOAD: '0', TIMESCALE_DIR: dir },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return out.trim().split('\n').pop() as string;
}

export function stopCluster(port: number, dir: string): void {
  execFileSync(TIMESCALE_START, ['stop'], {
    env: { ...process.env, TIMESCALE_PORT: String(port), TIMESCALE_DIR: dir },
    stdio: 'ignore',
  });
}

/**
 * Stops TimescaleDB's scheduler from running this database's jobs (compression, the aggregate's refresh, the
 * archive) behind a test's back, and waits for a run already under way to end: a test then runs each job itself
 * (`CALL run_job`) at the moment it means to.
 */
export async function pauseJobs(pool: import('pg').Pool, timeoutMs = 30_000): Promise<void> {
  await pool.query(
    `SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs WHERE job_id >= 1000`,
  );
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { rows } = await pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND backend_type NOT IN ('client backend', 'walsender') AND pid <> pg_backend_pid()
         AND (application_name LIKE '%Policy%' OR application_name LIKE 'User-Defined Action%' OR application_name LIKE '%Job%')`,
    );
    if (rows[0]?.n === 0) return;
    if (Date.now() > deadline) throw new Error(`TimescaleDB jobs of this database still ran after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
