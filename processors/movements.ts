import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import { ErrorCode, ValidationError, type Movements } from '../protocol/index.js';
import { ident, onlyKnown, single, time, type Query } from './query-params.js';

/** The parameters of `GET /v1/movements`. */
export const MOVEMENT_PARAMS = ['warehouse', 'sku', 'bucket', 'from', 'to'] as const;

const HOUR = 3_600_000; // ms
const DAY = 24 * HOUR; // ms
const BUCKETS = { hour: HOUR, day: DAY } as const;
type Bucket = keyof typeof BUCKETS;
// Ranges left open default to the last day of hours or the last 30 days.
const DEFAULT_SPAN: Record<Bucket, number> = { hour: DAY, day: 30 * DAY }; // ms
export const MAX_MOVEMENT_BUCKETS = 10_000; // an answer holds at most this many buckets (one warehouse: one row each)

export interface MovementQuery {
  warehouse: string;
  sku: string | undefined;
  bucket: Bucket;
  /** ms, the start of the first bucket */
  from: number;
  /** ms, the end of the last bucket (exclusive) */
  to: number;
}

/** Validates `GET /v1/movements` parameters; the range is widened to whole UTC hours or days. */
export function movementQuery(q: Query, now: number): MovementQuery {
  onlyKnown(q, MOVEMENT_PARAMS);
  const warehouse = single(q, 'warehouse');
  if (warehouse === undefined) throw new ValidationError(ErrorCode.badRequest, 'warehouse is required', 'warehouse');
  ident(warehouse, 'warehouse');
  const skuParam = single(q, 'sku');
  const sku = skuParam === undefined ? undefined : ident(skuParam, 'sku');
  const bucketParam = single(q, 'bucket') ?? 'hour';
  if (bucketParam !== 'hour' && bucketParam !== 'day')
    throw new ValidationError(ErrorCode.badRequest, 'bucket must be hour or day', 'bucket');
  const size = BUCKETS[bucketParam];
  const to = time(single(q, 'to'), 'to', now);
  const from = time(single(q, 'from'), 'from', to - DEFAULT_SPAN[bucketParam]);
  if (from >= to) throw new ValidationError(ErrorCode.badRequest, 'from must be before to', 'from');
  // Buckets start at whole UTC hours and days (time_bucket and date_trunc in UTC), so epoch arithmetic aligns them.
  const start = Math.floor(from / size) * size;
  const end = Math.ceil(to / size) * size;
  if ((end - start) / size > MAX_MOVEMENT_BUCKETS) {
    throw new ValidationError(
      ErrorCode.badRequest,
      `more than ${MAX_MOVEMENT_BUCKETS} ${bucketParam} buckets between from and to; narrow the range${bucketParam === 'hour' ? ' or use bucket=day' : ''}`,
      'from',
    );
  }
  return { warehouse, sku, bucket: bucketParam, from: start, to: end };
}

interface MovementRow {
  bucket: Date;
  received: number;
  shipped: number;
  returned: number;
  adjusted: number;
  net: number;
  events: number;
}
interface CorrectionRow {
  bucket: Date;
  counts: number;
  correction: number;
}

/**
 * Book onHand just before each count, in ledger order (ts, id, device): the previous count's qty (0 if none)
 * plus every delta ordered between the two. Counts are rare, and each looks back along events_row_order
 * (wh, sku, ts) only to the count before it.
 */
const COUNT_CORRECTION = `c.qty - coalesce(prev.qty, 0) - coalesce(since.deltas, 0)`;
const CORRECTION_JOINS = `
  LEFT JOIN LATERAL (
    SELECT p.ts, p.id, p.device, p.qty FROM events p
    WHERE p.wh = c.wh AND p.sku = c.sku AND p.type = 'counted' AND p.ts <= c.ts AND (p.ts, p.id, p.device) < (c.ts, c.id, c.device)
    ORDER BY p.ts DESC, p.id DESC, p.device DESC LIMIT 1) prev ON true
  CROSS JOIN LATERAL (
    SELECT sum(d.delta) AS deltas FROM events d
    WHERE d.wh = c.wh AND d.sku = c.sku AND d.ts <= c.ts AND (d.ts, d.id, d.device) < (c.ts, c.id, c.device)
      AND (prev.ts IS NULL OR (d.ts >= prev.ts AND (d.ts, d.id, d.device) > (prev.ts, prev.id, prev.device)))) since`;

