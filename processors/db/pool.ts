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
  /** ms a statement may run before PostgreSQL cancels it (and the client gives up a second later); unset: no limit */
  statementTimeoutMs?: number;
}

export function createPool(options: PoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.max ?? 6,
    application_name: options.applicationName ?? 'stockwire',
    connectionTimeoutMillis: 5_000, // ms: a dead database fails fast instead of queueing forever
    idleTimeoutMillis: 30_000, // ms
    types,
    ...(options.statementTimeoutMs !== undefined && {
      options: `-c statement_timeout=${options.statementTimeoutMs}`,
      // The server cancels first; this catches a database that does not answer at all.
      query_timeout: options.statementTimeoutMs + 1_000,
    }),
  });
  // An idle client that loses its connection emits on the pool; without a listener that would crash the process.
  pool.on('error', () => {});
  // A checked-out client has no pool listener: when its connection dies (pg_terminate_backend, a restart, a
  // reset socket) its 'error' event would crash the process. The query in flight fails all the same, and
  // release() drops a client that is no longer queryable.
  pool.on('connect', (client) => client.on('error', () => {}));
  return pool;
}

/**
 * The database cannot answer now (gone, unreachable, out of connections for us, or too slow for a read's
 * statement timeout), as opposed to a fault of the statement: an API answers 503, not 500.
 */
export function isUnavailable(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  if (code === '57014' || code === '53300') return true; // query_canceled (statement timeout), too_many_connections
  if (typeof code === 'string') return isConnectionLost(err); // class 08, 57P01–03, or a socket error (ECONNREFUSED…)
  // node-postgres's own errors carry no code, only these messages (client query_timeout, pool connect timeout, lost socket).
  return /^(Query read timeout|timeout exceeded when trying to connect|Connection terminated)/.test(
    (err as Error).message ?? '',
  );
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

/**
 * The connection itself is gone (a terminated backend, a restart, a reset socket), not the statement:
 * SQLSTATE class 08 (connection exception), 57P01–57P03 (admin or crash shutdown, cannot connect now),
 * or an error without SQLSTATE from the socket. The client must be discarded; a new one will work.
 */
export function isConnectionLost(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  if (typeof code !== 'string') return true;
  return code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03' || /^E[A-Z]+$/.test(code);
}
