import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { ErrorCode } from './errors.js';
import { IDENT_PATTERN } from './ids.js';
import { GlobalStock, Ident, LinkStatus, ReservationView, TransferView, WarehouseStock } from './schemas.js';

/** Bodies of the HTTP API of CONTRACT section 6 (the stock objects are those of section 4). */

/** The file in DATA_DIR where central or a processor keeps the API write token it generated (API_TOKEN unset). */
export const API_TOKEN_FILE = 'api-token';

/** Every error answer: `{"error":{"code","message","field"?}}`; `field` names the offending input on a 400. */
export const ErrorResponse = Type.Object(
  {
    error: Type.Object(
      {
        code: Type.Union(Object.values(ErrorCode).map((c) => Type.Literal(c))),
        message: Type.String(),
        field: Type.Optional(Type.String()),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);
export type ErrorResponse = Static<typeof ErrorResponse>;

/** `GET /v1/stock/{sku}/history`: movements per time bucket and warehouse. */
export const StockHistory = Type.Object(
  {
    sku: Ident,
    from: Type.String({ format: 'date-time' }),
    to: Type.String({ format: 'date-time' }),
    bucketSeconds: Type.Number({ exclusiveMinimum: 0 }),
    movements: Type.Array(
      Type.Object(
        {
          bucket: Type.String({ format: 'date-time', description: 'start of the bucket' }),
          warehouse: Ident,
          received: Type.Integer(),
          shipped: Type.Integer(),
          returned: Type.Integer(),
          adjusted: Type.Integer(),
          counts: Type.Integer({ minimum: 0, description: 'counted events in the bucket' }),
          net: Type.Integer({ description: 'sum of the signed deltas' }),
          events: Type.Integer({ minimum: 0 }),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);
export type StockHistory = Static<typeof StockHistory>;

/** `GET /v1/movements`: the movements of one warehouse (one sku, or all its skus summed) per hour or day. */
export const Movements = Type.Object(
  {
    warehouse: Ident,
    sku: Type.Optional(
      Type.String({ pattern: IDENT_PATTERN, description: 'absent: every sku of the warehouse, summed' }),
    ),
    bucket: Type.Union([Type.Literal('hour'), Type.Literal('day')]),
    from: Type.String({ format: 'date-time', description: 'the range asked for, widened to whole buckets (UTC)' }),
    to: Type.String({ format: 'date-time' }),
    movements: Type.Array(
      Type.Object(
        {
          bucket: Type.String({ format: 'date-time', description: 'start of the bucket (UTC hour or UTC day)' }),
          received: Type.Integer({ minimum: 0, description: 'units received' }),
          shipped: Type.Integer({ minimum: 0, description: 'units shipped' }),
          returned: Type.Integer({ minimum: 0, description: 'units returned' }),
          adjusted: Type.Integer({ description: 'sum of the signed adjustments' }),
          counts: Type.Integer({
            minimum: 0,
            description:
              'counted events (cycle counts); counts and countCorrection are read from the event log, the rest from movements_hourly',
          }),
          countCorrection: Type.Integer({
            description:
              'sum over those counts of (counted qty − book onHand just before the count, in ledger order); negative: shrinkage found',
          }),
          net: Type.Integer({ description: 'received − shipped + returned + adjusted: the sum of the signed deltas' }),
          change: Type.Integer({ description: 'net + countCorrection: how much book onHand changed over the bucket' }),
          events: Type.Integer({ minimum: 0, description: 'events of every type in the bucket' }),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);
export type Movements = Static<typeof Movements>;

// Bodies of reservations and transfers (requests and answers) are in schemas.ts: MQTT commands carry them too.

/** `GET /healthz` and `GET /readyz`; /readyz of central and processors names the database in use. */
export const Health = Type.Object(
  {
    status: Type.String(),
    storage: Type.Optional(
      Type.Object(
        {
          kind: Type.Union([Type.Literal('timescaledb'), Type.Literal('postgresql')]),
          postgres: Type.String({ description: "the server's PostgreSQL version" }),
          timescaledb: Type.Optional(Type.String({ description: "the TimescaleDB extension's version, when in use" })),
        },
        { description: 'the database in use (TIMESCALEDB)' },
      ),
    ),
  },
  { additionalProperties: true },
);

/** Items a list answers at most, and by default (`limit`). */
export const MAX_PAGE_LIMIT = 1000;
export const DEFAULT_PAGE_LIMIT = 100;
/** A list's cursor: opaque base64url, as the previous page gave it out. */
export const CURSOR_PATTERN = '^[A-Za-z0-9_-]{1,512}$';

/** One page of a list: its items in the list's order, and where the next page starts. */
const page = <T extends TSchema>(item: T, description: string) =>
  Type.Object(
    {
      items: Type.Array(item, { maxItems: MAX_PAGE_LIMIT, description }),
      nextCursor: Type.Union([Type.String({ pattern: CURSOR_PATTERN }), Type.Null()], {
        description: 'send as `cursor` for the next page; null: this page is the last',
      }),
    },
    { additionalProperties: false },
  );

/** `GET /v1/stock`: every sku's stock over all warehouses (the objects of `GET /v1/stock/{sku}`). */
export const StockPage = page(GlobalStock, 'in the order of `sort`, ties by sku');
export type StockPage = Static<typeof StockPage>;

/** `GET /v1/warehouses/{warehouse}/stock`: the stock rows of one warehouse. */
export const WarehouseStockPage = page(WarehouseStock, 'in the order of `sort`, ties by sku');
export type WarehouseStockPage = Static<typeof WarehouseStockPage>;

/** One warehouse in `GET /v1/warehouses`: its stock totals and its edge's link to central. */
export const Warehouse = Type.Object(
  {
    warehouse: Ident,
    skus: Type.Integer({ minimum: 0, description: 'skus with a stock row here' }),
    onHand: Type.Integer({ description: 'units on hand, all skus together' }),
    reserved: Type.Integer({ minimum: 0 }),
    available: Type.Integer(),
    link: Type.Union([LinkStatus, Type.Null()], {
      description:
        "the edge's retained wh/{wh}/status as central's broker holds it: `online` when the edge connected (with its backlog then), `offline` from its will or its clean stop. null: no edge has reported (or a standalone processor answers, which does not see central's broker)",
    }),
  },
  { additionalProperties: false },
);
export type Warehouse = Static<typeof Warehouse>;
export const WarehousePage = page(Warehouse, 'by warehouse id');
export type WarehousePage = Static<typeof WarehousePage>;

/** `GET /v1/reservations`: holds, each part of a split reservation on its own. */
export const ReservationPage = page(ReservationView, 'by createdAt, ties by id (`sort=-createdAt`: the exact reverse)');
export type ReservationPage = Static<typeof ReservationPage>;

/** `GET /v1/transfers`. */
export const TransferPage = page(TransferView, 'by createdAt, ties by id (`sort=-createdAt`: the exact reverse)');
export type TransferPage = Static<typeof TransferPage>;

/** `GET /v1/reservations/{id}` of a split reservation's id: its parts, each a hold of its own. */
export const ReservationGroupView = Type.Object(
  {
    id: Type.String({ pattern: IDENT_PATTERN }),
    sku: Ident,
    qty: Type.Integer({ minimum: 1, description: 'the parts together' }),
    warehouse: Type.Null({ description: 'null: the parts are in several warehouses' }),
    expiresAt: Type.String({ format: 'date-time' }),
    parts: Type.Array(ReservationView, { minItems: 1 }),
  },
  { additionalProperties: false },
);
export type ReservationGroupView = Static<typeof ReservationGroupView>;

/** `GET /display/config.json`: what the live display page needs to connect. */
export const DisplayConfig = Type.Object(
  {
    role: Type.Union([Type.Literal('central'), Type.Literal('edge')]),
    warehouse: Type.Optional(Ident),
    wsPort: Type.Integer({
      minimum: 0,
      maximum: 65535,
      description: 'MQTT over WebSocket, on the host the page came from',
    }),
    warehouses: Type.Array(Ident, { description: 'shown before their first message' }),
    credential: Type.Optional(
      Type.Object(
        { username: Type.String(), password: Type.String() },
        {
          additionalProperties: false,
          description:
            'demo only, and only to a page loaded from this machine by a loopback name (peer address and Host header)',
        },
      ),
    ),
  },
  { additionalProperties: false },
);
export type DisplayConfig = Static<typeof DisplayConfig>;
