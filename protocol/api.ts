import { Type, type Static } from '@sinclair/typebox';
import { ErrorCode } from './errors.js';
import { IDENT_PATTERN } from './ids.js';
import { Ident } from './schemas.js';

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
    sku: Type.Optional(Type.String({ pattern: IDENT_PATTERN, description: 'absent: every sku of the warehouse, summed' })),
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
          counts: Type.Integer({ minimum: 0, description: 'counted events (cycle counts); counts and countCorrection are read from the event log, the rest from movements_hourly' }),
          countCorrection: Type.Integer({ description: 'sum over those counts of (counted qty − book onHand just before the count, in ledger order); negative: shrinkage found' }),
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
