import type pg from 'pg';
import { topics, type GlobalStock, type ShelfReading, type WarehouseStock } from '../../protocol/index.js';
import { stockSends, type Publisher } from '../publish/publisher.js';
import { type StockRow, warehouseStockOf } from '../db/stock.js';
import type { ReadModel } from '../publish/read-model.js';

const PAGE = 5_000; // skus per query while republishing

/**
 * Republishes every retained stock topic from the database (DESIGN "Versions and republishing"):
 * the broker's retained store is a cache, the database is the truth. Pages by sku to bound memory.
 */
export async function republishAll(
  pool: pg.Pool,
  publisher: Publisher,
  readModel: ReadModel,
): Promise<{ skus: number; rows: number; shelves: number }> {
  const stock = await republishStock(pool, publisher, readModel);
  const shelves = await republishShelves(pool, publisher);
  return { ...stock, shelves };
}

/** The stock part of `republishAll`: every warehouse and global stock topic, and the read model. */
export async function republishStock(
  pool: pg.Pool,
  publisher: Publisher,
  readModel: ReadModel,
): Promise<{ skus: number; rows: number }> {
  let after = '';
  let skus = 0;
  let rowsTotal = 0;
  for (;;) {
    const { rows: versions } = await pool.query<{ sku: string; version: number; updated_at: Date }>(
      `SELECT sku, version, updated_at FROM sku_versions WHERE sku > $1 ORDER BY sku LIMIT $2`,
      [after, PAGE],
    );
    if (versions.length === 0) break;
    const last = (versions[versions.length - 1] as { sku: string }).sku;
    const { rows } = await pool.query<StockRow>(
      `SELECT wh, sku, on_hand, reserved, version, updated_at FROM stock WHERE sku > $1 AND sku <= $2 ORDER BY sku, wh`,
      [after, last],
    );
    const { rows: transit } = await pool.query<{ sku: string; qty: number }>(
      `SELECT sku, sum(shipped - received)::bigint AS qty FROM transfers
       WHERE state = 'in_transit' AND shipped > received AND sku > $1 AND sku <= $2 GROUP BY sku`,
      [after, last],
    );
    const inTransit = new Map(transit.map((t) => [t.sku, t.qty]));
    const global = new Map<string, GlobalStock>();
    for (const v of versions) {
      global.set(v.sku, {
        sku: v.sku,
        onHand: 0,
        reserved: 0,
        available: 0,
        inTransit: inTransit.get(v.sku) ?? 0,
        warehouses: {},
        version: v.version,
        asOf: v.updated_at.toISOString(),
      });
    }
    const warehouse: WarehouseStock[] = [];
    for (const r of rows) {
      const available = r.on_hand - r.reserved;
      if (r.version > 0) warehouse.push(warehouseStockOf(r));
      const g = global.get(r.sku);
      if (!g) continue;
      g.onHand += r.on_hand;
      g.reserved += r.reserved;
      g.available += available;
      g.warehouses[r.wh] = { onHand: r.on_hand, reserved: r.reserved, available };
    }
    await Promise.all(stockSends(publisher, warehouse, [...global.values()]));
    await readModel.write(warehouse, [...global.values()]);
    skus += versions.length;
    rowsTotal += warehouse.length;
    after = last;
  }
  return { skus, rows: rowsTotal };
}

/** The latest reading of every shelf and sku, retained at `wh/{wh}/shelf/{location}/{sku}`. */
async function republishShelves(pool: pg.Pool, publisher: Publisher): Promise<number> {
  let after = ['', '', ''];
  let count = 0;
  for (;;) {
    const { rows } = await pool.query<{
      wh: string;
      location: string;
      sku: string;
      qty: number;
      ts: Date;
      device: string;
    }>(
      `SELECT wh, location, sku, qty, ts, device FROM shelf_latest WHERE (wh, location, sku) > ($1, $2, $3) ORDER BY wh, location, sku LIMIT $4`,
      [...after, PAGE],
    );
    if (rows.length === 0) return count;
    await Promise.all(
      rows.map((r) => {
        const reading: ShelfReading = {
          sku: r.sku,
          warehouse: r.wh,
          location: r.location,
          qty: r.qty,
          ts: r.ts.toISOString(),
          device: r.device,
        };
        return publisher.publish(topics.shelf(r.wh, r.location, r.sku), JSON.stringify(reading), true);
      }),
    );
    count += rows.length;
    const last = rows[rows.length - 1] as { wh: string; location: string; sku: string };
    after = [last.wh, last.location, last.sku];
  }
}
