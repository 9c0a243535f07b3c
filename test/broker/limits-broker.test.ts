import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { MqttClient } from 'mqtt';
import type { DeviceLimits, DeviceRegistry } from '../../broker/index.js';
import {
  closedByBroker,
  connackRefusal,
  connectAs,
  deviceRegistry,
  passwordOf,
  RawWriter,
  startBroker,
  until,
  type TestBroker,
} from '../helpers/broker.js';

// Limits applied end to end: real aedes brokers on port 0, real MQTT.js clients, the refusals and delays counted.
const REFUSALS = 'stockwire_broker_publish_refusals_total';
const DELAYED = 'stockwire_broker_publishes_delayed_total';
const CONNECT_REFUSALS = 'stockwire_broker_connection_refusals_total';
// The counts of held-back publishes must not depend on how fast this machine reads them: with a token every 250 ms
// only a stall of that long between two publishes of one burst could change a count (at 20/s, a 50 ms one did).
const REFILL = 4; // publishes/s

let devices: DeviceRegistry;
const brokers: TestBroker[] = [];
const clients: MqttClient[] = [];
const hookCalls: string[] = [];
let hookGate: Promise<void> = Promise.resolve();

before(async () => {
  devices = await deviceRegistry([
    { id: 's1', warehouse: 'W1', kind: 'scanner' },
    { id: 's2', warehouse: 'W1', kind: 'scanner' },
    { id: 's3', warehouse: 'W1', kind: 'scanner' },
    { id: 's4', warehouse: 'W1', kind: 'scanner' },
    { id: 'sh1', warehouse: 'W1', kind: 'shelf' },
    { id: 'gw1', warehouse: 'W1', kind: 'gateway' },
    { id: 'pr1', warehouse: 'central', kind: 'processor' },
  ]);
});
after(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)));
  await Promise.all(brokers.map((b) => b.broker.stop()));
});

async function edge(limits: Partial<DeviceLimits>): Promise<TestBroker> {
  const b = await startBroker({
    role: 'edge',
    edgeWarehouse: 'W1',
    devices,
    limits,
    beforePuback: async (_client, packet) => {
      hookCalls.push(packet.payload.toString());
      await hookGate;
    },
  });
  brokers.push(b);
  return b;
}
async function device(b: TestBroker, id: string): Promise<MqttClient> {
  const c = await connectAs(b.url, id);
  clients.push(c);
  return c;
}
// Publishes written in one go, so the broker reads them in one chunk; PUBACKs are recorded by message id.
function burst(
  c: MqttClient,
  topic: string,
  payloads: string[],
  qos: 0 | 1,
): { raw: RawWriter; ids: number[]; acked: () => number } {
  const raw = new RawWriter(c);
  const ids = raw.publish(topic, payloads, qos);
  return { raw, ids, acked: () => raw.acked(ids) };
}

describe('connection attempts', () => {
  test('per client id: past the limit even the right password is refused with CONNACK 3, counted; other client ids connect', async () => {
    const b = await edge({ connectsPerClientId: 3 });
    const as = { clientId: 's1', username: 's1' };
    assert.equal(await connackRefusal(b.url, { ...as, password: 'wrong' }), 4, 'a wrong password is an attempt too');
    await (await connectAs(b.url, 's1', { clientId: 's1' })).endAsync();
    // s1 has authenticated from this address, which from now on has a window of its own for s1 (so that wrong
    // passwords from elsewhere cannot lock s1 out): its own reconnect loop is bounded there in turn.
    for (let i = 0; i < 3; i++) await (await connectAs(b.url, 's1', { clientId: 's1' })).endAsync();
    assert.equal(await connackRefusal(b.url, { ...as, password: passwordOf('s1') }), 3);
    assert.equal(await b.metric(CONNECT_REFUSALS, { reason: 'attempts_client_id' }), 1);
    assert.equal(await b.metric(CONNECT_REFUSALS, { reason: 'bad_password' }), 1);
    await (await connectAs(b.url, 's2', { clientId: 's2' })).endAsync();
  });

  test('per remote address: fresh client ids do not help once the address is over its limit', async () => {
    const b = await edge({ connectsPerAddress: 4, connectsPerClientId: 100 });
    for (let i = 0; i < 4; i++) await (await connectAs(b.url, 's1')).endAsync();
    assert.equal(await connackRefusal(b.url, { clientId: 's2-new', username: 's2', password: passwordOf('s2') }), 3);
    assert.equal(await b.metric(CONNECT_REFUSALS, { reason: 'attempts_address' }), 1);
  });
});

