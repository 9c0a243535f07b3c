import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { Aedes } from 'aedes';
import pino from 'pino';
import { Registry } from 'prom-client';
import { Forwarder } from '../../gateway/forwarder.js';
import { createEdgeMetrics } from '../../gateway/metrics.js';
import { MemoryOutbox } from '../../gateway/outbox/index.js';
import { parseBatch, topics, type Ack, type BatchAckMessage, type ParsedBatch } from '../../protocol/index.js';
import { until } from '../helpers/broker.js';

/**
 * The edge's side of the batched link against a bare Aedes that plays central's part by hand: what it announces,
 * and what it answers to each batch. The whole link with a real central is test/gateway/batch-link.test.ts.
 */
const WH = 'W';
const GW = 'gw-w';

interface Fake {
  aedes: Aedes;
  batches: ParsedBatch[];
  /** bytes of each batch payload */
  sizes: number[];
  events: string[]; // single event payloads, in arrival order
  answer(message: BatchAckMessage): void;
  close(): Promise<void>;
}

/** A bare broker; with `hello`, it answers the gateway's batch-ack subscription as central does. */
interface Hello {
  maxEvents: number;
  maxBytes: number;
  versions?: number[];
}

async function fakeCentral(hello: Hello | null): Promise<Fake & { port: number }> {
  const aedes = await Aedes.createBroker();
  const batches: ParsedBatch[] = [];
  const sizes: number[] = [];
  const events: string[] = [];
  const answer = (message: BatchAckMessage) =>
    aedes.publish(
      {
        cmd: 'publish',
        topic: topics.batchAck(WH, GW),
        payload: Buffer.from(JSON.stringify(message)),
        qos: 1,
        retain: false,
        dup: false,
      },
      () => {},
    );
  aedes.on('subscribe', (subs) => {
    if (hello && subs.some((s) => s.topic === topics.batchAck(WH, GW)))
      answer({
        v: 1,
        hello: { versions: hello.versions ?? [1], maxEvents: hello.maxEvents, maxBytes: hello.maxBytes },
      });
  });
  aedes.on('publish', (packet, client) => {
    if (client === null) return;
    if (packet.topic === topics.batch(WH, GW)) {
      const r = parseBatch(packet.payload as Buffer, 1 << 20);
      assert.ok(r.ok, 'the edge sends readable batches');
      batches.push(r.batch);
      sizes.push((packet.payload as Buffer).length);
    } else if (packet.topic.endsWith('/event')) events.push(String(packet.payload));
  });
  const server = net.createServer(aedes.handle);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    aedes,
    batches,
    sizes,
    events,
    answer,
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      await new Promise<void>((r) => aedes.close(() => r()));
      server.close();
    },
  };
}

const event = (id: string, extra = '') =>
  Buffer.from(`{"v":1,"id":"${id}","type":"received","sku":"S","qty":1${extra}}`);

async function setup(
  hello: Hello | null,
  o: { batchMaxEvents?: number; batchMaxBytes?: number; resendAfterMs?: number } = {},
) {
  const fake = await fakeCentral(hello);
  const outbox = new MemoryOutbox(10_000_000);
  const registry = new Registry();
  const metrics = createEdgeMetrics(registry);
  const fannedOut: { topic: string; ack: Ack }[] = [];
  const forwarder = new Forwarder({
    outbox,
    wh: WH,
    centralUrl: `mqtt://127.0.0.1:${fake.port}`,
    username: GW,
    password: 'unused',
    window: 100,
    resendAfterMs: o.resendAfterMs ?? 60_000,
    keepalive: 5,
    batchMaxEvents: o.batchMaxEvents ?? 500,
    batchMaxBytes: o.batchMaxBytes ?? 64 * 1024,
    metrics,
    log: pino({ level: 'silent' }),
    onMessage: (topic, payload) => {
      if (topic.endsWith('/ack')) fannedOut.push({ topic, ack: JSON.parse(String(payload)) as Ack });
    },
    onLink: () => {},
  });
  const gauge = async (name: string, labels = '') => {
    const line = (await registry.metrics()).split('\n').find((l) => l.startsWith(`${name}${labels} `));
    return line === undefined ? NaN : Number(line.split(' ').at(-1));
  };
  const append = async (device: string, id: string, payload = event(id)) =>
    outbox.append({ device, eventId: id, topic: topics.event(WH, device), payload, receivedAt: Date.now() });
  const stop = async () => {
    await forwarder.stop().catch(() => {});
    await fake.close();
  };
  return { fake, outbox, forwarder, fannedOut, gauge, append, stop };
}

