import { topics, type Alert, type GlobalStock, type ShelfReading, type WarehouseStock } from '../../protocol/index.js';

/** An alert to publish after a commit: `alerts/{wh}/{kind}` (a reservation or transfer link that did not fit, …). */
export interface Notice {
  wh: string;
  kind: string;
  sku: string;
  message: string;
}

/** Where the processor publishes: in-process Aedes in `central`, an MQTT client in `processor`. */
export interface Publisher {
  publish(topic: string, payload: string, retain: boolean): Promise<void>;
}

export const alert = (kind: string, wh: string, message: string, sku?: string): Alert => ({
  kind,
  wh,
  ...(sku !== undefined && { sku }),
  message,
  at: new Date().toISOString(),
});

/** The retained stock topics of a commit: `wh/{wh}/stock/{sku}` and `stock/{sku}` (CONTRACT section 4). */
export function stockSends(publisher: Publisher, warehouse: WarehouseStock[], global: GlobalStock[]): Promise<void>[] {
  const sends: Promise<void>[] = [];
  for (const s of warehouse)
    sends.push(publisher.publish(topics.warehouseStock(s.warehouse, s.sku), JSON.stringify(s), true));
  for (const g of global) sends.push(publisher.publish(topics.globalStock(g.sku), JSON.stringify(g), true));
  return sends;
}

/** Keeps one value per topic: the highest version, or for shelves (no version) the last, which committed last. */
function once<T>(xs: T[], topic: (x: T) => string, newer: (a: T, b: T) => boolean): T[] {
  const byTopic = new Map<string, T>();
  for (const x of xs) {
    const t = topic(x);
    const prev = byTopic.get(t);
    if (!prev || newer(x, prev)) byTopic.set(t, x);
  }
  return [...byTopic.values()];
}

/**
 * The retained topics of a batch, each once with its final value. One statement returns each row once, but a
 * batch split around a poison event, or retried after a lost commit, gathers several values of a topic; the
 * brokers and every edge mirror would store each of them in turn (issue 17).
 */
export function retainedOnce(result: {
  warehouseStock: WarehouseStock[];
  globalStock: GlobalStock[];
  shelves: ShelfReading[];
}): {
  warehouse: WarehouseStock[];
  global: GlobalStock[];
  shelves: ShelfReading[];
} {
  const byVersion = <T extends { version: number }>(a: T, b: T) => a.version > b.version;
  return {
    warehouse: once(result.warehouseStock, (s) => topics.warehouseStock(s.warehouse, s.sku), byVersion),
    global: once(result.globalStock, (g) => topics.globalStock(g.sku), byVersion),
    shelves: once(
      result.shelves,
      (r) => topics.shelf(r.warehouse, r.location, r.sku),
      () => true,
    ),
  };
}
