import type pg from 'pg';
import type { Logger } from 'pino';
import { startEmbeddedPostgres, type EmbeddedDatabase } from './embedded.js';
import { migrate, type MigrateResult } from './migrate.js';
import { createPool } from './pool.js';

export interface Database {
  pool: pg.Pool;
  schema: MigrateResult;
  close(): Promise<void>;
}

/** Connects to DATABASE_URL, or starts the embedded PostgreSQL under DATA_DIR when it is unset; then migrates. */
export async function openDatabase(o: { databaseUrl?: string; dataDir: string; log: Logger; poolSize?: number; applicationName?: string }): Promise<Database> {
  let embedded: EmbeddedDatabase | null = null;
  let url = o.databaseUrl;
  if (url === undefined) {
    embedded = await startEmbeddedPostgres(o.dataDir, o.log);
    url = embedded.url;
  }
  const pool = createPool({ url, max: o.poolSize ?? 6, applicationName: o.applicationName ?? 'stockwire' });
  try {
    const schema = await migrate(pool);
    o.log.info({ schemaVersion: schema.version, timescale: schema.timescale }, 'database ready');
    return {
      pool,
      schema,
      async close() {
        await pool.end();
        await embedded?.stop();
      },
    };
  } catch (err) {
    await pool.end().catch(() => {});
    await embedded?.stop().catch(() => {});
    throw err;
  }
}
