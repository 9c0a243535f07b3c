import { Ajv, type ErrorObject } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { ErrorCode, ValidationError } from './errors.js';
import { EventPayloadV1, MAX_EVENT_BYTES, type DeltaType } from './schemas.js';

// ajv-formats is CommonJS: under ESM its plugin function is the module's `default` property.
const addFormats = (addFormatsModule as unknown as { default: (ajv: Ajv) => Ajv }).default;

export const ajv = new Ajv({ allErrors: false, strict: true });
addFormats(ajv);
const validatePayload = ajv.compile<EventPayloadV1>(EventPayloadV1);

/** How far ahead of the receiving clock an event time may be before it is distrusted. */
export const MAX_CLOCK_AHEAD_MS = 5 * 60 * 1000;
/**
 * How far an edge's clock may run ahead of central's (ms). An edge forwards a `ts` at most MAX_CLOCK_AHEAD_MS
 * ahead of its receipt, which precedes central's; one further ahead of central's clock than both together came
 * from an edge that broke the rule (an old edge, or a hostile gateway) and is never trusted: no single event can
 * then become a count that later events cannot supersede.
 */
export const EDGE_CLOCK_TOLERANCE_MS = 5 * 60 * 1000;

interface EventBase {
  wh: string;
  device: string;
  id: string;
  sku: string;
  qty: number;
  /** Event time, epoch ms: the device's `ts`, or the receipt time when absent or too far ahead. */
  ts: number;
  receivedAt: number;
  location?: string;
  reason?: string;
  /** The payload as received, unknown fields included. */
  payload: Record<string, unknown>;
}
export interface DeltaEvent extends EventBase {
  type: DeltaType;
  reservation?: string;
}
export interface CountedEvent extends EventBase {
  type: 'counted';
}
export interface LevelEvent extends EventBase {
  type: 'level';
  location: string;
}
/** A validated event, stamped with its warehouse and device from the connection. */
export type StockEvent = DeltaEvent | CountedEvent | LevelEvent;

export interface EventSource {
  wh: string;
  device: string;
  /** epoch ms, the receiving clock */
  receivedAt: number;
  /**
   * Largest payload accepted, in bytes: MAX_EVENT_BYTES (CONTRACT 3) where devices publish, STAMPED_EVENT_MAX_BYTES
   * behind an edge, which may have added its receipt time to an event of 8 KiB.
   */
  maxBytes?: number;
  /**
   * The edge that forwarded the event applied the 5-minute rule with its clock (CONTRACT 3): its `ts` stands,
   * unless it lies more than MAX_CLOCK_AHEAD_MS + EDGE_CLOCK_TOLERANCE_MS ahead of this clock.
   */
  tsDecidedByEdge?: boolean;
}

/** Bytes an edge adds to an event without `ts` by stamping its receipt time: `"ts":"2026-11-26T08:45:00.000Z",`. */
export const TS_STAMP_BYTES = 32;
/** What central and processors accept: an event of at most 8 KiB as its device sent it, plus the edge's stamp. */
export const STAMPED_EVENT_MAX_BYTES = MAX_EVENT_BYTES + TS_STAMP_BYTES;

export type ParseResult =
  | { ok: true; event: StockEvent }
  | { ok: false; error: ValidationError /** the event id, when the payload had a readable one */; id: string | null };

const QTY_RANGE: Record<StockEvent['type'], [number, number]> = {
  received: [1, 1_000_000],
  shipped: [1, 1_000_000],
  returned: [1, 1_000_000],
  adjusted: [-1_000_000, 1_000_000],
  counted: [0, 1_000_000_000],
  level: [0, 1_000_000_000],
};

// RFC 3339 date-time: date, `T` (or space, RFC 3339 section 5.6 note), time, zone.
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))$/;
/** The same as a JSON Schema pattern (documents accept exactly what the HTTP API and ingest accept). */
export const RFC3339_PATTERN = RFC3339.source;

