import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import {
  ErrorCode,
  ValidationError,
  type LinkStatus,
  type ReservationPage,
  type StockPage,
  type TransferPage,
  type Warehouse,
  type WarehousePage,
  type WarehouseStockPage,
} from '../protocol/index.js';
import { globalStock } from './db/stock.js';
import { pageOf, pageRequest, type Key, type PageRequest } from './paging.js';
import { ident, onlyKnown, single, type Query } from './query-params.js';
import { reservationView, type HoldRow } from './reservations/holds.js';
import { transferView, type TransferRow } from './reservations/transfers.js';

/** Each warehouse's retained `wh/{wh}/status`, as the broker holds it (absent: no edge has reported). */
export type LinkLookup = () => Promise<Map<string, LinkStatus>>;

const STOCK_SORTS = { sku: ['string'], available: ['integer', 'string'], '-available': ['integer', 'string'] } as const;
type StockSort = keyof typeof STOCK_SORTS;
const CREATED_SORTS = { createdAt: ['integer', 'string'], '-createdAt': ['integer', 'string'] } as const;
type CreatedSort = keyof typeof CREATED_SORTS;

/** Parameters of each list (anything else is a 400 naming it). */
export const LIST_PARAMS = {
  stock: ['sort', 'limit', 'cursor'],
  warehouses: ['limit', 'cursor'],
  reservations: ['sku', 'warehouse', 'state', 'sort', 'limit', 'cursor'],
  transfers: ['sku', 'from', 'to', 'state', 'sort', 'limit', 'cursor'],
} as const;
export const RESERVATION_STATES = ['active', 'consumed', 'released', 'expired'] as const;
export const TRANSFER_STATES = ['reserved', 'in_transit', 'completed', 'compensated', 'cancelled'] as const;

/**
 * SQL of a keyset: the rows after (`value`, `tieValue`) in the order of `column` (descending for a `-` sort) and
 * `tie`, ascending unless `reverse` (then the exact reverse of the ascending order).
 */
function keyset(
  sort: string,
  column: string,
  tie: string,
  value: string,
  tieValue: string,
  reverse = false,
): { where: string; order: string } {
  const desc = sort.startsWith('-');
  if (!desc) return { where: `(${column}, ${tie}) > (${value}, ${tieValue})`, order: `${column} ASC, ${tie} ASC` };
  if (reverse) return { where: `(${column}, ${tie}) < (${value}, ${tieValue})`, order: `${column} DESC, ${tie} DESC` };
  return {
    where: `(${column} < ${value} OR (${column} = ${value} AND ${tie} > ${tieValue}))`,
    order: `${column} DESC, ${tie} ASC`,
  };
}

/** The stock rows of one warehouse, in sku order or by available; the same objects as `GET /v1/warehouses/{wh}/stock/{sku}`. */
async function warehouseStock(pool: pg.Pool, wh: string, p: PageRequest<StockSort>): Promise<WarehouseStockPage> {
  type Row = { sku: string; on_hand: number; reserved: number; available: number; version: number; updated_at: Date };
  const values: unknown[] = [wh, p.limit + 1];
  let where = '';
  let order = 'sku';
  if (p.sort !== 'sku') {
    const k = keyset(p.sort, 'on_hand - reserved', 'sku', '$3', '$4');
    order = k.order;
    if (p.after) where = `AND ${k.where}`;
  } else if (p.after) where = 'AND sku > $3';
  if (p.after) values.push(...p.after);
  const { rows } = await pool.query<Row>(
    `SELECT sku, on_hand, reserved, on_hand - reserved AS available, version, updated_at FROM stock
     WHERE wh = $1 AND version > 0 ${where} ORDER BY ${order} LIMIT $2`,
    values,
  );
  const keyOf = (r: Row): Key => (p.sort === 'sku' ? [r.sku] : [r.available, r.sku]);
  return pageOf(rows, p.limit, p.sort, keyOf, (r) => ({
    sku: r.sku,
    warehouse: wh,
    onHand: r.on_hand,
    reserved: r.reserved,
    available: r.available,
    version: r.version,
    asOf: r.updated_at.toISOString(),
  }));
}

