// The thread that owns the SQLite file of a SqliteOutbox (sqlite.ts). better-sqlite3 is synchronous:
// run on the edge's main thread, every group commit's fsync stopped the event loop while the disk
// flushed (23.5% of an edge's busy time under load), and with it every PUBACK, forward and ack.
// Here the fsync blocks only this thread. Requests are answered one at a time, in the order they
// came, so the main thread pairs each reply with the oldest request it has not heard back on.
import fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { WorkerDeadLetter, WorkerReply, WorkerRequest, WorkerRetained, WorkerRow } from './sqlite-protocol.js';

const SCHEMA_VERSION = 2; // PRAGMA user_version of the schema below; 1 had the outbox table only
const KNOWN_VERSIONS = [0, 1, SCHEMA_VERSION]; // 0: a new file; 1 gains the tables it lacks

// AUTOINCREMENT, not a bare INTEGER PRIMARY KEY: without it SQLite picks max(seq)+1, so confirming the
// newest entries (or all of them) and restarting would hand out their seqs again, and the forwarder,
// which tracks seqs, would take a new event for one it already saw confirmed. AUTOINCREMENT keeps the
// high-water mark in sqlite_sequence, written in the same transaction as the insert.
// Small columns come before the payload so the count/sum at open never walks a payload's overflow pages.
// dead_letters: payloads the edge refused for good (outbox.ts DeadLetter); ids grow, so the newest are kept.
// retained: the downlink mirror's last known values (retained.ts), `ord` the version they are ordered by.
const SCHEMA = `
  CREATE TABLE IF NOT EXISTS outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    device      TEXT    NOT NULL,
    event_id    TEXT,
    topic       TEXT    NOT NULL,
    payload     BLOB    NOT NULL
  );
  CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    device      TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    code        TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    raw         BLOB    NOT NULL
  );
  CREATE TABLE IF NOT EXISTS retained (
    topic   TEXT PRIMARY KEY,
    ord     INTEGER,
    payload BLOB NOT NULL
  )`;

const port = parentPort;
if (port === null) throw new Error('sqlite-worker.ts runs only as a worker thread');
const { path, deadLettersKept } = workerData as { path: string; deadLettersKept: number };

const PRIVATE_MODE = 0o600; // events are the warehouse's business: owner only, whatever the umask

/**
 * Creates the file owner-only before SQLite opens it, and narrows one an older build left to the umask. SQLite
 * gives its -wal and -shm files the mode of the database file, so they follow; any already there are narrowed too.
 */
