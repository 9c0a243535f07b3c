import { ErrorCode, IDENT_PATTERN, isIdent, rfc3339Ms, ValidationError } from '../protocol/index.js';

/** A query string as Fastify parses it: a parameter given twice is an array. */
export type Query = Record<string, string | string[] | undefined>;

// The instants a query may name: RFC 3339 years end at 9999, and PostgreSQL, JavaScript and the answer's
// date-time strings all agree on everything in between. Outside, Date throws (500) or PostgreSQL does (22008).
export const EARLIEST_MS = Date.UTC(1970, 0, 1); // ms
export const LATEST_MS = Date.UTC(9999, 11, 31); // ms: leaves a day for rounding a range outward to whole buckets

/** An identifier parameter (warehouse, sku), or a 400 naming the field. */
export function ident(value: string, field: string): string {
  if (!isIdent(value)) throw new ValidationError(ErrorCode.badRequest, `${field} must match ${IDENT_PATTERN}`, field);
  return value;
}

/** A parameter given at most once (`?sku=a&sku=b` is a 400, not a guess); empty counts as absent. */
export function single(q: Query, field: string): string | undefined {
  const v = q[field];
  if (Array.isArray(v)) throw new ValidationError(ErrorCode.badRequest, `${field} is given more than once`, field);
  return v === '' ? undefined : v;
}

/** Refuses a parameter the operation does not take, so a misspelt filter never widens an answer. */
export function onlyKnown(q: Query, fields: readonly string[]): void {
  const unknown = Object.keys(q)
    .filter((k) => !fields.includes(k))
    .sort()[0];
  if (unknown !== undefined)
    throw new ValidationError(
      ErrorCode.badRequest,
      `unknown parameter ${unknown}; this operation takes ${fields.join(', ')}`,
      unknown,
    );
}

/** The shape of an RFC 3339 full-date: a time parameter may name a day, meaning its start in UTC. */
export const DATE_PATTERN = '^\\d{4}-\\d{2}-\\d{2}$';
const DATE = new RegExp(DATE_PATTERN);

/** A time parameter in ms: RFC 3339 date-time or date (00:00 UTC) or epoch ms, within 1970-01-01…9999-12-31; absent: `fallback`. */
export function time(value: string | undefined, field: string, fallback: number): number {
  if (value === undefined || value === '') return fallback;
  // RFC 3339 only: Date.parse alone would also take "Jan 5", "2026-1-5" or "2026-02-30" (rolled over to March).
  const ms = /^\d+$/.test(value) ? Number(value) : rfc3339Ms(DATE.test(value) ? `${value}T00:00:00Z` : value);
  if (ms === null || !Number.isFinite(ms))
    throw new ValidationError(
      ErrorCode.badRequest,
      `${field} must be an RFC 3339 date-time (2026-01-01T08:00:00Z) or date (2026-01-01, 00:00 UTC) or epoch milliseconds`,
      field,
    );
  if (ms < EARLIEST_MS || ms > LATEST_MS)
    throw new ValidationError(
      ErrorCode.badRequest,
      `${field} must lie between 1970-01-01T00:00:00Z and 9999-12-31T00:00:00Z`,
      field,
    );
  return ms;
}
