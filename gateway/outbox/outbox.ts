/** An event as the edge received it from a device, before the outbox numbers it. */
export interface NewEntry {
  device: string;
  /** the event's id when the payload carried a readable one; null otherwise (the processor decides) */
  eventId: string | null;
  topic: string;
  payload: Buffer;
  /** when the edge received it, epoch ms (edge clock) */
  receivedAt: number;
}

/** A stored event. `seq` is unique for the life of the outbox file, never reused, and grows in append order. */
export interface OutboxEntry extends NewEntry {
  seq: number;
  /** what this entry counts against the bound: see `entryBytes` */
  bytes: number;
}

/** Counters of what is stored (committed appends only), kept in memory: reading them costs O(1). */
export interface OutboxStats {
  events: number;
  /** sum of `bytes` of the stored entries */
  bytes: number;
  /** `receivedAt` of the oldest stored entry (lowest seq, the next one to replay); null when empty */
  oldestReceivedAt: number | null;
}

/**
 * The edge's durable queue of events waiting for central's commit ack (CONTRACT §7).
 * Narrow on purpose, like MQTT.js's Store: every implementation passes one shared contract suite.
 */
export interface Outbox {
  /** Durably appends (fsynced before it resolves); rejects with OutboxFullError when bytes would exceed the bound. Order of seq = order of append calls. */
  append(entry: NewEntry): Promise<OutboxEntry>;
  /** Oldest first: up to `limit` entries with seq > afterSeq. Synchronous read is fine. */
  read(afterSeq: number, limit: number): OutboxEntry[] | Promise<OutboxEntry[]>;
  /** Removes confirmed entries (unknown seqs are ignored); idempotent. */
  confirm(seqs: readonly number[]): Promise<void>;
  /** O(1): counters kept in memory, rebuilt from disk at open. */
  stats(): OutboxStats;
  /** Finishes the appends already accepted, then releases the store; later calls reject with OutboxClosedError. */
  close(): Promise<void>;
}

/**
 * Bytes an entry counts against the bound: payload length + topic length in UTF-8 bytes.
 * This is what the device sent us; the store's own overhead (row header, device and id columns,
 * B-tree pages, WAL, free pages after deletes) is not counted, so the file on disk is larger than
 * the bound: leave headroom on the disk for it.
 */
export function entryBytes(entry: Pick<NewEntry, 'topic' | 'payload'>): number {
  return entry.payload.length + Buffer.byteLength(entry.topic, 'utf8');
}

/**
 * Why an entry cannot be stored, or null. Checked per append, before it joins a group: one malformed
 * entry must fail alone, not roll back the transaction of every append that shares its group.
 */
export function invalidEntry(entry: NewEntry): string | null {
  if (!Number.isFinite(entry.receivedAt)) return `receivedAt must be a finite epoch ms, got ${entry.receivedAt}`;
  if (!Buffer.isBuffer(entry.payload)) return 'payload must be a Buffer';
  if (typeof entry.device !== 'string' || typeof entry.topic !== 'string') return 'device and topic must be strings';
  if (entry.eventId !== null && typeof entry.eventId !== 'string') return 'eventId must be a string or null';
  return null;
}

/** The bound is reached: the edge must refuse the event (no PUBACK, the device keeps it) and alert. */
export class OutboxFullError extends Error {
  readonly code = 'outbox_full';

  constructor(
    /** the bound, bytes */
    readonly maxBytes: number,
    /** bytes the refused entry would have added */
    readonly bytes: number,
  ) {
    super(`outbox full: ${bytes} more bytes would exceed the bound of ${maxBytes} bytes`);
    this.name = 'OutboxFullError';
  }
}

/** A call on an outbox that is closed (or closing). */
export class OutboxClosedError extends Error {
  readonly code = 'outbox_closed';

  constructor() {
    super('outbox closed');
    this.name = 'OutboxClosedError';
  }
}