describe('publish rate', () => {
  test('a scanner over its rate has its PUBACKs held back (counted), and every publish goes on in arrival order', async () => {
    const b = await edge({ publishRate: REFILL, publishBurst: 3 });
    const c = await device(b, 's1');
    const from = hookCalls.length;
    const payloads = Array.from({ length: 8 }, (_, i) => `rate-${i}`);
    const sent = burst(c, 'wh/W1/dev/s1/event', payloads, 1);
    await until(() => sent.acked() === 8, 'every PUBACK');
    assert.equal(await b.metric(DELAYED, { kind: 'scanner', limit: 'rate' }), 5);
    assert.deepEqual(hookCalls.slice(from), payloads);
  });

  test('QoS 0 is held back too: the broker reads no more of the connection meanwhile', async () => {
    const b = await edge({ publishRate: REFILL, publishBurst: 2 });
    const c = await device(b, 's2');
    const from = hookCalls.length;
    const payloads = Array.from({ length: 6 }, (_, i) => `q0-${i}`);
    burst(c, 'wh/W1/dev/s2/event', payloads, 0);
    await until(() => hookCalls.length - from === 6, 'six QoS 0 events through the hook');
    assert.deepEqual(hookCalls.slice(from), payloads);
    assert.equal(await b.metric(DELAYED, { kind: 'scanner', limit: 'rate' }), 4);
  });

  test('far beyond its rate a device is disconnected and counted; nothing it was held for reaches the hook; others go on', async () => {
    const b = await edge({ publishRate: 1, publishBurst: 1 });
    const flooder = await device(b, 's3');
    const other = await device(b, 'sh1');
    const from = hookCalls.length;
    // Its burst first, acknowledged; then a flood: 10 held back, the 11th cuts it off.
    const first = burst(flooder, 'wh/W1/dev/s3/event', ['flood-0'], 1);
    await until(() => first.acked() === 1, 'the PUBACK within its burst');
    const sent = burst(
      flooder,
      'wh/W1/dev/s3/event',
      Array.from({ length: 39 }, (_, i) => `flood-${i + 1}`),
      1,
    );
    await closedByBroker(flooder);
    assert.equal(sent.acked(), 0, 'nothing beyond its burst was acknowledged');
    assert.deepEqual(hookCalls.slice(from), ['flood-0']);
    assert.equal(await b.metric(REFUSALS, { reason: 'rate_limited', kind: 'scanner' }), 1);
    assert.ok(
      (await b.metric(REFUSALS, { reason: 'closed', kind: 'scanner' })) >= 10,
      'the held publishes were refused when the connection closed',
    );
    await other.publishAsync('wh/W1/dev/sh1/event', 'other-1', { qos: 1 });
  });

  test("the bucket is the device's, not its connection's: a second connection gets no fresh burst", async () => {
    const b = await edge({ publishRate: 1, publishBurst: 1 });
    const [one, two] = [await device(b, 's1'), await device(b, 's1')];
    const first = burst(one, 'wh/W1/dev/s1/event', ['bucket-0'], 1);
    await until(() => first.acked() === 1, 'the PUBACK within its burst');
    burst(two, 'wh/W1/dev/s1/event', ['bucket-1'], 1);
    await until(
      async () => (await b.metric(DELAYED, { kind: 'scanner', limit: 'rate' })) === 1,
      'the second connection held back',
    );
    await two.endAsync(true);
    await until(
      async () => (await b.metric(REFUSALS, { reason: 'closed', kind: 'scanner' })) === 1,
      'its held publish refused when it closed',
    );
  });

  test('gateways and processors carry whole warehouses: no rate or in-flight limit', async () => {
    const b = await startBroker({
      role: 'central',
      devices,
      limits: { publishRate: 1, publishBurst: 1, maxInflight: 1 },
      beforePuback: async () => undefined,
    });
    brokers.push(b);
    const gw = await device(b, 'gw1');
    const pr = await device(b, 'pr1');
    const a = burst(
      gw,
      'wh/W1/dev/s1/event',
      Array.from({ length: 50 }, (_, i) => `gw-${i}`),
      1,
    );
    const z = burst(
      pr,
      'stock/sku-1',
      Array.from({ length: 50 }, (_, i) => `pr-${i}`),
      1,
    );
    await until(() => a.acked() === 50 && z.acked() === 50, 'every PUBACK');
    assert.equal(await b.metric(DELAYED), 0);
    assert.equal(await b.metric(REFUSALS), 0);
  });
});

