import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CONNECT_TIMEOUT_MS, centralClientOptions, RECONNECT_PERIOD_MS } from '../../runtime/central-client.js';

describe('the MQTT.js recipe toward central', () => {
  const base = { url: 'mqtt://127.0.0.1:9', clientId: 'gw-1', keepalive: 15 };

  it('keeps retrying after a refused CONNACK, connects only when asked and times out a connect', () => {
    const o = centralClientOptions({ ...base, session: { clean: true } });
    assert.equal(o.reconnectOnConnackError, true);
    assert.equal(o.reconnectPeriod, RECONNECT_PERIOD_MS);
    assert.equal(o.connectTimeout, CONNECT_TIMEOUT_MS);
    assert.equal(o.manualConnect, true);
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
});
