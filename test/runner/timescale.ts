import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import pg from 'pg';
import { runCommand, TIMESCALE_START } from '../helpers/timescale-server.js';

/** Where CI and the shared machines keep the TimescaleDB starter: `../shared` beside the repository. */
export const START_SCRIPT = TIMESCALE_START;
const START_TIMEOUT_MS = 180_000; // the first start lays out a PostgreSQL tree and runs initdb
const CONNECT_TIMEOUT_MS = 10_000;

/** A problem that stops `npm test` before any test runs; its message says what to do. */
export class RunnerError extends Error {}

export type TimescaleChoice = { url: string; source: string } | { optedOut: true };

export interface RunnerEnv {
  CI?: string;
  TIMESCALE_URL?: string;
  STOCKWIRE_TEST_TIMESCALE?: string;
}

export const inCi = (env: RunnerEnv) => /^(true|1)$/i.test(env.CI ?? '');

/**
 * Where the TimescaleDB pass runs: TIMESCALE_URL, else the server `startScript` starts (idempotent, it prints the
 * URL). `STOCKWIRE_TEST_TIMESCALE=0` opts out outside CI; in CI nothing may skip it.
 */
export async function chooseTimescale(env: RunnerEnv, startScript = START_SCRIPT): Promise<TimescaleChoice> {
  const ci = inCi(env);
  if (env.STOCKWIRE_TEST_TIMESCALE === '0') {
    if (ci)
      throw new RunnerError(
        'STOCKWIRE_TEST_TIMESCALE=0 is refused in CI (CI=true): every database suite runs on TimescaleDB there too.',
      );
    return { optedOut: true };
  }
  if (env.TIMESCALE_URL) return { url: env.TIMESCALE_URL, source: 'TIMESCALE_URL' };
  if (!fs.existsSync(startScript)) {
    throw new RunnerError(
      `TimescaleDB is needed for the second pass, and ${startScript} (the shared starter, beside the repository) is absent. ` +
        'Set TIMESCALE_URL to a TimescaleDB server (postgres://user@host:port/db, a user that may CREATE DATABASE), ' +
        'or put the shared folder at ../shared' +
        (ci ? '.' : ', or run without TimescaleDB: STOCKWIRE_TEST_TIMESCALE=0 npm test.'),
    );
  }
  const r = await runCommand(startScript, [], process.env, START_TIMEOUT_MS);
  const url = r.stdout.trim().split('\n').at(-1) ?? '';
  if (r.code !== 0 || !/^postgres(ql)?:\/\//.test(url)) {
    throw new RunnerError(
      `${startScript} could not start TimescaleDB (exit ${r.code}):\n${r.stderr.trim() || r.stdout.trim()}`,
    );
  }
  return { url, source: startScript };
}

export interface ServerFacts {
  version: string;
  /** the timescaledb version a fresh database gets from CREATE EXTENSION; null: not offered */
  timescale: string | null;
}

/**
 * What a pass's server is, for the log. With `createExtension`, proves TimescaleDB works rather than trusting the
 * catalogue: a throwaway database runs `CREATE EXTENSION timescaledb` and reports pg_extension's extversion.
 */
export async function serverFacts(adminUrl: string, createExtension: boolean): Promise<ServerFacts> {
  const admin = await connect(adminUrl);
  try {
    const version =
      (await admin.query<{ v: string }>(`SELECT current_setting('server_version') AS v`)).rows[0]?.v ?? '?';
    if (!createExtension) {
      const { rows } = await admin.query<{ v: string }>(
        `SELECT default_version AS v FROM pg_available_extensions WHERE name = 'timescaledb'`,
      );
      return { version, timescale: rows[0]?.v ?? null };
    }
    const name = `sw_runner_probe_${randomBytes(4).toString('hex')}`;
    await admin.query(`CREATE DATABASE ${name}`);
    try {
      const url = new URL(adminUrl);
      url.pathname = `/${name}`;
      const probe = await connect(url.toString());
      try {
        await probe.query('CREATE EXTENSION IF NOT EXISTS timescaledb');
        const { rows } = await probe.query<{ v: string }>(
          `SELECT extversion AS v FROM pg_extension WHERE extname = 'timescaledb'`,
        );
        return { version, timescale: rows[0]?.v ?? null };
      } catch (err) {
        throw new RunnerError(
          `CREATE EXTENSION timescaledb fails on ${adminUrl}: ${(err as Error).message}. Is it a TimescaleDB server (shared_preload_libraries = 'timescaledb')?`,
        );
      } finally {
        await probe.end();
      }
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    }
  } finally {
    await admin.end();
  }
}

async function connect(url: string): Promise<pg.Client> {
  const c = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    application_name: 'stockwire-test-runner',
  });
  try {
    await c.connect();
  } catch (err) {
    throw new RunnerError(`cannot connect to ${url}: ${(err as Error).message}`);
  }
  c.on('error', () => {});
  return c;
}
