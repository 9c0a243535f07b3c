import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import {
  createBroker,
  DeviceRegistry,
  type AuthedClient,
  type BrokerPorts,
  type DevicePublish,
  type StockwireBroker,
} from '../../broker/index.js';
import { deviceRegistry, passwordOf, until } from '../helpers/broker.js';

/** Log lines, kept to check that no password is ever written. */
const logLines: string[] = [];
const log = pino(
  { level: 'debug' },
  new Writable({
    write(chunk: Buffer, _enc, done) {
      logLines.push(chunk.toString());
      done();
    },
  }),
);

async function metricValue(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const metric = registry.getSingleMetric(name);
  assert.ok(metric, `metric ${name} is registered`);
  const { values } = await metric.get();
  const match = values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val));
  return match?.value ?? 0;
}

const open: MqttClient[] = [];
async function connect(url: string, opts: IClientOptions): Promise<MqttClient> {
  const client = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5_000, ...opts });
  client.on('error', () => undefined); // a reset by the broker is asserted through 'close'
  open.push(client);
  return client;
}
async function connectAs(url: string, id: string, opts: IClientOptions = {}): Promise<MqttClient> {
  return connect(url, {
    username: id,
    password: passwordOf(id),
    clientId: `${id}-${Math.random().toString(16).slice(2, 8)}`,
    ...opts,
  });
}
async function refusal(url: string, opts: IClientOptions): Promise<number | undefined> {
  let client: MqttClient;
  try {
    client = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5_000, ...opts });
  } catch (err) {
    return (err as { code?: number }).code;
  }
  await client.endAsync(true);
  return assert.fail('connection was accepted');
}
// Not events.once: MqttClient is not typed as a Node EventEmitter, and once() rejects on an 'error' (ECONNRESET) before 'close'.
function closeOf(client: MqttClient): Promise<void> {
  return new Promise((resolve) => client.once('close', () => resolve()));
}
function nextMessage(client: MqttClient): Promise<[string, Buffer]> {
  return new Promise((resolve) => client.once('message', (topic, payload) => resolve([topic, payload])));
}

/** Resolves when the broker has closed the client's connection; fails after `ms`. */
async function closedByBroker(client: MqttClient, ms = 5_000): Promise<void> {
  if (!client.connected) return;
  await Promise.race([
    closeOf(client),
    sleep(ms, undefined, { ref: false }).then(() => assert.fail('the broker did not close the connection')),
  ]);
}

let hook: (client: AuthedClient, packet: DevicePublish) => Promise<void> = async () => undefined;
const hookCalls: Array<{ client: AuthedClient; packet: DevicePublish }> = [];

const MAX_PAYLOAD = 16 * 1024;
let edge: StockwireBroker;
let edgePorts: BrokerPorts;
let edgeMetrics: Registry;
let central: StockwireBroker;
let centralPorts: BrokerPorts;
let centralMetrics: Registry;
let edgeUrl: string;
let centralUrl: string;

before(async () => {
  const devices = await deviceRegistry([
    { id: 's1', warehouse: 'W1', kind: 'scanner' },
    { id: 's1-x', warehouse: 'W1', kind: 'scanner' },
    { id: 's2', warehouse: 'W1', kind: 'shelf' },
    { id: 's9', warehouse: 'W2', kind: 'scanner' },
    { id: 'disp1', warehouse: 'W1', kind: 'display' },
    { id: 'gw-W1', warehouse: 'W1', kind: 'gateway' },
    { id: 'proc', warehouse: 'central', kind: 'processor' },
  ]);
  edgeMetrics = new Registry();
  edge = createBroker({
    role: 'edge',
    edgeWarehouse: 'W1',
    devices,
    host: '127.0.0.1',
    mqttPort: 0,
    wsPort: 0,
    maxPayloadBytes: MAX_PAYLOAD,
    registry: edgeMetrics,
    log,
    beforePuback: async (client, packet) => {
      hookCalls.push({ client, packet });
      await hook(client, packet);
    },
  });
  edgePorts = await edge.start();
  edgeUrl = `mqtt://127.0.0.1:${edgePorts.mqtt}`;

  centralMetrics = new Registry();
  central = createBroker({
    role: 'central',
    devices,
    host: '127.0.0.1',
    mqttPort: 0,
    wsPort: null,
    registry: centralMetrics,
    log,
  });
  centralPorts = await central.start();
  centralUrl = `mqtt://127.0.0.1:${centralPorts.mqtt}`;
});

