import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { Aedes } from 'aedes';
import mqtt from 'mqtt';
import { orderedPublisher } from '../../broker/ordered-publisher.js';

describe('publishing into the in-process aedes', () => {
  // Regression: aedes' per-client dedupe (moscajs/aedes#955) dropped a retained stock topic that an ack or
  // an alert published right after it overtook; a display subscribed to both never saw the stock change.
  it('a subscriber of both gets every retained stock topic and every alert published together, in order', async () => {
    const aedes = await Aedes.createBroker();
    const server = net.createServer((socket) => aedes.handle(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const port = (server.address() as net.AddressInfo).port;
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
      clientId: 'display-test',
      reconnectPeriod: 0,
    });
    try {
      const got: string[] = [];
      client.on('message', (_topic, payload) => got.push(payload.toString()));
      await client.subscribeAsync(['stock/#', 'alerts/#'], { qos: 1 });
      const publisher = orderedPublisher(aedes);
      const expected: string[] = [];
      const sends: Promise<void>[] = [];
      for (let i = 0; i < 50; i++) {
        // One commit's publishes, as publishBatch and the command runner make them: stock topics, then an alert.
        sends.push(
          publisher.publish('stock/S', `stock-${i}`, true),
          publisher.publish('alerts/W/transfer-timeout', `alert-${i}`, false),
        );
        expected.push(`stock-${i}`, `alert-${i}`);
      }
      await Promise.all(sends);
      const deadline = Date.now() + 30_000; // a hang guard: a busy machine may be slow, a lost message still fails
      while (got.length < expected.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(got, expected);
    } finally {
      await client.endAsync(true);
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      server.close();
    }
  });
});
