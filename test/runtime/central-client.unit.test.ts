import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { Aedes } from 'aedes';
import {
  CONNECT_TIMEOUT_MS,
  centralClient,
  centralClientOptions,
  RECONNECT_PERIOD_MS,
} from '../../runtime/central-client.js';

describe('the MQTT.js recipe toward central', () => {
  const base = { url: 'mqtt://127.0.0.1:9', clientId: 'gw-1', keepalive: 15 };

  it('keeps retrying after a refused CONNACK, connects by itself and times out a connect', () => {
    const o = centralClientOptions({ ...base, session: { clean: true } });
    assert.equal(o.reconnectOnConnackError, true);
    assert.equal(o.reconnectPeriod, RECONNECT_PERIOD_MS);
    assert.equal(o.connectTimeout, CONNECT_TIMEOUT_MS);
    assert.equal(o.manualConnect, undefined, 'manualConnect makes an ended client reconnect');
    assert.equal(o.keepalive, 15);
    assert.equal(o.clientId, 'gw-1');
  });

  it('sends credentials and TLS only when given', () => {
    const none = centralClientOptions({ ...base, session: {} });
    assert.ok(!('username' in none) && !('password' in none) && !('ca' in none));
    const all = centralClientOptions({
      ...base,
      username: 'gw-1',
      password: 'secret',
      tls: { ca: 'CA', cert: 'CERT', key: 'KEY' },
      session: {},
    });
    assert.deepEqual([all.username, all.password, all.ca, all.cert, all.key], ['gw-1', 'secret', 'CA', 'CERT', 'KEY']);
  });

  it("takes the role's session: the edge's clean session and will, the processor's persistent MQTT 5 session", () => {
    const will = { topic: 'wh/W1/status', payload: Buffer.from('{}'), qos: 1 as const, retain: true };
    const edge = centralClientOptions({ ...base, session: { clean: true, will, queueQoSZero: false } });
    assert.equal(edge.clean, true);
    assert.equal(edge.will, will);
    assert.equal(edge.queueQoSZero, false);
    const processor = centralClientOptions({
      ...base,
      session: { clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 3600 } },
    });
    assert.equal(processor.clean, false);
    assert.equal(processor.protocolVersion, 5);
    assert.deepEqual(processor.properties, { sessionExpiryInterval: 3600 });
  });

  it('connects by itself, and once ended stays ended: no reconnect timer comes back after the close', async () => {
    const aedes = await Aedes.createBroker();
    const server = net.createServer(aedes.handle);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const client = centralClient({ ...base, url: `mqtt://127.0.0.1:${port}`, session: { clean: true } });
      await new Promise<void>((resolve, reject) => {
        client.once('connect', () => resolve());
        client.once('error', reject);
      });
      const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
      await client.endAsync(true);
      await closed;
      // MQTT.js schedules a reconnect on a close unless `disconnecting` still holds (manualConnect clears it).
      const state = client as unknown as { disconnecting: boolean; reconnectTimer: unknown };
      assert.equal(state.disconnecting, true);
      assert.equal(state.reconnectTimer ?? null, null);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
    }
  });
});