after(async () => {
  await Promise.all(open.map((c) => c.endAsync(true).catch(() => undefined)));
  await Promise.all([edge?.stop(), central?.stop()]);
});

describe('listeners', () => {
  test('start reports the bound ports; no ws key without a WebSocket listener', () => {
    assert.ok(edgePorts.mqtt > 0 && edgePorts.ws !== undefined && edgePorts.ws > 0);
    assert.deepEqual(Object.keys(centralPorts), ['mqtt']);
  });

  test('invalid options are refused at creation', () => {
    const common = { devices: DeviceRegistry.fromList([]), registry: new Registry(), log };
    assert.throws(() => createBroker({ ...common, role: 'edge' }), /edgeWarehouse/);
    assert.throws(() => createBroker({ ...common, role: 'central', maxPayloadBytes: 8 * 1024 }), /maxPayloadBytes/);
  });
});

describe('authentication', () => {
  const cases: Array<[string, IClientOptions, number, string]> = [
    ['anonymous', { clientId: 's1' }, 5, 'anonymous'],
    ['unknown user', { clientId: 'ghost', username: 'ghost', password: 'x' }, 4, 'unknown_user'],
    ['wrong password', { clientId: 's1', username: 's1', password: 'wrong' }, 4, 'bad_password'],
    ['no password', { clientId: 's1', username: 's1' }, 4, 'bad_password'],
    ['client id of another device', { clientId: 's2', username: 's1', password: passwordOf('s1') }, 2, 'client_id'],
    [
      'client id of a device whose id extends ours',
      { clientId: 's1-x', username: 's1', password: passwordOf('s1') },
      2,
      'client_id',
    ],
    [
      'client id not starting with the device id',
      { clientId: 'mqttjs_1234', username: 's1', password: passwordOf('s1') },
      2,
      'client_id',
    ],
    [
      'scanner of another warehouse',
      { clientId: 's9', username: 's9', password: passwordOf('s9') },
      5,
      'kind_not_allowed',
    ],
    [
      'gateway on an edge',
      { clientId: 'gw-W1', username: 'gw-W1', password: passwordOf('gw-W1') },
      5,
      'kind_not_allowed',
    ],
  ];
  for (const [name, opts, code, reason] of cases) {
    test(`${name}: refused with CONNACK ${code}, counted as ${reason}`, async () => {
      const before = await metricValue(edgeMetrics, 'stockwire_broker_connection_refusals_total', { reason });
      assert.equal(await refusal(edgeUrl, opts), code);
      assert.equal(
        await metricValue(edgeMetrics, 'stockwire_broker_connection_refusals_total', { reason }),
        before + 1,
      );
    });
  }

  test('a scanner connects on its edge, not on central; counted in the connected gauge', async () => {
    const client = await connectAs(edgeUrl, 's1');
    const scanners = () => metricValue(edgeMetrics, 'stockwire_broker_connected_clients', { kind: 'scanner' });
    // clientReady comes after the CONNACK, and the disconnect is seen after endAsync: wait for them, not a time
    await until(async () => (await scanners()) === 1, 'the gauge to count the scanner');
    await client.endAsync();
    await until(async () => (await scanners()) === 0, 'the gauge to drop the scanner');
    assert.equal(await refusal(centralUrl, { clientId: 's1', username: 's1', password: passwordOf('s1') }), 5);
  });

  test('client id equal to the device id is accepted', async () => {
    const client = await connect(edgeUrl, { clientId: 's1', username: 's1', password: passwordOf('s1') });
    assert.ok(client.connected);
    await client.endAsync();
  });
});

