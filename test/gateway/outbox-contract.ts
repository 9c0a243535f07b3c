import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import {
  DEAD_LETTER_RAW_BYTES,
  DEAD_LETTERS_KEPT,
  OutboxClosedError,
  OutboxDeviceShareError,
  OutboxFullError,
  type DeadLetter,
  type NewEntry,
  type Outbox,
  type OutboxEntry,
} from '../../gateway/outbox/index.js';

/** Makes a fresh, empty outbox with the given bound and share of one device (bytes; default the bound); the suite closes it. */
export type OutboxFactory = (maxBytes: number, maxDeviceBytes?: number) => Promise<Outbox>;

const BIG = 1 << 30; // bytes: a bound no test here reaches

let n = 0;
/** An entry whose `bytes` is topic (10 bytes) + payload (`payloadBytes`). */
export function newEntry(payloadBytes = 10, receivedAt = 1_700_000_000_000 + n): NewEntry {
  n += 1;
  const id = String(n).padStart(6, '0');
  return {
    device: 'scan-01',
    eventId: `ev-${id}`,
    topic: `t/${id}/e`,
    payload: Buffer.alloc(payloadBytes, n % 251),
    receivedAt,
  };
}

/** A dead letter of scan-01, fields overridable. */
export function deadLetter(fields: Partial<DeadLetter> = {}): DeadLetter {
  return {
    device: 'scan-01',
    topic: 'wh/W1/dev/scan-01/event',
    payload: Buffer.from('{}'),
    code: 'payload_too_large',
    reason: 'too large',
    source: 'scan-01',
    receivedAt: 1_700_000_000_000,
    ...fields,
  };
}

async function readAll(outbox: Outbox, afterSeq = 0): Promise<OutboxEntry[]> {
  return await outbox.read(afterSeq, Number.MAX_SAFE_INTEGER);
}