/** Movements of a warehouse per bucket: sums from movements_hourly, counts and their corrections from the event log. */
export async function readMovements(pool: pg.Pool, m: MovementQuery): Promise<Movements> {
  const params = [
    m.bucket,
    m.warehouse,
    new Date(m.from).toISOString(),
    new Date(m.to).toISOString(),
    ...(m.sku === undefined ? [] : [m.sku]),
  ];
  const skuOf = (alias: string) => (m.sku === undefined ? '' : `AND ${alias}sku = $5`);
  const [sums, counts] = await Promise.all([
    pool.query<MovementRow>(
      // Day buckets roll up the hourly rows; date_trunc in UTC, whatever the session's TimeZone.
      `SELECT date_trunc($1, bucket, 'UTC') AS bucket,
              coalesce(sum(qty) FILTER (WHERE type = 'received'), 0)::bigint AS received,
              coalesce(sum(qty) FILTER (WHERE type = 'shipped'), 0)::bigint AS shipped,
              coalesce(sum(qty) FILTER (WHERE type = 'returned'), 0)::bigint AS returned,
              coalesce(sum(qty) FILTER (WHERE type = 'adjusted'), 0)::bigint AS adjusted,
              sum(delta)::bigint AS net, sum(events)::bigint AS events
       FROM movements_hourly
       WHERE wh = $2 ${skuOf('')} AND bucket >= $3 AND bucket < $4
       GROUP BY 1 ORDER BY 1`,
      params,
    ),
    pool.query<CorrectionRow>(
      `SELECT date_trunc($1, c.ts, 'UTC') AS bucket, count(*)::bigint AS counts, sum(${COUNT_CORRECTION})::bigint AS correction
       FROM events c ${CORRECTION_JOINS}
       WHERE c.wh = $2 ${skuOf('c.')} AND c.type = 'counted' AND c.ts >= $3 AND c.ts < $4
       GROUP BY 1`,
      params,
    ),
  ]);
  const rows = new Map<number, Movements['movements'][number]>();
  const empty = (bucket: Date) => ({
    bucket: bucket.toISOString(),
    received: 0,
    shipped: 0,
    returned: 0,
    adjusted: 0,
    counts: 0,
    countCorrection: 0,
    net: 0,
    change: 0,
    events: 0,
  });
  for (const r of sums.rows)
    rows.set(r.bucket.getTime(), {
      ...empty(r.bucket),
      received: r.received,
      shipped: r.shipped,
      returned: r.returned,
      adjusted: r.adjusted,
      net: r.net,
      change: r.net,
      events: r.events,
    });
  for (const r of counts.rows) {
    // A bucket the aggregate has not materialised yet can still hold counts: it is answered, with no sums.
    const row = rows.get(r.bucket.getTime()) ?? empty(r.bucket);
    rows.set(r.bucket.getTime(), {
      ...row,
      counts: r.counts,
      countCorrection: r.correction,
      change: row.net + r.correction,
    });
  }
  return {
    warehouse: m.warehouse,
    ...(m.sku !== undefined && { sku: m.sku }),
    bucket: m.bucket,
    from: new Date(m.from).toISOString(),
    to: new Date(m.to).toISOString(),
    movements: [...rows.entries()].sort(([a], [b]) => a - b).map(([, r]) => r),
  };
}

/** `GET /v1/movements?warehouse&sku&bucket=hour|day&from&to`, on the read pool (its statement timeout answers 503). */
export function registerMovementRoutes(app: FastifyInstance, pool: pg.Pool): void {
  app.get<{ Querystring: Query }>('/v1/movements', async (req) =>
    readMovements(pool, movementQuery(req.query, Date.now())),
  );
}
