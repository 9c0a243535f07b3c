import { batchEnvelopeBytes, encodeBatchEvent, type Ack } from '../protocol/index.js';
import type { OutboxEntry } from './outbox/outbox.js';

/** What central said it takes on a connection (its hello), bounded by this edge's own settings. */
export interface BatchLimits {
  maxEvents: number;
  maxBytes: number;
}

/** An event to send, and how often it was sent before. */
export interface Outgoing {
  entry: OutboxEntry;
  attempts: number;
}

/** One publish of a dispatch: a batch (its events encoded) or, for an event no batch can hold, the event alone. */
export type Send = { batch: (Outgoing & { text: string })[] } | { alone: Outgoing };

// Batch names are `{12 hex}-{count}`; their envelope is counted at the longest name a batch may have.
const ENVELOPE_BYTES = batchEnvelopeBytes('x'.repeat(64));

/**
 * Packs events, in their order, into batches within both bounds. An event larger than any batch may be goes alone in
 * its place, so a device's events keep their order on the link.
 */
export function pack(items: Outgoing[], limits: BatchLimits): Send[] {
  const sends: Send[] = [];
  let batch: (Outgoing & { text: string })[] = [];
  let bytes = ENVELOPE_BYTES;
  const close = () => {
    if (batch.length > 0) sends.push({ batch });
    batch = [];
    bytes = ENVELOPE_BYTES;
  };
  for (const item of items) {
    const text = encodeBatchEvent(item.entry.device, item.entry.payload);
    const size = Buffer.byteLength(text) + 1; // and its comma
    if (batch.length >= limits.maxEvents || bytes + size > limits.maxBytes) close();
    if (ENVELOPE_BYTES + size > limits.maxBytes) sends.push({ alone: item });
    else {
      batch.push({ ...item, text });
      bytes += size;
    }
  }
  close();
  return sends;
}

/**
 * The events a batch-ack confirms: each outcome belongs to the event at its place, and one naming another id confirms
 * nothing there (that event is sent again). Null when the ack does not have one outcome per event.
 */
export function confirmedBy(
  entries: OutboxEntry[],
  acks: Ack[],
): { confirmed: { entry: OutboxEntry; ack: Ack }[]; outOfStep: { entry: OutboxEntry; ack: Ack }[] } | null {
  if (acks.length !== entries.length) return null;
  const confirmed: { entry: OutboxEntry; ack: Ack }[] = [];
  const outOfStep: { entry: OutboxEntry; ack: Ack }[] = [];
  entries.forEach((entry, i) => {
    const ack = acks[i] as Ack;
    (ack.id === entry.eventId ? confirmed : outOfStep).push({ entry, ack });
  });
  return { confirmed, outOfStep };
}
