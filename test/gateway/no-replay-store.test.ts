import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { Aedes } from 'aedes';
import mqtt from 'mqtt';
import { NoReplayStore } from '../../gateway/no-replay-store.js';
import { until } from '../helpers/broker.js';

/**
 * A broker that holds every PUBACK (as central does until the commit, here forever) and counts publishes.
 * MQTT.js's own store replays on reconnect one message per PUBACK and emits 'connect' only after the
 * last: against this broker, never (measured: no 'connect' in 3 s, one replayed publish stuck).
 */
async function holdingBroker() {
  const payloads: string[] = [];
  // never decides: no PUBACK, ever (and Aedes reads nothing more from that connection)
  const aedes = new Aedes({ authorizePublish: (_client, packet) => void payloads.push(packet.payload.toString()) });
  await aedes.listen();
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    aedes.handle(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `mqtt://127.0.0.1:${port}`,
    get publishes() {
      return payloads.length;
    },
    payloads,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      await new Promise<void>((r) => aedes.close(() => r()));
    },
  };
}

describe("NoReplayStore (the forwarder's MQTT.js store)", () => {
  it('a reconnect with 200 unacknowledged publishes emits connect at once and replays none of them', async () => {
    const broker = await holdingBroker();
    const client = mqtt.connect(broker.url, {
      clientId: 'nr-1',
      clean: true,
      reconnectPeriod: 100,
      outgoingStore: new NoReplayStore(),
    });
    try {
      await new Promise<void>((r) => client.once('connect', () => r()));
      for (let i = 0; i < 200; i++) client.publish('hold/x', `m${i}`, { qos: 1 });
      await until(() => broker.publishes > 0, 'the publishes reaching the broker');
      const before = broker.publishes;
      const reconnected = new Promise<void>((r) => client.once('connect', () => r()));
      client.stream.destroy(); // the link dies with 200 publishes unacknowledged
      // A hang guard only: MQTT.js's own store never emits this connect (see above); 15 s leaves a busy machine room.
      await Promise.race([
        reconnected,
        new Promise((_r, reject) =>
          setTimeout(() => reject(new Error('no connect within 15 s after the reconnect')), 15_000),
        ),
      ]);
      // Ordering instead of a pause: a replay would go out before a publish made after the connect, so the first
      // publish the broker sees on the new connection is that one only if nothing was replayed.
      client.publish('hold/x', 'after-connect', { qos: 1 });
      await until(() => broker.publishes > before, 'the publish made after the reconnect');
      assert.deepEqual(
        broker.payloads.slice(before),
        ['after-connect'],
        'nothing replayed: the forwarder resends from the outbox itself',
      );
    } finally {
      await client.endAsync(true);
      await broker.close();
    }
  });
});
