import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Client, PublishPacket } from 'aedes';
import fc from 'fast-check';
import type { MqttClient } from 'mqtt';
import { parseEventTopic } from '../../protocol/index.js';
import {
  closeOf,
  connectAs,
  cheapHash,
  deviceRegistry,
  RawWriter,
  startBroker,
  until,
  type TestBroker,
} from '../helpers/broker.js';
import { pinFastCheck } from '../helpers/seed.js';

pinFastCheck('broker/hooks-fuzz');

/**
 * Fuzzing of the broker hooks (authorizePublish, authorizeSubscribe) with random topics and filters:
 * called directly with real authenticated aedes clients, and reached from real clients that write
 * raw MQTT frames (wildcards, NUL, bad UTF-8 — what MQTT.js would refuse to send). The rules are
 * written out here from CONTRACT section 5 for a scanner (sc1 of W1, on its edge) and a gateway
 * (gw1 of W1, on central).
 */
const LEVEL = fc.constantFrom(
  'wh',
  'W1',
  'W2',
  'dev',
  'sc1',
  'gw1',
  'event',
  'ack',
  'stock',
  'shelf',
  'status',
  'requests',
  'responses',
  'alerts',
  '+',
  '#',
  '',
  '$SYS',
  'a\u0000',
  '\u0000',
  'é',
  '\ud800',
  'x'.repeat(65),
);
// The contract's topic shapes with every slot random (own and other ids, wildcards, injections), so most runs land near a rule.
const SLOT = fc.constantFrom(
  'W1',
  'W2',
  'sc1',
  'sc2',
  'gw1',
  '+',
  '#',
  '',
  'a\u0000',
  '\ud800',
  'x'.repeat(65),
  'sku-1',
  'é',
  'a/b',
);
const SHAPES = [
  'wh/{}/dev/{}/event',
  'wh/{}/dev/{}/ack',
  'wh/{}/stock/{}',
  'wh/{}/shelf/{}/{}',
  'wh/{}/status',
  'stock/{}',
  'alerts/{}/{}',
  'requests/{}',
  'responses/{}/{}',
  'wh/{}/{}',
  '{}/{}/stock/{}',
  'wh/{}/stock',
  'stock',
  '{}',
];
const STRUCTURED = fc
  .tuple(
    fc.constantFrom(...SHAPES),
    fc.array(SLOT, { minLength: 3, maxLength: 3 }),
    fc.constantFrom('', '', '/#', '/+', '/x', '/'),
  )
  .map(([shape, slots, tail]) => {
    let i = 0;
    return shape.replace(/\{\}/g, () => slots[i++] as string) + tail;
  });
const TOPIC = fc.oneof(
  { arbitrary: STRUCTURED, weight: 4 },
  fc.array(LEVEL, { minLength: 1, maxLength: 7 }).map((l) => l.join('/')),
  fc.string({ unit: 'binary', maxLength: 60 }),
  fc.constantFrom(
    'wh/W1/dev/sc1/event',
    'wh/W1/dev/gw1/event',
    'wh/W1/status',
    'requests/gw1',
    'wh/W1/dev/sc1/ack',
    'stock/x',
    'responses/gw1/a',
  ),
);
const ident = /^[A-Za-z0-9._-]{1,64}$/;

/** May the scanner publish `t` on its edge? Only its own event topic. */
const scannerPublishes = (t: string): boolean => t === 'wh/W1/dev/sc1/event';
/** May the gateway publish `t` on central? Events of its warehouse's devices (valid ids: the hook parses them), its status, its requests. */
const gatewayPublishes = (t: string): boolean =>
  t === 'wh/W1/status' ||
  t === 'requests/gw1' ||
  (/^wh\/W1\/dev\/[^/]*\/event$/.test(t) && ident.test(t.split('/')[3] as string));

const under = (t: string, base: string): boolean => t === base || t.startsWith(`${base}/`);
/** Topic names each may read. */
const scannerReads = (t: string): boolean =>
  t === 'wh/W1/dev/sc1/ack' ||
  t === 'wh/W1/status' ||
  under(t, 'wh/W1/stock') ||
  under(t, 'wh/W1/shelf') ||
  under(t, 'stock');
const gatewayReads = (t: string): boolean =>
  /^wh\/W1\/dev\/[^/]*\/ack$/.test(t) ||
  under(t, 'wh/W1/stock') ||
  under(t, 'wh/W1/shelf') ||
  under(t, 'stock') ||
  under(t, 'alerts/W1') ||
  under(t, 'responses/gw1');