describe('publish', () => {
  test('a scanner publishing to another device or warehouse is disconnected and counted', async () => {
    for (const topic of ['wh/W1/dev/s2/event', 'wh/W2/dev/s1/event', 'stock/sku-1', '$SYS/x/y']) {
      const reason = topic.startsWith('$SYS') ? 'sys' : 'acl';
      const before = await metricValue(edgeMetrics, 'stockwire_broker_publish_refusals_total', {
        reason,
        kind: 'scanner',
      });
      const client = await connectAs(edgeUrl, 's1');
      client.publishAsync(topic, '{}', { qos: 1 }).catch(() => undefined);
      await closedByBroker(client);
      assert.equal(
        await metricValue(edgeMetrics, 'stockwire_broker_publish_refusals_total', { reason, kind: 'scanner' }),
        before + 1,
        topic,
      );
    }
    assert.ok(
      !hookCalls.some((c) => c.packet.topic !== `wh/W1/dev/${c.client.device.id}/event`),
      'the hook only saw authorised events',
    );
  });

  test('the hook runs before the PUBACK, with the authenticated device', async () => {
    // Ordering, not a stopwatch: the hook is still sleeping when a PUBACK sent early would arrive.
    let hookSettled = false;
    hook = async () => {
      await sleep(200);
      hookSettled = true;
    };
    try {
      const client = await connectAs(edgeUrl, 's1');
      await client.publishAsync('wh/W1/dev/s1/event', '{"v":1,"id":"e1"}', { qos: 1 });
      assert.equal(hookSettled, true, 'the PUBACK came after the hook settled');
      const call = hookCalls.at(-1);
      assert.equal(call?.client.device.id, 's1');
      assert.equal(call?.client.device.warehouse, 'W1');
      assert.match(call?.client.clientId ?? '', /^s1-/);
      assert.deepEqual(call?.packet, {
        topic: 'wh/W1/dev/s1/event',
        payload: Buffer.from('{"v":1,"id":"e1"}'),
        qos: 1,
        retain: false,
      });
      await client.endAsync();
    } finally {
      hook = async () => undefined;
    }
  });

  test('a rejecting hook means no PUBACK: the client is disconnected, the refusal counted', async () => {
    hook = () => Promise.reject(new Error('disk full'));
    try {
      const before = await metricValue(edgeMetrics, 'stockwire_broker_publish_refusals_total', {
        reason: 'hook_failed',
        kind: 'scanner',
      });
      const client = await connectAs(edgeUrl, 's1');
      let acked = false;
      client.publishAsync('wh/W1/dev/s1/event', '{"v":1,"id":"e2"}', { qos: 1 }).then(
        () => (acked = true),
        () => undefined,
      );
      await closedByBroker(client);
      await sleep(50);
      assert.equal(acked, false);
      assert.equal(
        await metricValue(edgeMetrics, 'stockwire_broker_publish_refusals_total', {
          reason: 'hook_failed',
          kind: 'scanner',
        }),
        before + 1,
      );
    } finally {
      hook = async () => undefined;
    }
  });

  test('an allowed publish reaches a subscriber (central: gateway to processor, processor to display)', async () => {
    const processor = await connectAs(centralUrl, 'proc');
    await processor.subscribeAsync('wh/+/dev/+/event', { qos: 1 });
    const display = await connectAs(centralUrl, 'disp1');
    await display.subscribeAsync(['wh/+/stock/#', 'stock/#'], { qos: 1 });
    const gateway = await connectAs(centralUrl, 'gw-W1');

    const event = nextMessage(processor);
    await gateway.publishAsync('wh/W1/dev/s1/event', '{"v":1}', { qos: 1 });
    const [topic, payload] = await event;
    assert.equal(topic, 'wh/W1/dev/s1/event');
    assert.equal(payload.toString(), '{"v":1}');

    const stock = nextMessage(display);
    await processor.publishAsync('wh/W1/stock/sku-1', '{"onHand":3}', { qos: 1, retain: true });
    assert.equal((await stock)[0], 'wh/W1/stock/sku-1');
    assert.ok(
      (await metricValue(centralMetrics, 'stockwire_broker_messages_received_total', { kind: 'gateway' })) >= 1,
    );
    await Promise.all([processor.endAsync(), display.endAsync(), gateway.endAsync()]);
  });

  test('payloads: above the 8 KiB event limit accepted, above maxPayloadBytes refused and disconnected', async () => {
    const ok = await connectAs(edgeUrl, 's1');
    await ok.publishAsync('wh/W1/dev/s1/event', Buffer.alloc(10 * 1024, 'a'), { qos: 1 });
    await ok.endAsync();

    for (const size of [MAX_PAYLOAD + 1, 1024 * 1024]) {
      const before = await metricValue(edgeMetrics, 'stockwire_broker_publish_refusals_total', {
        reason: 'too_large',
        kind: 'scanner',
      });
      const calls = hookCalls.length;
      const client = await connectAs(edgeUrl, 's1');
      client.publishAsync('wh/W1/dev/s1/event', Buffer.alloc(size, 'a'), { qos: 1 }).catch(() => undefined);
      await closedByBroker(client);
      assert.equal(
        await metricValue(edgeMetrics, 'stockwire_broker_publish_refusals_total', {
          reason: 'too_large',
          kind: 'scanner',
        }),
        before + 1,
        `${size} bytes`,
      );
      assert.equal(hookCalls.length, calls, 'the hook never sees an oversized publish');
    }
  });
});

