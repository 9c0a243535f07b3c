import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Aedes, type PublishPacket } from 'aedes';
import type { MqttClient } from 'mqtt';
import { SimDevice } from '../../device-sim/device.js';
import { until } from '../helpers/broker.js';

/** A bare broker that can hold publishes without a PUBACK, as an edge does while its disk is busy. */
describe('simulated device keeps an event until the edge acknowledges it', () => {
  let aedes: Aedes;
  let server: net.Server;
  let url: string;
  let holding = false;
  const held: (() => void)[] = [];
  const received: string[] = [];
  before(async () => {
    aedes = new Aedes({
      authorizePublish: (_client, packet: PublishPacket, done) => {
        const take = () => {
          received.push(packet.payload.toString());
          done(null);
        };
        if (holding) held.push(take);
        else take();
      },
    });
    await aedes.listen();
    server = net.createServer((socket) => aedes.handle(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `mqtt://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  });
  after(async () => {
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('a publish MQTT.js drops on a closed connection is sent again, and both events arrive', {
    timeout: 30_000,
  }, async () => {
    const device = new SimDevice({
      ref: { id: 'scan-1', wh: 'W1', kind: 'scanner', index: 0 },
      password: 'x',
      url,
      clientId: 'scan-1-t',
      watchStatus: false,
      onMessage: () => {},
    });
    await device.start();
    // MQTT.js emits 'connect' after a reconnect only once the replayed A is acknowledged: the CONNACK is the event.
    let connacks = 0;
    (device as unknown as { client: MqttClient }).client.on(
      'packetreceive',
      (p) => void (p.cmd === 'connack' && connacks++),
    );
    const connected = (n: number) =>
      new Promise<void>((resolve) => {
        const check = setInterval(() => {
          if (device.reconnects >= n) resolve(void clearInterval(check));
        }, 20);
      });
    holding = true;
    // Each step waits for the event it needs, not a fixed time: a slow machine otherwise drops before the
    // reconnect (drop() on a closed connection does nothing) and never reaches the case this test is for.
    const a = device.publish('A'); // held: no PUBACK, it stays in MQTT.js's store
    await until(() => held.length >= 1, 'A at the broker');
    device.drop();
    // After the reconnect MQTT.js replays A and waits for its PUBACK before anything else: B is queued behind it…
    await until(() => connacks >= 1, 'the reconnect');
    const b = device.publish('B');
    // …and a second drop makes MQTT.js fail B ("Connection closed"); the device must not give it up.
    device.drop();
    await until(
      () => device.republished >= 1,
      `MQTT.js failing B and the device sending it again (republished ${device.republished})`,
    );
    holding = false;
    for (const take of held.splice(0)) take();
    await Promise.all([a, b]);
    await connected(1);
    assert.ok(
      device.republished >= 1,
      `MQTT.js dropped nothing (republished ${device.republished}): the test did not reach the case it is for`,
    );
    assert.ok(received.includes('A') && received.includes('B'), `received ${received.join(',')}`);
    assert.equal(device.pending, 0);
    await device.stop();
  });

  it('publishing before start is refused, and a publish still waiting for its PUBACK is rejected by stop', async () => {
    const device = new SimDevice({
      ref: { id: 'scan-2', wh: 'W1', kind: 'scanner', index: 0 },
      password: 'x',
      url,
      clientId: 'scan-2-t',
      watchStatus: false,
      onMessage: () => {},
    });
    await assert.rejects(device.publish('early'), /not started/);
    await device.start();
    holding = true;
    const waiting = assert.rejects(device.publish('C'), /scan-2 stopped before the edge acknowledged the event/);
    await until(() => held.length >= 1, 'C at the broker');
    device.drop(); // MQTT.js keeps C for the next connection and, reconnecting, would never answer it
    await device.stop();
    await waiting;
    assert.equal(device.pending, 0);
    holding = false;
    for (const take of held.splice(0)) take();
  });
});
