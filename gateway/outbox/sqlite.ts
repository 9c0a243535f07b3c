import { Worker } from 'node:worker_threads';
import type { ReplyTo, WorkerReply, WorkerRequest } from './sqlite-protocol.js';
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
import type { RetainedRow, RetainedStore } from './retained.js';

export interface SqliteOutboxOptions {
  /** database file; must be a real file (WAL needs one), its directory must exist */
  path: string;
  /** bound on stored entry bytes (see `entryBytes`), bytes */
  maxBytes: number;
  /** what the entries of one device may add up to, bytes (default: maxBytes, no share of its own) */
  maxDeviceBytes?: number;
  /** how long the first append of a group waits for others before the group commits, ms */
  groupWindowMs?: number;
  /** a group commits at once when it holds this many appends, entries */
  groupMax?: number;
  /**
   * Called once if the thread that owns the file dies while the outbox is open (out of memory, a crash).
   * Every call fails from then on; nothing acknowledged is lost, since the file is intact: restart.
   */
  onFailure?: (err: Error) => void;
}

const DEFAULT_GROUP_WINDOW_MS = 2; // ms: adds at most 2 ms to a PUBACK, shares one fsync among all appends of the window
const DEFAULT_GROUP_MAX = 1000; // entries: caps the memory and the transaction size of one group
type Pending =
  | {
      kind: 'event';
      entry: NewEntry;
      bytes: number;
      resolve: (stored: OutboxEntry) => void;
      reject: (err: unknown) => void;
    }
  /** `letter.payload` already cut to DEAD_LETTER_RAW_BYTES; `sentBytes` its size as sent */
  | { kind: 'dead'; letter: DeadLetter; sentBytes: number; resolve: () => void; reject: (err: unknown) => void };

