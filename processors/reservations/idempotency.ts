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
  if (key === undefined || key === '')
    throw new ValidationError(ErrorCode.badRequest, `the ${KEY_FIELD} header is required`, KEY_FIELD);
  if (typeof key !== 'string' || !KEY_PATTERN.test(key))
    throw new ValidationError(
      ErrorCode.badRequest,
      `${KEY_FIELD} must be 1 to 255 visible ASCII characters`,
      KEY_FIELD,
    );
  return key;
}

/**
 * The key as stored: scoped to its principal, so one caller cannot claim another's key first (the real owner
 * would then be refused, issue 15). HTTP callers (one principal: the API token) keep their keys as sent; an
 * MQTT caller's are stored as `{principal} {key}`. A key is visible ASCII, never a space, and a principal
 * names no space either, so no key of one principal can ever equal a key of another. No schema change: the
 * column is text.
 */
export function scopedKey(key: string, principal: string | undefined): string {
  return principal === undefined ? key : `${principal} ${key}`;
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

/** What a key already has: its first answer, or a refusal when it was used for another request. */
const reused = () =>
  new ValidationError(
    ErrorCode.idempotencyKeyReused,
    `this ${KEY_FIELD} was already used for a different request; use a new key`,
    KEY_FIELD,
  );

function storedAnswer(
  stored: { action: string; request_hash: string; status: number; body: unknown },
  action: string,
  hash: string,
): Answer | ValidationError {
  if (stored.action !== action || stored.request_hash !== hash) return reused();
  return { status: stored.status, body: stored.body, replayed: true };
}

/** A committed answer to the key, read without any lock (repeats never queue behind the stock locks); null when none. */
export async function lookupKey(pool: pg.Pool, key: string, action: string, hash: string): Promise<Answer | null> {
  const { rows } = await pool.query<{ action: string; request_hash: string; status: number; body: unknown }>(
    `SELECT action, request_hash, status, body FROM idempotency_keys WHERE key = $1`,
    [key],
  );
  if (!rows[0]) return null;
  const stored = storedAnswer(rows[0], action, hash);
  if (stored instanceof ValidationError) throw stored;
  return stored;
}

export interface Claim {
  key: string;
  action: string;
  hash: string;
}

/** What claiming a key found: ours to decide, a stored answer, a refusal, or an earlier claim of the same call with the same request. */
export type ClaimResult =
  | { kind: 'ours' }
  | { kind: 'stored'; answer: Answer }
  | { kind: 'refused'; error: ValidationError }
  | { kind: 'repeat'; of: number };

/**
 * Claims keys inside the deciding transaction, after its stock rows are locked (lock order: stock rows,
 * then keys, in every command). The primary key serialises concurrent requests with one key: a second
 * waits for the first transaction; if that commits, the second gets its stored answer. An `ours` key is
 * decided, and its answer written with `storeAnswers` before COMMIT. A key that appears twice in
 * `claims` is claimed once; the later one is a `repeat` of it (or refused when the requests differ).
 */
export async function claimKeys(client: pg.PoolClient, claims: Claim[]): Promise<ClaimResult[]> {
  const firstIndex = new Map<string, number>();
  claims.forEach((c, i) => {
    if (!firstIndex.has(c.key)) firstIndex.set(c.key, i);
  });
  const fresh = [...firstIndex.values()].map((i) => claims[i] as Claim);
  const { rows } = await client.query<{ key: string }>(
    `INSERT INTO idempotency_keys (key, action, request_hash, status, body)
     SELECT k, a, h, 0, 'null' FROM unnest($1::text[], $2::text[], $3::text[]) AS u(k, a, h)
     ON CONFLICT (key) DO NOTHING RETURNING key`,
    [fresh.map((c) => c.key), fresh.map((c) => c.action), fresh.map((c) => c.hash)],
  );
  const ours = new Set(rows.map((r) => r.key));
  const taken = fresh.filter((c) => !ours.has(c.key)).map((c) => c.key);
  const stored = new Map<string, { action: string; request_hash: string; status: number; body: unknown }>();
  if (taken.length > 0) {
    const { rows: found } = await client.query<{
      key: string;
      action: string;
      request_hash: string;
      status: number;
      body: unknown;
    }>(`SELECT key, action, request_hash, status, body FROM idempotency_keys WHERE key = ANY($1::text[])`, [taken]);
    // Purged between the two statements: try the whole transaction again (a serialization failure is retried).
    if (found.length < taken.length)
      throw Object.assign(new Error('idempotency key vanished while read'), { code: '40001' });
    for (const f of found) stored.set(f.key, f);
  }
  return claims.map((c, i): ClaimResult => {
    const first = firstIndex.get(c.key) as number;
    if (first !== i) {
      const earlier = claims[first] as Claim;
      if (earlier.action === c.action && earlier.hash === c.hash) return { kind: 'repeat', of: first };
      return { kind: 'refused', error: reused() };
    }
    const s = stored.get(c.key);
    if (!s) return { kind: 'ours' };
    const answer = storedAnswer(s, c.action, c.hash);
    return answer instanceof ValidationError ? { kind: 'refused', error: answer } : { kind: 'stored', answer };
  });
}

/** Writes the answers of the keys this transaction claimed. */
export async function storeAnswers(client: pg.PoolClient, answers: { key: string; answer: Answer }[]): Promise<void> {
  if (answers.length === 0) return;
  await client.query(
    `UPDATE idempotency_keys k SET status = u.status, body = u.body::json
     FROM unnest($1::text[], $2::int[], $3::text[]) AS u(key, status, body) WHERE k.key = u.key`,
    [answers.map((a) => a.key), answers.map((a) => a.answer.status), answers.map((a) => JSON.stringify(a.answer.body))],
  );
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