/**
 * Every sku's global stock. The page's skus and their objects are read in one snapshot (REPEATABLE READ), so an
 * item's `available` is the one it was sorted by. Sorting by available sums every sku's rows: bounded by the
 * read pool's statement timeout, like every read.
 */
async function allStock(pool: pg.Pool, p: PageRequest<StockSort>): Promise<StockPage> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    type Row = { sku: string; available: number };
    let rows: Row[];
    if (p.sort === 'sku') {
      const after = p.after ? 'WHERE sku > $2' : '';
      ({ rows } = await client.query<Row>(
        `SELECT sku, 0 AS available FROM sku_versions ${after} ORDER BY sku LIMIT $1`,
        [p.limit + 1, ...(p.after ?? [])],
      ));
    } else {
      const k = keyset(p.sort, 'available', 'sku', '$2', '$3');
      ({ rows } = await client.query<Row>(
        `SELECT sku, available FROM (
           SELECT v.sku, coalesce(sum(s.on_hand - s.reserved), 0)::bigint AS available
           FROM sku_versions v LEFT JOIN stock s ON s.sku = v.sku GROUP BY v.sku) g
         ${p.after ? `WHERE ${k.where}` : ''} ORDER BY ${k.order} LIMIT $1`,
        [p.limit + 1, ...(p.after ?? [])],
      ));
    }
    const objects = new Map(
      (
        await globalStock(
          client,
          rows.slice(0, p.limit).map((r) => r.sku),
          false,
        )
      ).map((g) => [g.sku, g]),
    );
    await client.query('COMMIT');
    const keyOf = (r: Row): Key => (p.sort === 'sku' ? [r.sku] : [r.available, r.sku]);
    return pageOf(rows, p.limit, p.sort, keyOf, (r) => objects.get(r.sku) as StockPage['items'][number]);
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

/** Warehouses with a stock row, and those only an edge's link status names, by id. */
async function warehouses(
  pool: pg.Pool,
  links: Map<string, LinkStatus>,
  p: PageRequest<'warehouse'>,
): Promise<WarehousePage> {
  type Row = { wh: string; skus: number; on_hand: number; reserved: number };
  const after = p.after?.[0] as string | undefined;
  const { rows } = await pool.query<Row>(
    `SELECT wh, count(*)::bigint AS skus, sum(on_hand)::bigint AS on_hand, sum(reserved)::bigint AS reserved
     FROM stock WHERE version > 0 ${after === undefined ? '' : 'AND wh > $2'} GROUP BY wh ORDER BY wh LIMIT $1`,
    [p.limit + 1, ...(after === undefined ? [] : [after])],
  );
  // Both lists are in id order: the first limit + 1 of their union are among these.
  const byId = new Map<string, Warehouse>();
  for (const r of rows)
    byId.set(r.wh, {
      warehouse: r.wh,
      skus: r.skus,
      onHand: r.on_hand,
      reserved: r.reserved,
      available: r.on_hand - r.reserved,
      link: links.get(r.wh) ?? null,
    });
  for (const [wh, link] of links) {
    if ((after === undefined || wh > after) && !byId.has(wh))
      byId.set(wh, { warehouse: wh, skus: 0, onHand: 0, reserved: 0, available: 0, link });
  }
  const merged = [...byId.values()]
    .sort((a, b) => (a.warehouse < b.warehouse ? -1 : a.warehouse > b.warehouse ? 1 : 0))
    .slice(0, p.limit + 1);
  return pageOf(
    merged,
    p.limit,
    p.sort,
    (w) => [w.warehouse],
    (w) => w,
  );
}

/** Rows of `table` by (created_at, id), filtered; the key's time is in µs, as the database keeps it. */
async function byCreation<R extends { id: string }>(
  pool: pg.Pool,
  table: 'reservations' | 'transfers',
  filters: [string, string | undefined][],
  p: PageRequest<CreatedSort>,
) {
  type Row = R & { created_us: number };
  const given = filters.filter((f): f is [string, string] => f[1] !== undefined);
  const where = given.map(([column], i) => `${column} = $${2 + i}`);
  const n = 2 + given.length; // the key's parameters follow the filters'
  // 'epoch' + µs is exact, where to_timestamp(double) could round the last microsecond away.
  const k = keyset(
    p.sort,
    'created_at',
    'id',
    `('epoch'::timestamptz + $${n}::bigint * interval '1 microsecond')`,
    `$${n + 1}`,
    true,
  );
  if (p.after) where.push(k.where);
  const { rows } = await pool.query<Row>(
    `SELECT *, (extract(epoch FROM created_at) * 1000000)::bigint AS created_us FROM ${table}
     ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY ${k.order} LIMIT $1`,
    [p.limit + 1, ...given.map(([, v]) => v), ...(p.after ?? [])],
  );
  return { rows, keyOf: (r: Row): Key => [r.created_us, r.id] };
}

