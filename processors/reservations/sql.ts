import type pg from 'pg';
import type { GlobalStock, WarehouseStock } from '../../protocol/index.js';
import { globalStock, type StockRow, warehouseStockOf } from '../db/stock.js';
import type { Level } from '../ledger/reservations.js';

/**
 * SQL shared by reservation commands and sweepers. Lock order everywhere (migration 002):
 * stock rows by (wh, sku) → idempotency keys → reservations by id → transfers by id → sku_versions by sku.
 * `now` is a timestamp parameter: null means the database clock (production); tests pass their own.
 */

export type Client = pg.PoolClient;
export const NOW = (n: number) => `COALESCE($${n}::timestamptz, now())`;
export const param = (now: Date | null) => (now ? now.toISOString() : null);

export interface LockedLevel extends Level {
  /** active holds of the row that have passed their expiry (a hint: re-checked under lock) */
  lapsed: number;
}

/** Locks the stock rows of one sku (every warehouse, or only `whs`), in warehouse order. */
export async function lockSku(
  client: Client,
  sku: string,
  whs: string[] | null,
  now: Date | null,
): Promise<LockedLevel[]> {
  const { rows } = await client.query<{ wh: string; on_hand: number; reserved: number; lapsed: number }>(
    `SELECT s.wh, s.on_hand, s.reserved,
            (SELECT count(*) FROM reservations r WHERE r.wh = s.wh AND r.sku = s.sku AND r.state = 'active'
               AND r.transfer IS NULL AND r.expires_at <= ${NOW(3)})::int AS lapsed
     FROM stock s WHERE s.sku = $1 AND ($2::text[] IS NULL OR s.wh = ANY($2::text[]))
     ORDER BY s.wh FOR UPDATE OF s`,
    [sku, whs, param(now)],
  );
  return rows.map((r) => ({ wh: r.wh, onHand: r.on_hand, reserved: r.reserved, lapsed: r.lapsed }));
}

/** Ends the lapsed holds of locked rows as `expired`; returns what each warehouse got back. */
export async function expireLapsed(
  client: Client,
  sku: string,
  whs: string[],
  now: Date | null,
): Promise<{ freed: Map<string, number>; ids: string[] }> {
  const { rows } = await client.query<{ id: string; wh: string; freed: number }>(
    `WITH lapsed AS (
       SELECT id, remaining FROM reservations
       WHERE sku = $1 AND wh = ANY($2::text[]) AND state = 'active' AND transfer IS NULL AND expires_at <= ${NOW(3)}
       ORDER BY id FOR UPDATE)
     UPDATE reservations r SET state = 'expired', remaining = 0, ended_at = ${NOW(3)}
     FROM lapsed WHERE r.id = lapsed.id
     RETURNING r.id, r.wh, lapsed.remaining AS freed`,
    [sku, whs, param(now)],
  );
  const freed = new Map<string, number>();
  for (const r of rows) freed.set(r.wh, (freed.get(r.wh) ?? 0) + r.freed);
  return { freed, ids: rows.map((r) => r.id) };
}

/** What a committed command changed, published after the commit. */
export interface StockChange {
  warehouseStock: WarehouseStock[];
  globalStock: GlobalStock[];
}

export const noChange = (): StockChange => ({ warehouseStock: [], globalStock: [] });

/**
 * Adds `delta` to `reserved` of locked rows, bumping each row's version, then the sku's global
 * version (the same rule as an event commit), and returns the new topics' contents.
 */
export async function applyReserved(
  client: Client,
  deltas: { wh: string; sku: string; delta: number }[],
  extraSkus: string[] = [],
): Promise<StockChange> {
  const changed = deltas
    .filter((d) => d.delta !== 0)
    .sort((a, b) => (a.wh === b.wh ? (a.sku < b.sku ? -1 : 1) : a.wh < b.wh ? -1 : 1));
  const out = noChange();
  if (changed.length > 0) {
    const { rows } = await client.query<StockRow>(
      `UPDATE stock s SET reserved = s.reserved + u.delta, version = s.version + 1, updated_at = now()
       FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(wh, sku, delta)
       WHERE s.wh = u.wh AND s.sku = u.sku
       RETURNING s.wh, s.sku, s.on_hand, s.reserved, s.version, s.updated_at`,
      [changed.map((d) => d.wh), changed.map((d) => d.sku), changed.map((d) => d.delta)],
    );
    out.warehouseStock = rows.map(warehouseStockOf);
  }
  const skus = [...new Set([...changed.map((d) => d.sku), ...extraSkus])].sort();
  if (skus.length > 0) out.globalStock = await globalStock(client, skus, true);
  return out;
}

/** True when any warehouse has ever held the sku. */
export async function skuKnown(client: Client, sku: string): Promise<boolean> {
  const { rows } = await client.query(`SELECT 1 FROM stock WHERE sku = $1 LIMIT 1`, [sku]);
  return rows.length > 0;
}

/** True when the warehouse has ever held any sku. */
export async function warehouseKnown(client: Client, wh: string): Promise<boolean> {
  const { rows } = await client.query(`SELECT 1 FROM stock WHERE wh = $1 LIMIT 1`, [wh]);
  return rows.length > 0;
}
