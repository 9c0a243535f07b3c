import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { IN_CI } from './ci.js';

/** The machine's PostgreSQL; every test file gets a database of its own on it. `npm test`'s second pass points it at TimescaleDB. */
export const ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** `STOCKWIRE_TEST_TIMESCALE=0`: the user runs without TimescaleDB (refused in CI). */
export const TIMESCALE_OPTED_OUT = process.env.STOCKWIRE_TEST_TIMESCALE === '0';

const TIMESCALE_HOWTO =
  'Run the tests with `npm test` (it starts TimescaleDB with ../shared/timescaledb/start and sets TIMESCALE_URL), ' +
  'or `export TIMESCALE_URL=$(../shared/timescaledb/start)`, or point TIMESCALE_URL at any TimescaleDB server';

/**
 * The TimescaleDB server's admin URL (TIMESCALE_URL, which `npm test` sets), for a test that needs TimescaleDB
 * itself whatever TEST_DATABASE_URL says. Throws with instructions when it is unset, in CI or not.
 */
export function timescaleAdminUrl(): string {
  const url = process.env.TIMESCALE_URL;
  if (url) return url;
  if (IN_CI)
    throw new Error(`TIMESCALE_URL is not set in CI, where the TimescaleDB tests never skip. ${TIMESCALE_HOWTO}.`);
  throw new Error(
    `TIMESCALE_URL is not set. ${TIMESCALE_HOWTO}; or opt out of TimescaleDB with STOCKWIRE_TEST_TIMESCALE=0.`,
  );
}

/** The `skip` option of a suite that needs TimescaleDB: a reason only when the user opted out, never in CI. */
export function timescaleSkip(): string | false {
  return TIMESCALE_OPTED_OUT && !IN_CI ? 'STOCKWIRE_TEST_TIMESCALE=0: TimescaleDB opted out' : false;
}

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

export interface TestDatabaseOptions {
  /** `default`: TEST_DATABASE_URL's server (the pass's); `timescale`: TIMESCALE_URL's, whatever the pass */
  server?: 'default' | 'timescale';
}

export async function createTestDatabase(label = 'test', o: TestDatabaseOptions = {}): Promise<TestDatabase> {
  const adminUrl = o.server === 'timescale' ? timescaleAdminUrl() : ADMIN_URL;
  return createDatabaseOn(adminUrl, label);
}

/** A database of its own on the server of `adminUrl` (a URL whose user may CREATE DATABASE), dropped by `drop()`. */
export async function createDatabaseOn(adminUrl: string, label = 'test'): Promise<TestDatabase> {
  const admin = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 5_000 });
  try {
    await admin.connect();
  } catch (err) {
    const howto =
      adminUrl === process.env.TIMESCALE_URL
        ? `Start it with \`../shared/timescaledb/start\`, or set TIMESCALE_URL.`
        : 'Start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or set TEST_DATABASE_URL.';
    throw new Error(`PostgreSQL is not reachable at ${adminUrl} (${(err as Error).message}). ${howto}`);
  }
  const name = `sw_${label.replace(/[^a-z0-9]/gi, '_').toLowerCase()}_${randomBytes(4).toString('hex')}`;
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    async drop() {
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

/** Whether the server of `url` offers the timescaledb extension (the machine's 5432 does not; TIMESCALE_URL's does). */
export async function offersTimescale(url: string): Promise<boolean> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  await c.connect();
  try {
    const { rows } = await c.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_available_extensions WHERE name = 'timescaledb'`,
    );
    return (rows[0]?.n ?? 0) > 0;
  } finally {
    await c.end();
  }
}

/**
 * A pool for a test to look into its database. Like the product's pools it listens for errors: dropping the
 * database (`WITH (FORCE)`) terminates any connection still closing, and an unheard 'error' would crash the file.
 */
export function testPool(url: string, max = 2): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max });
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  return pool;
}

/** The newest schema version: the highest NNN of processors/db/migrations/NNN.do.*.sql. */
export function latestSchemaVersion(): number {
  const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../processors/db/migrations');
  return Math.max(
    ...fs
      .readdirSync(dir)
      .map((f) => /^(\d+)\.do\./.exec(f)?.[1])
      .filter((v) => v !== undefined)
      .map(Number),
  );
}