describe('forwarder: the batched link', () => {
  it('without a hello (a broker that is not stockwire central) every event goes alone', {
    timeout: 30_000,
  }, async () => {
    const t = await setup(null);
    try {
      for (let i = 0; i < 5; i++) await t.append('d1', `e${i}`);
      t.forwarder.start();
      await until(() => t.fake.events.length === 5, 'five single events');
      assert.equal(t.fake.batches.length, 0);
      assert.equal(await t.gauge('stockwire_edge_link_batching'), 0);
    } finally {
      await t.stop();
    }
  });

  it('a hello that names only other versions leaves the link with single events', { timeout: 30_000 }, async () => {
    const t = await setup({ maxEvents: 100, maxBytes: 64 * 1024, versions: [2] });
    try {
      for (let i = 0; i < 3; i++) await t.append('d1', `v${i}`);
      t.forwarder.start();
      await until(() => t.fake.events.length === 3, 'three single events');
      assert.equal(t.fake.batches.length, 0);
      assert.equal(await t.gauge('stockwire_edge_link_batching'), 0);
    } finally {
      await t.stop();
    }
  });

  it("after central's hello the backlog goes in batches within both bounds, oldest first; a batch-ack confirms exactly its events and fans out their acks", {
    timeout: 30_000,
  }, async () => {
    // central takes 4 events a batch; the edge's own bound on bytes is the tighter one for large events
    const t = await setup({ maxEvents: 4, maxBytes: 64 * 1024 }, { batchMaxBytes: 16 * 1024 });
    try {
      for (let i = 0; i < 9; i++) await t.append(`d${i % 2}`, `e${i}`);
      const big = `,"reason":"${'x'.repeat(190)}","pad":"${'y'.repeat(7_950)}"`;
      await t.append('d1', 'big-1', event('big-1', big));
      await t.append('d1', 'big-2', event('big-2', big));
      // The backlog waits for the hello (sent behind the SUBACK), then leaves in batches.
      t.forwarder.start();
      await until(() => t.fake.batches.flatMap((b) => b.events).length === 11, 'eleven events in batches');
      assert.equal(t.fake.events.length, 0, 'none alone once central takes batches');
      assert.deepEqual(
        t.fake.batches.map((b) => b.events.length),
        [4, 4, 2, 1],
        'four a batch; two events of 8 KiB do not fit in 16 KiB together',
      );
      assert.deepEqual(
        t.fake.batches.flatMap((b) => b.events.map((e) => JSON.parse(e.payload.toString()).id)),
        ['e0', 'e1', 'e2', 'e3', 'e4', 'e5', 'e6', 'e7', 'e8', 'big-1', 'big-2'],
      );
      assert.ok(
        t.fake.sizes.every((n) => n <= 16 * 1024),
        `every batch within 16 KiB: ${t.fake.sizes.join(', ')}`,
      );
      assert.equal(await t.gauge('stockwire_edge_link_batching'), 1);

      // The first batch is acked: its four events leave the outbox, and each device gets its ack on the edge.
      const first = t.fake.batches[0] as ParsedBatch;
      const acks: Ack[] = first.events.map((e) => ({
        id: JSON.parse(e.payload.toString()).id,
        status: 'applied',
        stock: { onHand: 1, available: 1 },
      }));
      t.fake.answer({ v: 1, batch: first.batch, acks });
      await until(async () => t.outbox.stats().events === 7, 'four events confirmed');
      assert.deepEqual(
        t.fannedOut.map((f) => [f.topic, f.ack.id, f.ack.status]),
        [
          [topics.ack(WH, 'd0'), 'e0', 'applied'],
          [topics.ack(WH, 'd1'), 'e1', 'applied'],
          [topics.ack(WH, 'd0'), 'e2', 'applied'],
          [topics.ack(WH, 'd1'), 'e3', 'applied'],
        ],
      );
      assert.deepEqual(t.fannedOut[0]?.ack, acks[0], 'the ack as central decided it, stock included');

      // An ack out of step (another id at a place) confirms nothing at that place; the rest of its batch goes.
      const second = t.fake.batches[1] as ParsedBatch;
      t.fake.answer({
        v: 1,
        batch: second.batch,
        acks: second.events.map((e, i) => ({
          id: i === 0 ? 'not-this-one' : JSON.parse(e.payload.toString()).id,
          status: 'duplicate',
        })),
      });
      await until(async () => t.outbox.stats().events === 4, 'three of the second batch confirmed');
      assert.deepEqual(
        (await t.outbox.read(0, 10)).map((e) => e.eventId),
        ['e4', 'e8', 'big-1', 'big-2'],
      );
      // A batch-ack of a batch this edge does not know (an earlier connection's, a predecessor's) is ignored.
      t.fake.answer({ v: 1, batch: 'someone-else-1', acks: [{ id: 'e8', status: 'applied' }] });
      await until(
        async () => (await t.gauge('stockwire_edge_batch_acks_total', '{result="unknown"}')) === 1,
        'unknown',
      );
      assert.equal(t.outbox.stats().events, 4);
      assert.equal(await t.gauge('stockwire_edge_batch_acks_total', '{result="ok"}'), 2);
    } finally {
      await t.stop();
    }
  });

  it('an event larger than any batch may be goes alone, in its place between batches', {
    timeout: 30_000,
  }, async () => {
    const t = await setup({ maxEvents: 100, maxBytes: 1_024 });
    try {
      t.forwarder.start();
      await until(async () => (await t.gauge('stockwire_edge_link_batching')) === 1, 'the hello');
      t.forwarder.offer(await t.append('d1', 'o0'));
      t.forwarder.offer(
        await t.append('d1', 'o1', event('o1', `,"reason":"${'z'.repeat(190)}","pad":"${'p'.repeat(1_000)}"`)),
      );
      t.forwarder.offer(await t.append('d1', 'o2'));
      await until(() => t.fake.batches.length === 2 && t.fake.events.length === 1, 'two batches and one event');
      assert.deepEqual(
        t.fake.batches.map((b) => b.events.map((e) => JSON.parse(e.payload.toString()).id)),
        [['o0'], ['o2']],
      );
      assert.equal(JSON.parse(t.fake.events[0] as string).id, 'o1');
    } finally {
      await t.stop();
    }
  });

  it('a batch central refused is sent again event by event, and the link sends no more batches', {
    timeout: 30_000,
  }, async () => {
    const t = await setup({ maxEvents: 100, maxBytes: 64 * 1024 });
    try {
      t.forwarder.start();
      await until(async () => (await t.gauge('stockwire_edge_link_batching')) === 1, 'the hello');
      for (let i = 0; i < 3; i++) t.forwarder.offer(await t.append('d1', `r${i}`));
      await until(() => t.fake.batches.length === 1, 'one batch');
      t.fake.answer({
        v: 1,
        batch: (t.fake.batches[0] as ParsedBatch).batch,
        error: { code: 'schema_violation', message: 'no' },
      });
      await until(() => t.fake.events.length === 3, 'the three events again, alone');
      assert.deepEqual(
        t.fake.events.map((p) => JSON.parse(p).id),
        ['r0', 'r1', 'r2'],
      );
      t.forwarder.offer(await t.append('d1', 'r3'));
      await until(() => t.fake.events.length === 4, 'a new event, alone');
      assert.equal(t.fake.batches.length, 1);
      assert.equal(await t.gauge('stockwire_edge_link_batching'), 0);
      assert.equal(await t.gauge('stockwire_edge_batch_acks_total', '{result="refused"}'), 1);
    } finally {
      await t.stop();
    }
  });

  it('a batch without a batch-ack is sent again under a new name; the late ack of the old name confirms nothing', {
    timeout: 30_000,
  }, async () => {
    const t = await setup({ maxEvents: 100, maxBytes: 64 * 1024 }, { resendAfterMs: 100 });
    try {
      t.forwarder.start();
      await until(async () => (await t.gauge('stockwire_edge_link_batching')) === 1, 'the hello');
      t.forwarder.offer(await t.append('d1', 's0'));
      t.forwarder.offer(await t.append('d2', 's1'));
      await until(() => t.fake.batches.length >= 2, 'the batch sent again on silence');
      const [old, again] = t.fake.batches as [ParsedBatch, ParsedBatch];
      assert.notEqual(old.batch, again.batch);
      assert.deepEqual(
        again.events.map((e) => e.device),
        ['d1', 'd2'],
      );
      assert.ok((await t.gauge('stockwire_edge_batches_sent_total', '{attempt="resend"}')) >= 1);
      t.fake.answer({
        v: 1,
        batch: old.batch,
        acks: [
          { id: 's0', status: 'applied' },
          { id: 's1', status: 'applied' },
        ],
      });
      await until(
        async () => (await t.gauge('stockwire_edge_batch_acks_total', '{result="unknown"}')) === 1,
        'ignored',
      );
      assert.equal(t.outbox.stats().events, 2);
      const latest = t.fake.batches.at(-1) as ParsedBatch;
      t.fake.answer({
        v: 1,
        batch: latest.batch,
        acks: [
          { id: 's0', status: 'duplicate' },
          { id: 's1', status: 'duplicate' },
        ],
      });
      await until(async () => t.outbox.stats().events === 0, 'both confirmed by the batch sent again');
    } finally {
      await t.stop();
    }
  });

  it('in steady state, with batch-acks coming back while events arrive, every batch leaves from memory: the outbox is never read back', {
    timeout: 30_000,
  }, async () => {
    const t = await setup({ maxEvents: 100, maxBytes: 64 * 1024 });
    // Central commits every batch at once and answers it.
    t.fake.aedes.on('publish', (packet, client) => {
      if (client === null || packet.topic !== topics.batch(WH, GW)) return;
      const r = parseBatch(packet.payload as Buffer, 1 << 20);
      if (!r.ok) return;
      const acks: Ack[] = r.batch.events.map((e) => ({ id: JSON.parse(e.payload.toString()).id, status: 'applied' }));
      t.fake.answer({ v: 1, batch: r.batch.batch, acks });
    });
    let reads = 0;
    const read = t.outbox.read.bind(t.outbox);
    t.outbox.read = (after, limit) => {
      reads++;
      return read(after, limit);
    };
    try {
      t.forwarder.start();
      await until(async () => (await t.gauge('stockwire_edge_link_batching')) === 1, 'the hello');
      await until(() => reads > 0, 'the pump after the hello read the (empty) outbox');
      const readsAtStart = reads;
      const ids: string[] = [];
      for (let g = 0; g < 10; g++) {
        // One group commit of five events, offered as the edge offers them: in seq order, in one turn.
        const group = Array.from({ length: 5 }, (_, i) => `g${g}e${i}`);
        ids.push(...group);
        const stored = await Promise.all(group.map((id, i) => t.append(`d${i % 2}`, id)));
        for (const entry of stored) t.forwarder.offer(entry);
        await until(() => t.fannedOut.length === ids.length, `the acks of group ${g}`);
      }
      await until(() => t.outbox.stats().events === 0, 'every event confirmed in the outbox');
      assert.deepEqual(
        t.fake.batches.map((b) => b.events.map((e) => JSON.parse(e.payload.toString()).id)),
        Array.from({ length: 10 }, (_, g) => ids.slice(g * 5, g * 5 + 5)),
        'one batch a group, each event once, in order',
      );
      assert.equal(reads - readsAtStart, 0, 'outbox reads after the start: every batch should leave from memory');
    } finally {
      await t.stop();
    }
  });
});
