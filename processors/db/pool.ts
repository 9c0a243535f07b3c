import pg from 'pg';

// int8 (OID 20) as a JS number: quantities are bounded far below 2^53 by the event rules.
const INT8_OID = 20;
const types = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === INT8_OID && format !== 'binary') return (v: string) => Number(v);
    return pg.types.getTypeParser(oid, format);
  },
};

export interface PoolOptions {
  url: string;
  /** connections; the ingest path uses one at a time, reads use the rest */
  max?: number;
  applicationName?: string;
}

export function createPool(options: PoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.max ?? 6,
    application_name: options.applicationName ?? 'stockwire',
    connectionTimeoutMillis: 5_000, // ms: a dead database fails fast instead of queueing forever
    idleTimeoutMillis: 30_000, // ms
    types,
  });
  // An idle client that loses its connection emits on the pool; without a listener that would crash the process.
  pool.on('error', () => {});
  return pool;
}

/** SQLSTATEs after which the whole transaction may simply be tried again. */
export function isRetryable(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === '40001' || code === '40P01'; // serialization_failure, deadlock_detected
}

/** A data or integrity error: the input is at fault, not the database (SQLSTATE classes 22 and 23). */
export function isDataError(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return typeof code === 'string' && (code.startsWith('22') || code.startsWith('23'));
}
