import type { Logger } from 'pino';
import type { AuthedClient } from '../../broker/index.js';
import {
  BATCH_EVENTS_CEILING,
  BATCH_VERSION,
  parseBatch,
  parseBatchTopic,
  topics,
  type BatchAckV1,
  type BatchHello,
  type BatchRefused,
} from '../../protocol/index.js';
import type { IngestMetrics } from '../metrics.js';
import type { Ingest } from './ingest.js';
import { ackOf } from './publish.js';
import type { Delivery, Parsed } from './types.js';

/** What central announces on a gateway's batch-ack topic when the edge subscribes to it (protocol/batch.ts). */
export const batchHello = (maxBytes: number): BatchHello => ({
  v: BATCH_VERSION,
  hello: { versions: [BATCH_VERSION], maxEvents: BATCH_EVENTS_CEILING, maxBytes },
});

/**
 * A gateway's batch at central (CONTRACT 2): each of its events is validated, deduped and applied exactly as if it had
 * been published alone, all in one commit; resolves after that commit, so the broker's PUBACK of the batch waits for it,
 * and one batch-ack follows. An unreadable batch is kept as one dead letter and answered with its reason (then
 * PUBACKed: sending it again cannot make it readable); nothing else is lost. Throws, refusing the publish, only for a
 * batch from a credential other than the gateway its topic names, which the ACL already refuses.
 */
export async function ingestGatewayBatch(
  ingest: Ingest,
  client: AuthedClient,
  packet: { topic: string; payload: Buffer },
  o: { maxBytes: number; metrics: IngestMetrics; log: Logger },
): Promise<void> {
  const where = parseBatchTopic(packet.topic);
  const d = client.device;
  if (!where || d.kind !== 'gateway' || d.id !== where.gateway || d.warehouse !== where.wh)
    throw new Error(`a batch on ${packet.topic} from ${d.kind} ${d.id}: only that gateway may send it`);
  const replyTo = topics.batchAck(where.wh, where.gateway);
  const receivedAt = Date.now();
  const r = parseBatch(packet.payload, o.maxBytes);
  if (!r.ok) {
    o.metrics.gatewayBatches.inc({ outcome: 'refused' });
    o.log.warn(
      { wh: where.wh, gateway: where.gateway, batch: r.batch, code: r.error.code, err: r.error.message },
      'batch refused',
    );
    const refused: Parsed = {
      delivery: { ...packet, wh: where.wh, device: where.gateway, source: d.id, receivedAt, viaEdge: true },
      ok: false,
      error: r.error,
      id: null,
    };
    const answer: BatchRefused = {
      v: BATCH_VERSION,
      batch: r.batch,
      error: { code: r.error.code, message: r.error.message },
    };
    await ingest.submitBatch([refused], () => ({ topic: replyTo, payload: JSON.stringify(answer) }));
    return;
  }
  const { batch, events } = r.batch;
  const deliveries: Delivery[] = events.map((e) => ({
    topic: topics.event(where.wh, e.device),
    payload: e.payload,
    wh: where.wh,
    device: e.device,
    source: d.id,
    receivedAt,
    viaEdge: true,
  }));
  o.metrics.gatewayBatchEvents.observe(deliveries.length);
  await ingest.submitBatch(deliveries, (decisions) => {
    const ack: BatchAckV1 = { v: BATCH_VERSION, batch, acks: decisions.map(ackOf) };
    return { topic: replyTo, payload: JSON.stringify(ack) };
  });
  o.metrics.gatewayBatches.inc({ outcome: 'committed' });
}
