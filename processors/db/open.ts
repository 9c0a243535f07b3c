import type pg from 'pg';
import type { Logger } from 'pino';
import { startEmbeddedPostgres, type EmbeddedDatabase } from './embedded.js';
import { migrate, type MigrateResult, type Storage, type TimescaleMode } from './migrate.js';
import { createPool } from './pool.js';
import { waitAtMost } from '../../runtime/wait.js';

const READ_POOL_SIZE = 4; // connections for HTTP reads
export const DEFAULT_READ_TIMEOUT_MS = 5_000;

export interface Database {
  pool: pg.Pool;
  /**
   * A small pool of its own for the HTTP API's reads, every statement limited to `readTimeoutMs`: slow or
   * stuck reads (a wide history, a locked table) answer 503 and can never take the ingest path's connections.
   */
  readPool: pg.Pool;
  schema: MigrateResult;
  close(): Promise<void>;
  /**
   * Closes without waiting for work in progress (an interrupted command): an embedded server this process
   * started is stopped first, which ends the queries still running; the pools get a second to end.
   */
  abort(): Promise<void>;
}

const ABORT_WAIT_MS = 1_000;

/** The storage settings every command that opens the database takes (processors/config.ts `common`). */
export interface StorageSettings {
  /** TIMESCALEDB: auto (default), on or off */
  timescaledb?: TimescaleMode;
  eventRetentionDays?: number;
  shelfRetentionDays?: number;
}

/** Connects to DATABASE_URL, or starts the embedded PostgreSQL under DATA_DIR when it is unset; then migrates. */
export async function openDatabase(
  o: StorageSettings & {
    databaseUrl?: string;
    dataDir: string;
    log: Logger;
    poolSize?: number;
    applicationName?: string;
    readTimeoutMs?: number;
  },
): Promise<Database> {
  let embedded: EmbeddedDatabase | null = null;
  let url = o.databaseUrl;
  if (url === undefined) {
    embedded = await startEmbeddedPostgres(o.dataDir, o.log);
    url = embedded.url;
  }
  const pool = createPool({ url, max: o.poolSize ?? 6, applicationName: o.applicationName ?? 'stockwire' });
  // Lazy: a command that serves no API never connects it.
  const readPool = createPool({
    url,
    max: READ_POOL_SIZE,
    applicationName: `${o.applicationName ?? 'stockwire'}-api`,
    statementTimeoutMs: o.readTimeoutMs ?? DEFAULT_READ_TIMEOUT_MS,
  });
  try {
    const schema = await migrate(pool, {
      ...(o.timescaledb !== undefined && { timescale: o.timescaledb }),
      ...(o.eventRetentionDays !== undefined && { eventRetentionDays: o.eventRetentionDays }),
      ...(o.shelfRetentionDays !== undefined && { shelfRetentionDays: o.shelfRetentionDays }),
      warn: (message) => o.log.warn(message),
    });
    const { storage } = schema;
    o.log.info(
      {
        schemaVersion: schema.version,
        storage: storage.kind,
        postgres: storage.postgres,
        ...(storage.timescaledb && { timescaledb: storage.timescaledb }),
      },
      `database ready on ${describeStorage(storage)}`,
    );
    return {
      pool,
      readPool,
      schema,
      async close() {
        await readPool.end();
        await pool.end();
        await embedded?.stop();
      },
      async abort() {
        await embedded?.stop();
        await waitAtMost(Promise.all([readPool.end(), pool.end()]), ABORT_WAIT_MS);
      },
    };
  } catch (err) {
    await readPool.end().catch(() => {});
    await pool.end().catch(() => {});
    await embedded?.stop().catch(() => {});
    throw err;
  }
}

/** `TimescaleDB 2.28.3 on PostgreSQL 15.20` or `PostgreSQL 15.20 (no TimescaleDB)`. */
export function describeStorage(s: Storage): string {
  const pg = `PostgreSQL ${s.postgres.split(' ')[0] ?? s.postgres}`;
  return s.kind === 'timescaledb' ? `TimescaleDB ${s.timescaledb} on ${pg}` : `${pg} (no TimescaleDB)`;
}
