import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { MqttClient } from 'mqtt';
import type { BrokerRole, DeviceKind } from '../../broker/index.js';
import {
  closeOf,
  connackRefusal,
  connectAs,
  deviceRegistry,
  passwordOf,
  startBroker,
  until,
  type TestBroker,
} from '../helpers/broker.js';

/**
 * The ACL matrix end to end: every device kind × every topic of CONTRACT section 5 (plus the command
 * topics of README "Commands over MQTT"), published and subscribed by real MQTT.js clients on a real
 * edge and a real central broker. The expected table is written out here from the contract; the
 * unit-level matrix of broker/acl.ts is test/broker/acl.test.ts.
 *
 * Each kind's device is `{me}` of warehouse W1; `sc2` is another device of W1; W2 another warehouse.
 */
const ME: Record<DeviceKind, string> = {
  scanner: 'sc1',
  shelf: 'sh1',
  display: 'di1',
  gateway: 'gw1',
  processor: 'pr1',
};

const PUBLISH = [
  'wh/W1/dev/{me}/event',
  'wh/W1/dev/sc2/event',
  'wh/W2/dev/{me}/event',
  'wh/W1/dev/{me}/ack',
  'wh/W1/stock/sku1',
  'wh/W2/stock/sku1',
  'stock/sku1',
  'wh/W1/shelf/A1/sku1',
  'wh/W2/shelf/A1/sku1',
  'wh/W1/status',
  'wh/W2/status',
  'alerts/W1/negative-stock',
  'alerts/W2/negative-stock',
  'requests/{me}',
  'requests/sc2',
  'responses/{me}',
  'wh/W1/gw/{me}/batch',
  'wh/W1/gw/sc2/batch',
  'wh/W2/gw/{me}/batch',
  'other/topic',
] as const;

const SUBSCRIBE = [
  'wh/W1/dev/{me}/ack',
  'wh/W1/dev/sc2/ack',
  'wh/W2/dev/{me}/ack',
  'wh/W1/dev/+/ack',
  'wh/W1/stock/#',
  'wh/W1/stock/sku1',
  'wh/W2/stock/#',
  'wh/+/stock/#',
  'stock/#',
  'stock/sku1',
  'wh/W1/shelf/#',
  'wh/W2/shelf/#',
  'wh/+/shelf/#',
  'wh/W1/status',
  'wh/W2/status',
  'wh/+/status',
  'alerts/#',
  'alerts/W1/#',
  'alerts/W2/#',
  'wh/W1/dev/+/event',
  'wh/+/dev/+/event',
  'requests/{me}',
  'requests/+',
  'responses/{me}/#',
  'responses/sc2/#',
  'responses/#',
  'wh/W1/gw/{me}/batch-ack',
  'wh/W1/gw/sc2/batch-ack',
  'wh/W2/gw/{me}/batch-ack',
  '#',
  'wh/#',
  '$SYS/#',
] as const;

type Pub = (typeof PUBLISH)[number];
type Sub = (typeof SUBSCRIBE)[number];
type Rights = { publish: Pub[]; subscribe: Sub[] } | 'connection refused';

// A scanner's or shelf sensor's reads at its edge (CONTRACT 5).
const DEVICE_READS: Sub[] = [
  'wh/W1/dev/{me}/ack',
  'wh/W1/stock/#',
  'wh/W1/stock/sku1',
  'stock/#',
  'stock/sku1',
  'wh/W1/shelf/#',
  'wh/W1/status',
];