/** Starts the thread that owns the file: the compiled worker, or the TypeScript source through tsx's loader. */
function startWorker(path: string): Worker {
  // The thread holds one group (at most groupMax payloads) or one read (the forwarder's 500 rows) at a
  // time: a small heap is enough, and V8's defaults would size its young generation for a main thread.
  // execArgv []: the thread needs none of the process's flags (and some, like --input-type, make it fail to start).
  const options = {
    workerData: { path, deadLettersKept: DEAD_LETTERS_KEPT },
    execArgv: [],
    resourceLimits: { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 64 },
  };
  if (import.meta.url.endsWith('.js')) return new Worker(new URL('./sqlite-worker.js', import.meta.url), options);
  // Running from source: a worker thread does not inherit tsx's loader, so it registers it first.
  const tsx = import.meta.resolve('tsx/esm/api');
  const source = new URL('./sqlite-worker.ts', import.meta.url).href;
  const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(source)}); })`;
  return new Worker(boot, { ...options, eval: true });
}

/**
 * A copy of its own, not a slice of Node's shared 8 KiB pool, which posting would copy whole. Copied at all
 * because the group is written later, and what is stored must be what was passed now.
 */
function ownCopy(bytes: Buffer): Buffer {
  const copy = Buffer.allocUnsafeSlow(bytes.length);
  bytes.copy(copy);
  return copy;
}

/** An error the outbox's thread reported, rebuilt with its message and SQLite code. */
class OutboxStoreError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
    this.name = 'OutboxStoreError';
  }
}

/**
 * The durable outbox of the edge: one SQLite file in WAL mode, every commit fsynced, appends grouped
 * so that a group shares one transaction and one fsync (DESIGN "Three points of durability").
 * Only counters live in memory (plus the groups being collected or written); the backlog stays on disk.
 * The file belongs to a worker thread (sqlite-worker.ts): better-sqlite3 is synchronous, and a commit's
 * fsync there blocks that thread, not the event loop that serves devices and central. While one group
 * is being written the next one collects.
 * The same file keeps the edge's dead letters and the downlink mirror's last known values (RetainedStore):
 * one thread owns it, so they take turns with the groups instead of contending for the lock.
 */
export class SqliteOutbox implements Outbox, RetainedStore {
  readonly path: string;
  readonly maxBytes: number;
  readonly maxDeviceBytes: number;
  readonly groupWindowMs: number;
  readonly groupMax: number;
  readonly onFailure: ((err: Error) => void) | undefined;

  #worker: Worker | undefined;
  // Requests the thread has not answered yet, oldest first: it answers in order.
  #waiting: { resolve: (reply: WorkerReply) => void; reject: (err: unknown) => void }[] = [];
  #broken: Error | undefined; // the thread died: every later call fails with this

  #events = 0;
  #bytes = 0;
  #oldestReceivedAt: number | null = null;
  readonly #deviceBytes = new Map<string, number>(); // committed bytes per device
  #pending: Pending[] = [];
  #pendingBytes = 0; // bytes of groups not yet committed: counted against the bound before they are stored
  readonly #pendingDeviceBytes = new Map<string, number>(); // the same per device, against its share
  #timer: NodeJS.Timeout | undefined;
  // The group being written, settled (never rejected) when its reply is in. One at a time: appends that
  // arrive meanwhile form the next group, as large as the disk is slow (at most groupMax).
  #writing: Promise<void> | undefined;
  #commits = 0;
  #open: Promise<void> | undefined; // open() in progress or done: close() waits for it
  #ready = false; // open() succeeded: from then on a dead thread is a failure to report
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: SqliteOutboxOptions) {
    const {
      path,
      maxBytes,
      maxDeviceBytes = maxBytes,
      groupWindowMs = DEFAULT_GROUP_WINDOW_MS,
      groupMax = DEFAULT_GROUP_MAX,
      onFailure,
    } = options;
    const problems: string[] = [];
    if (path === '' || path === ':memory:') problems.push('path must name a file');
    problems.push(...boundProblems(maxBytes, maxDeviceBytes));
    if (!Number.isFinite(groupWindowMs) || groupWindowMs < 0)
      problems.push(`groupWindowMs must be >= 0 (ms), got ${groupWindowMs}`);
    if (!Number.isSafeInteger(groupMax) || groupMax < 1)
      problems.push(`groupMax must be an integer >= 1, got ${groupMax}`);
    if (problems.length > 0) throw new RangeError(`invalid outbox options: ${problems.join('; ')}`);
    this.path = path;
    this.maxBytes = maxBytes;
    this.maxDeviceBytes = maxDeviceBytes;
    this.groupWindowMs = groupWindowMs;
    this.groupMax = groupMax;
    this.onFailure = onFailure;
  }

  /** Constructs and opens. */
  static async open(options: SqliteOutboxOptions): Promise<SqliteOutbox> {
    const outbox = new SqliteOutbox(options);
    await outbox.open();
    return outbox;
  }

  /** Opens (creating the file and table if needed), takes the file's lock, and rebuilds the counters. */
  open(): Promise<void> {
    if (this.#open !== undefined || this.#closed) return Promise.reject(new Error('outbox already opened (or closed)'));
    this.#open = this.#doOpen();
    return this.#open;
  }

  async #doOpen(): Promise<void> {
    const worker = startWorker(this.path);
    this.#worker = worker;
    worker.on('message', (reply: WorkerReply) => {
      this.#waiting.shift()?.resolve(reply);
      if (this.#waiting.length === 0) worker.unref(); // an idle outbox does not keep the process alive
    });
    const died = (err: Error) => {
      if (this.#broken !== undefined) return;
      this.#broken = new Error(`outbox ${this.path}: its thread died (${err.message}); restart to reopen it`, {
        cause: err,
      });
      for (const w of this.#waiting.splice(0)) w.reject(this.#broken);
      this.#flush(); // appends still collecting fail now, not when their timer fires
      // Only a thread lost while open is a failure: during open(), open() itself rejects with the cause.
      if (this.#ready && !this.#closed) this.onFailure?.(this.#broken);
    };
    worker.on('error', died);
    worker.on('messageerror', died); // a reply that cannot be read would pair every later reply with the wrong request
    worker.on('exit', (code) => died(new Error(`exit code ${code}`)));
    try {
      await this.#request({ op: 'open' });
      const totals = await this.#request({ op: 'totals' });
      this.#events = totals.events;
      this.#bytes = totals.bytes;
      this.#oldestReceivedAt = totals.oldestReceivedAt;
      for (const { device, bytes } of totals.devices) this.#deviceBytes.set(device, bytes);
      this.#ready = true;
    } catch (err) {
      this.#closed = true;
      await worker.terminate();
      throw err;
    }
  }

  append(entry: NewEntry): Promise<OutboxEntry> {
    if (this.#closed || this.#worker === undefined) return Promise.reject(new OutboxClosedError());
    if (this.#broken !== undefined) return Promise.reject(this.#broken);
    const invalid = invalidEntry(entry);
    if (invalid !== null) return Promise.reject(new TypeError(invalid));
    const bytes = entryBytes(entry);
    // Pending bytes count too: the bound holds even if every append not yet committed commits.
    if (this.#bytes + this.#pendingBytes + bytes > this.maxBytes)
      return Promise.reject(new OutboxFullError(this.maxBytes, bytes));
    const held = (this.#deviceBytes.get(entry.device) ?? 0) + (this.#pendingDeviceBytes.get(entry.device) ?? 0);
    if (held + bytes > this.maxDeviceBytes)
      return Promise.reject(new OutboxDeviceShareError(entry.device, this.maxDeviceBytes, bytes));
    return new Promise<OutboxEntry>((resolve, reject) => {
      this.#pending.push({
        kind: 'event',
        entry: { ...entry, payload: ownCopy(entry.payload) },
        bytes,
        resolve,
        reject,
      });
      this.#pendingBytes += bytes;
      addDeviceBytes(this.#pendingDeviceBytes, entry.device, bytes);
      this.#collected();
    });
  }

  deadLetter(letter: DeadLetter): Promise<void> {
    if (this.#closed || this.#worker === undefined) return Promise.reject(new OutboxClosedError());
    if (this.#broken !== undefined) return Promise.reject(this.#broken);
    const invalid = invalidDeadLetter(letter);
    if (invalid !== null) return Promise.reject(new TypeError(invalid));
    return new Promise<void>((resolve, reject) => {
      const payload = ownCopy(letter.payload.subarray(0, DEAD_LETTER_RAW_BYTES));
      this.#pending.push({
        kind: 'dead',
        letter: { ...letter, payload },
        sentBytes: letter.payload.length,
        resolve,
        reject,
      });
      this.#collected();
    });
  }

  async deadLetters(limit: number): Promise<StoredDeadLetter[]> {
    if (this.#closed) throw new OutboxClosedError();
    if (limit <= 0) return [];
    const { rows } = await this.#request({ op: 'deadLetters', limit });
    return rows.map(({ raw, ...r }) => ({ ...r, payload: Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength) }));
  }

  /** An append or dead letter joined the group being collected: it commits when the window ends or the group is full. */
  #collected(): void {
    if (this.#writing !== undefined) return; // written when the group in flight is done
    if (this.#pending.length >= this.groupMax) this.#flush();
    else this.#timer ??= setTimeout(() => this.#flush(), this.groupWindowMs);
  }

  async saveRetained(rows: readonly RetainedRow[]): Promise<number> {
    if (this.#closed) throw new OutboxClosedError();
    if (rows.length === 0) return 0;
    const { written } = await this.#request({
      op: 'saveRetained',
      rows: rows.map((r) => ({ topic: r.topic, order: r.order, payload: r.payload })),
    });
    return written;
  }

  async loadRetained(afterTopic: string, limit: number): Promise<RetainedRow[]> {
    if (this.#closed) throw new OutboxClosedError();
    if (limit <= 0) return [];
    const { rows } = await this.#request({ op: 'loadRetained', afterTopic, limit });
    return rows.map((r) => ({
      topic: r.topic,
      order: r.order,
      payload: Buffer.from(r.payload.buffer, r.payload.byteOffset, r.payload.byteLength),
    }));
  }

  async read(afterSeq: number, limit: number): Promise<OutboxEntry[]> {
    if (this.#closed) throw new OutboxClosedError();
    if (limit <= 0) return [];
    const { rows } = await this.#request({ op: 'read', afterSeq, limit });
    return rows.map((r) => ({
      seq: r.seq,
      device: r.device,
      eventId: r.eventId,
      topic: r.topic,
      payload: Buffer.from(r.payload.buffer, r.payload.byteOffset, r.payload.byteLength),
      receivedAt: r.receivedAt,
      bytes: r.bytes,
    }));
  }

  async confirm(seqs: readonly number[]): Promise<void> {
    if (this.#closed) throw new OutboxClosedError();
    if (seqs.length === 0) return;
    // One statement, one transaction for the whole batch; RETURNING tells us what really went, so
    // unknown or repeated seqs leave the counters alone.
    const { deleted, oldestReceivedAt } = await this.#request({
      op: 'confirm',
      seqsJson: JSON.stringify(seqs.filter(Number.isSafeInteger)),
    });
    if (deleted.length === 0) return;
    this.#events -= deleted.length;
    for (const { device, bytes } of deleted) {
      this.#bytes -= bytes;
      addDeviceBytes(this.#deviceBytes, device, -bytes);
    }
    // The thread answers in request order: the head it read is that of exactly the groups counted so far
    // (a group sent later is counted later, and sets the head itself if the outbox is empty by then).
    if (oldestReceivedAt !== undefined) this.#oldestReceivedAt = oldestReceivedAt;
  }

  stats(): OutboxStats {
    return { events: this.#events, bytes: this.#bytes, oldestReceivedAt: this.#oldestReceivedAt };
  }

  largestDevice(): { device: string; bytes: number } | null {
    return largestOf(this.#deviceBytes);
  }

  /** Append transactions committed since open (one fsync each). For tests and metrics. */
  get commits(): number {
    return this.#commits;
  }

  /** The connection's durability settings as SQLite reports them. For tests and diagnostics. */
  async pragmas(): Promise<{ journalMode: string; synchronous: number; lockingMode: string }> {
    if (this.#closed) throw new OutboxClosedError();
    const { journalMode, synchronous, lockingMode } = await this.#request({ op: 'pragmas' });
    return { journalMode, synchronous, lockingMode };
  }

  /** Every call returns the same promise: a second close() resolves only when the first is done. */
  close(): Promise<void> {
    this.#closing ??= this.#doClose();
    return this.#closing;
  }

  async #doClose(): Promise<void> {
    this.#closed = true;
    await this.#open?.catch(() => {}); // a close() during open() lets it finish (or fail) first
    const worker = this.#worker;
    if (worker === undefined) return;
    // Appends already accepted are committed (or rejected), never left hanging.
    while (this.#writing !== undefined || this.#pending.length > 0) {
      this.#flush();
      await this.#writing;
    }
    // Answered after every request before it: the groups in flight are committed when this resolves.
    await this.#request({ op: 'close' }).catch(() => {});
    await worker.terminate();
    this.#worker = undefined;
  }

  #request<Op extends WorkerRequest['op']>(req: WorkerRequest & { op: Op }): Promise<ReplyTo<Op>> {
    const worker = this.#worker;
    if (this.#broken !== undefined) return Promise.reject(this.#broken);
    if (worker === undefined) return Promise.reject(new OutboxClosedError());
    return new Promise<ReplyTo<Op>>((resolve, reject) => {
      worker.postMessage(req); // throws (nothing queued) if the request cannot be cloned
      this.#waiting.push({
        resolve: (reply) =>
          reply.ok ? resolve(reply as ReplyTo<Op>) : reject(new OutboxStoreError(reply.message, reply.code)),
        reject,
      });
      worker.ref();
    });
  }

  #flush(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#writing !== undefined || this.#pending.length === 0) return;
    const group = this.#pending.splice(0, this.groupMax);
    const events = group.filter((p) => p.kind === 'event');
    const dead = group.filter((p) => p.kind === 'dead');
    let groupBytes = 0;
    for (const p of events) groupBytes += p.bytes;
    const rows = events.map(({ entry: e, bytes }) => ({
      receivedAt: e.receivedAt,
      bytes,
      device: e.device,
      eventId: e.eventId,
      topic: e.topic,
      payload: e.payload,
    }));
    const letters = dead.map(({ letter: l, sentBytes }) => ({
      receivedAt: l.receivedAt,
      bytes: sentBytes,
      device: l.device,
      topic: l.topic,
      code: l.code,
      reason: l.reason,
      source: l.source,
      raw: l.payload,
    }));
    const unpend = () => {
      this.#pendingBytes -= groupBytes;
      for (const p of events) addDeviceBytes(this.#pendingDeviceBytes, p.entry.device, -p.bytes);
    };
    this.#writing = this.#request({ op: 'insert', rows, dead: letters }).then(
      ({ seqs }) => {
        unpend();
        this.#commits += 1;
        if (events.length > 0) {
          if (this.#events === 0) this.#oldestReceivedAt = events[0]?.entry.receivedAt ?? null;
          this.#events += events.length;
          this.#bytes += groupBytes;
        }
        events.forEach((p, i) => {
          const e = p.entry;
          addDeviceBytes(this.#deviceBytes, e.device, p.bytes);
          p.resolve({
            seq: seqs[i] as number,
            device: e.device,
            eventId: e.eventId,
            topic: e.topic,
            payload: e.payload,
            receivedAt: e.receivedAt,
            bytes: p.bytes,
          });
        });
        for (const p of dead) p.resolve();
        this.#wrote();
      },
      (err: unknown) => {
        // The transaction rolled back: nothing of the group is stored, so none of it may be acknowledged.
        unpend();
        for (const p of group) p.reject(err);
        this.#wrote();
      },
    );
  }

  /** The group in flight is done: what collected meanwhile has waited a whole commit already, so it goes now. */
  #wrote(): void {
    this.#writing = undefined;
    if (!this.#closed) this.#flush();
  }
}
