import { isUtf8 } from 'node:buffer';
import { Type, type Static } from '@sinclair/typebox';
import { ErrorCode, ValidationError } from './errors.js';
import { ajv } from './event.js';
import { EVENT_ID_PATTERN } from './ids.js';
import { Ack, Ident } from './schemas.js';

/**
 * The batched link between an edge and central (CONTRACT 2: `wh/{wh}/gw/{gateway}/batch` and `…/batch-ack`). An
 * optimisation of the edge→central hop only: every event in a batch is the device's payload exactly as it would have
 * been published alone, and central decides it exactly as it would a single event.
 */
export const BATCH_VERSION = 1;
/** The most events a batch may hold, whatever is configured: the schema refuses more. */
export const BATCH_EVENTS_CEILING = 1_000;

/** One event of a batch: its device (the topic's `{device}`) and its payload, as UTF-8 text or, when not UTF-8, base64. */
export const BatchEvent = Type.Union([
  Type.Object({ device: Ident, payload: Type.String() }, { additionalProperties: false }),
  Type.Object(
    { device: Ident, payloadBase64: Type.String({ pattern: '^[A-Za-z0-9+/]*={0,2}$' }) },
    { additionalProperties: false },
  ),
]);
export type BatchEvent = Static<typeof BatchEvent>;

/** `wh/{wh}/gw/{gateway}/batch`, version 1: the events in outbox order (oldest first per device). */
export const GatewayBatchV1 = Type.Object(
  {
    v: Type.Literal(BATCH_VERSION),
    /** the edge's name for this batch, echoed by its batch-ack; unique per edge process */
    batch: Type.String({ pattern: EVENT_ID_PATTERN }),
    events: Type.Array(BatchEvent, { minItems: 1, maxItems: BATCH_EVENTS_CEILING }),
  },
  { additionalProperties: false },
);
export type GatewayBatchV1 = Static<typeof GatewayBatchV1>;