const EXPECTED: Record<DeviceKind, Record<BrokerRole, Rights>> = {
  scanner: { edge: { publish: ['wh/W1/dev/{me}/event'], subscribe: DEVICE_READS }, central: 'connection refused' },
  shelf: { edge: { publish: ['wh/W1/dev/{me}/event'], subscribe: DEVICE_READS }, central: 'connection refused' },
  display: {
    // stock, shelf and status of its own warehouse on an edge; all on central; alerts too (README "Live display")
    edge: {
      publish: [],
      subscribe: [
        'wh/W1/stock/#',
        'wh/W1/stock/sku1',
        'stock/#',
        'stock/sku1',
        'wh/W1/shelf/#',
        'wh/W1/status',
        'alerts/W1/#',
      ],
    },
    central: {
      publish: [],
      subscribe: [
        'wh/W1/stock/#',
        'wh/W1/stock/sku1',
        'wh/W2/stock/#',
        'wh/+/stock/#',
        'stock/#',
        'stock/sku1',
        'wh/W1/shelf/#',
        'wh/W2/shelf/#',
        'wh/+/shelf/#',
        'wh/W1/status',
        'wh/W2/status',
        'wh/+/status',
        'alerts/#',
        'alerts/W1/#',
        'alerts/W2/#',
      ],
    },
  },
  gateway: {
    edge: 'connection refused',
    central: {
      // a batch only on its own gateway id's topic in its own warehouse
      publish: ['wh/W1/dev/{me}/event', 'wh/W1/dev/sc2/event', 'wh/W1/status', 'requests/{me}', 'wh/W1/gw/{me}/batch'],
      // alerts of its own warehouse: the edge mirrors them for its displays
      subscribe: [
        'wh/W1/dev/{me}/ack',
        'wh/W1/dev/sc2/ack',
        'wh/W1/dev/+/ack',
        'wh/W1/stock/#',
        'wh/W1/stock/sku1',
        'stock/#',
        'stock/sku1',
        'wh/W1/shelf/#',
        'alerts/W1/#',
        'responses/{me}/#',
        'wh/W1/gw/{me}/batch-ack',
      ],
    },
  },
  processor: {
    edge: 'connection refused',
    central: {
      // everything under wh/, stock/, alerts/; of the command topics only its own requests/{id}
      publish: PUBLISH.filter((t) => /^(wh|stock|alerts)\//.test(t) || t === 'requests/{me}'),
      subscribe: [...SUBSCRIBE],
    },
  },
};

const KINDS: DeviceKind[] = ['scanner', 'shelf', 'display', 'gateway', 'processor'];
const fill = (pattern: string, kind: DeviceKind): string => pattern.replace('{me}', ME[kind]);

const brokers = {} as Record<BrokerRole, TestBroker>;
/** payload markers that reached a subscriber with processor rights (central) or the broker's own '#' subscription (edge) */
const seen = new Set<string>();
let observer: MqttClient;

before(async () => {
  const devices = await deviceRegistry([
    ...KINDS.map((kind) => ({ id: ME[kind], warehouse: 'W1', kind })),
    { id: 'sc2', warehouse: 'W1', kind: 'scanner' },
    { id: 'obs', warehouse: 'W1', kind: 'processor' },
  ]);
  const hook = async () => undefined;
  brokers.edge = await startBroker({ role: 'edge', edgeWarehouse: 'W1', devices, beforePuback: hook });
  brokers.central = await startBroker({ role: 'central', devices, beforePuback: hook });
  observer = await connectAs(brokers.central.url, 'obs');
  observer.on('message', (_topic, payload) => seen.add(payload.toString()));
  await observer.subscribeAsync('#', { qos: 1 });
  // Nobody may read everything on an edge: the broker's own subscription watches it there.
  await new Promise<void>((resolve) =>
    brokers.edge.broker.aedes.subscribe(
      '#',
      (packet, cb) => {
        seen.add(packet.payload.toString());
        cb();
      },
      resolve,
    ),
  );
});
after(async () => {
  await observer?.endAsync(true);
  await Promise.all(Object.values(brokers).map((b) => b.broker.stop()));
});

/** Publishes at QoS 1 and tells what the publisher saw: a PUBACK, or its connection closed by the broker. */
async function publishOutcome(client: MqttClient, topic: string, marker: string): Promise<'acked' | 'closed'> {
  const closed = closeOf(client).then(() => 'closed' as const);
  const acked = client.publishAsync(topic, marker, { qos: 1 }).then(
    () => 'acked' as const,
    () => closed,
  );
  return Promise.race([acked, closed]);
}

for (const role of ['edge', 'central'] as const) {
  describe(`ACL end to end on ${role}`, () => {
    for (const kind of KINDS) {
      const rights = EXPECTED[kind][role];
      if (rights === 'connection refused') {
        test(`${kind}: connection refused (CONNACK 5), counted`, async () => {
          const b = brokers[role];
          const before = await b.metric('stockwire_broker_connection_refusals_total', { reason: 'kind_not_allowed' });
          assert.equal(
            await connackRefusal(b.url, { username: ME[kind], password: passwordOf(ME[kind]), clientId: ME[kind] }),
            5,
          );
          assert.equal(
            await b.metric('stockwire_broker_connection_refusals_total', { reason: 'kind_not_allowed' }),
            before + 1,
          );
        });
        continue;
      }

      test(`${kind}: publish allowed exactly where the contract allows; refusals disconnect and are counted`, async () => {
        const b = brokers[role];
        const before = await b.metric('stockwire_broker_publish_refusals_total', { reason: 'acl', kind });
        const outcomes: Record<string, 'acked' | 'closed'> = {};
        const refusedMarkers: string[] = [];
        let client = await connectAs(b.url, ME[kind]);
        for (const pattern of PUBLISH) {
          if (!client.connected) client = await connectAs(b.url, ME[kind]);
          const marker = `${role}|${kind}|${pattern}`;
          outcomes[pattern] = await publishOutcome(client, fill(pattern, kind), marker);
          if (outcomes[pattern] === 'acked') await until(() => seen.has(marker), `${marker} delivered`);
          else refusedMarkers.push(marker);
        }
        await client.endAsync(true);
        const allowed = PUBLISH.filter((p) => outcomes[p] === 'acked');
        assert.deepEqual(
          allowed,
          PUBLISH.filter((p) => rights.publish.includes(p)),
        );
        assert.deepEqual(
          refusedMarkers.filter((m) => seen.has(m)),
          [],
          'no refused publish was delivered',
        );
        assert.equal(
          await b.metric('stockwire_broker_publish_refusals_total', { reason: 'acl', kind }),
          before + PUBLISH.length - allowed.length,
        );
      });

      test(`${kind}: subscribe granted exactly where the contract allows; refusals get SUBACK 0x80 and are counted`, async () => {
        const b = brokers[role];
        const before = await b.metric('stockwire_broker_subscribe_refusals_total', { kind });
        const client = await connectAs(b.url, ME[kind]);
        const filters = SUBSCRIBE.map((f) => fill(f, kind));
        // MQTT.js rejects subscribeAsync when any grant is a failure; the SUBACK rides on the error.
        const granted = await client.subscribeAsync(filters, { qos: 1 }).then(
          (grants) => grants.map((g) => g.qos),
          (err: { packet?: { granted?: number[] } }) => err.packet?.granted ?? assert.fail(`no SUBACK: ${String(err)}`),
        );
        assert.deepEqual(
          SUBSCRIBE.filter((_, i) => granted[i] === 1),
          SUBSCRIBE.filter((f) => rights.subscribe.includes(f)),
        );
        assert.ok(
          granted.every((g) => g === 1 || g === 0x80),
          `only grants and 0x80: ${granted.join(',')}`,
        );
        assert.ok(client.connected, 'a refused subscription does not disconnect');
        assert.equal(
          await b.metric('stockwire_broker_subscribe_refusals_total', { kind }),
          before + granted.filter((g) => g === 0x80).length,
        );
        await client.endAsync(true);
      });
    }
  });
}
