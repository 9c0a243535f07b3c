import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { Aedes } from 'aedes';
import mqtt from 'mqtt';
import { NoReplayStore } from '../../gateway/no-replay-store.js';

/**
 * A broker that holds every PUBACK (as central does until the commit, here forever) and counts publishes.
 * MQTT.js's own store replays on reconnect one message per PUBACK and emits 'connect' only after the
 * last: against this broker, never (measured: no 'connect' in 3 s, one replayed publish stuck).
 */
async function holdingBroker() {
  let publishes = 0;
  const aedes = new Aedes({ authorizePublish: () => void publishes++ }); // never decides: no PUBACK, ever
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
      return publishes;
    },
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
      await new Promise((r) => setTimeout(r, 300));
      const before = broker.publishes;
      assert.ok(before > 0, 'the publishes reached the broker');
      const reconnected = new Promise<void>((r) => client.once('connect', () => r()));
      client.stream.destroy(); // the link dies with 200 publishes unacknowledged
      await Promise.race([
        reconnected,
        new Promise((_r, reject) =>
          setTimeout(() => reject(new Error('no connect within 3 s after the reconnect')), 3_000),
        ),
      ]);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(broker.publishes, before, 'nothing replayed: the forwarder resends from the outbox itself');
    } finally {
      await client.endAsync(true);
      await broker.close();
    }
  });
});
