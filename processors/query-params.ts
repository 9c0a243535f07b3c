import { ErrorCode, isIdent, ValidationError } from '../protocol/index.js';

// The instants a query may name: RFC 3339 years end at 9999, and PostgreSQL, JavaScript and the answer's
// date-time strings all agree on everything in between. Outside, Date throws (500) or PostgreSQL does (22008).
const EARLIEST = Date.UTC(1970, 0, 1); // ms
const LATEST = Date.UTC(9999, 11, 31); // ms: leaves a day for rounding a range outward to whole buckets

/** An identifier parameter (warehouse, sku), or a 400 naming the field. */
export function ident(value: string, field: string): string {
  if (!isIdent(value)) throw new ValidationError(ErrorCode.badRequest, `${field} must match ^[A-Za-z0-9._-]{1,64}$`, field);
  return value;
}

/** A time parameter in ms: RFC 3339 or epoch milliseconds, within 1970-01-01…9999-12-31; absent: `fallback`. */
export function time(value: string | undefined, field: string, fallback: number): number {
  if (value === undefined || value === '') return fallback;
  const ms = /^\d+$/.test(value) ? Number(value) : Date.parse(value);
  if (!Number.isFinite(ms)) throw new ValidationError(ErrorCode.badRequest, `${field} must be RFC 3339 or epoch milliseconds`, field);
  if (ms < EARLIEST || ms > LATEST) throw new ValidationError(ErrorCode.badRequest, `${field} must lie between 1970-01-01T00:00:00Z and 9999-12-31T00:00:00Z`, field);
  return ms;
}
