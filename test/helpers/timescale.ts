import { ADMIN_URL, createTestDatabase, type TestDatabase } from './db.js';

/** The TimescaleDB that `../shared/timescaledb/start` runs on this machine. */
const LOCAL_TIMESCALE_URL = 'postgres://postgres@127.0.0.1:5433/postgres';

/**
 * The TimescaleDB server for tests that must pass on both databases: TIMESCALE_URL; locally, unset, the one
 * `../shared/timescaledb/start` runs. In CI an unset TIMESCALE_URL fails the test instead of testing less.
 */
export function timescaleAdminUrl(): string {
  const url = process.env.TIMESCALE_URL;
  if (url) return url;
  if (process.env.CI === 'true') throw new Error('TIMESCALE_URL is not set: in CI these tests run on TimescaleDB too. Start one (`../shared/timescaledb/start` prints its URL) and set TIMESCALE_URL.');
  return LOCAL_TIMESCALE_URL;
}

/** A database server the tests run on: the machine's PostgreSQL, and TimescaleDB. */
export interface TestServer {
  name: string;
  /** whether `migrate` must find TimescaleDB there */
  timescale: boolean;
  createDatabase(label: string): Promise<TestDatabase>;
}

export const TEST_SERVERS: TestServer[] = [
  { name: 'plain PostgreSQL', timescale: false, createDatabase: (label) => createTestDatabase(label, ADMIN_URL) },
  {
    name: 'TimescaleDB',
    timescale: true,
    async createDatabase(label) {
      const admin = timescaleAdminUrl();
      try {
        return await createTestDatabase(label, admin);
      } catch (err) {
        throw new Error(`TimescaleDB: ${(err as Error).message} Run \`../shared/timescaledb/start\`, or set TIMESCALE_URL to a TimescaleDB server.`);
      }
    },
  },
];