function oneOf<T extends string>(q: Query, field: string, values: readonly T[]): T | undefined {
  const v = single(q, field);
  if (v !== undefined && !values.includes(v as T))
    throw new ValidationError(ErrorCode.badRequest, `${field} must be one of ${values.join(', ')}`, field);
  return v as T | undefined;
}

const identParam = (q: Query, field: string) => {
  const v = single(q, field);
  return v === undefined ? undefined : ident(v, field);
};

/** The lists: `GET /v1/stock`, `/v1/warehouses`, `/v1/warehouses/{warehouse}/stock`, `/v1/reservations`, `/v1/transfers`. */
export function registerListRoutes(app: FastifyInstance, pool: pg.Pool, links: LinkLookup): void {
  app.get<{ Querystring: Query }>('/v1/stock', async (req) => {
    onlyKnown(req.query, LIST_PARAMS.stock);
    return allStock(pool, pageRequest(req.query, STOCK_SORTS, 'sku'));
  });

  app.get<{ Querystring: Query }>('/v1/warehouses', async (req) => {
    onlyKnown(req.query, LIST_PARAMS.warehouses);
    return warehouses(pool, await links(), pageRequest(req.query, { warehouse: ['string'] }, 'warehouse'));
  });

  app.get<{ Params: { warehouse: string }; Querystring: Query }>(
    '/v1/warehouses/:warehouse/stock',
    async (req, reply) => {
      const wh = ident(req.params.warehouse, 'warehouse');
      onlyKnown(req.query, LIST_PARAMS.stock);
      const page = await warehouseStock(pool, wh, pageRequest(req.query, STOCK_SORTS, 'sku'));
      if (page.items.length === 0 && single(req.query, 'cursor') === undefined) {
        // An empty first page: a warehouse nothing names is a 404, as for one stock row of it.
        const known =
          (await pool.query(`SELECT 1 FROM stock WHERE wh = $1 AND version > 0 LIMIT 1`, [wh])).rows.length > 0 ||
          (await links()).has(wh);
        if (!known)
          return reply
            .status(404)
            .send({ error: { code: ErrorCode.notFound, message: `unknown warehouse ${wh}`, field: 'warehouse' } });
      }
      return page;
    },
  );

  app.get<{ Querystring: Query }>('/v1/reservations', async (req): Promise<ReservationPage> => {
    onlyKnown(req.query, LIST_PARAMS.reservations);
    const filters: [string, string | undefined][] = [
      ['sku', identParam(req.query, 'sku')],
      ['wh', identParam(req.query, 'warehouse')],
      ['state', oneOf(req.query, 'state', RESERVATION_STATES)],
    ];
    const p = pageRequest(req.query, CREATED_SORTS, 'createdAt');
    const { rows, keyOf } = await byCreation<HoldRow>(pool, 'reservations', filters, p);
    return pageOf(rows, p.limit, p.sort, keyOf, reservationView);
  });

  app.get<{ Querystring: Query }>('/v1/transfers', async (req): Promise<TransferPage> => {
    onlyKnown(req.query, LIST_PARAMS.transfers);
    const filters: [string, string | undefined][] = [
      ['sku', identParam(req.query, 'sku')],
      ['from_wh', identParam(req.query, 'from')],
      ['to_wh', identParam(req.query, 'to')],
      ['state', oneOf(req.query, 'state', TRANSFER_STATES)],
    ];
    const p = pageRequest(req.query, CREATED_SORTS, 'createdAt');
    const { rows, keyOf } = await byCreation<TransferRow>(pool, 'transfers', filters, p);
    return pageOf(rows, p.limit, p.sort, keyOf, transferView);
  });
}
