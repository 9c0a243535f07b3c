import assert from 'node:assert/strict';
import net from 'node:net';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { Aedes } from 'aedes';
import pino from 'pino';
import { Registry } from 'prom-client';
import { Forwarder } from '../../gateway/forwarder.js';
import { createEdgeMetrics } from '../../gateway/metrics.js';
import { MemoryOutbox } from '../../gateway/outbox/index.js';

/** A bare Aedes standing in for central, on a free port. */
async function fakeCentral(options: Parameters<typeof Aedes.createBroker>[0] = {}): Promise<{ aedes: Aedes; port: number; close: () => Promise<void> }> {
  const aedes = await Aedes.createBroker(options);
  const server = net.createServer(aedes.handle);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    aedes,
    port,
    close: async () => {
      await new Promise<void>((r) => aedes.close(() => r()));
      server.close();
    },
  };
}

describe('forwarder', () => {
  it('an outbox that fails to read is logged and retried, never an unhandled rejection that kills the edge', { timeout: 30_000 }, async () => {
    const { aedes, port, close } = await fakeCentral();
    const lines: string[] = [];
    const log = pino({ level: 'error' }, new Writable({ write: (chunk, _enc, cb) => (lines.push(String(chunk)), cb()) }));
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    const outbox = new MemoryOutbox(1_000_000);
    await outbox.append({ device: 'd1', eventId: 'e1', topic: 'wh/W/dev/d1/event', payload: Buffer.from('{}'), receivedAt: Date.now() });
    await outbox.close(); // every read now fails
    const forwarder = new Forwarder({ outbox, wh: 'W', centralUrl: `mqtt://127.0.0.1:${port}`, window: 10, resendAfterMs: 1_000, keepalive: 5, metrics: createEdgeMetrics(new Registry()), log, onMessage: () => {}, onLink: () => {} });
    try {
      forwarder.start();
      for (let i = 0; i < 100 && lines.filter((l) => l.includes('reading the outbox failed')).length < 2; i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(lines.filter((l) => l.includes('reading the outbox failed')).length >= 2, 'logged, then retried');
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await forwarder.stop().catch(() => {});
      await close();
    }
  });

  it('a link on which central delivers QoS 1 messages stays up while central holds the PUBACK of an event longer than the keep-alive', { timeout: 30_000 }, async () => {
    // Central holds an event's PUBACK until its commit; aedes reads nothing more of that connection meanwhile,
    // so a PINGREQ waits behind it. A slow commit must not cost the link while acks and stock flow the other way.
    const HOLD_MS = 6_000;
    const { aedes, port, close } = await fakeCentral({
      authorizePublish: (_client, packet, cb) => (packet.topic.endsWith('/event') ? setTimeout(() => cb(null), HOLD_MS) : cb(null)),
    });
    const links: boolean[] = [];
    const outbox = new MemoryOutbox(1_000_000);
    await outbox.append({ device: 'd1', eventId: 'e1', topic: 'wh/W/dev/d1/event', payload: Buffer.from('{}'), receivedAt: Date.now() });
    const log = pino({ level: 'silent' });
    const forwarder = new Forwarder({ outbox, wh: 'W', centralUrl: `mqtt://127.0.0.1:${port}`, window: 10, resendAfterMs: 60_000, keepalive: 1, metrics: createEdgeMetrics(new Registry()), log, onMessage: () => {}, onLink: (up) => links.push(up) });
    const stock = setInterval(() => aedes.publish({ cmd: 'publish', topic: 'stock/S1', payload: Buffer.from('{}'), qos: 1, retain: false, dup: false }, () => {}), 200);
    try {
      forwarder.start();
      for (let i = 0; i < 100 && !links.includes(true); i++) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(links, [true], 'connected');
      await new Promise((r) => setTimeout(r, HOLD_MS)); // keep-alive 1 s: a ping unanswered for 1.5 s would end the link
      assert.deepEqual(links, [true], 'the link never went down');
    } finally {
      clearInterval(stock);
      await forwarder.stop().catch(() => {});
      await close();
    }
  });

  it('an event offered when it is next in line goes out without a read of the outbox; one offered behind a backlog goes out in seq order after the backlog', { timeout: 30_000 }, async () => {
    const { aedes, port, close } = await fakeCentral();
    const received: string[] = [];
    await new Promise<void>((r) => aedes.subscribe('wh/W/dev/+/event', (packet, cb) => (received.push(String(packet.payload)), cb()), r));
    const outbox = new MemoryOutbox(1_000_000);
    let reads = 0;
    const read = outbox.read.bind(outbox);
    outbox.read = (after, limit) => (reads++, read(after, limit));
    const links: boolean[] = [];
    const forwarder = new Forwarder({ outbox, wh: 'W', centralUrl: `mqtt://127.0.0.1:${port}`, window: 100, resendAfterMs: 60_000, keepalive: 5, metrics: createEdgeMetrics(new Registry()), log: pino({ level: 'silent' }), onMessage: () => {}, onLink: (up) => links.push(up) });
    const append = (id: string) => outbox.append({ device: 'd1', eventId: id, topic: 'wh/W/dev/d1/event', payload: Buffer.from(id), receivedAt: Date.now() });
    const until = async (pred: () => boolean, what: string) => {
      for (let i = 0; i < 200 && !pred(); i++) await new Promise((r) => setTimeout(r, 25));
      assert.ok(pred(), what);
    };
    try {
      forwarder.start();
      await until(() => links.includes(true), 'connected');
      await until(() => reads > 0, 'the first pump read the (empty) outbox');
      const readsBefore = reads;
      for (const id of ['e1', 'e2', 'e3']) forwarder.offer(await append(id));
      await until(() => received.length === 3, 'three events at central');
      assert.deepEqual(received, ['e1', 'e2', 'e3']);
      assert.equal(reads, readsBefore, 'sent from memory: no read of the outbox');
      // e4 and e5 are appended but not offered (as after a restart); e6 is offered behind them.
      await append('e4');
      await append('e5');
      forwarder.offer(await append('e6'));
      await until(() => received.length === 6, 'six events at central');
      assert.deepEqual(received, ['e1', 'e2', 'e3', 'e4', 'e5', 'e6'], 'the backlog first, in seq order, nothing twice');
      assert.ok(reads > readsBefore, 'the backlog was read from the outbox');
    } finally {
      await forwarder.stop().catch(() => {});
      await close();
    }
  });
});