/**
 * Whether the fields of an RFC 3339 match name a real time (RFC 3339 section 5.7). Date.parse rolls
 * 2026-02-30 over to March 2 and 24:00 to the next day; neither is a time a device can have meant.
 * A leap second (:60) is refused too: Date.parse has no way to represent it.
 */
function realTime(m: RegExpExecArray): boolean {
  const [year, month, day, hour, minute, second, offHour = 0, offMinute = 0] = [1, 2, 3, 4, 5, 6, 8, 9].map((i) =>
    m[i] === undefined ? undefined : Number(m[i]),
  );
  if (month === undefined || month < 1 || month > 12 || day === undefined || day < 1) return false;
  const y = year ?? 0;
  const leap = y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0);
  const daysInMonth = month === 2 ? (leap ? 29 : 28) : [4, 6, 9, 11].includes(month) ? 30 : 31;
  return (
    day <= daysInMonth &&
    (hour ?? 24) <= 23 &&
    (minute ?? 60) <= 59 &&
    (second ?? 60) <= 59 &&
    offHour <= 23 &&
    offMinute <= 59
  );
}

function fieldOf(err: ErrorObject): string | undefined {
  if (err.keyword === 'required') return String((err.params as { missingProperty: string }).missingProperty);
  const path = err.instancePath.replace(/^\//, '').split('/')[0];
  return path === '' ? undefined : path;
}

/** Milliseconds of an RFC 3339 date-time that names a real time; null for anything else (Date.parse alone takes far more). */
export function rfc3339Ms(value: string): number | null {
  const m = RFC3339.exec(value);
  if (m === null || !realTime(m)) return null;
  const ms = Date.parse(m[0]);
  return Number.isFinite(ms) ? ms : null;
}

function parseTs(ts: unknown): number | ValidationError {
  if (typeof ts === 'number') {
    if (!Number.isSafeInteger(ts) || ts > 8.64e15)
      return new ValidationError(ErrorCode.schemaViolation, 'ts is out of range', 'ts');
    return ts;
  }
  const m = typeof ts === 'string' ? RFC3339.exec(ts) : null;
  if (m !== null) {
    if (!realTime(m))
      return new ValidationError(ErrorCode.schemaViolation, `ts ${m[0]} names no real date and time`, 'ts');
    const ms = Date.parse(m[0]);
    if (Number.isFinite(ms)) return ms;
  }
  return new ValidationError(ErrorCode.schemaViolation, 'ts must be RFC 3339 or epoch milliseconds', 'ts');
}

// U+0000, or a UTF-16 surrogate without its pair (a JSON escape such as "\ud800"): no valid Unicode text.
// biome-ignore lint/suspicious/noControlCharactersInRegex: U+0000 is what PostgreSQL cannot store; this refuses it
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * The name of what PostgreSQL text and jsonb cannot store in this value's keys or strings, or null.
 * A walk with its own stack, not recursion: 8 KiB of JSON nests 4,000 arrays deep, enough to overflow
 * the call stack of a recursive walk (and the whole standalone processor with it).
 */
function unstorableText(root: unknown): string | null {
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const value = stack.pop();
    if (typeof value === 'string') {
      const m = UNSTORABLE.exec(value);
      if (m !== null) return m[0] === '\u0000' ? 'U+0000' : 'an unpaired surrogate';
    } else if (typeof value === 'object' && value !== null) {
      for (const [k, v] of Object.entries(value)) stack.push(k, v);
    }
  }
  return null;
}

function readableId(value: unknown): string | null {
  if (typeof value !== 'object' || value === null) return null;
  const id = (value as { id?: unknown }).id;
  return typeof id === 'string' && /^[A-Za-z0-9._:-]{1,64}$/.test(id) ? id : null;
}

/**
 * Validates a raw event payload (CONTRACT section 3). Never throws: every refusal
 * comes back with an error code and, where one field is at fault, its name.
 */
