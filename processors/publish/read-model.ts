import type { GlobalStock, WarehouseStock } from '../../protocol/index.js';

/** The stock read model behind the HTTP GETs, written through after every commit. */
export interface ReadModel {
  write(warehouse: WarehouseStock[], global: GlobalStock[]): Promise<void>;
  warehouse(wh: string, sku: string): Promise<WarehouseStock | null>;
  global(sku: string): Promise<GlobalStock | null>;
  close(): Promise<void>;
}
