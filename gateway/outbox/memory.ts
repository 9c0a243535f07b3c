import {
  addDeviceBytes,
  boundProblems,
  DEAD_LETTER_RAW_BYTES,
  DEAD_LETTERS_KEPT,
  entryBytes,
  invalidDeadLetter,
  invalidEntry,
  largestOf,
  OutboxClosedError,
  OutboxDeviceShareError,
  OutboxFullError,
  type DeadLetter,
  type NewEntry,
  type Outbox,
  type OutboxEntry,
  type OutboxStats,
  type StoredDeadLetter,
} from './outbox.js';

/**
 * NOT DURABLE: everything is lost when the process ends. For tests and the demo only; it exists so
 * the contract suite runs against a second implementation. Never use it where a PUBACK depends on it.
 */
export class MemoryOutbox implements Outbox {
  // Map iterates in insertion order, and seqs are inserted in increasing order: iteration is seq order.
  readonly #entries = new Map<number, OutboxEntry>();
  readonly #deviceBytes = new Map<string, number>();
  readonly #deadLetters: StoredDeadLetter[] = [];
  #lastSeq = 0;
  #lastDeadLetter = 0;
  #bytes = 0;
  #closed = false;

  /** `maxDeviceBytes`: what one device may hold, bytes (default: the whole bound). */
  constructor(
    readonly maxBytes: number,
    readonly maxDeviceBytes: number = maxBytes,
  ) {
    const problems = boundProblems(maxBytes, maxDeviceBytes);
    if (problems.length > 0) throw new RangeError(problems.join('; '));
  }

  async append(entry: NewEntry): Promise<OutboxEntry> {
    if (this.#closed) throw new OutboxClosedError();
    const invalid = invalidEntry(entry);
    if (invalid !== null) throw new TypeError(invalid);
    const bytes = entryBytes(entry);
    if (this.#bytes + bytes > this.maxBytes) throw new OutboxFullError(this.maxBytes, bytes);
    if ((this.#deviceBytes.get(entry.device) ?? 0) + bytes > this.maxDeviceBytes)
      throw new OutboxDeviceShareError(entry.device, this.maxDeviceBytes, bytes);
    const stored: OutboxEntry = {
      device: entry.device,
      eventId: entry.eventId,
      topic: entry.topic,
      payload: Buffer.from(entry.payload),
      receivedAt: entry.receivedAt,
      seq: ++this.#lastSeq,
      bytes,
    };
    this.#entries.set(stored.seq, stored);
    this.#bytes += bytes;
    addDeviceBytes(this.#deviceBytes, entry.device, bytes);
    return copy(stored);
  }

  async deadLetter(letter: DeadLetter): Promise<void> {
    if (this.#closed) throw new OutboxClosedError();
    const invalid = invalidDeadLetter(letter);
    if (invalid !== null) throw new TypeError(invalid);
    const payload = Buffer.from(letter.payload.subarray(0, DEAD_LETTER_RAW_BYTES));
    this.#deadLetters.push({ ...letter, payload, id: ++this.#lastDeadLetter, bytes: letter.payload.length });
    if (this.#deadLetters.length > DEAD_LETTERS_KEPT) this.#deadLetters.shift();
  }

  deadLetters(limit: number): StoredDeadLetter[] {
    if (this.#closed) throw new OutboxClosedError();
    const n = Math.min(Math.max(0, limit), this.#deadLetters.length);
    return this.#deadLetters
      .slice(this.#deadLetters.length - n)
      .reverse()
      .map((d) => ({ ...d, payload: Buffer.from(d.payload) }));
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
      addDeviceBytes(this.#deviceBytes, e.device, -e.bytes);
    }
  }

  stats(): OutboxStats {
    const oldest = this.#entries.values().next();
    return {
      events: this.#entries.size,
      bytes: this.#bytes,
      oldestReceivedAt: oldest.done === true ? null : oldest.value.receivedAt,
    };
  }

  largestDevice(): { device: string; bytes: number } | null {
    return largestOf(this.#deviceBytes);
  }

  async close(): Promise<void> {
    this.#closed = true;
  }
}

// Callers get their own Buffer, as they would from a disk read: mutating it cannot change what is stored.
function copy(e: OutboxEntry): OutboxEntry {
  return { ...e, payload: Buffer.from(e.payload) };
}
