import Database from 'better-sqlite3';
import { entryBytes, invalidEntry, OutboxClosedError, OutboxFullError, type NewEntry, type Outbox, type OutboxEntry, type OutboxStats } from './outbox.js';

export interface SqliteOutboxOptions {
  /** database file; must be a real file (WAL needs one), its directory must exist */
  path: string;
  /** bound on stored entry bytes (see `entryBytes`), bytes */
  maxBytes: number;
  /** how long the first append of a group waits for others before the group commits, ms */
  groupWindowMs?: number;
  /** a group commits at once when it holds this many appends, entries */
  groupMax?: number;
}

const DEFAULT_GROUP_WINDOW_MS = 2; // ms: adds at most 2 ms to a PUBACK, shares one fsync among all appends of the window
const DEFAULT_GROUP_MAX = 1000; // entries: caps the memory and the transaction size of one group
const SCHEMA_VERSION = 1; // PRAGMA user_version of the schema below

// AUTOINCREMENT, not a bare INTEGER PRIMARY KEY: without it SQLite picks max(seq)+1, so confirming the
// newest entries (or all of them) and restarting would hand out their seqs again, and the forwarder,
// which tracks seqs, would take a new event for one it already saw confirmed. AUTOINCREMENT keeps the
// high-water mark in sqlite_sequence, written in the same transaction as the insert.
// Small columns come before the payload so the count/sum at open never walks a payload's overflow pages.
const SCHEMA = `
  CREATE TABLE IF NOT EXISTS outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    device      TEXT    NOT NULL,
    event_id    TEXT,
    topic       TEXT    NOT NULL,
    payload     BLOB    NOT NULL
  )`;

interface Row {
  seq: number;
  received_at: number;
  bytes: number;
  device: string;
  event_id: string | null;
  topic: string;
  payload: Buffer;
}

interface Pending {
  entry: NewEntry;
  bytes: number;
  resolve: (stored: OutboxEntry) => void;
  reject: (err: unknown) => void;
}

/**
 * The durable outbox of the edge: one SQLite file in WAL mode, every commit fsynced, appends grouped
 * so that a group shares one transaction and one fsync (DESIGN "Three points of durability").
 * Only counters live in memory (plus the group being collected); the backlog stays on disk.
 * better-sqlite3 is synchronous: a group commit (its fsync) blocks the event loop while it runs.
 */
export class SqliteOutbox implements Outbox {
  readonly path: string;
  readonly maxBytes: number;
  readonly groupWindowMs: number;
  readonly groupMax: number;

  #db: Database.Database | undefined;
  #insertGroup: ((group: readonly Pending[]) => OutboxEntry[]) | undefined;
  #deleteSeqs: ((seqsJson: string) => number[]) | undefined;
  #selectAfter: Database.Statement<[number, number], Row> | undefined;
  #selectHead: Database.Statement<[], { received_at: number }> | undefined;

  #events = 0;
  #bytes = 0;
  #oldestReceivedAt: number | null = null;
  #pending: Pending[] = [];
  #pendingBytes = 0; // bytes of #pending: counted against the bound before they are stored
  #timer: NodeJS.Timeout | undefined;
  #commits = 0;
  #closed = false;