/** What central takes on the batch link, sent on the batch-ack topic when the edge subscribes to it. */
export const BatchHello = Type.Object(
  {
    v: Type.Literal(BATCH_VERSION),
    hello: Type.Object(
      {
        /** batch versions central reads */
        versions: Type.Array(Type.Integer({ minimum: 1 }), { minItems: 1 }),
        /** events per batch at most */
        maxEvents: Type.Integer({ minimum: 1, maximum: BATCH_EVENTS_CEILING }),
        /** bytes of a batch payload at most (the central broker's publish limit) */
        maxBytes: Type.Integer({ minimum: 1 }),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);
export type BatchHello = Static<typeof BatchHello>;

/** One commit ack per batch: `acks[i]` is the ack of the batch's event i, exactly as its device gets it. */
export const BatchAckV1 = Type.Object(
  {
    v: Type.Literal(BATCH_VERSION),
    batch: Type.String({ pattern: EVENT_ID_PATTERN }),
    acks: Type.Array(Ack),
  },
  { additionalProperties: false },
);
export type BatchAckV1 = Static<typeof BatchAckV1>;

/** A batch central could not read at all (kept as a dead letter); `batch` when its name was readable. */
export const BatchRefused = Type.Object(
  {
    v: Type.Literal(BATCH_VERSION),
    batch: Type.Union([Type.String({ pattern: EVENT_ID_PATTERN }), Type.Null()]),
    error: Type.Object({ code: Type.String(), message: Type.String() }, { additionalProperties: false }),
  },
  { additionalProperties: false },
);
export type BatchRefused = Static<typeof BatchRefused>;

/** Everything central sends on `wh/{wh}/gw/{gateway}/batch-ack`. */
export const BatchAckMessage = Type.Union([BatchHello, BatchAckV1, BatchRefused]);
export type BatchAckMessage = Static<typeof BatchAckMessage>;

const validateBatch = ajv.compile<GatewayBatchV1>(GatewayBatchV1);
const validateAckMessage = ajv.compile<BatchAckMessage>(BatchAckMessage);

/** A batch as central reads it: each event's device and payload bytes. */
export interface ParsedBatch {
  batch: string;
  events: { device: string; payload: Buffer }[];
}

export type BatchParseResult =
  | { ok: true; batch: ParsedBatch }
  | { ok: false; error: ValidationError /** the batch's name, when readable */; batch: string | null };

const readableBatchId = (value: unknown): string | null => {
  if (typeof value !== 'object' || value === null) return null;
  const id = (value as { batch?: unknown }).batch;
  return typeof id === 'string' && new RegExp(EVENT_ID_PATTERN).test(id) ? id : null;
};

/** Validates a batch payload. Never throws. Its events are not read here: each goes through `parseEvent` on its own. */
export function parseBatch(raw: Buffer, maxBytes: number): BatchParseResult {
  if (raw.byteLength > maxBytes)
    return {
      ok: false,
      batch: null,
      error: new ValidationError(ErrorCode.payloadTooLarge, `batch is ${raw.byteLength} bytes, limit ${maxBytes}`),
    };
  let value: unknown;
  try {
    value = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    return {
      ok: false,
      batch: null,
      error: new ValidationError(ErrorCode.invalidJson, `batch is not JSON: ${(err as Error).message}`),
    };
  }
  const batch = readableBatchId(value);
  const v = typeof value === 'object' && value !== null ? (value as { v?: unknown }).v : undefined;
  if (v !== undefined && v !== BATCH_VERSION)
    return {
      ok: false,
      batch,
      error: new ValidationError(ErrorCode.unsupportedVersion, `unsupported batch version ${JSON.stringify(v)}`, 'v'),
    };
  if (!validateBatch(value)) {
    const first = validateBatch.errors?.[0];
    const where = first?.instancePath ? first.instancePath.slice(1).replaceAll('/', '.') : 'batch';
    return {
      ok: false,
      batch,
      error: new ValidationError(ErrorCode.schemaViolation, `batch ${where} ${first?.message ?? 'is invalid'}`),
    };
  }
  return {
    ok: true,
    batch: {
      batch: value.batch,
      events: value.events.map((e) => ({
        device: e.device,
        payload: 'payload' in e ? Buffer.from(e.payload, 'utf8') : Buffer.from(e.payloadBase64, 'base64'),
      })),
    },
  };
}

/** A message on the batch-ack topic, or null when it is none of the three kinds. */
export function parseBatchAckMessage(raw: Buffer): BatchAckMessage | null {
  let value: unknown;
  try {
    value = JSON.parse(raw.toString('utf8'));
  } catch {
    return null;
  }
  return validateAckMessage(value) ? value : null;
}

/**
 * One event of a batch as JSON text. A payload that is valid UTF-8 travels as text (its bytes exactly: central's
 * dead letters and reused-id checks see what the device sent); anything else as base64.
 */
export function encodeBatchEvent(device: string, payload: Buffer): string {
  // isUtf8 is strict (no surrogates, overlongs or lone bytes), as the decode-and-re-encode it replaces: only a payload
  // whose text encodes back to the same bytes travels as text.
  return isUtf8(payload)
    ? JSON.stringify({ device, payload: payload.toString('utf8') })
    : JSON.stringify({ device, payloadBase64: payload.toString('base64') });
}

/** Bytes of a batch's envelope around its events (`{"v":1,"batch":"…","events":[` and `]}`); each event adds its own plus a comma. */
export const batchEnvelopeBytes = (batch: string): number =>
  Buffer.byteLength(`{"v":1,"batch":"${batch}","events":[]}`);

/** A batch payload from events encoded by `encodeBatchEvent`. */
export const encodeBatch = (batch: string, events: string[]): Buffer =>
  Buffer.from(`{"v":${BATCH_VERSION},"batch":"${batch}","events":[${events.join(',')}]}`);