describe('subscribe', () => {
  test('a scanner subscribing to another warehouse gets QoS 128, stays connected, counted', async () => {
    const client = await connectAs(edgeUrl, 's1');
    const before = await metricValue(edgeMetrics, 'stockwire_broker_subscribe_refusals_total', { kind: 'scanner' });
    // MQTT.js 5 rejects subscribeAsync when any grant is a failure; the SUBACK rides on the error.
    const err = await client
      .subscribeAsync(['wh/W2/stock/#', 'stock/+', 'wh/W1/dev/s1/ack', 'wh/W1/dev/s2/ack', '#'], { qos: 1 })
      .then(
        () => assert.fail('expected a SUBACK with failures'),
        (e: unknown) => e as { packet?: { granted?: number[] } },
      );
    assert.deepEqual(err.packet?.granted, [128, 1, 1, 128, 128]);
    const granted = await client.subscribeAsync('wh/W1/status', { qos: 1 });
    assert.deepEqual(granted, [{ topic: 'wh/W1/status', qos: 1 }]);
    assert.equal(
      await metricValue(edgeMetrics, 'stockwire_broker_subscribe_refusals_total', { kind: 'scanner' }),
      before + 3,
    );
    assert.ok(client.connected);
    await client.endAsync();
  });
});

describe('wills', () => {
  test("a gateway's will on its own status topic is published; one on another warehouse is refused", async () => {
    const processor = await connectAs(centralUrl, 'proc');
    await processor.subscribeAsync('wh/+/status', { qos: 1 });
    const received: string[] = [];
    processor.on('message', (topic) => received.push(topic));

    const before = await metricValue(centralMetrics, 'stockwire_broker_publish_refusals_total', {
      reason: 'acl',
      kind: 'gateway',
    });
    for (const wh of ['W1', 'W2']) {
      const gateway = await connectAs(centralUrl, 'gw-W1', {
        will: { topic: `wh/${wh}/status`, payload: Buffer.from('{"central":"offline"}'), qos: 1, retain: true },
      });
      gateway.stream.destroy(); // no DISCONNECT: the broker publishes the will
      await closeOf(gateway);
    }
    // Both wills decided: W1's delivered, W2's refused (counted; a refused will is never published).
    const refusals = () =>
      metricValue(centralMetrics, 'stockwire_broker_publish_refusals_total', { reason: 'acl', kind: 'gateway' });
    await until(() => received.length > 0, "W1's will at the processor");
    await until(async () => (await refusals()) > before, "W2's will refused");
    assert.deepEqual(received, ['wh/W1/status']);
    assert.equal(await refusals(), before + 1);
    await processor.endAsync();
  });
});

describe('WebSocket', () => {
  test('a scanner connects over WebSocket and publishes through the hook', async () => {
    const client = await connectAs(`ws://127.0.0.1:${edgePorts.ws}`, 's2');
    await client.publishAsync('wh/W1/dev/s2/event', '{"v":1,"id":"ws1"}', { qos: 1 });
    assert.equal(hookCalls.at(-1)?.client.device.id, 's2');
    await client.endAsync();
  });
});

describe('logs', () => {
  test('no password ever reaches the log', () => {
    assert.ok(logLines.length > 0);
    const all = logLines.join('');
    for (const id of ['s1', 's1-x', 's2', 's9', 'disp1', 'gw-W1', 'proc']) assert.ok(!all.includes(passwordOf(id)), id);
    assert.ok(!all.includes('"wrong"'));
  });
});

describe('stop', () => {
  test('stop disconnects clients, waits for hooks in flight and frees the ports', async () => {
    const devices = await deviceRegistry([{ id: 's1', warehouse: 'W1', kind: 'scanner' }]);
    let hookDone = false;
    let hookStarted!: () => void;
    const started = new Promise<void>((r) => (hookStarted = r));
    const broker = createBroker({
      role: 'edge',
      edgeWarehouse: 'W1',
      devices,
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: 0,
      registry: new Registry(),
      log,
      beforePuback: async () => {
        hookStarted();
        await sleep(300);
        hookDone = true;
      },
    });
    const ports = await broker.start();
    const url = `mqtt://127.0.0.1:${ports.mqtt}`;
    const client = await connectAs(url, 's1');
    const acked = client.publishAsync('wh/W1/dev/s1/event', '{}', { qos: 1 });
    await started; // the hook is running
    await broker.stop();
    assert.equal(hookDone, true, 'stop resolved only after the hook settled');
    await acked; // the PUBACK went out before the disconnect
    await closedByBroker(client);
    await assert.rejects(mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 1_000 }));
  });
});
