import { Type, type Static } from '@sinclair/typebox';
import { ErrorCode } from './errors.js';
import { Ident } from './schemas.js';

/** Bodies of the HTTP API of CONTRACT section 6 (the stock objects are those of section 4). */

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

// The body of `POST /v1/reservations` is ReservationRequest in schemas.ts (its handler validates with it).

/** A granted reservation (201); a repeated `Idempotency-Key` returns the first answer. */
export const Reservation = Type.Object(
  {
    id: Type.String({ pattern: '^[A-Za-z0-9._:-]{1,64}$', description: 'name it in the `reservation` field of the shipped event that fulfils it' }),
    sku: Ident,
    qty: Type.Integer({ minimum: 1 }),
    warehouse: Ident,
    expiresAt: Type.String({ format: 'date-time' }),
  },
  { additionalProperties: false },
);
export type Reservation = Static<typeof Reservation>;

/** `GET /healthz` and `GET /readyz`. */
export const Health = Type.Object({ status: Type.String() }, { additionalProperties: true });
