import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { Aedes } from 'aedes';
import pino from 'pino';
import { Registry } from 'prom-client';
import { Forwarder } from '../../gateway/forwarder.js';
import { createEdgeMetrics } from '../../gateway/metrics.js';
import { MemoryOutbox, SqliteOutbox, type Outbox, type OutboxEntry } from '../../gateway/outbox/index.js';
import { until as waitUntil } from '../helpers/broker.js';

/** A bare Aedes standing in for central, on a free port. */
async function fakeCentral(
  options: Parameters<typeof Aedes.createBroker>[0] = {},
): Promise<{ aedes: Aedes; port: number; close: () => Promise<void> }> {
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

/** Central's part as the edge sees it: every event it receives is committed at once and answered with its ack. */
function ackEveryEvent(aedes: Aedes, received: string[]): void {
  aedes.on('publish', (packet, client) => {
    if (client === null || !packet.topic.endsWith('/event')) return;
    const id = String(packet.payload);
    received.push(id);
    const device = packet.topic.split('/')[3] as string;
    aedes.publish(
      {
        cmd: 'publish',
        topic: `wh/W/dev/${device}/ack`,
        payload: Buffer.from(JSON.stringify({ v: 1, id, status: 'applied' })),
        qos: 1,
        retain: false,
        dup: false,
      },
      () => {},
    );
  });
}

/** A SQLite outbox in a directory of its own, whose reads are counted. */
async function countedSqliteOutbox(): Promise<{
  outbox: SqliteOutbox;
  reads: () => number;
  remove: () => Promise<void>;
}> {
  const dir = await mkdtemp(join(tmpdir(), 'stockwire-forwarder-'));
  const outbox = await SqliteOutbox.open({ path: join(dir, 'outbox.db'), maxBytes: 10_000_000 });
  let reads = 0;
  const read = outbox.read.bind(outbox);
  outbox.read = (after: number, limit: number): Promise<OutboxEntry[]> => {
    reads++;
    return read(after, limit);
  };
  return {
    outbox,
    reads: () => reads,
    remove: async () => {
      await outbox.close().catch(() => {});
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A forwarder over a counted SQLite outbox, toward a central that acks every event at once; started, connected,
 * and past its first (empty) read of the outbox.
 */
async function ackingRig(window: number) {
  const { aedes, port, close } = await fakeCentral();
  const received: string[] = [];
  ackEveryEvent(aedes, received);
  const { outbox, reads, remove } = await countedSqliteOutbox();
  const acked: string[] = [];
  const links: boolean[] = [];
  const forwarder = new Forwarder({
    outbox,
    wh: 'W',
    centralUrl: `mqtt://127.0.0.1:${port}`,
    window,
    resendAfterMs: 60_000,
    keepalive: 5,
    metrics: createEdgeMetrics(new Registry()),
    log: pino({ level: 'silent' }),
    onMessage: (topic, payload) => void (topic.endsWith('/ack') && acked.push(JSON.parse(String(payload)).id)),
    onLink: (up) => links.push(up),
  });
  const rig = {
    forwarder,
    outbox,
    reads,
    received,
    acked,
    append: (device: string, id: string) =>
      outbox.append({
        device,
        eventId: id,
        topic: `wh/W/dev/${device}/event`,
        payload: Buffer.from(id),
        receivedAt: Date.now(),
      }),
    close: async () => {
      await forwarder.stop().catch(() => {});
      await close();
      await remove();
    },
  };
  try {
    forwarder.start();
    await waitUntil(() => links.includes(true), 'connected');
    await waitUntil(() => reads() > 0, 'the first pump read the (empty) outbox');
  } catch (err) {
    await rig.close();
    throw err;
  }
  return rig;
}

describe('forwarder', () => {
  it('an outbox that fails to read is logged and retried, never an unhandled rejection that kills the edge', {
    timeout: 30_000,
  }, async () => {
    const { port, close } = await fakeCentral();
    const lines: string[] = [];
    const log = pino(
      { level: 'error' },
      new Writable({
        write: (chunk, _enc, cb) => {
          lines.push(String(chunk));
          cb();
        },
      }),
    );
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    const outbox = new MemoryOutbox(1_000_000);
    await outbox.append({
      device: 'd1',
      eventId: 'e1',
      topic: 'wh/W/dev/d1/event',
      payload: Buffer.from('{}'),
      receivedAt: Date.now(),
    });
    await outbox.close(); // every read now fails
    const forwarder = new Forwarder({
      outbox,
      wh: 'W',
      centralUrl: `mqtt://127.0.0.1:${port}`,
      window: 10,
      resendAfterMs: 1_000,
      keepalive: 5,
      metrics: createEdgeMetrics(new Registry()),
      log,
      onMessage: () => {},
      onLink: () => {},
    });
    try {
      forwarder.start();
      for (let i = 0; i < 600 && lines.filter((l) => l.includes('reading the outbox failed')).length < 2; i++)
        await new Promise((r) => setTimeout(r, 50));
      assert.ok(lines.filter((l) => l.includes('reading the outbox failed')).length >= 2, 'logged, then retried');
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await forwarder.stop().catch(() => {});
      await close();
    }
  });

  it('a link on which central delivers QoS 1 messages stays up while central holds the PUBACK of an event longer than the keep-alive', {
    timeout: 30_000,
  }, async () => {
    // Central holds an event's PUBACK until its commit; aedes reads nothing more of that connection meanwhile,
    // so a PINGREQ waits behind it. A slow commit must not cost the link while QoS 1 messages flow the other way
    // (alerts here: the edge takes stock and shelf topics at QoS 0, which it does not PUBACK).
    const HOLD_MS = 6_000;
    const { aedes, port, close } = await fakeCentral({
      authorizePublish: (_client, packet, cb) =>
        packet.topic.endsWith('/event') ? setTimeout(() => cb(null), HOLD_MS) : cb(null),
    });
    const links: boolean[] = [];
    let delivered = 0;
    const outbox = new MemoryOutbox(1_000_000);
    await outbox.append({
      device: 'd1',
      eventId: 'e1',
      topic: 'wh/W/dev/d1/event',
      payload: Buffer.from('{}'),
      receivedAt: Date.now(),
    });
    const log = pino({ level: 'silent' });
    const forwarder = new Forwarder({
      outbox,
      wh: 'W',
      centralUrl: `mqtt://127.0.0.1:${port}`,
      window: 10,
      resendAfterMs: 60_000,
      keepalive: 1,
      metrics: createEdgeMetrics(new Registry()),
      log,
      onMessage: (topic) => {
        if (topic === 'alerts/W/test') delivered++;
      },
      onLink: (up) => links.push(up),
    });
    const alerts = setInterval(
      () =>
        aedes.publish(
          { cmd: 'publish', topic: 'alerts/W/test', payload: Buffer.from('{}'), qos: 1, retain: false, dup: false },
          () => {},
        ),
      200,
    );
    try {
      forwarder.start();
      for (let i = 0; i < 600 && !links.includes(true); i++) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(links, [true], 'connected');
      await new Promise((r) => setTimeout(r, HOLD_MS)); // keep-alive 1 s: a ping unanswered for 1.5 s would end the link
      assert.deepEqual(links, [true], 'the link never went down');
      // Delivered at QoS 1 during the hold (one published every 200 ms, ~30): each needed the edge's PUBACK on the held
      // connection. A few suffice to show the flow; the bound leaves room for a loaded machine.
      assert.ok(delivered >= 3, `QoS 1 messages delivered during the hold: ${delivered}`);
    } finally {
      clearInterval(alerts);
      await forwarder.stop().catch(() => {});
      await close();
    }
  });

  it('an event offered when it is next in line goes out without a read of the outbox; one offered behind a backlog goes out in seq order after the backlog', {
    timeout: 30_000,
  }, async () => {
    const { aedes, port, close } = await fakeCentral();
    const received: string[] = [];
    await new Promise<void>((r) =>
      aedes.subscribe(
        'wh/W/dev/+/event',
        (packet, cb) => {
          received.push(String(packet.payload));
          cb();
        },
        r,
      ),
    );
    const outbox = new MemoryOutbox(1_000_000);
    let reads = 0;
    const read = outbox.read.bind(outbox);
    outbox.read = (after, limit) => {
      reads++;
      return read(after, limit);
    };
    const links: boolean[] = [];
    const forwarder = new Forwarder({
      outbox,
      wh: 'W',
      centralUrl: `mqtt://127.0.0.1:${port}`,
      window: 100,
      resendAfterMs: 60_000,
      keepalive: 5,
      metrics: createEdgeMetrics(new Registry()),
      log: pino({ level: 'silent' }),
      onMessage: () => {},
      onLink: (up) => links.push(up),
    });
    const append = (id: string) =>
      outbox.append({
        device: 'd1',
        eventId: id,
        topic: 'wh/W/dev/d1/event',
        payload: Buffer.from(id),
        receivedAt: Date.now(),
      });
    const until = async (pred: () => boolean, what: string) => {
      for (let i = 0; i < 1_200 && !pred(); i++) await new Promise((r) => setTimeout(r, 25));
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
      assert.deepEqual(
        received,
        ['e1', 'e2', 'e3', 'e4', 'e5', 'e6'],
        'the backlog first, in seq order, nothing twice',
      );
      assert.ok(reads > readsBefore, 'the backlog was read from the outbox');
    } finally {
      await forwarder.stop().catch(() => {});
      await close();
    }
  });
  it('a reconnect while an outbox read is pending sends again from the oldest unconfirmed event, not from where that read ends', {
    timeout: 30_000,
  }, async () => {
    // The read is slow (the outbox thread behind slow fsyncs); meanwhile the link drops and comes back. The rows it
    // returns belong to the pass of the old connection: sending them and moving the cursor past them would leave
    // the older unconfirmed events, sent only on the old connection, unsent until the next reconnect.
    const central = await fakeCentral();
    const sockets: net.Socket[] = [];
    const received: string[][] = []; // the events central received, per connection
    central.aedes.on('client', (c) => {
      sockets.push((c as unknown as { conn: net.Socket }).conn);
      received.push([]);
    });
    central.aedes.on('publish', (p, c) => {
      if (c && p.topic.endsWith('/event')) received.at(-1)?.push(p.payload.toString());
    });
    const outbox = new MemoryOutbox(1_000_000);
    const add = (i: number) =>
      outbox.append({
        device: 'd1',
        eventId: `e${i}`,
        topic: 'wh/W/dev/d1/event',
        payload: Buffer.from(String(i)),
        receivedAt: Date.now(),
      });
    for (let i = 1; i <= 5; i++) await add(i);
    let reads = 0;
    let releaseRead: () => void = () => {};
    const read = outbox.read.bind(outbox);
    // The pump's second read (after 1..5) waits until the test releases it.
    (outbox as Outbox).read = async (after: number, limit: number) => {
      if (++reads === 2) await new Promise<void>((r) => (releaseRead = r));
      return read(after, limit);
    };
    const links: boolean[] = [];
    const forwarder = new Forwarder({
      outbox,
      wh: 'W',
      centralUrl: `mqtt://127.0.0.1:${central.port}`,
      window: 100,
      resendAfterMs: 60_000,
      keepalive: 30,
      metrics: createEdgeMetrics(new Registry()),
      log: pino({ level: 'silent' }),
      onMessage: () => {},
      onLink: (up) => links.push(up),
    });
    const waitFor = async (pred: () => boolean) => {
      for (let i = 0; i < 1_200 && !pred(); i++) await new Promise((r) => setTimeout(r, 25));
    };
    const until = async (what: string, pred: () => boolean) => {
      await waitFor(pred);
      assert.ok(pred(), `${what}; central received ${JSON.stringify(received)}`);
    };
    try {
      forwarder.start();
      await until('1..5 sent on the first connection', () => received[0]?.length === 5);
      await until('the second read is waiting', () => reads === 2);
      await add(6); // what that read will return: the rows after 5
      for (const socket of sockets) socket.destroy(); // the link drops while the read waits
      await until('the link is back', () => links.filter((up) => up).length === 2);
      releaseRead();
      await waitFor(() => (received[1]?.length ?? 0) >= 6);
      assert.deepEqual(
        received[1],
        ['1', '2', '3', '4', '5', '6'],
        'every unconfirmed event on the second connection, oldest first',
      );
    } finally {
      releaseRead();
      await forwarder.stop().catch(() => {});
      await central.close();
    }
  });
  it('stop() confirms in the outbox every ack that arrived before the link closed, including while the offline status went out', {
    timeout: 30_000,
  }, async () => {
    // Central answers the edge's `offline` status with the ack of the event in flight: that ack arrives during stop().
    let aedes: Aedes | undefined;
    const central = await fakeCentral({
      authorizePublish: (_client, packet, cb) => {
        if (packet.topic === 'wh/W/status' && packet.payload.toString().includes('"offline"')) {
          const ack = JSON.stringify({ v: 1, id: 'e1', status: 'applied' });
          aedes?.publish(
            { cmd: 'publish', topic: 'wh/W/dev/d1/ack', payload: Buffer.from(ack), qos: 1, retain: false, dup: false },
            () => cb(null),
          ); // the PUBACK right behind the ack
          return;
        }
        cb(null);
      },
    });
    aedes = central.aedes;
    const sent: string[] = [];
    central.aedes.on('publish', (p, c) => void (c && p.topic.endsWith('/event') && sent.push(p.payload.toString())));
    const outbox = new MemoryOutbox(1_000_000);
    await outbox.append({
      device: 'd1',
      eventId: 'e1',
      topic: 'wh/W/dev/d1/event',
      payload: Buffer.from('1'),
      receivedAt: Date.now(),
    });
    const links: boolean[] = [];
    const forwarder = new Forwarder({
      outbox,
      wh: 'W',
      centralUrl: `mqtt://127.0.0.1:${central.port}`,
      window: 10,
      resendAfterMs: 60_000,
      keepalive: 30,
      metrics: createEdgeMetrics(new Registry()),
      log: pino({ level: 'silent' }),
      onMessage: () => {},
      onLink: (up) => links.push(up),
    });
    try {
      forwarder.start();
      for (let i = 0; i < 1_200 && sent.length === 0; i++) await new Promise((r) => setTimeout(r, 25));
      assert.deepEqual(sent, ['1'], 'the event went out');
      assert.equal(outbox.stats().events, 1, 'unconfirmed before the stop');
      await forwarder.stop();
      assert.equal(outbox.stats().events, 0, 'the ack that came during stop() is confirmed by the time it returns');
    } finally {
      await forwarder.stop().catch(() => {});
      await central.close();
    }
  });

  it('in steady state, with acks coming back while events arrive, every event leaves from memory: the outbox is never read back', {
    timeout: 30_000,
  }, async () => {
    // A read queues in the outbox thread behind the group being fsynced, and costs a row object, a Buffer and a
    // structured clone per event: an ack must not send the events that follow it the long way round.
    const rig = await ackingRig(100);
    try {
      const readsAtStart = rig.reads();
      const ids: string[] = [];
      for (let g = 0; g < 10; g++) {
        // One group commit of five events, offered as the edge offers them: in seq order, as their appends resolve.
        const group = Array.from({ length: 5 }, (_, i) => `g${g}e${i}`);
        ids.push(...group);
        const stored = await Promise.all(group.map((id, i) => rig.append(`d${i % 2}`, id)));
        for (const entry of stored) rig.forwarder.offer(entry);
        await waitUntil(() => rig.acked.length === ids.length, `the acks of group ${g}`);
      }
      await waitUntil(() => rig.outbox.stats().events === 0, 'every event confirmed in the outbox');
      assert.deepEqual(rig.received, ids, 'each event once, in order');
      assert.equal(rig.reads() - readsAtStart, 0, 'outbox reads after the start: every event should leave from memory');
    } finally {
      await rig.close();
    }
  });

  it('events offered while the window is full wait in the outbox and leave, in order, as acks make room', {
    timeout: 30_000,
  }, async () => {
    const rig = await ackingRig(2);
    try {
      const ids = Array.from({ length: 7 }, (_, i) => `w${i}`);
      const stored = await Promise.all(ids.map((id) => rig.append('d1', id)));
      for (const entry of stored) rig.forwarder.offer(entry); // two fit the window; five are refused room
      await waitUntil(() => rig.outbox.stats().events === 0, 'every event sent and confirmed');
      assert.deepEqual(rig.received, ids, 'each event once, in order');
    } finally {
      await rig.close();
    }
  });
});
