import type pg from 'pg';
import type { GlobalStock, WarehouseStock } from '../../protocol/index.js';
import { DatabaseStock } from '../db/stock.js';
import type { ReadModel } from '../publish/read-model.js';

/** In-process model: a version-checked cache in front of the database. */
export class MemoryReadModel implements ReadModel {
  private readonly wh = new Map<string, WarehouseStock>();
  private readonly all = new Map<string, GlobalStock>();
  private readonly db: DatabaseStock;
  // Bounded: a cache, not a copy of the database (entries beyond it are read from PostgreSQL).
  constructor(
    pool: pg.Pool,
    private readonly maxEntries = 200_000,
  ) {
    this.db = new DatabaseStock(pool);
  }

  async write(warehouse: WarehouseStock[], global: GlobalStock[]): Promise<void> {
    for (const s of warehouse) putNewer(this.wh, `${s.warehouse}/${s.sku}`, s, this.maxEntries);
    for (const g of global) putNewer(this.all, g.sku, g, this.maxEntries);
  }

  async warehouse(wh: string, sku: string): Promise<WarehouseStock | null> {
    const hit = this.wh.get(`${wh}/${sku}`);
    if (hit) return hit;
    const s = await this.db.warehouse(wh, sku);
    if (s) putNewer(this.wh, `${wh}/${sku}`, s, this.maxEntries);
    return s;
  }

  async global(sku: string): Promise<GlobalStock | null> {
    const hit = this.all.get(sku);
    if (hit) return hit;
    const g = await this.db.global(sku);
    if (g) putNewer(this.all, sku, g, this.maxEntries);
    return g;
  }

  async close(): Promise<void> {}
}

function putNewer<T extends { version: number }>(map: Map<string, T>, key: string, value: T, max: number): void {
  const prev = map.get(key);
  if (prev && prev.version >= value.version) return;
  if (!prev && map.size >= max) {
    const oldest = map.keys().next().value;
    if (oldest !== undefined) map.delete(oldest);
  }
  map.set(key, value);
}
