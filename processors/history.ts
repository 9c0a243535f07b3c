import type { QueryConfig } from 'pg';

/** One bucket of one warehouse in `GET /v1/stock/{sku}/history`, as the database returns it. */
export interface HistoryRow {
  bucket: Date;
  wh: string;
  received: number | null;
  shipped: number | null;
  returned: number | null;
  adjusted: number | null;
  counts: number;
  net: number;
  events: number;
}

/**
 * The history endpoint's query: movements of `sku` per bucket of `bucketMs` and warehouse, over [fromMs, toMs).
 * Its own module so bench/history.ts times exactly the SQL the server runs.
 */
export function historyQuery(
  sku: string,
  fromMs: number,
  toMs: number,
  bucketMs: number,
): QueryConfig<[string, string, string, number]> {
  return {
    text: `SELECT date_bin(make_interval(secs => $4::double precision / 1000), ts, 'epoch'::timestamptz) AS bucket, wh,
              sum(qty) FILTER (WHERE type = 'received')::bigint AS received,
              sum(qty) FILTER (WHERE type = 'shipped')::bigint AS shipped,
              sum(qty) FILTER (WHERE type = 'returned')::bigint AS returned,
              sum(qty) FILTER (WHERE type = 'adjusted')::bigint AS adjusted,
              count(*) FILTER (WHERE type = 'counted')::bigint AS counts,
              sum(delta)::bigint AS net, count(*)::bigint AS events
       FROM events
       -- one index range per warehouse that holds the sku (index events_row_order: wh, sku, ts)
       WHERE wh IN (SELECT wh FROM stock WHERE sku = $1) AND sku = $1 AND ts >= $2 AND ts < $3
       GROUP BY 1, 2 ORDER BY 1, 2`,
    values: [sku, new Date(fromMs).toISOString(), new Date(toMs).toISOString(), bucketMs],
  };
}
