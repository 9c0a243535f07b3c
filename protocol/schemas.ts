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

/** Retained `stock/{sku}`. `inTransit`: shipped by transfers between warehouses and not yet received. */
export const GlobalStock = Type.Object(
  {
    sku: Ident,
    ...Levels,
    inTransit: Type.Integer({ minimum: 0 }),
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
    type: Type.Union(
      [...DELTA_TYPES, 'counted' as const].map((t) => Type.Literal(t)),
      { description: 'book events only: level readings are not in the event log' },
    ),
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

/** Seconds a reservation may be held at most (7 days). */
export const MAX_RESERVATION_TTL_S = 7 * 24 * 3600;
/** Seconds a transfer may take at most before it is compensated (90 days). */
export const MAX_TRANSFER_TIMEOUT_S = 90 * 24 * 3600;
const Qty = Type.Integer({ minimum: 1, maximum: 1_000_000 });

/** Body of `POST /v1/reservations` (CONTRACT section 6), also `data` of an MQTT `reservations.create`. */
export const ReservationRequest = Type.Object(
  {
    sku: Ident,
    qty: Qty,
    warehouse: Type.Optional(Ident),
    ttlSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_RESERVATION_TTL_S })),
    /** allow several warehouses to share the quantity when no single one can hold it all */
    split: Type.Optional(Type.Boolean()),
    /** sales channel: selects the channel's warehouse priority list */
    channel: Type.Optional(Ident),
  },
  { additionalProperties: false },
);
export type ReservationRequest = Static<typeof ReservationRequest>;

/** Body of `POST /v1/transfers`, also `data` of an MQTT `transfers.create`. */
export const TransferRequest = Type.Object(
  {
    sku: Ident,
    qty: Qty,
    from: Ident,
    to: Ident,
    timeoutSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_TRANSFER_TIMEOUT_S })),
  },
  { additionalProperties: false },
);
export type TransferRequest = Static<typeof TransferRequest>;

// Reservation and transfer ids are made by central (`r-<uuid>`, `t-<uuid>`): identifiers, which the id paths take.
const Id = Type.String({ pattern: IDENT_PATTERN });
const Time = Type.String({ format: 'date-time' });

/** The 201 answer to a reservation; `parts` only when `split` was asked for (`warehouse` is null when there are several). */
export const ReservationGranted = Type.Object(
  {
    id: Type.String({
      pattern: IDENT_PATTERN,
      description: 'name it in the `reservation` field of the shipped event that fulfils it',
    }),
    sku: Ident,
    qty: Qty,
    warehouse: Type.Union([Ident, Type.Null()]),
    expiresAt: Time,
    parts: Type.Optional(
      Type.Array(Type.Object({ id: Id, warehouse: Ident, qty: Qty }, { additionalProperties: false }), {
        description: 'with `split`: one hold per warehouse',
      }),
    ),
  },
  { additionalProperties: false },
);
export type ReservationGranted = Static<typeof ReservationGranted>;

export const ReservationState = Type.Union([
  Type.Literal('active'),
  Type.Literal('consumed'),
  Type.Literal('released'),
  Type.Literal('expired'),
]);
export type ReservationState = Static<typeof ReservationState>;

/** `GET /v1/reservations/{id}` of one hold. */
export const ReservationView = Type.Object(
  {
    id: Id,
    sku: Ident,
    qty: Qty,
    warehouse: Ident,
    expiresAt: Time,
    state: ReservationState,
    remaining: Type.Integer({ minimum: 0, description: 'what the hold still holds' }),
    consumed: Type.Integer({ minimum: 0, description: 'taken by shipped events that named it' }),
    createdAt: Time,
    group: Type.Optional(Type.String({ description: 'the id of the split reservation this hold is a part of' })),
    channel: Type.Optional(Ident),
    transfer: Type.Optional(Type.String({ description: 'the transfer this hold belongs to' })),
  },
  { additionalProperties: false },
);
export type ReservationView = Static<typeof ReservationView>;

export const TransferState = Type.Union([
  Type.Literal('reserved'),
  Type.Literal('in_transit'),
  Type.Literal('completed'),
  Type.Literal('compensated'),
  Type.Literal('cancelled'),
]);
export type TransferState = Static<typeof TransferState>;

/** A transfer as answered by `POST` and `GET /v1/transfers/{id}`; `reservation` is the hold at the source (same id). */
export const TransferView = Type.Object(
  {
    id: Id,
    sku: Ident,
    qty: Qty,
    from: Ident,
    to: Ident,
    state: TransferState,
    reservation: Id,
    shipped: Type.Integer({ minimum: 0 }),
    received: Type.Integer({ minimum: 0 }),
    inTransit: Type.Integer({ minimum: 0 }),
    deadline: Time,
    createdAt: Time,
    updatedAt: Time,
  },
  { additionalProperties: false },
);
export type TransferView = Static<typeof TransferView>;

export const REQUEST_ACTIONS = [
  'reservations.create',
  'reservations.get',
  'reservations.release',
  'transfers.create',
  'transfers.get',
  'transfers.cancel',
] as const;
export type RequestAction = (typeof REQUEST_ACTIONS)[number];

/** A command over MQTT, published to `requests/{own id}`. `data` is the HTTP body (create) or `{"id"}`. */
export const CommandRequest = Type.Object(
  {
    requestId: Type.String({ minLength: 1, maxLength: 128 }),
    action: Type.Union(REQUEST_ACTIONS.map((a) => Type.Literal(a))),
    /** default `responses/{own id}`; must be that topic or below it */
    responseTopic: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    /** required for the `*.create` actions, as the HTTP header is */
    idempotencyKey: Type.Optional(Type.String({ pattern: '^[\\x21-\\x7E]{1,255}$' })),
    data: Type.Optional(Type.Object({}, { additionalProperties: true })),
  },
  { additionalProperties: false },
);
export type CommandRequest = Static<typeof CommandRequest>;

/** The answer on the response topic (zigbee2mqtt style): the caller's `requestId` echoed (null when it could not be read). */
export const CommandResponse = Type.Union([
  Type.Object(
    {
      requestId: Type.Union([Type.String(), Type.Null()]),
      status: Type.Literal('ok'),
      data: Type.Unknown({ description: 'the HTTP body of the same command; absent for a release or cancel' }),
    },
    { additionalProperties: false },
  ),
  Type.Object(
    {
      requestId: Type.Union([Type.String(), Type.Null()]),
      status: Type.Literal('error'),
      error: Type.Object(
        { code: Type.String(), message: Type.String(), field: Type.Optional(Type.String()) },
        { additionalProperties: false },
      ),
    },
    { additionalProperties: false },
  ),
]);
export type CommandResponse = Static<typeof CommandResponse>;
