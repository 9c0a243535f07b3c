import { MAX_EVENT_BYTES } from '../../protocol/index.js';

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
 * A payload the edge refused for good (CONTRACT 4, invalid input): kept with the reason and the sender, its
 * raw bytes cut to DEAD_LETTER_RAW_BYTES, never forwarded (nothing central could do with it).
 */
export interface DeadLetter {
  device: string;
  topic: string;
  /** what the device sent; the outbox keeps at most the first DEAD_LETTER_RAW_BYTES of it */
  payload: Buffer;
  /** an ErrorCode of protocol/errors.ts */
  code: string;
  reason: string;
  /** the authenticated client that published it */
  source: string;
  /** epoch ms, edge clock */
  receivedAt: number;
}

/** A kept dead letter: `payload` cut to DEAD_LETTER_RAW_BYTES, `bytes` the size the device sent. */
export interface StoredDeadLetter extends DeadLetter {
  id: number;
  bytes: number;
}

/** The raw bytes a dead letter keeps (CONTRACT 4: truncated to 8 KiB). */
export const DEAD_LETTER_RAW_BYTES = MAX_EVENT_BYTES;
/** Dead letters an outbox keeps, the newest: at most 1000 × 8 KiB on disk whatever a device sends. */
export const DEAD_LETTERS_KEPT = 1000;

/**
 * The edge's durable queue of events waiting for central's commit ack (CONTRACT §7).
 * Narrow on purpose, like MQTT.js's Store: every implementation passes one shared contract suite.
 */
export interface Outbox {
  /**
   * Durably appends (fsynced before it resolves). Rejects with OutboxFullError when bytes would exceed the bound,
   * or with OutboxDeviceShareError when they would exceed what one device may hold. Order of seq = order of append calls.
   */
  append(entry: NewEntry): Promise<OutboxEntry>;
  /** Durably keeps a dead letter (fsynced like an append, sharing its group); outside the bound; only the newest DEAD_LETTERS_KEPT stay. */
  deadLetter(letter: DeadLetter): Promise<void>;
  /** The dead letters kept, newest first, at most `limit`. */
  deadLetters(limit: number): StoredDeadLetter[] | Promise<StoredDeadLetter[]>;
  /** Oldest first: up to `limit` entries with seq > afterSeq. Synchronous read is fine. */
  read(afterSeq: number, limit: number): OutboxEntry[] | Promise<OutboxEntry[]>;
  /** Removes confirmed entries (unknown seqs are ignored); idempotent. */
  confirm(seqs: readonly number[]): Promise<void>;
  /** O(1): counters kept in memory, rebuilt from disk at open. */
  stats(): OutboxStats;
  /** The device holding the most bytes, and how many (committed appends only); null when empty. O(devices with a backlog). */
  largestDevice(): { device: string; bytes: number } | null;
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

/** One device holds its share of the bound: the edge refuses its event (no PUBACK, the device keeps it); other devices go on. */
export class OutboxDeviceShareError extends Error {
  readonly code = 'device_share';

  constructor(
    readonly device: string,
    /** what one device may hold, bytes */
    readonly maxDeviceBytes: number,
    /** bytes the refused entry would have added */
    readonly bytes: number,
  ) {
    super(`device ${device} holds its share of the outbox: ${bytes} more bytes would exceed ${maxDeviceBytes} bytes`);
    this.name = 'OutboxDeviceShareError';
  }
}

/** What is wrong with the bounds of an outbox (none: empty): both positive integers, the device's share within the whole. */
export function boundProblems(maxBytes: number, maxDeviceBytes: number): string[] {
  const problems: string[] = [];
  if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0)
    problems.push(`maxBytes must be a positive integer (bytes), got ${maxBytes}`);
  if (!Number.isSafeInteger(maxDeviceBytes) || maxDeviceBytes <= 0 || maxDeviceBytes > maxBytes)
    problems.push(`maxDeviceBytes must be a positive integer (bytes) no larger than maxBytes, got ${maxDeviceBytes}`);
  return problems;
}

/** Adds `delta` to a per-device count, dropping the device at 0 so the map holds only devices with bytes. */
export function addDeviceBytes(map: Map<string, number>, device: string, delta: number): void {
  const n = (map.get(device) ?? 0) + delta;
  if (n === 0) map.delete(device);
  else map.set(device, n);
}

/** The largest entry of a per-device count. */
export function largestOf(map: ReadonlyMap<string, number>): { device: string; bytes: number } | null {
  let top: { device: string; bytes: number } | null = null;
  for (const [device, bytes] of map) if (top === null || bytes > top.bytes) top = { device, bytes };
  return top;
}

/** Why a dead letter cannot be kept, or null (checked per call, as invalidEntry). */
export function invalidDeadLetter(letter: DeadLetter): string | null {
  if (!Number.isFinite(letter.receivedAt)) return `receivedAt must be a finite epoch ms, got ${letter.receivedAt}`;
  if (!Buffer.isBuffer(letter.payload)) return 'payload must be a Buffer';
  for (const k of ['device', 'topic', 'code', 'reason', 'source'] as const)
    if (typeof letter[k] !== 'string') return `${k} must be a string`;
  return null;
}

/** A call on an outbox that is closed (or closing). */
export class OutboxClosedError extends Error {
  readonly code = 'outbox_closed';

  constructor() {
    super('outbox closed');
    this.name = 'OutboxClosedError';
  }
}
