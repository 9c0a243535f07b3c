import { ErrorCode, topics, type Ack } from '../../protocol/index.js';
import { alert, retainedOnce, stockSends, type Publisher } from '../publish/publisher.js';
import type { BatchResult, Parsed } from './types.js';

/**
 * Publishes what a committed batch decided: acks first (they release the edges' outboxes),
 * then the retained stock and shelf topics, each once with its final value, then alerts.
 */
export async function publishBatch(publisher: Publisher, items: Parsed[], result: BatchResult): Promise<void> {
  const sends: Promise<void>[] = [];
  result.decisions.forEach((d, i) => {
    const delivery = (items[i] as Parsed).delivery;
    const ack: Ack =
      d.status === 'rejected'
        ? { id: d.id, status: d.status, error: { code: d.error.code, message: d.error.message } }
        : d;
    sends.push(publisher.publish(topics.ack(delivery.wh, delivery.device), JSON.stringify(ack), false));
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
