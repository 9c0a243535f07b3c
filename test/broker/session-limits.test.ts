import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, before, describe, test } from 'node:test';
import mqtt, { type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { createBroker, type DeviceLimits, type DeviceRegistry } from '../../broker/index.js';
import {
  closedByBroker,
  connackRefusal,
  connectAs,
  deviceRegistry,
  passwordOf,
  publishFrame,
  startBroker,
  until,
  type TestBroker,
} from '../helpers/broker.js';

// Issue 15, item 2: broker state a credential can make the broker keep, bounded per device, per client and per
// broker. Real aedes brokers on port 0, real MQTT.js clients; what a client sees, and the metrics.
const ENDED = 'stockwire_broker_sessions_ended_total';
const DROPPED = 'stockwire_broker_session_dropped_total';
const REFUSALS = 'stockwire_broker_publish_refusals_total';

let devices: DeviceRegistry;
const brokers: TestBroker[] = [];
const clients: MqttClient[] = [];

before(async () => {
  devices = await deviceRegistry([
    { id: 'disp', warehouse: 'W1', kind: 'display' },
    { id: 's1', warehouse: 'W1', kind: 'scanner' },
    { id: 's2', warehouse: 'W1', kind: 'scanner' },
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
    beforePuback: async () => undefined,
  });
  brokers.push(b);
  return b;
}
async function connect(b: TestBroker, id: string, clientId: string, clean: boolean): Promise<MqttClient> {
  const c = await connectAs(b.url, id, { clientId, clean });
  clients.push(c);
  return c;
}
/** What central's mirror does on an edge: QoS 1 stock publishes, from the broker itself. */
async function publishStock(b: TestBroker, skus: string[]): Promise<void> {
  for (const sku of skus) {
    await new Promise<void>((resolve, reject) =>
      b.broker.aedes.publish(
        {
          cmd: 'publish',
          topic: `stock/${sku}`,
          payload: Buffer.from(JSON.stringify({ sku })),
          qos: 1,
          retain: false,
          dup: false,
        },
        (err) => (err ? reject(err) : resolve()),
      ),
    );
  }
}
/** Connects a persistent session and collects what it receives until `count` arrived (or `ms` passed). */
async function resume(
  b: TestBroker,
  clientId: string,
): Promise<{ client: MqttClient; sessionPresent: boolean; received: string[] }> {
  const received: string[] = [];
  // the message handler is in place before CONNACK: the queued messages follow it at once
  const client = mqtt.connect(b.url, {
    username: 'disp',
    password: passwordOf('disp'),
    clientId,
    clean: false,
    reconnectPeriod: 0,
    connectTimeout: 10_000,
    manualConnect: true,
  });
  clients.push(client);
  client.on('message', (topic) => received.push(topic));
  const connack = await new Promise<{ sessionPresent: boolean }>((resolve, reject) => {
    client.once('connect', (p) => resolve({ sessionPresent: p.sessionPresent }));
    client.once('error', reject);
    client.connect();
  });
  return { client, sessionPresent: connack.sessionPresent, received };
}

describe('persistent sessions per device', () => {
  test('a new session beyond DEVICE_MAX_SESSIONS ends the one offline the longest; with all of them online it is refused with CONNACK 3', async () => {
    const b = await edge({ sessionsPerDevice: 3 });
    for (const n of [1, 2, 3, 4]) {
      const c = await connect(b, 'disp', `disp-${n}`, false);
      await c.subscribeAsync('stock/#', { qos: 1 });
      await c.endAsync();
    }
    assert.equal(await b.metric(ENDED, { reason: 'evicted', kind: 'display' }), 1);
    const first = await resume(b, 'disp-1');
    assert.equal(first.sessionPresent, false, 'disp-1 was offline the longest: its session ended for disp-4');
    const fourth = await resume(b, 'disp-4');
    assert.equal(fourth.sessionPresent, true);
    // disp-1 (a new session again) took disp-2's place; disp-3 is the only one offline: disp-5 takes it
    const fifth = await resume(b, 'disp-5');
    assert.equal(fifth.sessionPresent, false);
    assert.equal(
      await connackRefusal(b.url, { username: 'disp', password: passwordOf('disp'), clientId: 'disp-6', clean: false }),
      3,
      'all 3 sessions are online',
    );
    assert.equal(await b.metric('stockwire_broker_connection_refusals_total', { reason: 'sessions_device' }), 1);
    await (await connect(b, 'disp', 'disp-7', true)).endAsync(); // a clean connection keeps no session: not limited
  });
});

describe('queued messages per persistent session', () => {
  test('an offline session keeps the newest SESSION_MAX_QUEUED messages; the older ones are dropped and counted', async () => {
    const b = await edge({ queuedPerSession: 10 });
    const c = await connect(b, 'disp', 'disp-q', false);
    await c.subscribeAsync('stock/#', { qos: 1 });
    await c.endAsync();
    await publishStock(
      b,
      Array.from({ length: 50 }, (_, i) => `SKU-${i}`),
    );
    assert.equal(await b.metric(DROPPED, { reason: 'session_messages', kind: 'display' }), 40);
    assert.equal(await b.metric('stockwire_broker_session_queued_messages'), 10);
    const back = await resume(b, 'disp-q');
    await until(() => back.received.length >= 10, '10 queued messages');
    await publishStock(b, ['after']); // delivered live, after the queue: nothing more was queued
    await until(() => back.received.includes('stock/after'), 'the live message');
    assert.deepEqual(back.received, [...Array.from({ length: 10 }, (_, i) => `stock/SKU-${40 + i}`), 'stock/after']);
  });

  test('all sessions together keep at most BROKER_MAX_SESSION_BYTES', async () => {
    const b = await edge({ sessionBytes: 8 * 1024, queuedBytesPerSession: 8 * 1024 });
    for (const id of ['disp-b1', 'disp-b2', 'disp-b3']) {
      const c = await connect(b, 'disp', id, false);
      await c.subscribeAsync('stock/#', { qos: 1 });
      await c.endAsync();
    }
    await publishStock(
      b,
      Array.from({ length: 40 }, (_, i) => `SKU-${i}`),
    );
    assert.ok((await b.metric('stockwire_broker_session_bytes')) <= 8 * 1024);
    assert.ok((await b.metric(DROPPED, { reason: 'broker_bytes' })) > 0);
  });
});

describe('session expiry', () => {
  test('a persistent session whose client does not come back within SESSION_EXPIRY is ended: its queue and subscriptions go', async () => {
    const b = await edge({ sessionExpirySeconds: 1 });
    const c = await connect(b, 'disp', 'disp-x', false);
    await c.subscribeAsync('stock/#', { qos: 1 });
    await c.endAsync();
    await publishStock(b, ['SKU-1', 'SKU-2']);
    assert.equal(await b.metric('stockwire_broker_persistent_sessions'), 1);
    await until(
      async () => (await b.metric(ENDED, { reason: 'expired', kind: 'display' })) === 1,
      'the session to expire',
    );
    assert.equal(await b.metric(DROPPED, { reason: 'session_ended' }), 2);
    assert.equal(await b.metric('stockwire_broker_persistent_sessions'), 0);
    const back = await resume(b, 'disp-x');
    assert.equal(back.sessionPresent, false);
    assert.equal(await b.metric('stockwire_broker_session_bytes'), 0);
  });

  test('an online session does not expire', async () => {
    const b = await edge({ sessionExpirySeconds: 1 });
    const c = await connect(b, 'disp', 'disp-on', false);
    await c.subscribeAsync('stock/#', { qos: 1 });
    // the broker sweeps every 0.5 s: wait for a sweep that would have ended it (watching the gauge of another session)
    const other = await connect(b, 'disp', 'disp-off', false);
    await other.subscribeAsync('stock/#', { qos: 1 });
    await other.endAsync();
    await until(async () => (await b.metric(ENDED, { reason: 'expired' })) === 1, 'the offline session to expire');
    const got = new Promise<string>((resolve) => c.once('message', (topic) => resolve(topic)));
    await publishStock(b, ['live']);
    assert.equal(await got, 'stock/live');
    assert.equal(await b.metric('stockwire_broker_persistent_sessions'), 1);
  });
});

let nextSubscribeId = 40_000;
/** One SUBSCRIBE of many filters written by hand, and its SUBACK's return codes (MQTT.js rejects a SUBACK with any 0x80). */
async function subscribeMany(client: MqttClient, filters: string[], qos: 0 | 1): Promise<number[]> {
  const id = nextSubscribeId++;
  const u16 = (n: number) => Buffer.from([(n >> 8) & 0xff, n & 0xff]);
  const body = Buffer.concat([
    u16(id),
    ...filters.flatMap((f) => [u16(Buffer.byteLength(f)), Buffer.from(f), Buffer.from([qos])]),
  ]);
  const length: number[] = [];
  for (let n = body.length; ; ) {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    length.push(byte);
    if (n === 0) break;
  }
  const suback = new Promise<number[]>((resolve) => {
    const on = (p: { cmd: string; messageId?: number; granted?: unknown }) => {
      if (p.cmd !== 'suback' || p.messageId !== id) return;
      client.off('packetreceive', on);
      resolve(p.granted as number[]);
    };
    client.on('packetreceive', on);
  });
  client.stream.write(Buffer.concat([Buffer.from([0x82, ...length]), body]));
  return suback;
}

describe('subscriptions per client', () => {
  test('past CLIENT_MAX_SUBSCRIPTIONS a filter is refused (SUBACK 0x80) and counted; unsubscribing makes room', async () => {
    const b = await edge({ subscriptionsPerClient: 20 });
    const c = await connect(b, 's1', 's1', true);
    const filters = Array.from({ length: 50 }, (_, i) => `wh/W1/stock/SKU-${i}`);
    assert.deepEqual(await subscribeMany(c, filters, 1), [...Array(20).fill(1), ...Array(30).fill(128)]);
    assert.equal(await b.metric('stockwire_broker_subscriptions_limited_total', { kind: 'scanner' }), 30);
    assert.deepEqual(await subscribeMany(c, [filters[0] as string], 0), [0], 'a filter it holds may change its QoS');
    await c.unsubscribeAsync(filters.slice(0, 5));
    assert.deepEqual(await subscribeMany(c, filters.slice(20, 30), 1), [...Array(5).fill(1), ...Array(5).fill(128)]);
  });

  test('a persistent session keeps only the filters it was granted: a refused # in the same SUBSCRIBE queues nothing', async () => {
    const b = await edge({});
    const c = await connect(b, 's1', 's1-p', false);
    assert.deepEqual(await subscribeMany(c, ['wh/W1/stock/#', '#', 'wh/W1/dev/s2/ack'], 1), [1, 128, 128]);
    await c.endAsync();
    await new Promise<void>((resolve) =>
      b.broker.aedes.publish(
        {
          cmd: 'publish',
          topic: 'wh/W1/dev/s2/ack',
          payload: Buffer.from('{"id":"x"}'),
          qos: 1,
          retain: false,
          dup: false,
        },
        () => resolve(),
      ),
    );
    await new Promise<void>((resolve) =>
      b.broker.aedes.publish(
        { cmd: 'publish', topic: 'wh/W1/stock/SKU-1', payload: Buffer.from('{}'), qos: 1, retain: false, dup: false },
        () => resolve(),
      ),
    );
    const received: string[] = [];
    const back = mqtt.connect(b.url, {
      username: 's1',
      password: passwordOf('s1'),
      clientId: 's1-p',
      clean: false,
      reconnectPeriod: 0,
      manualConnect: true,
    });
    clients.push(back);
    back.on('message', (topic) => received.push(topic));
    back.connect();
    await until(() => received.includes('wh/W1/stock/SKU-1'), 'the queued stock message');
    assert.deepEqual(received, ['wh/W1/stock/SKU-1'], "s2's ack was never queued for s1");
  });
});

// A QoS 2 PUBLISH frame written by hand: the broker answers PUBREC, and this client never sends PUBREL.
function qos2Frame(topic: string, payload: Buffer, messageId: number): Buffer {
  const frame = publishFrame(topic, payload, 1, messageId);
  frame[0] = 0x34; // PUBLISH, QoS 2
  return frame;
}
function pubrecs(client: MqttClient): Set<number> {
  const ids = new Set<number>();
  client.on('packetreceive', (p) => p.cmd === 'pubrec' && p.messageId !== undefined && ids.add(p.messageId));
  return ids;
}

describe('QoS 2 publishes awaiting PUBREL', () => {
  test('a device holds at most DEVICE_MAX_QOS2_INFLIGHT unreleased; one more disconnects it, across reconnects of its persistent session and its other client ids', async () => {
    const b = await edge({ qos2PerDevice: 5 });
    const topic = 'wh/W1/dev/s1/event';
    const payload = Buffer.alloc(30_000, 'x');
    const c = await connect(b, 's1', 's1-q', false);
    const recs = pubrecs(c);
    c.stream.write(Buffer.concat([1, 2, 3, 4, 5].map((id) => qos2Frame(topic, payload, id))));
    await until(() => recs.size === 5, '5 PUBRECs');
    assert.equal((await b.metric('stockwire_broker_session_bytes')) >= 5 * 30_000, true);
    c.stream.write(qos2Frame(topic, payload, 6));
    await closedByBroker(c);
    assert.equal(await b.metric(REFUSALS, { reason: 'qos2_inflight', kind: 'scanner' }), 1);
    // The session keeps the 5 across a reconnect, and another client id of the same device shares the bound.
    for (const clientId of ['s1-q', 's1-other']) {
      const again = await connect(b, 's1', clientId, false);
      again.stream.write(qos2Frame(topic, payload, 7));
      await closedByBroker(again);
    }
    assert.equal(await b.metric(REFUSALS, { reason: 'qos2_inflight', kind: 'scanner' }), 3);
    // Another device is not affected.
    const other = await connect(b, 's2', 's2', true);
    const otherRecs = pubrecs(other);
    other.stream.write(qos2Frame('wh/W1/dev/s2/event', payload, 1));
    await until(() => otherRecs.size === 1, "s2's PUBREC");
    // A clean session of s1 discards its stored QoS 2 state: s1 may publish again.
    const clean = await connect(b, 's1', 's1-q', true);
    const cleanRecs = pubrecs(clean);
    clean.stream.write(qos2Frame(topic, payload, 8));
    await until(() => cleanRecs.size === 1, 'a PUBREC after the clean session');
  });

  test('publishes written in one go are bounded on their connection too (aedes checks them before they are stored)', async () => {
    const b = await edge({ qos2PerDevice: 5 });
    const c = await connect(b, 's2', 's2-burst', true);
    c.stream.write(
      Buffer.concat([1, 2, 3, 4, 5, 6, 7, 8].map((id) => qos2Frame('wh/W1/dev/s2/event', Buffer.from('{}'), id))),
    );
    await closedByBroker(c);
    const refused = await b.metric(REFUSALS, { reason: 'qos2_inflight', kind: 'scanner' });
    assert.ok(
      refused >= 1 && refused <= 3,
      `publishes 6 to 8 refused (${refused} counted before the connection closed)`,
    );
  });

  test('QoS 2 publishes count in BROKER_MAX_SESSION_BYTES: past it one is refused (session_bytes) and its client disconnected', async () => {
    const b = await edge({ sessionBytes: 100_000, queuedBytesPerSession: 100_000 });
    const c = await connect(b, 's2', 's2-b', true);
    const recs = pubrecs(c);
    const payload = Buffer.alloc(30_000, 'y');
    c.stream.write(Buffer.concat([1, 2, 3].map((id) => qos2Frame('wh/W1/dev/s2/event', payload, id))));
    await until(() => recs.size === 3, '3 PUBRECs');
    c.stream.write(qos2Frame('wh/W1/dev/s2/event', payload, 4));
    await closedByBroker(c);
    assert.equal(await b.metric(REFUSALS, { reason: 'session_bytes', kind: 'scanner' }), 1);
  });
});

describe('a failure while ending a session', () => {
  test('is logged and counted; the broker goes on', async () => {
    const require = createRequire(import.meta.url);
    const AsyncMemory = require('aedes-persistence/asyncPersistence.js') as new () => {
      cleanSubscriptions(client: { id: string }): Promise<unknown>;
    };
    const persistence = new AsyncMemory();
    const cleanSubscriptions = persistence.cleanSubscriptions.bind(persistence);
    persistence.cleanSubscriptions = async (client) => {
      if (client.id === 'disp-f1') throw new Error('disk on fire');
      return cleanSubscriptions(client);
    };
    const lines: Array<Record<string, unknown>> = [];
    const log = pino(
      { level: 'info' },
      { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
    );
    const registry = new Registry();
    const broker = createBroker({
      role: 'edge',
      edgeWarehouse: 'W1',
      devices,
      persistence,
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: null,
      registry,
      log,
      limits: { sessionsPerDevice: 1 },
    });
    const url = `mqtt://127.0.0.1:${(await broker.start()).mqtt}`;
    brokers.push({ broker, registry, url, metric: async () => NaN });
    const first = await connectAs(url, 'disp', { clientId: 'disp-f1', clean: false });
    await first.endAsync();
    const second = await connectAs(url, 'disp', { clientId: 'disp-f2', clean: false });
    clients.push(second);
    await until(() => lines.some((l) => l.msg === 'ending a persistent session failed'), 'the failure in the log');
    assert.equal((await second.subscribeAsync('stock/#', { qos: 1 }))[0]?.qos, 1, 'the broker goes on');
  });
});