/** Topic names a filter matches, made by filling its wildcards with the given levels. */
function instances(filter: string, fills: string[]): string[] {
  return fills.map((fill, i) => {
    const levels = filter.split('/').map((l) => (l === '+' ? (fill.split('/')[0] as string) : l));
    if (levels.at(-1) === '#') {
      levels.pop(); // `#` matches the parent level too (MQTT-4.7.1-2)
      if (i % 2 === 0) levels.push(...fill.split('/'));
    }
    return levels.join('/');
  });
}

/** A granted filter must be well formed and let through only readable topics; a concrete one is granted exactly when readable. */
function assertSubscribeRule(filter: string, granted: boolean, reads: (t: string) => boolean, fills: string[]): void {
  const wildcard = /[+#]/.test(filter);
  if (!wildcard)
    assert.equal(
      granted,
      reads(filter) && !filter.startsWith('$') && filter.length > 0,
      `concrete filter ${JSON.stringify(filter)}`,
    );
  if (!granted) return;
  assert.ok(
    filter
      .split('/')
      .every((l, i, all) => (l.includes('#') ? l === '#' && i === all.length - 1 : !l.includes('+') || l === '+')),
    `malformed ${JSON.stringify(filter)} granted`,
  );
  for (const t of instances(filter, fills))
    if (!/[+#]/.test(t))
      assert.ok(reads(t), `${JSON.stringify(filter)} granted, but it lets ${JSON.stringify(t)} through`);
}

let edge: TestBroker;
let central: TestBroker;
let scanner: MqttClient;
let gateway: MqttClient;
let observer: MqttClient;
const seen = new Set<string>();

before(async () => {
  // Cheap hashes: the raw-frame runs log in again after every closed connection.
  const devices = await deviceRegistry(
    [
      { id: 'sc1', warehouse: 'W1', kind: 'scanner' },
      { id: 'gw1', warehouse: 'W1', kind: 'gateway' },
      { id: 'obs', warehouse: 'W1', kind: 'processor' },
    ],
    cheapHash,
  );
  // As central does: an event topic whose ids are not identifiers is refused by the hook.
  const hook = async (_c: unknown, p: { topic: string }) =>
    void (parseEventTopic(p.topic) ?? assert.fail('not an event topic'));
  const limits = {
    publishRate: 1_000_000,
    publishBurst: 1_000_000,
    connectsPerClientId: 10_000,
    connectsPerAddress: 10_000,
  };
  edge = await startBroker({ role: 'edge', edgeWarehouse: 'W1', devices, limits, beforePuback: hook });
  central = await startBroker({ role: 'central', devices, limits, beforePuback: hook });
  scanner = await connectAs(edge.url, 'sc1');
  gateway = await connectAs(central.url, 'gw1');
  observer = await connectAs(central.url, 'obs');
  observer.on('message', (_t, payload) => seen.add(payload.toString()));
  await observer.subscribeAsync('#', { qos: 1 });
});
after(async () => {
  for (const c of [scanner, gateway, observer]) await c?.endAsync(true);
  await Promise.all([edge?.broker.stop(), central?.broker.stop()]);
});

function aedesClient(b: TestBroker, client: MqttClient): Client {
  const c = (b.broker.aedes as unknown as { clients: Record<string, Client> }).clients[
    client.options.clientId as string
  ];
  return c ?? assert.fail('client not connected');
}
function authorizePublish(b: TestBroker, client: MqttClient, topic: string): Promise<boolean> {
  const packet = {
    cmd: 'publish',
    topic,
    payload: Buffer.from('{}'),
    qos: 1,
    retain: false,
    dup: false,
    messageId: 1,
  } as PublishPacket;
  return new Promise((resolve) =>
    b.broker.aedes.authorizePublish(aedesClient(b, client), packet, (err) => resolve(!err)),
  );
}
function authorizeSubscribe(b: TestBroker, client: MqttClient, filter: string): Promise<boolean> {
  return new Promise((resolve) =>
    b.broker.aedes.authorizeSubscribe(aedesClient(b, client), { topic: filter, qos: 1 }, (err, sub) =>
      resolve(!err && sub !== null && sub !== undefined),
    ),
  );
}

describe('broker hooks called directly, with real authenticated clients', () => {
  test('authorizePublish: allowed exactly by the contract, for any topic', async () => {
    await fc.assert(
      fc.asyncProperty(TOPIC, async (t) => {
        assert.equal(await authorizePublish(edge, scanner, t), scannerPublishes(t), `scanner ${JSON.stringify(t)}`);
        assert.equal(await authorizePublish(central, gateway, t), gatewayPublishes(t), `gateway ${JSON.stringify(t)}`);
      }),
      { numRuns: 1_000 },
    );
  });

  test('authorizeSubscribe: a granted filter lets through only what the contract lets the device read', async () => {
    await fc.assert(
      fc.asyncProperty(
        TOPIC,
        fc.array(
          fc.array(LEVEL, { minLength: 1, maxLength: 3 }).map((l) => l.join('/')),
          { minLength: 4, maxLength: 8 },
        ),
        async (f, fills) => {
          assertSubscribeRule(f, await authorizeSubscribe(edge, scanner, f), scannerReads, fills);
          assertSubscribeRule(f, await authorizeSubscribe(central, gateway, f), gatewayReads, fills);
        },
      ),
      { numRuns: 1_000 },
    );
  });
});

/** A connection for raw frames, kept until the broker closes it. */
interface RawConnection {
  client: MqttClient;
  raw: RawWriter;
  closed: boolean;
}
async function rawConnection(url: string, id: string): Promise<RawConnection> {
  const client = await connectAs(url, id);
  const c: RawConnection = { client, raw: new RawWriter(client), closed: false };
  void closeOf(client).then(() => (c.closed = true));
  return c;
}

describe('broker hooks reached from real clients writing raw frames', () => {
  let n = 0;
  let pub: RawConnection | null = null;
  let sub: RawConnection | null = null;
  test('publish: a PUBACK and delivery exactly where allowed, else the connection closed; the broker keeps serving', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          TOPIC.map((t) => Buffer.from(t)),
          fc.uint8Array({ minLength: 1, maxLength: 40 }).map((b) => Buffer.from(b)),
        ),
        async (topic) => {
          if (pub === null || pub.closed) pub = await rawConnection(central.url, 'gw1');
          const { raw } = pub;
          const marker = `raw-${++n}`;
          const [id] = raw.publish(topic, [marker], 1);
          await until(
            () => raw.pubacks.has(id as number) || (pub as RawConnection).closed,
            `an answer to ${JSON.stringify(topic.toString())}`,
          );
          // The broker reads the topic as UTF-8 (bad bytes become U+FFFD).
          const allowed = gatewayPublishes(topic.toString('utf8'));
          assert.equal(raw.pubacks.has(id as number), allowed, `PUBACK for ${JSON.stringify(topic.toString())}`);
          if (allowed) await until(() => seen.has(marker), 'delivery to the processor');
        },
      ),
      { numRuns: 80 },
    );
    await pub?.client.endAsync(true);
    await gateway.publishAsync('wh/W1/status', 'still-serving', { qos: 1 });
    await until(() => seen.has('still-serving'), 'the broker still serves');
  });

  test("subscribe: SUBACK 1 only for filters within the device's reads, else 0x80 or a closed connection", async () => {
    await fc.assert(
      fc.asyncProperty(
        TOPIC,
        fc.array(
          fc.array(LEVEL, { minLength: 1, maxLength: 3 }).map((l) => l.join('/')),
          { minLength: 4, maxLength: 8 },
        ),
        async (f, fills) => {
          if (sub === null || sub.closed) sub = await rawConnection(edge.url, 'sc1');
          const { raw } = sub;
          const id = raw.subscribe(Buffer.from(f), 1);
          await until(() => raw.subacks.has(id) || (sub as RawConnection).closed, `an answer to ${JSON.stringify(f)}`);
          const granted = raw.subacks.get(id)?.[0];
          const filter = Buffer.from(f).toString('utf8');
          if (granted === undefined) {
            // closing on a malformed SUBSCRIBE is fine; on a clean, readable topic it would be a refusal of a right
            assert.ok(
              // biome-ignore lint/suspicious/noControlCharactersInRegex: a filter with U+0000 is malformed MQTT: closing is fine
              /[\u0000\ufffd+#]/.test(filter) || filter === '' || !scannerReads(filter),
              `closed on ${JSON.stringify(filter)}`,
            );
            return;
          }
          assert.ok(granted === 1 || granted === 0x80, `granted ${granted}`);
          assertSubscribeRule(filter, granted === 1, scannerReads, fills);
        },
      ),
      { numRuns: 80 },
    );
    await sub?.client.endAsync(true);
    const probe = await connectAs(edge.url, 'sc1');
    await probe.publishAsync('wh/W1/dev/sc1/event', '{}', { qos: 1 });
    await probe.endAsync();
  });
});