describe('in flight', () => {
  test('at most maxInflight QoS 1 publishes of a device are decided at once; the rest wait, in order', async () => {
    const b = await edge({ maxInflight: 2 });
    const c = await device(b, 's4');
    let open: () => void = () => undefined;
    hookGate = new Promise((resolve) => (open = resolve));
    const from = hookCalls.length;
    const payloads = Array.from({ length: 5 }, (_, i) => `inflight-${i}`);
    const sent = burst(c, 'wh/W1/dev/s4/event', payloads, 1);
    await until(
      async () => (await b.metric(DELAYED, { kind: 'scanner', limit: 'inflight' })) === 3,
      'three publishes waiting for a slot',
    );
    assert.equal(hookCalls.length - from, 2, 'two in the hook while it is blocked');
    open();
    hookGate = Promise.resolve();
    await until(() => sent.acked() === 5, 'every PUBACK');
    assert.deepEqual(hookCalls.slice(from), payloads);
  });

  test('QoS 0 publishes hold no slot', async () => {
    const b = await edge({ maxInflight: 1 });
    const c = await device(b, 's4');
    let open: () => void = () => undefined;
    hookGate = new Promise((resolve) => (open = resolve));
    const from = hookCalls.length;
    burst(c, 'wh/W1/dev/s4/event', ['a', 'b', 'c'], 0);
    await until(() => hookCalls.length - from === 3, 'all three QoS 0 publishes in the hook at once');
    open();
    hookGate = Promise.resolve();
    assert.equal(await b.metric(DELAYED, { limit: 'inflight' }), 0);
  });
});

describe('stop', () => {
  test('stop does not wait for publishes held back by the rate: they are refused, never acknowledged', async () => {
    const b = await edge({ publishRate: 1, publishBurst: 1 });
    const c = await device(b, 's1');
    const from = hookCalls.length;
    const first = burst(c, 'wh/W1/dev/s1/event', ['stop-0'], 1);
    await until(() => first.acked() === 1, 'the PUBACK within its burst');
    const sent = burst(c, 'wh/W1/dev/s1/event', ['stop-1', 'stop-2', 'stop-3'], 1);
    await until(async () => (await b.metric(DELAYED, { kind: 'scanner', limit: 'rate' })) === 3, 'three held back');
    await b.broker.stop();
    await closedByBroker(c);
    assert.equal(sent.acked(), 0);
    assert.deepEqual(hookCalls.slice(from), ['stop-0']);
    assert.equal(await b.metric(REFUSALS, { reason: 'closed', kind: 'scanner' }), 3);
  });
});