/** The shared contract every Outbox implementation must pass (like MQTT.js's abstract_store). */
export function outboxContract(name: string, factory: OutboxFactory): void {
  describe(`Outbox contract: ${name}`, () => {
    let open: Outbox[] = [];
    const make = async (maxBytes = BIG, maxDeviceBytes?: number): Promise<Outbox> => {
      const o = await factory(maxBytes, maxDeviceBytes);
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
      assert.ok(
        appended.every((e, i) => i === 0 || e.seq > (appended[i - 1]?.seq ?? Infinity)),
        'seqs grow',
      );
      const read = await readAll(o);
      assert.deepEqual(read, appended);
      assert.deepEqual(
        read.map(({ device, eventId, topic, payload, receivedAt }) => ({
          device,
          eventId,
          topic,
          payload,
          receivedAt,
        })),
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
      assert.deepEqual(
        (await o.read(0, 3)).map((e) => e.seq),
        seqs.slice(0, 3),
      );
      assert.deepEqual(
        (await o.read(seqs[2] ?? 0, 4)).map((e) => e.seq),
        seqs.slice(3, 7),
      );
      assert.deepEqual(
        (await o.read(seqs[8] ?? 0, 100)).map((e) => e.seq),
        seqs.slice(9),
      );
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
      assert.deepEqual(
        (await readAll(o)).map((x) => x.seq),
        [a, c, e, f],
      );
      assert.deepEqual(o.stats(), { events: 4, bytes: 80, oldestReceivedAt: all[0]?.receivedAt ?? null });
      await o.confirm([d, b]); // again: nothing changes
      await o.confirm([]);
      assert.equal(o.stats().events, 4);
      assert.equal(o.stats().bytes, 80);
      await o.confirm([a, a, c]); // duplicates in one call count once
      assert.deepEqual(
        (await readAll(o)).map((x) => x.seq),
        [e, f],
      );
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
      assert.deepEqual(
        { events: o.stats().events, bytes: o.stats().bytes },
        { events: 2, bytes: 100 },
        'a refused entry is not stored',
      );
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
      assert.ok(
        results.slice(0, 10).every((r) => r.status === 'fulfilled'),
        'the first ten calls are the ones stored',
      );
      assert.deepEqual({ events: o.stats().events, bytes: o.stats().bytes }, { events: 10, bytes: 1000 });
      assert.equal((await readAll(o)).length, 10);
    });

    test('a malformed entry is refused alone: the appends made with it are stored', async () => {
      const o = await make();
      const results = await Promise.allSettled([
        o.append(newEntry()),
        o.append({ ...newEntry(), receivedAt: Number.NaN }),
        o.append(newEntry()),
      ]);
      assert.deepEqual(
        results.map((r) => r.status),
        ['fulfilled', 'rejected', 'fulfilled'],
      );
      assert.ok(results[1]?.status === 'rejected' && results[1].reason instanceof TypeError);
      assert.equal((await readAll(o)).length, 2);
      assert.equal(o.stats().events, 2);
    });

    test('500 appends at once all resolve, and seq order is call order', async () => {
      const o = await make();
      const inputs = Array.from({ length: 500 }, (_, i) => newEntry(i % 50));
      const stored = await Promise.all(inputs.map((e) => o.append(e)));
      for (let i = 1; i < stored.length; i++)
        assert.ok((stored[i]?.seq ?? 0) > (stored[i - 1]?.seq ?? Infinity), `seq ${i} grows`);
      const read = await readAll(o);
      assert.deepEqual(
        read.map((e) => e.eventId),
        inputs.map((e) => e.eventId),
      );
      assert.deepEqual(
        read.map((e) => e.seq),
        stored.map((e) => e.seq),
      );
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
      await assert.rejects(o.deadLetter(deadLetter()), OutboxClosedError);
      await assert.rejects(async () => o.deadLetters(1), OutboxClosedError);
    });

    test('the share of one device: its appends beyond it are refused with OutboxDeviceShareError, other devices go on, a confirm frees its share', async () => {
      const o = await make(1000, 300);
      const of = (device: string, payloadBytes: number) => ({ ...newEntry(payloadBytes), device });
      const a = await o.append(of('noisy', 90)); // 100 bytes each
      await o.append(of('noisy', 90));
      await o.append(of('noisy', 90)); // 300: exactly its share
      const refused = await o.append(of('noisy', 0)).then(
        () => assert.fail('append beyond the share resolved'),
        (err: unknown) => err,
      );
      assert.ok(refused instanceof OutboxDeviceShareError, String(refused));
      assert.equal(refused.code, 'device_share');
      assert.equal(refused.device, 'noisy');
      assert.equal(refused.maxDeviceBytes, 300);
      assert.equal(refused.bytes, 10);
      assert.deepEqual(o.largestDevice(), { device: 'noisy', bytes: 300 });
      for (let i = 0; i < 3; i++) await o.append(of('calm', 90)); // another device has a share of its own
      assert.equal(o.stats().bytes, 600);
      await o.confirm([a.seq]);
      await o.append(of('noisy', 90));
      assert.deepEqual(o.largestDevice(), { device: 'noisy', bytes: 300 });
      const all = await readAll(o);
      await o.confirm(all.map((e) => e.seq));
      assert.equal(o.largestDevice(), null, 'nothing held');
    });

    test('the share holds for appends made at once, and the whole bound is refused as full first', async () => {
      const o = await make(500, 300);
      const results = await Promise.allSettled(
        Array.from({ length: 5 }, () => o.append({ ...newEntry(90), device: 'noisy' })),
      );
      assert.deepEqual(
        results.map((r) => r.status),
        ['fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'rejected'],
      );
      assert.ok(results.slice(3).every((r) => r.status === 'rejected' && r.reason instanceof OutboxDeviceShareError));
      await o.append({ ...newEntry(90), device: 'calm' });
      await o.append({ ...newEntry(90), device: 'calm' }); // the outbox is at its bound now
      await assert.rejects(o.append({ ...newEntry(0), device: 'third' }), OutboxFullError);
      await assert.rejects(
        o.append({ ...newEntry(0), device: 'noisy' }),
        OutboxFullError,
        'full is reported before a share',
      );
    });

    test('dead letters: kept newest first with reason, sender and the size sent, raw cut to 8 KiB, outside the bound', async () => {
      const o = await make(100);
      await o.deadLetter(
        deadLetter({
          payload: Buffer.alloc(60_000, 0x61),
          code: 'payload_too_large',
          reason: 'payload is 60000 bytes, limit 8192',
        }),
      );
      await o.deadLetter(
        deadLetter({ payload: Buffer.from('{"small"'), code: 'invalid_json', device: 'scan-02', source: 'scan-02' }),
      );
      const kept = await o.deadLetters(10);
      assert.deepEqual(
        kept.map((d) => [d.code, d.device, d.bytes, d.payload.length]),
        [
          ['invalid_json', 'scan-02', 8, 8],
          ['payload_too_large', 'scan-01', 60_000, DEAD_LETTER_RAW_BYTES],
        ],
      );
      assert.ok((kept[0]?.id ?? 0) > (kept[1]?.id ?? Infinity), 'ids grow');
      assert.deepEqual(kept[1]?.payload, Buffer.alloc(DEAD_LETTER_RAW_BYTES, 0x61), 'the first 8 KiB as sent');
      assert.equal(kept[1]?.reason, 'payload is 60000 bytes, limit 8192');
      assert.equal(kept[1]?.topic, 'wh/W1/dev/scan-01/event');
      assert.equal(kept[1]?.receivedAt, 1_700_000_000_000);
      assert.deepEqual(
        (await o.deadLetters(1)).map((d) => d.code),
        ['invalid_json'],
      );
      assert.deepEqual(
        o.stats(),
        { events: 0, bytes: 0, oldestReceivedAt: null },
        'not events, not counted against the bound',
      );
      await o.append(newEntry(90)); // the whole bound is still free
    });

    test(`dead letters: only the newest ${DEAD_LETTERS_KEPT} are kept`, async () => {
      const o = await make();
      await Promise.all(
        Array.from({ length: DEAD_LETTERS_KEPT + 5 }, (_, i) => o.deadLetter(deadLetter({ reason: `junk ${i}` }))),
      );
      const kept = await o.deadLetters(DEAD_LETTERS_KEPT + 100);
      assert.equal(kept.length, DEAD_LETTERS_KEPT);
      assert.equal(kept[0]?.reason, `junk ${DEAD_LETTERS_KEPT + 4}`);
      assert.equal(kept.at(-1)?.reason, 'junk 5');
    });

    test('a malformed dead letter is refused with a TypeError', async () => {
      const o = await make();
      await assert.rejects(o.deadLetter(deadLetter({ receivedAt: Number.NaN })), TypeError);
      await assert.rejects(o.deadLetter({ ...deadLetter(), code: undefined as unknown as string }), TypeError);
      assert.deepEqual(await o.deadLetters(10), []);
    });
  });
}