  constructor(options: SqliteOutboxOptions) {
    const { path, maxBytes, groupWindowMs = DEFAULT_GROUP_WINDOW_MS, groupMax = DEFAULT_GROUP_MAX } = options;
    const problems: string[] = [];
    if (path === '' || path === ':memory:') problems.push('path must name a file');
    if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) problems.push(`maxBytes must be a positive integer (bytes), got ${maxBytes}`);
    if (!Number.isFinite(groupWindowMs) || groupWindowMs < 0) problems.push(`groupWindowMs must be >= 0 (ms), got ${groupWindowMs}`);
    if (!Number.isSafeInteger(groupMax) || groupMax < 1) problems.push(`groupMax must be an integer >= 1, got ${groupMax}`);
    if (problems.length > 0) throw new RangeError(`invalid outbox options: ${problems.join('; ')}`);
    this.path = path;
    this.maxBytes = maxBytes;
    this.groupWindowMs = groupWindowMs;
    this.groupMax = groupMax;
  }

  /** Constructs and opens. */
  static async open(options: SqliteOutboxOptions): Promise<SqliteOutbox> {
    const outbox = new SqliteOutbox(options);
    await outbox.open();
    return outbox;
  }

  /** Opens (creating the file and table if needed), takes the file's lock, and rebuilds the counters. */
  async open(): Promise<void> {
    if (this.#db !== undefined || this.#closed) throw new Error('outbox already opened (or closed)');
    // timeout 0: the lock is held for the connection's whole life, so waiting (which would block the
    // event loop: better-sqlite3 is synchronous) cannot help when another process has the file.
    const db = new Database(this.path, { timeout: 0 });
    try {
      // Exclusive before WAL: no shared-memory index, and the lock taken below is held until close,
      // so a second process on the same file fails here instead of silently breaking our counters.
      db.pragma('locking_mode = EXCLUSIVE');
      const mode = db.pragma('journal_mode = WAL', { simple: true });
      if (mode !== 'wal') throw new Error(`outbox ${this.path}: journal_mode is ${String(mode)}, WAL is required`);
      // FULL, not NORMAL: in WAL mode NORMAL fsyncs the WAL only at checkpoints, so a commit survives
      // kill -9 but not a power cut or kernel crash. We PUBACK on commit and promise "fsynced"
      // (CONTRACT §7), so every commit must fsync the WAL: FULL does that.
      db.pragma('synchronous = FULL');
      db.pragma('fullfsync = ON'); // macOS: plain fsync does not flush the drive's cache; no-op elsewhere
      const version = db.pragma('user_version', { simple: true });
      if (version !== 0 && version !== SCHEMA_VERSION) throw new Error(`outbox ${this.path}: schema version ${String(version)}, this build knows ${SCHEMA_VERSION}`);
      db.exec('BEGIN EXCLUSIVE'); // takes the exclusive file lock now, held for the connection's life
      db.exec(SCHEMA);
      db.pragma(`user_version = ${SCHEMA_VERSION}`);
      db.exec('COMMIT');
    } catch (err) {
      db.close();
      if (err instanceof Database.SqliteError && err.code === 'SQLITE_BUSY') throw new Error(`outbox ${this.path} is open in another process`, { cause: err });
      throw err;
    }

    const insert = db.prepare<[number, number, string, string | null, string, Buffer]>('INSERT INTO outbox (received_at, bytes, device, event_id, topic, payload) VALUES (?, ?, ?, ?, ?, ?)');
    // One transaction per group, rows inserted in call order: seq order is append order.
    this.#insertGroup = db.transaction((group: readonly Pending[]) =>
      group.map(({ entry: e, bytes }): OutboxEntry => {
        const seq = Number(insert.run(e.receivedAt, bytes, e.device, e.eventId, e.topic, e.payload).lastInsertRowid);
        return { seq, device: e.device, eventId: e.eventId, topic: e.topic, payload: e.payload, receivedAt: e.receivedAt, bytes };
      }),
    );
    const del = db.prepare<[string], { bytes: number }>('DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?)) RETURNING bytes');
    this.#deleteSeqs = db.transaction((seqsJson: string) => del.all(seqsJson).map((r) => r.bytes));
    this.#selectAfter = db.prepare<[number, number], Row>('SELECT seq, received_at, bytes, device, event_id, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?');
    this.#selectHead = db.prepare<[], { received_at: number }>('SELECT received_at FROM outbox ORDER BY seq LIMIT 1');

    // The only full scan: once per open (reads the small leading columns of every row).
    const totals = db.prepare<[], { events: number; bytes: number }>('SELECT count(*) AS events, coalesce(sum(bytes), 0) AS bytes FROM outbox').get();
    this.#events = totals?.events ?? 0;
    this.#bytes = totals?.bytes ?? 0;
    this.#oldestReceivedAt = this.#selectHead.get()?.received_at ?? null;
    this.#db = db;
  }

  append(entry: NewEntry): Promise<OutboxEntry> {
    if (this.#closed || this.#db === undefined) return Promise.reject(new OutboxClosedError());
    const invalid = invalidEntry(entry);
    if (invalid !== null) return Promise.reject(new TypeError(invalid));
    const bytes = entryBytes(entry);
    // Pending bytes count too: the bound holds even if every append of the open group commits.
    if (this.#bytes + this.#pendingBytes + bytes > this.maxBytes) return Promise.reject(new OutboxFullError(this.maxBytes, bytes));
    return new Promise<OutboxEntry>((resolve, reject) => {
      // Copy the payload: the group is written later, and what we store must be what was passed now.
      this.#pending.push({ entry: { ...entry, payload: Buffer.from(entry.payload) }, bytes, resolve, reject });
      this.#pendingBytes += bytes;
      if (this.#pending.length >= this.groupMax) this.#flush();
      else this.#timer ??= setTimeout(() => this.#flush(), this.groupWindowMs);
    });
  }

  read(afterSeq: number, limit: number): OutboxEntry[] {
    if (this.#selectAfter === undefined || this.#closed) throw new OutboxClosedError();
    if (limit <= 0) return [];
    return this.#selectAfter.all(afterSeq, limit).map((r) => ({ seq: r.seq, device: r.device, eventId: r.event_id, topic: r.topic, payload: r.payload, receivedAt: r.received_at, bytes: r.bytes }));
  }

  async confirm(seqs: readonly number[]): Promise<void> {
    if (this.#deleteSeqs === undefined || this.#selectHead === undefined || this.#closed) throw new OutboxClosedError();
    if (seqs.length === 0) return;
    // One statement, one transaction (one fsync) for the whole batch; RETURNING tells us what really
    // went, so unknown or repeated seqs leave the counters alone.
    const deleted = this.#deleteSeqs(JSON.stringify(seqs.filter(Number.isSafeInteger)));
    if (deleted.length === 0) return;
    this.#events -= deleted.length;
    for (const b of deleted) this.#bytes -= b;
    this.#oldestReceivedAt = this.#selectHead.get()?.received_at ?? null;
  }

  stats(): OutboxStats {
    return { events: this.#events, bytes: this.#bytes, oldestReceivedAt: this.#oldestReceivedAt };
  }

  /** Append transactions committed since open (one fsync each). For tests and metrics. */
  get commits(): number {
    return this.#commits;
  }

  /** The connection's durability settings as SQLite reports them. For tests and diagnostics. */
  get pragmas(): { journalMode: string; synchronous: number; lockingMode: string } {
    if (this.#db === undefined) throw new OutboxClosedError();
    return {
      journalMode: String(this.#db.pragma('journal_mode', { simple: true })),
      synchronous: Number(this.#db.pragma('synchronous', { simple: true })),
      lockingMode: String(this.#db.pragma('locking_mode', { simple: true })),
    };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#flush(); // appends already accepted are committed (or rejected), never left hanging
    this.#db?.close();
    this.#db = undefined;
  }

  #flush(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    const group = this.#pending;
    if (group.length === 0 || this.#insertGroup === undefined) return;
    this.#pending = [];
    let groupBytes = 0;
    for (const p of group) groupBytes += p.bytes;
    this.#pendingBytes -= groupBytes;

    let stored: OutboxEntry[];
    try {
      stored = this.#insertGroup(group);
    } catch (err) {
      // The transaction rolled back: nothing of the group is stored, so none of it may be acknowledged.
      for (const p of group) p.reject(err);
      return;
    }
    this.#commits += 1;
    if (this.#events === 0) this.#oldestReceivedAt = group[0]?.entry.receivedAt ?? null;
    this.#events += group.length;
    this.#bytes += groupBytes;
    group.forEach((p, i) => p.resolve(stored[i] as OutboxEntry)); // same length: one row per pending append
  }
}
