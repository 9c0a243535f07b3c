/**
 * Reads of stored stock, shared by everything under processors/: the retained objects of rows and skus
 * (`wh/{wh}/stock/{sku}`, `stock/{sku}`) and the latest shelf readings. Writes happen in one place only:
 * stockwire_apply_batch (processors/ingest) and the reservation statements (processors/reservations/sql.ts).
 */
import type pg from 'pg';
import type { GlobalStock, ShelfReading, WarehouseStock } from '../../protocol/index.js';

const iso = (ms: number) => new Date(ms).toISOString();

/** A row of `stock` as queries read it (`SELECT wh, sku, on_hand, reserved, version, updated_at`). */
export interface StockRow {
  wh: string;
  sku: string;
  on_hand: number;
  reserved: number;
  version: number;
  updated_at: Date;
}

/** A `stock` row as its retained `wh/{wh}/stock/{sku}` object (CONTRACT section 4). */
export const warehouseStockOf = (r: StockRow): WarehouseStock => ({
  sku: r.sku,
  warehouse: r.wh,
  onHand: r.on_hand,
  reserved: r.reserved,
  available: r.on_hand - r.reserved,
  version: r.version,
  asOf: new Date(r.updated_at).toISOString(),
});

export interface VersionRow {
  sku: string;
  version: number;
  as_of: number;
}
/** One warehouse's row of a sku; `wh` null: the quantity in transit between warehouses. */
export interface GlobalRow {
  wh: string | null;
  sku: string;
  on_hand: number;
  reserved: number;
}

/** `stock/{sku}` objects from the skus' versions and their rows. */
export function globalObjects(versions: VersionRow[], rows: GlobalRow[]): GlobalStock[] {
  const bySku = new Map<string, GlobalStock>();
  for (const v of versions) {
    bySku.set(v.sku, {
      sku: v.sku,
      onHand: 0,
      reserved: 0,
      available: 0,
      inTransit: 0,
      warehouses: {},
      version: v.version,
      asOf: iso(v.as_of),
    });
  }
  for (const r of rows) {
    const g = bySku.get(r.sku);
    if (!g) continue;
    if (r.wh === null) {
      g.inTransit = r.on_hand;
      continue;
    }
    g.onHand += r.on_hand;
    g.reserved += r.reserved;
    g.available += r.on_hand - r.reserved;
    g.warehouses[r.wh] = { onHand: r.on_hand, reserved: r.reserved, available: r.on_hand - r.reserved };
  }
  return [...bySku.values()];
}

/** Builds `stock/{sku}` objects; with `bump`, increments each sku's topic version first. */
export async function globalStock(
  client: pg.PoolClient | pg.Pool,
  skus: string[],
  bump: boolean,
): Promise<GlobalStock[]> {
  const asOf = `floor(extract(epoch FROM updated_at) * 1000)::bigint AS as_of`;
  const versions = bump
    ? await client.query<VersionRow>(
        `INSERT INTO sku_versions AS v (sku, version) SELECT unnest($1::text[]), 1
         ON CONFLICT (sku) DO UPDATE SET version = v.version + 1, updated_at = now()
         RETURNING sku, version, ${asOf}`,
        [skus],
      )
    : await client.query<VersionRow>(`SELECT sku, version, ${asOf} FROM sku_versions WHERE sku = ANY($1::text[])`, [
        skus,
      ]);
  // Rows of wh NULL carry the quantity in transit between warehouses (transfers shipped, not yet received).
  const { rows } = await client.query<GlobalRow>(
    `SELECT wh, sku, on_hand, reserved FROM stock WHERE sku = ANY($1::text[])
     UNION ALL
     SELECT NULL, sku, sum(shipped - received)::bigint, 0 FROM transfers
     WHERE sku = ANY($1::text[]) AND state = 'in_transit' AND shipped > received GROUP BY sku
     ORDER BY 2, 1`,
    [skus],
  );
  return globalObjects(versions.rows, rows);
}

/** The stored stock of some rows and of their skus, at their current versions (no version bump). */
export async function currentStock(
  pool: pg.Pool,
  keys: { wh: string; sku: string }[],
): Promise<{ warehouse: WarehouseStock[]; global: GlobalStock[] }> {
  const { rows } = await pool.query<StockRow>(
    `SELECT wh, sku, on_hand, reserved, version, updated_at FROM stock
     WHERE (wh, sku) IN (SELECT * FROM unnest($1::text[], $2::text[])) AND version > 0`,
    [keys.map((k) => k.wh), keys.map((k) => k.sku)],
  );
  const warehouse = rows.map(warehouseStockOf);
  const global = await globalStock(pool, [...new Set(keys.map((k) => k.sku))], false);
  return { warehouse, global };
}

/** Reads straight from the database: the source of truth, and the fallback of every other model. */
export class DatabaseStock {
  constructor(private readonly pool: pg.Pool) {}

  async warehouse(wh: string, sku: string): Promise<WarehouseStock | null> {
    const { rows } = await this.pool.query<StockRow>(
      `SELECT wh, sku, on_hand, reserved, version, updated_at FROM stock WHERE wh = $1 AND sku = $2 AND version > 0`,
      [wh, sku],
    );
    return rows[0] ? warehouseStockOf(rows[0]) : null;
  }

  async global(sku: string): Promise<GlobalStock | null> {
    const [g] = await globalStock(this.pool, [sku], false);
    return g ?? null;
  }
}

/** The latest reading of each shelf named, from `shelf_latest`. */
export async function latestShelves(
  pool: pg.Pool,
  keys: [wh: string, location: string, sku: string][],
): Promise<ShelfReading[]> {
  const cols = [0, 1, 2].map((i) => keys.map((k) => k[i]));
  const { rows } = await pool.query<{
    wh: string;
    location: string;
    sku: string;
    qty: number;
    ts: Date;
    device: string;
  }>(
    `SELECT s.wh, s.location, s.sku, s.qty, s.ts, s.device FROM shelf_latest s
     JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(wh, location, sku) USING (wh, location, sku)`,
    cols,
  );
  return rows.map((r) => ({
    warehouse: r.wh,
    location: r.location,
    sku: r.sku,
    qty: r.qty,
    ts: r.ts.toISOString(),
    device: r.device,
  }));
}
