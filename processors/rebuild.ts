import type pg from 'pg';

export interface Drift {
  wh: string;
  sku: string;
  stored: number | null;
  recomputed: number;
}

/** A row whose `reserved` is not what its active reservations still hold. */
export interface ReservedDrift {
  wh: string;
  sku: string;
  stored: number;
  held: number;
}

export interface RebuildReport {
  rows: number;
  drift: Drift[];
  reservedDrift: ReservedDrift[];
}

/**
 * Recomputes onHand of every (warehouse, sku) from the event log with the rules of CONTRACT
 * section 4 (latest count by (ts, id, device) plus every delta ordered after it) and compares
 * it with the stored stock; checks `reserved` against the active reservations. Events the archive
 * dropped count through stock_baseline (migrations/003): a count in the log supersedes the baseline,
 * otherwise the log's deltas add to it. Read-only: it reports, it does not repair.
 */
export async function rebuild(pool: pg.Pool): Promise<RebuildReport> {
  const { rows } = await pool.query<{ wh: string; sku: string; stored: number | null; recomputed: number }>(`
    WITH anchors AS (
      SELECT DISTINCT ON (wh, sku) wh, sku, ts, id, device, qty
      FROM events WHERE type = 'counted'
      ORDER BY wh, sku, ts DESC, id DESC, device DESC
    ),
    logged AS (
      SELECT k.wh, k.sku, a.qty AS anchor_qty,
             COALESCE(sum(e.delta) FILTER (
               WHERE a.ts IS NULL OR (e.ts, e.id, e.device) > (a.ts, a.id, a.device)), 0) AS delta
      FROM (SELECT DISTINCT wh, sku FROM events) k
      LEFT JOIN anchors a ON a.wh = k.wh AND a.sku = k.sku
      LEFT JOIN events e ON e.wh = k.wh AND e.sku = k.sku AND e.delta <> 0
      GROUP BY k.wh, k.sku, a.ts, a.id, a.device, a.qty
    ),
    recomputed AS (
      SELECT COALESCE(l.wh, b.wh) AS wh, COALESCE(l.sku, b.sku) AS sku,
             CASE WHEN l.anchor_qty IS NOT NULL THEN l.anchor_qty + l.delta
                  ELSE COALESCE(b.anchor_qty, 0) + COALESCE(b.delta, 0) + COALESCE(l.delta, 0) END AS on_hand
      FROM logged l FULL OUTER JOIN stock_baseline b ON b.wh = l.wh AND b.sku = l.sku
    )
    SELECT COALESCE(r.wh, s.wh) AS wh, COALESCE(r.sku, s.sku) AS sku, s.on_hand AS stored, COALESCE(r.on_hand, 0)::bigint AS recomputed
    FROM recomputed r FULL OUTER JOIN stock s ON s.wh = r.wh AND s.sku = r.sku
    ORDER BY 1, 2`);
  const drift = rows
    .filter((r) => (r.stored ?? 0) !== r.recomputed)
    .map((r) => ({ wh: r.wh, sku: r.sku, stored: r.stored, recomputed: r.recomputed }));
  // reserved is command state, not derived from events: it must equal what the row's active holds still hold.
  const { rows: reservedDrift } = await pool.query<ReservedDrift>(`
    SELECT s.wh, s.sku, s.reserved AS stored, COALESCE(h.held, 0)::bigint AS held
    FROM stock s LEFT JOIN (
      SELECT wh, sku, sum(remaining) AS held FROM reservations WHERE state = 'active' GROUP BY wh, sku
    ) h ON h.wh = s.wh AND h.sku = s.sku
    WHERE s.reserved <> COALESCE(h.held, 0)
    ORDER BY 1, 2`);
  return { rows: rows.length, drift, reservedDrift };
}
