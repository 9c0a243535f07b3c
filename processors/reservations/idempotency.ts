import { createHash } from 'node:crypto';
import type pg from 'pg';
import { ErrorCode, ValidationError } from '../../protocol/index.js';

/** A decided answer: HTTP status and body (the MQTT adapter maps it to `{status, data | error}`). */
export interface Answer {
  status: number;
  body: unknown;
  /** true when this is the stored first answer to a repeated Idempotency-Key */
  replayed?: boolean;
}

/** The header name, used as the `field` of errors about it (the MQTT adapter renames it `idempotencyKey`). */
export const KEY_FIELD = 'Idempotency-Key';
const KEY_PATTERN = /^[\x21-\x7E]{1,255}$/; // visible ASCII, as HTTP header values allow

export function checkKey(key: unknown): string {
  if (key === undefined || key === '') throw new ValidationError(ErrorCode.badRequest, `the ${KEY_FIELD} header is required`, KEY_FIELD);
  if (typeof key !== 'string' || !KEY_PATTERN.test(key)) throw new ValidationError(ErrorCode.badRequest, `${KEY_FIELD} must be 1 to 255 visible ASCII characters`, KEY_FIELD);
  return key;
}

/** JSON with object keys sorted at every level: the same request always hashes the same. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export function requestHash(action: string, request: unknown): string {
  return createHash('sha256').update(action).update('\u0000').update(canonical(request)).digest('hex');
}

/**
 * Claims a key inside the command's transaction. The primary key serialises concurrent requests
 * with one key: the second waits for the first transaction; if it commits, the second gets its
 * stored answer (null means the key is ours: decide, then `storeAnswer` before COMMIT). A key
 * sent again with another request is refused rather than answered with someone else's result.
 */
export async function claimKey(client: pg.PoolClient, key: string, action: string, hash: string): Promise<Answer | null> {
  const claimed = await client.query(
    `INSERT INTO idempotency_keys (key, action, request_hash, status, body) VALUES ($1, $2, $3, 0, 'null')
     ON CONFLICT (key) DO NOTHING RETURNING key`,
    [key, action, hash],
  );
  if (claimed.rows.length === 1) return null;
  const { rows } = await client.query<{ action: string; request_hash: string; status: number; body: unknown }>(
    `SELECT action, request_hash, status, body FROM idempotency_keys WHERE key = $1`,
    [key],
  );
  const stored = rows[0];
  // Purged between the two statements: try the whole transaction again (a serialization failure is retried).
  if (!stored) throw Object.assign(new Error('idempotency key vanished while read'), { code: '40001' });
  if (stored.action !== action || stored.request_hash !== hash) {
    throw new ValidationError(ErrorCode.idempotencyKeyReused, `this ${KEY_FIELD} was already used for a different request; use a new key`, KEY_FIELD);
  }
  return { status: stored.status, body: stored.body, replayed: true };
}

export async function storeAnswer(client: pg.PoolClient, key: string, answer: Answer): Promise<void> {
  await client.query(`UPDATE idempotency_keys SET status = $2, body = $3 WHERE key = $1`, [key, answer.status, JSON.stringify(answer.body)]);
}

/** Forgets answers older than `hours`, at most `limit` per call. */
export async function purgeKeys(pool: pg.Pool, hours: number, limit = 5_000): Promise<number> {
  const { rowCount } = await pool.query(
    `DELETE FROM idempotency_keys WHERE key IN (
       SELECT key FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1) LIMIT $2)`,
    [hours, limit],
  );
  return rowCount ?? 0;
}
