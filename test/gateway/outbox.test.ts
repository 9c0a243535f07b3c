import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { MemoryOutbox, OutboxDeviceShareError, SqliteOutbox, type OutboxEntry } from '../../gateway/outbox/index.js';
import { deadLetter, newEntry, outboxContract } from './outbox-contract.js';
import { testSeed } from '../helpers/seed.js';

const CHILD = join(dirname(fileURLToPath(import.meta.url)), 'outbox-child.ts');
const BIG = 1 << 30; // bytes

let dir: string;
let files = 0;
const freshPath = (): string => join(dir, `outbox-${++files}.db`);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stockwire-outbox-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

outboxContract('MemoryOutbox', async (maxBytes, maxDeviceBytes) => new MemoryOutbox(maxBytes, maxDeviceBytes));
outboxContract('SqliteOutbox', async (maxBytes, maxDeviceBytes) =>
  SqliteOutbox.open({ path: freshPath(), maxBytes, ...(maxDeviceBytes !== undefined && { maxDeviceBytes }) }),
);

async function readAll(o: SqliteOutbox): Promise<OutboxEntry[]> {
  return o.read(0, Number.MAX_SAFE_INTEGER);
}

describe('SqliteOutbox', () => {
  test('runs in WAL mode with synchronous = FULL (2), holding the file exclusively', async () => {
    const o = await SqliteOutbox.open({ path: freshPath(), maxBytes: BIG });
    assert.deepEqual(await o.pragmas(), { journalMode: 'wal', synchronous: 2, lockingMode: 'exclusive' });
    await o.close();
  });

  test('its files are owner-only (0600) whatever the umask, the WAL included; one an older build left readable is narrowed', async () => {
    const umask = process.umask(0o022);
    try {
      const path = freshPath();
      const o = await SqliteOutbox.open({ path, maxBytes: BIG });
      await o.append(newEntry());
      const files = [path, `${path}-wal`, `${path}-shm`].filter((f) => existsSync(f));
      assert.ok(files.includes(`${path}-wal`), 'the WAL exists while the outbox is open');
      for (const f of files) assert.equal((await stat(f)).mode & 0o777, 0o600, `${f} is owner-only`);
      await o.close();
      const older = freshPath();
      await writeFile(older, '');
      await writeFile(`${older}-wal`, '');
      await chmod(older, 0o644);
      await chmod(`${older}-wal`, 0o644);
      const reopened = await SqliteOutbox.open({ path: older, maxBytes: BIG });
      for (const f of [older, `${older}-wal`]) assert.equal((await stat(f)).mode & 0o777, 0o600, `${f} narrowed`);
      await reopened.close();
    } finally {
      process.umask(umask);
    }
  });

  test('a confirmation commits without its own fsync, and appends after it are fsynced again (FULL)', async () => {
    const o = await SqliteOutbox.open({ path: freshPath(), maxBytes: BIG });
    const a = await o.append(newEntry());
    await o.confirm([a.seq]);
    assert.equal((await o.pragmas()).synchronous, 2, 'back to FULL after the confirmation');
    assert.deepEqual(await readAll(o), [], 'the confirmed event is gone');
    const b = await o.append(newEntry());
    assert.deepEqual(
      (await readAll(o)).map((e) => e.seq),
      [b.seq],
    );
    await o.close();
  });

  test('a second outbox on the same file is refused while the first is open', async () => {
    const path = freshPath();
    const o = await SqliteOutbox.open({ path, maxBytes: BIG });
    await o.append(newEntry());
    await assert.rejects(SqliteOutbox.open({ path, maxBytes: BIG }), /open in another process/);
    await o.close();
    const again = await SqliteOutbox.open({ path, maxBytes: BIG });
    assert.equal(again.stats().events, 1);
    await again.close();
  });

  test('invalid options are all reported at once', () => {
    assert.throws(
      () => new SqliteOutbox({ path: ':memory:', maxBytes: 0, groupWindowMs: -1, groupMax: 0 }),
      (err: unknown) => {
        assert.ok(err instanceof RangeError);
        for (const word of ['path', 'maxBytes', 'groupWindowMs', 'groupMax'])
          assert.match(err.message, new RegExp(word));
        return true;
      },
    );
  });

  test('entries, seqs and counters survive close and reopen', async () => {
    const path = freshPath();
    const o = await SqliteOutbox.open({ path, maxBytes: BIG });
    const stored = await Promise.all(Array.from({ length: 50 }, (_, i) => o.append(newEntry(i * 3))));
    await o.confirm([stored[0]?.seq ?? 0, stored[10]?.seq ?? 0, stored[49]?.seq ?? 0]);
    const before = { entries: await readAll(o), stats: o.stats() };
    await o.close();

    const reopened = await SqliteOutbox.open({ path, maxBytes: BIG });
    assert.deepEqual(await readAll(reopened), before.entries);
    assert.deepEqual(reopened.stats(), before.stats);
    assert.equal(before.stats.events, 47);
    assert.equal(before.stats.oldestReceivedAt, stored[1]?.receivedAt);
    await reopened.close();
  });

  test('kill -9: every seq the child reported as appended is on disk after reopen', async (t) => {
    const path = freshPath();
    const KILL_AFTER = 1000; // seqs reported before the kill is scheduled
    // The kill then comes after a delay (ms) chosen by the seed, so over explored seeds it lands at every phase
    // of the child's cycle (collecting a group, inside its transaction, resolving it), not always between groups.
    const killDelayMs = (testSeed('gateway/outbox-kill') % 2_500) / 100;
    let killTimer: NodeJS.Timeout | undefined;
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, path], { stdio: ['ignore', 'pipe', 'pipe'] });
    t.after(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    let out = '';
    let err = '';
    let reported = 0;
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const closed = new Promise<NodeJS.Signals | null>((resolve) =>
      child.once('close', (_code, signal) => resolve(signal)),
    );
    child.stdout.on('data', (b: Buffer) => {
      const s = b.toString();
      out += s;
      for (const ch of s) if (ch === '\n') reported += 1;
      if (reported >= KILL_AFTER) killTimer ??= setTimeout(() => child.kill('SIGKILL'), killDelayMs);
    });
    const timeout = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const signal = await closed;
    clearTimeout(timeout);
    clearTimeout(killTimer);
    assert.equal(signal, 'SIGKILL', `child ended on its own:\n${err}`);
    t.diagnostic(`killed ${killDelayMs.toFixed(1)} ms after ${KILL_AFTER} seqs; ${reported} reported`);
    assert.ok(reported >= KILL_AFTER, `child reported only ${reported} seqs before the deadline:\n${err}`);

    // Only complete lines: a line cut by the kill was never fully reported.
    const acked = out.split('\n').slice(0, -1).map(Number);
    assert.ok(acked.every(Number.isSafeInteger));

    const o = await SqliteOutbox.open({ path, maxBytes: BIG });
    const onDisk = (await readAll(o)).map((e) => e.seq);
    const stored = new Set(onDisk);
    const missing = acked.filter((s) => !stored.has(s));
    assert.deepEqual(missing, [], `${missing.length} acknowledged seqs lost (kill delay ${killDelayMs} ms)`);
    // Groups are atomic and nothing was confirmed: what is stored is exactly 1..N, no holes.
    assert.deepEqual(
      onDisk,
      Array.from({ length: onDisk.length }, (_, i) => i + 1),
    );
    assert.ok(onDisk.length >= Math.max(...acked));
    assert.equal(o.stats().events, onDisk.length, 'counters rebuilt from disk');
    const next = await o.append(newEntry());
    assert.equal(next.seq, onDisk.length + 1);
    await o.close();
  });

  test('group commit: 1000 appends at once take one transaction (groupMax 1000), ten with groupMax 100', async () => {
    const one = await SqliteOutbox.open({ path: freshPath(), maxBytes: BIG });
    await Promise.all(Array.from({ length: 1000 }, () => one.append(newEntry())));
    assert.equal(one.commits, 1);
    assert.equal(one.stats().events, 1000);
    await one.close();

    const ten = await SqliteOutbox.open({ path: freshPath(), maxBytes: BIG, groupMax: 100 });
    await Promise.all(Array.from({ length: 1000 }, () => ten.append(newEntry())));
    assert.equal(ten.commits, 10);
    await ten.close();
  });

  test('an append still in its group is neither readable nor counted; close commits it', async () => {
    const path = freshPath();
    const o = await SqliteOutbox.open({ path, maxBytes: BIG, groupWindowMs: 60_000 });
    const pending = o.append(newEntry(5));
    assert.deepEqual(await o.read(0, 10), []);
    assert.equal(o.stats().events, 0);
    await o.close();
    const stored = await pending;
    const reopened = await SqliteOutbox.open({ path, maxBytes: BIG });
    assert.deepEqual(await readAll(reopened), [stored]);
    await reopened.close();
  });

  test('a group whose transaction fails rejects every append in it, stores none, and frees its bytes', async () => {
    const path = freshPath();
    await (await SqliteOutbox.open({ path, maxBytes: BIG })).close();
    // A real write failure inside the transaction, injected with a trigger on the file (no mocks).
    const raw = new Database(path);
    raw.exec(
      `CREATE TRIGGER refuse BEFORE INSERT ON outbox WHEN NEW.topic = 'poison' BEGIN SELECT RAISE(ABORT, 'injected failure'); END`,
    );
    raw.close();

    const o = await SqliteOutbox.open({ path, maxBytes: 100 });
    const group = [o.append(newEntry(20)), o.append({ ...newEntry(20), topic: 'poison' }), o.append(newEntry(20))];
    const results = await Promise.allSettled(group);
    assert.ok(
      results.every((r) => r.status === 'rejected' && /injected failure/.test(String(r.reason))),
      'no append of the failed group resolves',
    );
    assert.deepEqual(await o.read(0, 10), []);
    assert.deepEqual(o.stats(), { events: 0, bytes: 0, oldestReceivedAt: null });
    assert.equal(o.commits, 0);
    const fits = await o.append(newEntry(90)); // 100 bytes: the failed group's bytes no longer count
    assert.equal(fits.bytes, 100);
    await o.close();
  });

  test('its thread dying (out of memory here) fails every call with the reason, calls onFailure once, and loses nothing acknowledged', async () => {
    const path = freshPath();
    const failures: Error[] = [];
    const o = await SqliteOutbox.open({ path, maxBytes: BIG, onFailure: (err) => failures.push(err) });
    // 400,000 small rows read back at once need more than the thread's 64 MiB heap: a real death, not a mock.
    const ROWS = 400_000;
    for (let i = 0; i < ROWS; i += 5_000)
      await Promise.all(Array.from({ length: 5_000 }, () => o.append(newEntry(20))));
    assert.equal(o.stats().events, ROWS);
    const reading = o.read(0, ROWS);
    const appendedMeanwhile = o.append(newEntry(20)); // waits behind the read: it must fail, not hang
    await assert.rejects(reading, /outbox .* its thread died .*restart to reopen it/);
    await assert.rejects(appendedMeanwhile, /its thread died/);
    await assert.rejects(o.append(newEntry(20)), /its thread died/, 'later appends fail at once with the same reason');
    await assert.rejects(o.confirm([1]), /its thread died/);
    assert.equal(failures.length, 1, 'onFailure is called once');
    assert.match(failures[0]?.message ?? '', /ERR_WORKER_OUT_OF_MEMORY|out of memory/i);
    await o.close();

    const reopened = await SqliteOutbox.open({ path, maxBytes: BIG });
    assert.equal(reopened.stats().events, ROWS, 'every acknowledged append is still on disk');
    assert.deepEqual(
      (await reopened.read(ROWS - 1, 10)).map((e) => e.seq),
      [ROWS],
    );
    await reopened.close();
  });

  test('a second close() resolves only once the first has committed what was accepted and released the file', async () => {
    const path = freshPath();
    const failures: Error[] = [];
    const o = await SqliteOutbox.open({
      path,
      maxBytes: BIG,
      groupWindowMs: 60_000,
      onFailure: (err) => failures.push(err),
    });
    const accepted = o.append(newEntry(5));
    let settled = false;
    void accepted.then(() => (settled = true));
    void o.close();
    await o.close();
    assert.ok(settled, 'the accepted append is committed before any close() resolves');
    const reopened = await SqliteOutbox.open({ path, maxBytes: BIG }); // the lock is released: no "open in another process"
    assert.deepEqual(
      (await reopened.read(0, 10)).map((e) => e.seq),
      [(await accepted).seq],
    );
    await reopened.close();
    await new Promise((r) => setTimeout(r, 50)); // the thread's exit after close is not a failure
    assert.deepEqual(failures, []);
  });

  test('a seq is not reused after restart when the newest entries were confirmed', async () => {
    const path = freshPath();
    const o = await SqliteOutbox.open({ path, maxBytes: BIG });
    const stored = await Promise.all([1, 2, 3, 4, 5].map(() => o.append(newEntry())));
    const highest = Math.max(...stored.map((e) => e.seq));
    await o.confirm(stored.slice(3).map((e) => e.seq)); // the two newest
    await o.close();

    const second = await SqliteOutbox.open({ path, maxBytes: BIG });
    const next = await second.append(newEntry());
    assert.ok(next.seq > highest, `seq ${next.seq} reused (highest ever was ${highest})`);
    await second.confirm((await readAll(second)).map((e) => e.seq)); // now all of them
    await second.close();

    const third = await SqliteOutbox.open({ path, maxBytes: BIG });
    assert.equal(third.stats().events, 0);
    assert.ok((await third.append(newEntry())).seq > next.seq);
    await third.close();
  });

  test('the bytes each device holds are rebuilt from disk at open: a device at its share is refused after a restart', async () => {
    const path = freshPath();
    const o = await SqliteOutbox.open({ path, maxBytes: BIG });
    for (let i = 0; i < 3; i++) await o.append({ ...newEntry(90), device: 'noisy' }); // 100 bytes each
    await o.append({ ...newEntry(40), device: 'calm' });
    const first = (await readAll(o))[0];
    await o.confirm([first?.seq ?? 0]);
    await o.close();
    const reopened = await SqliteOutbox.open({ path, maxBytes: BIG, maxDeviceBytes: 250 });
    assert.deepEqual(reopened.largestDevice(), { device: 'noisy', bytes: 200 });
    await assert.rejects(reopened.append({ ...newEntry(90), device: 'noisy' }), OutboxDeviceShareError);
    await reopened.append({ ...newEntry(90), device: 'calm' });
    await reopened.close();
  });

  test('dead letters share the group of the appends beside them (one transaction, one fsync) and survive reopen', async () => {
    const path = freshPath();
    const o = await SqliteOutbox.open({ path, maxBytes: BIG });
    await Promise.all([
      ...Array.from({ length: 20 }, () => o.append(newEntry())),
      ...Array.from({ length: 5 }, (_, i) => o.deadLetter(deadLetter({ reason: `junk ${i}` }))),
    ]);
    assert.equal(o.commits, 1);
    await o.close();
    const reopened = await SqliteOutbox.open({ path, maxBytes: BIG });
    assert.deepEqual(
      (await reopened.deadLetters(10)).map((d) => d.reason),
      ['junk 4', 'junk 3', 'junk 2', 'junk 1', 'junk 0'],
    );
    assert.equal(reopened.stats().events, 20);
    await reopened.close();
  });

  test('a dead letter that cannot be written fails its group: neither it nor the appends beside it resolve', async () => {
    const path = freshPath();
    await (await SqliteOutbox.open({ path, maxBytes: BIG })).close();
    const raw = new Database(path);
    raw.exec(`CREATE TRIGGER refuse BEFORE INSERT ON dead_letters BEGIN SELECT RAISE(ABORT, 'injected failure'); END`);
    raw.close();
    const o = await SqliteOutbox.open({ path, maxBytes: 100 });
    const results = await Promise.allSettled([o.append(newEntry(40)), o.deadLetter(deadLetter())]);
    assert.ok(
      results.every((r) => r.status === 'rejected' && /injected failure/.test(String(r.reason))),
      'nothing of the group resolves',
    );
    assert.deepEqual(o.stats(), { events: 0, bytes: 0, oldestReceivedAt: null });
    assert.equal(o.largestDevice(), null);
    await o.append(newEntry(90)); // the failed group's bytes no longer count
    await o.close();
  });

  test('retained topics: saved and loaded in pages; an older order never replaces a newer one; no order replaces; an empty payload removes', async () => {
    const path = freshPath();
    const o = await SqliteOutbox.open({ path, maxBytes: BIG });
    const row = (topic: string, order: number | null, text: string) => ({ topic, order, payload: Buffer.from(text) });
    assert.equal(
      await o.saveRetained([
        row('stock/A', 5, 'a5'),
        row('stock/B', 2, 'b2'),
        row('wh/W/shelf/L/A', 1_700_000_000_000, 'shelf'),
        row('stock/C', null, 'c?'),
      ]),
      4,
    );
    assert.equal(
      await o.saveRetained([row('stock/A', 4, 'a4'), row('stock/B', 3, 'b3'), row('stock/C', 1, 'c1')]),
      2,
      'the older A is skipped',
    );
    assert.equal(
      await o.saveRetained([row('stock/A', 5, 'a5 again'), row('stock/B', null, 'b?')]),
      2,
      'an equal order and a missing one replace',
    );
    assert.equal(await o.saveRetained([row('wh/W/shelf/L/A', null, '')]), 1);
    await o.close();
    const reopened = await SqliteOutbox.open({ path, maxBytes: BIG });
    const page1 = await reopened.loadRetained('', 2);
    const page2 = await reopened.loadRetained(page1.at(-1)?.topic ?? '', 2);
    assert.deepEqual(
      [...page1, ...page2].map((r) => [r.topic, r.order, r.payload.toString()]),
      [
        ['stock/A', 5, 'a5 again'],
        ['stock/B', null, 'b?'],
        ['stock/C', 1, 'c1'],
      ],
    );
    assert.deepEqual(await reopened.loadRetained('stock/C', 10), []);
    await reopened.close();
  });

  test('a file of schema 1 (outbox only) opens: its events stay, the dead-letter and retained tables are added', async () => {
    const path = freshPath();
    const raw = new Database(path);
    raw.exec(`CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, received_at INTEGER NOT NULL, bytes INTEGER NOT NULL, device TEXT NOT NULL, event_id TEXT, topic TEXT NOT NULL, payload BLOB NOT NULL);
      INSERT INTO outbox (received_at, bytes, device, event_id, topic, payload) VALUES (1, 12, 'd1', 'e1', 't/1', x'7b7d');
      PRAGMA user_version = 1;`);
    raw.close();
    const o = await SqliteOutbox.open({ path, maxBytes: BIG });
    assert.deepEqual(
      (await readAll(o)).map((e) => [e.seq, e.device, e.eventId]),
      [[1, 'd1', 'e1']],
    );
    assert.deepEqual(o.largestDevice(), { device: 'd1', bytes: 12 });
    await o.deadLetter(deadLetter());
    assert.equal(await o.saveRetained([{ topic: 'stock/A', order: 1, payload: Buffer.from('{}') }]), 1);
    await o.close();
    const check = new Database(path, { readonly: true });
    assert.equal(check.pragma('user_version', { simple: true }), 2);
    check.close();
  });

  test('a file of a newer schema is refused, not guessed at', async () => {
    const path = freshPath();
    const raw = new Database(path);
    raw.pragma('user_version = 3');
    raw.close();
    await assert.rejects(SqliteOutbox.open({ path, maxBytes: BIG }), /schema version 3, this build knows 2/);
  });
});