export function parseEvent(raw: Uint8Array, source: EventSource): ParseResult {
  const maxBytes = source.maxBytes ?? MAX_EVENT_BYTES;
  if (raw.byteLength > maxBytes) {
    return {
      ok: false,
      id: null,
      error: new ValidationError(ErrorCode.payloadTooLarge, `payload is ${raw.byteLength} bytes, limit ${maxBytes}`),
    };
  }
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('utf8'));
  } catch (err) {
    return {
      ok: false,
      id: null,
      error: new ValidationError(ErrorCode.invalidJson, `payload is not JSON: ${(err as Error).message}`),
    };
  }
  const id = readableId(value);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, id, error: new ValidationError(ErrorCode.schemaViolation, 'payload must be a JSON object') };
  }
  // PostgreSQL text and jsonb cannot store these: refuse them here, with a reason, rather than fail a batch.
  const unstorable = unstorableText(value);
  if (unstorable !== null) {
    return {
      ok: false,
      id,
      error: new ValidationError(ErrorCode.schemaViolation, `payload contains ${unstorable} in a string`),
    };
  }
  const v = (value as { v?: unknown }).v;
  if (v !== 1) {
    const code = v === undefined ? ErrorCode.schemaViolation : ErrorCode.unsupportedVersion;
    return {
      ok: false,
      id,
      error: new ValidationError(
        code,
        v === undefined ? 'v is required' : `unsupported version ${JSON.stringify(v)}`,
        'v',
      ),
    };
  }
  if (!validatePayload(value)) {
    const first = validatePayload.errors?.[0];
    const field = first ? fieldOf(first) : undefined;
    const message = first ? `${field ?? 'payload'} ${first.message ?? 'is invalid'}` : 'payload is invalid';
    return { ok: false, id, error: new ValidationError(ErrorCode.schemaViolation, message, field) };
  }
  const p = value;
  const range = QTY_RANGE[p.type];
  if (p.qty < range[0] || p.qty > range[1] || (p.type === 'adjusted' && p.qty === 0)) {
    const rule = p.type === 'adjusted' ? `non-zero, ${range[0]}…${range[1]}` : `${range[0]}…${range[1]}`;
    return {
      ok: false,
      id,
      error: new ValidationError(ErrorCode.schemaViolation, `qty of a ${p.type} event must be ${rule}`, 'qty'),
    };
  }
  if (p.type === 'level' && p.location === undefined) {
    return {
      ok: false,
      id,
      error: new ValidationError(ErrorCode.schemaViolation, 'location is required for a level event', 'location'),
    };
  }
  if (p.reservation !== undefined && p.type !== 'shipped') {
    return {
      ok: false,
      id,
      error: new ValidationError(
        ErrorCode.schemaViolation,
        'reservation is allowed only on a shipped event',
        'reservation',
      ),
    };
  }
  let ts = source.receivedAt;
  if (p.ts !== undefined) {
    const parsed = parseTs(p.ts);
    if (parsed instanceof ValidationError) return { ok: false, id, error: parsed };
    // An event time too far ahead of the edge clock is distrusted (CONTRACT section 3). An edge decided with its
    // clock, which may run a little ahead of this one; never so far that one event could anchor stock for good.
    const ahead = source.tsDecidedByEdge === true ? MAX_CLOCK_AHEAD_MS + EDGE_CLOCK_TOLERANCE_MS : MAX_CLOCK_AHEAD_MS;
    if (parsed <= source.receivedAt + ahead) ts = parsed;
  }
  const base = {
    wh: source.wh,
    device: source.device,
    id: p.id,
    sku: p.sku,
    qty: p.qty,
    ts,
    receivedAt: source.receivedAt,
    payload: value as unknown as Record<string, unknown>,
    ...(p.location !== undefined && { location: p.location }),
    ...(p.reason !== undefined && { reason: p.reason }),
  };
  if (p.type === 'level') return { ok: true, event: { ...base, type: 'level', location: p.location as string } };
  if (p.type === 'counted') return { ok: true, event: { ...base, type: 'counted' } };
  return {
    ok: true,
    event: { ...base, type: p.type, ...(p.reservation !== undefined && { reservation: p.reservation }) },
  };
}

/** Signed effect of a delta event on `onHand`. */
export function deltaOf(e: DeltaEvent): number {
  return e.type === 'shipped' ? -e.qty : e.qty;
}
