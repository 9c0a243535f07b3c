import { Type, type Static } from '@sinclair/typebox';
import { EVENT_ID_PATTERN, IDENT_PATTERN } from './ids.js';

/** Payload limit of CONTRACT section 3, in bytes. */
export const MAX_EVENT_BYTES = 8 * 1024;

export const Ident = Type.String({ pattern: IDENT_PATTERN });
export const EVENT_TYPES = ['received', 'shipped', 'returned', 'adjusted', 'counted', 'level'] as const;
export type EventType = (typeof EVENT_TYPES)[number];
export const DELTA_TYPES = ['received', 'shipped', 'returned', 'adjusted'] as const;
export type DeltaType = (typeof DELTA_TYPES)[number];

/**
 * Event payload v1 (CONTRACT section 3) as it arrives from a device.
 * Unknown fields are allowed: they are kept in the stored event.
 * Per-type quantity ranges are checked by `parseEvent`, which names the field.
 */
export const EventPayloadV1 = Type.Object(
  {
    v: Type.Literal(1),
    id: Type.String({ pattern: EVENT_ID_PATTERN }),
    type: Type.Union(EVENT_TYPES.map((t) => Type.Literal(t))),
    sku: Ident,
    qty: Type.Integer({ minimum: -1_000_000, maximum: 1_000_000_000 }),
    ts: Type.Optional(Type.Union([Type.String({ maxLength: 64 }), Type.Integer({ minimum: 0 })])),
    location: Type.Optional(Ident),
    reservation: Type.Optional(Type.String({ pattern: EVENT_ID_PATTERN })),
    reason: Type.Optional(Type.String({ maxLength: 200 })),
  },
  { additionalProperties: true },
);
export type EventPayloadV1 = Static<typeof EventPayloadV1>;

export const AckStatus = Type.Union([Type.Literal('applied'), Type.Literal('duplicate'), Type.Literal('rejected')]);
export type AckStatus = Static<typeof AckStatus>;

/** Ack of CONTRACT section 4, published to `wh/{wh}/dev/{device}/ack` after the deciding commit. */
export const Ack = Type.Object(
  {
    id: Type.Union([Type.String(), Type.Null()]),
    status: AckStatus,
    error: Type.Optional(Type.Object({ code: Type.String(), message: Type.String() })),
    stock: Type.Optional(Type.Object({ onHand: Type.Integer(), available: Type.Integer() })),
  },
  { additionalProperties: false },
);
export type Ack = Static<typeof Ack>;

const Levels = {
  onHand: Type.Integer(),
  reserved: Type.Integer(),
  available: Type.Integer(),
};

/** Retained `wh/{wh}/stock/{sku}`. */
export const WarehouseStock = Type.Object(
  {
    sku: Ident,
    warehouse: Ident,
    ...Levels,
    version: Type.Integer({ minimum: 1 }),
    asOf: Type.String({ format: 'date-time' }),
  },
  { additionalProperties: false },
);
export type WarehouseStock = Static<typeof WarehouseStock>;

/** Retained `stock/{sku}`. */
export const GlobalStock = Type.Object(
  {
    sku: Ident,
    ...Levels,
    warehouses: Type.Record(Type.String(), Type.Object(Levels, { additionalProperties: false })),
    version: Type.Integer({ minimum: 1 }),
    asOf: Type.String({ format: 'date-time' }),
  },
  { additionalProperties: false },
);
export type GlobalStock = Static<typeof GlobalStock>;

/** Retained `wh/{wh}/shelf/{location}/{sku}`: the latest reading by event time. */
export const ShelfReading = Type.Object(
  {
    sku: Ident,
    warehouse: Ident,
    location: Ident,
    qty: Type.Integer(),
    ts: Type.String({ format: 'date-time' }),
    device: Ident,
  },
  { additionalProperties: false },
);
export type ShelfReading = Static<typeof ShelfReading>;

/** Retained `wh/{wh}/status`. */
export const LinkStatus = Type.Object(
  {
    central: Type.Union([Type.Literal('online'), Type.Literal('offline')]),
    since: Type.String({ format: 'date-time' }),
    backlog: Type.Integer({ minimum: 0 }),
  },
  { additionalProperties: false },
);
export type LinkStatus = Static<typeof LinkStatus>;

/** `alerts/{wh}/{kind}`. */
export const Alert = Type.Object(
  {
    kind: Type.String(),
    wh: Type.String(),
    sku: Type.Optional(Type.String()),
    message: Type.String(),
    at: Type.String({ format: 'date-time' }),
  },
  { additionalProperties: false },
);
export type Alert = Static<typeof Alert>;

/**
 * One event of the log as `stockwire replay` republishes it for downstream consumers: the stored
 * event with the warehouse and device it came from, its signed effect on onHand and its commit time.
 */
export const ReplayedEvent = Type.Object(
  {
    wh: Ident,
    device: Ident,
    id: Type.String({ pattern: EVENT_ID_PATTERN }),
    type: Type.Union([...DELTA_TYPES, 'counted' as const].map((t) => Type.Literal(t)), { description: 'book events only: level readings are not in the event log' }),
    sku: Ident,
    qty: Type.Integer(),
    delta: Type.Integer({ description: 'signed effect on onHand; 0 for counted' }),
    ts: Type.String({ format: 'date-time', description: 'event time: the ledger orders by (ts, id, device)' }),
    location: Type.Optional(Type.String()),
    reservation: Type.Optional(Type.String()),
    reason: Type.Optional(Type.String()),
    receivedAt: Type.String({ format: 'date-time' }),
    committedAt: Type.String({ format: 'date-time' }),
    payload: Type.Record(Type.String(), Type.Unknown(), { description: 'the event exactly as the device sent it' }),
  },
  { additionalProperties: false },
);
export type ReplayedEvent = Static<typeof ReplayedEvent>;
