import { ErrorCode, topics, type Ack } from '../../protocol/index.js';
import { alert, retainedOnce, stockSends, type Publisher } from '../publish/publisher.js';
import type { BatchResult, Decision, Parsed } from './types.js';

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