function keepPrivate(): void {
  fs.closeSync(fs.openSync(path, 'a', PRIVATE_MODE));
  for (const file of [path, `${path}-wal`, `${path}-shm`]) {
    try {
      fs.chmodSync(file, PRIVATE_MODE);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
}

/** Opens (creating the file and table if needed) and takes the file's lock for the connection's life. */
function openDatabase(): Database.Database {
  keepPrivate();
  // timeout 0: the lock is held for the connection's whole life, so waiting cannot help when another
  // process has the file.
  const db = new Database(path, { timeout: 0 });
  try {
    // Exclusive before WAL: no shared-memory index, and the lock taken below is held until close,
    // so a second process on the same file fails here instead of silently breaking our counters.
    db.pragma('locking_mode = EXCLUSIVE');
    const mode = db.pragma('journal_mode = WAL', { simple: true });
    if (mode !== 'wal') throw new Error(`outbox ${path}: journal_mode is ${String(mode)}, WAL is required`);
    // FULL, not NORMAL: in WAL mode NORMAL fsyncs the WAL only at checkpoints, so a commit survives
    // kill -9 but not a power cut or kernel crash. We PUBACK on commit and promise "fsynced"
    // (CONTRACT §7), so every commit must fsync the WAL: FULL does that.
    db.pragma('synchronous = FULL');
    db.pragma('fullfsync = ON'); // macOS: plain fsync does not flush the drive's cache; no-op elsewhere
    const version = db.pragma('user_version', { simple: true });
    if (!KNOWN_VERSIONS.includes(Number(version)))
      throw new Error(`outbox ${path}: schema version ${String(version)}, this build knows ${SCHEMA_VERSION}`);
    db.exec('BEGIN EXCLUSIVE'); // takes the exclusive file lock now, held for the connection's life
    db.exec(SCHEMA);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
    db.exec('COMMIT');
    return db;
  } catch (err) {
    db.close();
    if (err instanceof Database.SqliteError && err.code === 'SQLITE_BUSY')
      throw new Error(`outbox ${path} is open in another process`, { cause: err });
    throw err;
  }
}

/** A Buffer over a posted Uint8Array's bytes, without copying them. */
function buffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

let db: Database.Database | undefined;
let handle: ((req: WorkerRequest) => WorkerReply) | undefined;

function prepare(d: Database.Database): (req: WorkerRequest) => WorkerReply {
  const insert = d.prepare<[number, number, string, string | null, string, Buffer]>(
    'INSERT INTO outbox (received_at, bytes, device, event_id, topic, payload) VALUES (?, ?, ?, ?, ?, ?)',
  );
  const insertDead = d.prepare<[number, number, string, string, string, string, string, Buffer]>(
    'INSERT INTO dead_letters (received_at, bytes, device, topic, code, reason, source, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
  );
  const pruneDead = d.prepare<[number]>('DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?');
  // One transaction per group, rows inserted in their order: seq order is append order. Its dead letters share
  // the transaction and its fsync, so a device sending junk costs the disk no flush of its own.
  const insertGroup = d.transaction((rows: readonly WorkerRow[], dead: readonly WorkerDeadLetter[]) => {
    const seqs = rows.map((r) =>
      Number(insert.run(r.receivedAt, r.bytes, r.device, r.eventId, r.topic, buffer(r.payload)).lastInsertRowid),
    );
    for (const l of dead)
      insertDead.run(l.receivedAt, l.bytes, l.device, l.topic, l.code, l.reason, l.source, buffer(l.raw));
    if (dead.length > 0) pruneDead.run(deadLettersKept);
    return seqs;
  });
  const del = d.prepare<[string], { device: string; bytes: number }>(
    'DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?)) RETURNING device, bytes',
  );
  const deleteTx = d.transaction((seqsJson: string) => del.all(seqsJson));
  const selectDead = d.prepare<
    [number],
    {
      id: number;
      received_at: number;
      bytes: number;
      device: string;
      topic: string;
      code: string;
      reason: string;
      source: string;
      raw: Buffer;
    }
  >(
    'SELECT id, received_at, bytes, device, topic, code, reason, source, raw FROM dead_letters ORDER BY id DESC LIMIT ?',
  );
  // The mirror's last known values. An older order never replaces a newer one; a row without one (a payload that
  // names no version) replaces and is replaced.
  const upsertRetained = d.prepare<[string, number | null, Buffer]>(
    `INSERT INTO retained (topic, ord, payload) VALUES (?, ?, ?)
     ON CONFLICT (topic) DO UPDATE SET ord = excluded.ord, payload = excluded.payload
     WHERE excluded.ord IS NULL OR retained.ord IS NULL OR excluded.ord >= retained.ord`,
  );
  const deleteRetained = d.prepare<[string]>('DELETE FROM retained WHERE topic = ?');
  const saveRetained = d.transaction((rows: readonly WorkerRetained[]) => {
    let written = 0;
    for (const r of rows)
      written += (
        r.payload.byteLength === 0
          ? deleteRetained.run(r.topic)
          : upsertRetained.run(r.topic, r.order, buffer(r.payload))
      ).changes;
    return written;
  });
  const selectRetained = d.prepare<[string, number], { topic: string; ord: number | null; payload: Buffer }>(
    'SELECT topic, ord, payload FROM retained WHERE topic > ? ORDER BY topic LIMIT ?',
  );
  const selectDevices = d.prepare<[], { device: string; bytes: number }>(
    'SELECT device, sum(bytes) AS bytes FROM outbox GROUP BY device',
  );
  // A confirmation commits without its own fsync: if a power cut takes it back, those events are sent
  // again and central answers `duplicate` (DESIGN, end-to-end ack). The next append's fsync makes it
  // durable anyway (a WAL fsync covers every frame before it).
  const relaxed = d.prepare('PRAGMA synchronous = NORMAL');
  const strict = d.prepare('PRAGMA synchronous = FULL');
  const selectAfter = d.prepare<
    [number, number],
    {
      seq: number;
      received_at: number;
      bytes: number;
      device: string;
      event_id: string | null;
      topic: string;
      payload: Buffer;
    }
  >('SELECT seq, received_at, bytes, device, event_id, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?');
  const selectHead = d.prepare<[], { received_at: number }>('SELECT received_at FROM outbox ORDER BY seq LIMIT 1');
  const head = () => selectHead.get()?.received_at ?? null;

  return (req) => {
    switch (req.op) {
      case 'totals': {
        // The only full scan: once per open (reads the small leading columns of every row).
        const t = d
          .prepare<[], { events: number; bytes: number }>(
            'SELECT count(*) AS events, coalesce(sum(bytes), 0) AS bytes FROM outbox',
          )
          .get();
        return {
          ok: true,
          op: 'totals',
          events: t?.events ?? 0,
          bytes: t?.bytes ?? 0,
          oldestReceivedAt: head(),
          devices: selectDevices.all(),
        };
      }
      case 'insert':
        return { ok: true, op: 'insert', seqs: insertGroup(req.rows, req.dead) };
      case 'confirm': {
        relaxed.run();
        let deleted: { device: string; bytes: number }[];
        try {
          deleted = deleteTx(req.seqsJson);
        } finally {
          strict.run();
        }
        return { ok: true, op: 'confirm', deleted, oldestReceivedAt: deleted.length > 0 ? head() : undefined };
      }
      case 'read':
        return {
          ok: true,
          op: 'read',
          rows: selectAfter.all(req.afterSeq, req.limit).map((r) => ({
            seq: r.seq,
            receivedAt: r.received_at,
            bytes: r.bytes,
            device: r.device,
            eventId: r.event_id,
            topic: r.topic,
            payload: r.payload,
          })),
        };
      case 'deadLetters':
        return {
          ok: true,
          op: 'deadLetters',
          rows: selectDead.all(req.limit).map((r) => ({
            id: r.id,
            receivedAt: r.received_at,
            bytes: r.bytes,
            device: r.device,
            topic: r.topic,
            code: r.code,
            reason: r.reason,
            source: r.source,
            raw: r.raw,
          })),
        };
      case 'saveRetained': {
        // A cache of central's values, not an acknowledged event: no fsync of its own (as a confirmation).
        relaxed.run();
        try {
          return { ok: true, op: 'saveRetained', written: saveRetained(req.rows) };
        } finally {
          strict.run();
        }
      }
      case 'loadRetained':
        return {
          ok: true,
          op: 'loadRetained',
          rows: selectRetained
            .all(req.afterTopic, req.limit)
            .map((r) => ({ topic: r.topic, order: r.ord, payload: r.payload })),
        };
      case 'pragmas':
        return {
          ok: true,
          op: 'pragmas',
          journalMode: String(d.pragma('journal_mode', { simple: true })),
          synchronous: Number(d.pragma('synchronous', { simple: true })),
          lockingMode: String(d.pragma('locking_mode', { simple: true })),
        };
      default:
        throw new Error(`unknown outbox request ${(req as { op: string }).op}`);
    }
  };
}

port.on('message', (req: WorkerRequest) => {
  let reply: WorkerReply;
  try {
    if (req.op === 'open') {
      db = openDatabase();
      handle = prepare(db);
      reply = { ok: true, op: 'open' };
    } else if (req.op === 'close') {
      db?.close();
      db = undefined;
      handle = undefined;
      reply = { ok: true, op: 'close' };
    } else if (handle === undefined) {
      throw new Error('outbox is not open');
    } else {
      reply = handle(req);
    }
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    reply = {
      ok: false,
      message: e.message,
      code: (e as { code?: unknown }).code === undefined ? undefined : String((e as { code?: unknown }).code),
    };
  }
  port.postMessage(reply);
  if (req.op === 'close') port.close(); // nothing keeps the thread alive after this
});
