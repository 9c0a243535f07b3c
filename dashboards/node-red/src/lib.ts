/** What the nodes share: identifier rules and topics of the stockwire contract, and the HTTP call. */
import { EVENT_ID_PATTERN, IDENT_PATTERN } from './limits.js';

export const IDENT = new RegExp(IDENT_PATTERN);
export const EVENT_ID = new RegExp(EVENT_ID_PATTERN);

/** A refusal of input that names the field at fault. */
export class FieldError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = 'FieldError';
  }
}

export function ident(value: unknown, field: string): string {
  if (typeof value !== 'string' || !IDENT.test(value)) throw new FieldError(field, `must match ${IDENT_PATTERN}`);
  return value;
}

export const blank = (v: unknown): boolean => v === undefined || v === null || v === '';

/** An integer in [min, max], from a number or a numeric string (a node's field). */
export function integer(v: unknown, field: string, min: number, max: number): number {
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max)
    throw new FieldError(field, `must be an integer from ${min} to ${max}`);
  return n;
}

/** The Idempotency-Key of a create: `msg.idempotencyKey`, else derived from the message id, so a retry repeats it. */
export function idempotencyKey(msg: { idempotencyKey?: unknown; _msgid: string }): string {
  return typeof msg.idempotencyKey === 'string' && msg.idempotencyKey !== ''
    ? msg.idempotencyKey
    : `node-red-${msg._msgid}`;
}

/** The error a non-success answer becomes: a FieldError when central named the field, else status and code. */
export function answerError(what: string, answer: ApiAnswer): Error {
  const e = apiError(answer.body);
  return e?.field
    ? new FieldError(e.field, e.message)
    : new Error(`${what}: ${answer.status} ${e ? `${e.code}: ${e.message}` : ''}`.trim());
}

/** MQTT topic filter match (MQTT-4.7.1): `+` one level, `#` the rest. */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length || (f[i] !== '+' && f[i] !== t[i])) return false;
  }
  return f.length === t.length;
}

export interface ApiAnswer {
  status: number;
  body: unknown;
}

export interface ApiError {
  code: string;
  message: string;
  field?: string;
}

/** The `error` object of a stockwire error answer, if the body is one. */
export function apiError(body: unknown): ApiError | undefined {
  const e = (body as { error?: unknown } | null)?.error;
  return typeof e === 'object' && e !== null && typeof (e as ApiError).code === 'string' ? (e as ApiError) : undefined;
}

const HTTP_TIMEOUT_MS = 10_000;

/** One JSON request to central's HTTP API; throws only when no answer came (network, timeout). */
export async function request(
  base: string,
  method: string,
  path: string,
  o: { body?: unknown; headers?: Record<string, string> } = {},
): Promise<ApiAnswer> {
  // Relative to the base, so a base path (a reverse proxy's /stockwire/) is kept.
  const res = await fetch(new URL(path.replace(/^\//, ''), base.endsWith('/') ? base : `${base}/`), {
    method,
    headers: {
      accept: 'application/json',
      ...(o.body !== undefined && { 'content-type': 'application/json' }),
      ...o.headers,
    },
    ...(o.body !== undefined && { body: JSON.stringify(o.body) }),
    signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
  });
  const text = await res.text();
  let body: unknown = null;
  if (text !== '') {
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
  }
  return { status: res.status, body };
}
