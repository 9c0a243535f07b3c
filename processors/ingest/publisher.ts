import {
  ErrorCode,
  topics,
  type Ack,
  type Alert,
  type GlobalStock,
  type ShelfReading,
  type WarehouseStock,
} from '../../protocol/index.js';
import type { BatchResult, Decision, Parsed } from './types.js';

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
export function retainedOnce(result: Pick<BatchResult, 'warehouseStock' | 'globalStock' | 'shelves'>): {
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

/** The ack of CONTRACT 4 for a decision. */
export const ackOf = (d: Decision): Ack =>
  d.status === 'rejected' ? { id: d.id, status: d.status, error: { code: d.error.code, message: d.error.message } } : d;

/**
 * Publishes what a committed batch decided: acks first (they release the edges' outboxes),
 * then the retained stock and shelf topics, each once with its final value, then alerts.
 * `ackEach` false for an item: its ack goes out otherwise (in its gateway batch's batch-ack).
 */
export async function publishBatch(
  publisher: Publisher,
  items: Parsed[],
  result: BatchResult,
  ackEach: (item: Parsed) => boolean = () => true,
): Promise<void> {
  const sends: Promise<void>[] = [];
  result.decisions.forEach((d, i) => {
    const item = items[i] as Parsed;
    if (!ackEach(item)) return;
    const delivery = item.delivery;
    sends.push(publisher.publish(topics.ack(delivery.wh, delivery.device), JSON.stringify(ackOf(d)), false));
  });
  const retained = retainedOnce(result);
  sends.push(...stockSends(publisher, retained.warehouse, retained.global));
  for (const r of retained.shelves)
    sends.push(publisher.publish(topics.shelf(r.warehouse, r.location, r.sku), JSON.stringify(r), true));
  for (const n of result.negative) {
    sends.push(
      publisher.publish(
        topics.alert(n.wh, 'negative-stock'),
        JSON.stringify(alert('negative-stock', n.wh, `onHand of ${n.sku} at ${n.wh} is ${n.onHand}`, n.sku)),
        false,
      ),
    );
  }
  for (const n of result.notices)
    sends.push(
      publisher.publish(topics.alert(n.wh, n.kind), JSON.stringify(alert(n.kind, n.wh, n.message, n.sku)), false),
    );
  for (const d of result.deadLetters) {
    const wh = d.wh ?? 'unknown';
    // A reused id is answered `duplicate`, not rejected: its own kind, so nobody mistakes it for bad input.
    if (d.code === ErrorCode.idReused)
      sends.push(
        publisher.publish(
          topics.alert(wh, 'id-reused'),
          JSON.stringify(alert('id-reused', wh, d.reason, d.sku)),
          false,
        ),
      );
    else
      sends.push(
        publisher.publish(
          topics.alert(wh, 'dead-letter'),
          JSON.stringify(
            alert('dead-letter', wh, `event from ${d.device ?? 'unknown'} rejected: ${d.code}: ${d.reason}`),
          ),
          false,
        ),
      );
  }
  const results = await Promise.allSettled(sends);
  const failed = results.filter((r) => r.status === 'rejected').length;
  if (failed > 0) throw new Error(`${failed} of ${results.length} publishes failed`);
}
