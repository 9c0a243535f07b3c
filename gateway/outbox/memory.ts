import { entryBytes, invalidEntry, OutboxClosedError, OutboxFullError, type NewEntry, type Outbox, type OutboxEntry, type OutboxStats } from './outbox.js';

/**
 * NOT DURABLE: everything is lost when the process ends. For tests and the demo only; it exists so
 * the contract suite runs against a second implementation. Never use it where a PUBACK depends on it.
 */
export class MemoryOutbox implements Outbox {
  // Map iterates in insertion order, and seqs are inserted in increasing order: iteration is seq order.
  readonly #entries = new Map<number, OutboxEntry>();
  #lastSeq = 0;
  #bytes = 0;
  #closed = false;

  constructor(readonly maxBytes: number) {
    if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) throw new RangeError(`maxBytes must be a positive integer (bytes), got ${maxBytes}`);
  }

  async append(entry: NewEntry): Promise<OutboxEntry> {
    if (this.#closed) throw new OutboxClosedError();
    const invalid = invalidEntry(entry);
    if (invalid !== null) throw new TypeError(invalid);
    const bytes = entryBytes(entry);
    if (this.#bytes + bytes > this.maxBytes) throw new OutboxFullError(this.maxBytes, bytes);
    const stored: OutboxEntry = { device: entry.device, eventId: entry.eventId, topic: entry.topic, payload: Buffer.from(entry.payload), receivedAt: entry.receivedAt, seq: ++this.#lastSeq, bytes };
    this.#entries.set(stored.seq, stored);
    this.#bytes += bytes;
    return copy(stored);
  }

  read(afterSeq: number, limit: number): OutboxEntry[] {
    if (this.#closed) throw new OutboxClosedError();
    const out: OutboxEntry[] = [];
    for (const e of this.#entries.values()) {
      if (out.length >= limit) break;
      if (e.seq > afterSeq) out.push(copy(e));
    }
    return out;
  }

  async confirm(seqs: readonly number[]): Promise<void> {
    if (this.#closed) throw new OutboxClosedError();
    for (const seq of seqs) {
      const e = this.#entries.get(seq);
      if (e === undefined) continue;
      this.#entries.delete(seq);
      this.#bytes -= e.bytes;
    }
  }

  stats(): OutboxStats {
    const oldest = this.#entries.values().next();
    return { events: this.#entries.size, bytes: this.#bytes, oldestReceivedAt: oldest.done === true ? null : oldest.value.receivedAt };
  }

  async close(): Promise<void> {
    this.#closed = true;
  }
}

// Callers get their own Buffer, as they would from a disk read: mutating it cannot change what is stored.
function copy(e: OutboxEntry): OutboxEntry {
  return { ...e, payload: Buffer.from(e.payload) };
}
