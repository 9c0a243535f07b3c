import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { OutboxClosedError, OutboxFullError, type NewEntry, type Outbox, type OutboxEntry } from '../../gateway/outbox/index.js';

/** Makes a fresh, empty outbox with the given bound (bytes); the suite closes it. */
export type OutboxFactory = (maxBytes: number) => Promise<Outbox>;

const BIG = 1 << 30; // bytes: a bound no test here reaches

let n = 0;
/** An entry whose `bytes` is topic (10 bytes) + payload (`payloadBytes`). */
export function newEntry(payloadBytes = 10, receivedAt = 1_700_000_000_000 + n): NewEntry {
  n += 1;
  const id = String(n).padStart(6, '0');
  return { device: 'scan-01', eventId: `ev-${id}`, topic: `t/${id}/e`, payload: Buffer.alloc(payloadBytes, n % 251), receivedAt };
}

async function readAll(outbox: Outbox, afterSeq = 0): Promise<OutboxEntry[]> {
  return await outbox.read(afterSeq, Number.MAX_SAFE_INTEGER);
}

/** The shared contract every Outbox implementation must pass (like MQTT.js's abstract_store). */
export function outboxContract(name: string, factory: OutboxFactory): void {
  describe(`Outbox contract: ${name}`, () => {
    let open: Outbox[] = [];
    const make = async (maxBytes = BIG): Promise<Outbox> => {
      const o = await factory(maxBytes);
      open.push(o);
      return o;
    };
    afterEach(async () => {
      for (const o of open) await o.close();
      open = [];
    });

    test('append returns the stored entry; read returns entries oldest first with every field intact', async () => {
      const o = await make();
      const input = [newEntry(3), { ...newEntry(0), eventId: null }, { ...newEntry(5), topic: 'wh/é/ev' }];
      const appended: OutboxEntry[] = [];
      for (const e of input) appended.push(await o.append(e));
      assert.ok(appended.every((e, i) => i === 0 || e.seq > (appended[i - 1]?.seq ?? Infinity)), 'seqs grow');
      const read = await readAll(o);
      assert.deepEqual(read, appended);
      assert.deepEqual(
        read.map(({ device, eventId, topic, payload, receivedAt }) => ({ device, eventId, topic, payload, receivedAt })),
        input,
      );
      assert.equal(read[1]?.payload.length, 0, 'an empty payload stays an empty payload');
    });

    test('bytes = payload length + UTF-8 length of the topic', async () => {
      const o = await make();
      const e = await o.append({ device: 'd', eventId: null, topic: 'wh/é', payload: Buffer.alloc(7), receivedAt: 1 });
      assert.equal(e.bytes, 7 + 5); // 'é' is two bytes in UTF-8
      assert.equal(o.stats().bytes, 12);
    });

    test('read after a seq and with a limit pages through the outbox', async () => {
      const o = await make();
      const seqs: number[] = [];
      for (let i = 0; i < 10; i++) seqs.push((await o.append(newEntry())).seq);
      assert.deepEqual((await o.read(0, 3)).map((e) => e.seq), seqs.slice(0, 3));
      assert.deepEqual((await o.read(seqs[2] ?? 0, 4)).map((e) => e.seq), seqs.slice(3, 7));
      assert.deepEqual((await o.read(seqs[8] ?? 0, 100)).map((e) => e.seq), seqs.slice(9));
      assert.deepEqual(await o.read(seqs[9] ?? 0, 100), []);
      assert.deepEqual(await o.read(0, 0), []);
      const paged: number[] = [];
      for (let after = 0; ; ) {
        const page = await o.read(after, 3);
        if (page.length === 0) break;
        paged.push(...page.map((e) => e.seq));
        after = page.at(-1)?.seq ?? after;
      }
      assert.deepEqual(paged, seqs);
    });

    test('an empty outbox reads nothing and reports zero', async () => {
      const o = await make();
      assert.deepEqual(await o.read(0, 10), []);
      assert.deepEqual(o.stats(), { events: 0, bytes: 0, oldestReceivedAt: null });
    });

    test('confirm removes exactly the given seqs, ignores unknown ones, and is idempotent', async () => {
      const o = await make();
      const all: OutboxEntry[] = [];
      for (let i = 0; i < 6; i++) all.push(await o.append(newEntry(10)));
      const [a, b, c, d, e, f] = all.map((x) => x.seq) as [number, number, number, number, number, number];
      await o.confirm([d, b, 999_999, -1]); // out of order, with seqs that never existed
      assert.deepEqual((await readAll(o)).map((x) => x.seq), [a, c, e, f]);
      assert.deepEqual(o.stats(), { events: 4, bytes: 80, oldestReceivedAt: all[0]?.receivedAt ?? null });
      await o.confirm([d, b]); // again: nothing changes
      await o.confirm([]);
      assert.equal(o.stats().events, 4);
      assert.equal(o.stats().bytes, 80);
      await o.confirm([a, a, c]); // duplicates in one call count once
      assert.deepEqual((await readAll(o)).map((x) => x.seq), [e, f]);
      assert.deepEqual(o.stats(), { events: 2, bytes: 40, oldestReceivedAt: all[4]?.receivedAt ?? null });
    });

    test('stats: events, bytes, and receivedAt of the oldest (lowest seq) entry', async () => {
      const o = await make();
      const first = await o.append(newEntry(10, 5_000));
      await o.append(newEntry(20, 4_000)); // the edge clock stepped back: oldest still means next to replay
      const third = await o.append(newEntry(30, 6_000));
      assert.deepEqual(o.stats(), { events: 3, bytes: 20 + 30 + 40, oldestReceivedAt: 5_000 });
      await o.confirm([first.seq]);
      assert.deepEqual(o.stats(), { events: 2, bytes: 30 + 40, oldestReceivedAt: 4_000 });
      await o.confirm([third.seq]);
      assert.deepEqual(o.stats(), { events: 1, bytes: 30, oldestReceivedAt: 4_000 });
      const [left] = await readAll(o);
      await o.confirm([left?.seq ?? 0]);
      assert.deepEqual(o.stats(), { events: 0, bytes: 0, oldestReceivedAt: null });
      await o.append(newEntry(0, 7_000));
      assert.deepEqual(o.stats(), { events: 1, bytes: 10, oldestReceivedAt: 7_000 });
    });

    test('the bound: an exact fit is accepted, one byte more is refused with OutboxFullError, a confirm frees space', async () => {
      const o = await make(100);
      const a = await o.append(newEntry(40)); // 50 bytes
      await o.append(newEntry(40)); // 100 bytes: exactly the bound
      const refused = await o.append(newEntry(0)).then(
        () => assert.fail('append beyond the bound resolved'),
        (err: unknown) => err,
      );
      assert.ok(refused instanceof OutboxFullError);
      assert.equal(refused.code, 'outbox_full');
      assert.equal(refused.maxBytes, 100);
      assert.equal(refused.bytes, 10);
      assert.deepEqual({ events: o.stats().events, bytes: o.stats().bytes }, { events: 2, bytes: 100 }, 'a refused entry is not stored');
      assert.equal((await readAll(o)).length, 2);
      await o.confirm([a.seq]);
      const fits = await o.append(newEntry(40));
      assert.ok(fits.seq > a.seq);
      assert.equal(o.stats().bytes, 100);
    });

    test('the bound holds for appends made at once: exactly those that fit are stored', async () => {
      const o = await make(1000);
      const results = await Promise.allSettled(Array.from({ length: 30 }, () => o.append(newEntry(90)))); // 100 bytes each
      const stored = results.filter((r) => r.status === 'fulfilled');
      const refused = results.filter((r) => r.status === 'rejected');
      assert.equal(stored.length, 10);
      assert.ok(refused.every((r) => r.reason instanceof OutboxFullError));
      assert.ok(results.slice(0, 10).every((r) => r.status === 'fulfilled'), 'the first ten calls are the ones stored');
      assert.deepEqual({ events: o.stats().events, bytes: o.stats().bytes }, { events: 10, bytes: 1000 });
      assert.equal((await readAll(o)).length, 10);
    });

    test('a malformed entry is refused alone: the appends made with it are stored', async () => {
      const o = await make();
      const results = await Promise.allSettled([o.append(newEntry()), o.append({ ...newEntry(), receivedAt: Number.NaN }), o.append(newEntry())]);
      assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled']);
      assert.ok(results[1]?.status === 'rejected' && results[1].reason instanceof TypeError);
      assert.equal((await readAll(o)).length, 2);
      assert.equal(o.stats().events, 2);
    });

    test('500 appends at once all resolve, and seq order is call order', async () => {
      const o = await make();
      const inputs = Array.from({ length: 500 }, (_, i) => newEntry(i % 50));
      const stored = await Promise.all(inputs.map((e) => o.append(e)));
      for (let i = 1; i < stored.length; i++) assert.ok((stored[i]?.seq ?? 0) > (stored[i - 1]?.seq ?? Infinity), `seq ${i} grows`);
      const read = await readAll(o);
      assert.deepEqual(read.map((e) => e.eventId), inputs.map((e) => e.eventId));
      assert.deepEqual(read.map((e) => e.seq), stored.map((e) => e.seq));
      assert.equal(o.stats().events, 500);
    });

    test('a seq is never reused: not after confirming the newest, not after confirming all', async () => {
      const o = await make();
      const first = await Promise.all([1, 2, 3].map(() => o.append(newEntry())));
      const seen = new Set(first.map((e) => e.seq));
      await o.confirm([first[2]?.seq ?? 0]); // the newest
      const next = await o.append(newEntry());
      assert.ok(!seen.has(next.seq) && next.seq > (first[2]?.seq ?? Infinity));
      seen.add(next.seq);
      await o.confirm([...seen]); // all of them
      const after = await o.append(newEntry());
      assert.ok(after.seq > next.seq);
    });

    test('after close every call rejects with OutboxClosedError; close twice is fine', async () => {
      const o = await make();
      await o.append(newEntry());
      await o.close();
      await o.close();
      await assert.rejects(o.append(newEntry()), OutboxClosedError);
      await assert.rejects(o.confirm([1]), OutboxClosedError);
      await assert.rejects(async () => o.read(0, 1), OutboxClosedError);
    });
  });
}
