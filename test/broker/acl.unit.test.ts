import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  DEVICE_KINDS,
  mayConnect,
  mayPublish,
  mayRequest,
  maySubscribe,
  type BrokerRole,
  type Device,
  type DeviceKind,
} from '../../broker/index.js';
import { REQUEST_ACTIONS } from '../../protocol/index.js';

// Every device under test is `d1` of warehouse `W1`; `d2` is another device, `W2` another warehouse.
function device(kind: DeviceKind): Device {
  return { id: 'd1', warehouse: 'W1', kind, passwordHash: 'unused' };
}

const PUBLISH_TOPICS = [
  'wh/W1/dev/d1/event',
  'wh/W1/dev/d2/event',
  'wh/W2/dev/d1/event',
  'wh/W1/dev/d1/ack',
  'wh/W1/stock/sku-1',
  'wh/W2/stock/sku-1',
  'stock/sku-1',
  'wh/W1/shelf/A-01/sku-1',
  'wh/W1/status',
  'wh/W2/status',
  'alerts/W1/negative-stock',
  'requests/d1',
  'requests/d2',
  'responses/d1',
  'wh/W1/gw/d1/batch',
  'wh/W1/gw/d2/batch',
  'wh/W2/gw/d1/batch',
  'wh/W1/gw/d1/batch-ack',
  '$SYS/broker/heartbeat',
  'other/topic',
  'wh',
] as const;

const SUBSCRIBE_FILTERS = [
  'wh/W1/dev/d1/ack',
  'wh/W1/dev/d2/ack',
  'wh/W2/dev/d1/ack',
  'wh/W1/dev/+/ack',
  'wh/W1/stock/#',
  'wh/W1/stock/sku-1',
  'wh/W1/stock/+',
  'wh/W1/stock',
  'wh/W2/stock/#',
  'wh/+/stock/#',
  'stock/#',
  'stock/sku-1',
  'stock/+',
  'wh/W1/shelf/#',
  'wh/W1/shelf/A-01/+',
  'wh/+/shelf/#',
  'wh/W1/status',
  'wh/+/status',
  'wh/W2/status',
  'wh/W1/status/#',
  'alerts/#',
  'alerts/W1/+',
  'wh/W1/dev/+/event',
  'wh/+/dev/+/event',
  'wh/W1/dev/d1/event',
  '#',
  'wh/#',
  'wh/W1/#',
  '+/W1/stock/#',
  'wh/W1/+/sku-1',
  'responses/d1/#',
  'responses/d1',
  'responses/d1/orders',
  'responses/d2/#',
  'responses/#',
  'wh/W1/gw/d1/batch-ack',
  'wh/W1/gw/d2/batch-ack',
  'wh/W2/gw/d1/batch-ack',
  'wh/W1/gw/+/batch-ack',
  'wh/W1/gw/d1/batch',
  '$SYS/#',
] as const;

type Pub = (typeof PUBLISH_TOPICS)[number];
type Sub = (typeof SUBSCRIBE_FILTERS)[number];

const OWN_WH_READS: Sub[] = [
  'wh/W1/stock/#',
  'wh/W1/stock/sku-1',
  'wh/W1/stock/+',
  'wh/W1/stock',
  'stock/#',
  'stock/sku-1',
  'stock/+',
  'wh/W1/shelf/#',
  'wh/W1/shelf/A-01/+',
];

/** What CONTRACT section 5 allows, written out by hand per kind and role. */
const EXPECTED: Record<DeviceKind, Record<BrokerRole, { publish: Pub[]; subscribe: Sub[] }>> = {
  scanner: {
    edge: { publish: ['wh/W1/dev/d1/event'], subscribe: ['wh/W1/dev/d1/ack', ...OWN_WH_READS, 'wh/W1/status'] },
    central: { publish: [], subscribe: [] },
  },
  shelf: {
    edge: { publish: ['wh/W1/dev/d1/event'], subscribe: ['wh/W1/dev/d1/ack', ...OWN_WH_READS, 'wh/W1/status'] },
    central: { publish: [], subscribe: [] },
  },
  display: {
    edge: { publish: [], subscribe: [...OWN_WH_READS, 'wh/W1/status', 'alerts/W1/+'] },
    central: {
      publish: [],
      subscribe: [
        ...OWN_WH_READS,
        'wh/W2/stock/#',
        'wh/+/stock/#',
        'wh/+/shelf/#',
        'wh/W1/status',
        'wh/+/status',
        'wh/W2/status',
        'alerts/#',
        'alerts/W1/+',
      ],
    },
  },
  gateway: {
    edge: { publish: [], subscribe: [] },
    central: {
      // a batch only on its own warehouse's topic of its own gateway id (another warehouse's, another gateway's: refused)
      publish: ['wh/W1/dev/d1/event', 'wh/W1/dev/d2/event', 'wh/W1/status', 'requests/d1', 'wh/W1/gw/d1/batch'],
      subscribe: [
        'wh/W1/dev/d1/ack',
        'wh/W1/dev/d2/ack',
        'wh/W1/dev/+/ack',
        ...OWN_WH_READS,
        'alerts/W1/+',
        'responses/d1/#',
        'responses/d1',
        'responses/d1/orders',
        'wh/W1/gw/d1/batch-ack',
      ],
    },
  },
  processor: {
    edge: { publish: [], subscribe: [] },
    central: {
      publish: PUBLISH_TOPICS.filter(
        (t) => t.startsWith('wh/') || t.startsWith('stock/') || t.startsWith('alerts/') || t === 'requests/d1',
      ),
      subscribe: [...SUBSCRIBE_FILTERS],
    },
  },
};

describe('ACL matrix (CONTRACT section 5)', () => {
  for (const kind of DEVICE_KINDS) {
    for (const role of ['edge', 'central'] as const) {
      test(`${kind} on ${role}: publish`, () => {
        const allowed = PUBLISH_TOPICS.filter((t) => mayPublish(device(kind), t, role));
        assert.deepEqual(
          allowed,
          PUBLISH_TOPICS.filter((t) => EXPECTED[kind][role].publish.includes(t)),
        );
      });
      test(`${kind} on ${role}: subscribe`, () => {
        const allowed = SUBSCRIBE_FILTERS.filter((f) => maySubscribe(device(kind), f, role));
        assert.deepEqual(
          allowed,
          SUBSCRIBE_FILTERS.filter((f) => EXPECTED[kind][role].subscribe.includes(f)),
        );
      });
    }
  }
});

describe('mayConnect', () => {
  const cases: Array<[DeviceKind, BrokerRole, string | undefined, boolean]> = [
    ['scanner', 'edge', 'W1', true],
    ['scanner', 'edge', 'W2', false],
    ['scanner', 'edge', undefined, false],
    ['scanner', 'central', undefined, false],
    ['shelf', 'edge', 'W1', true],
    ['shelf', 'edge', 'W2', false],
    ['shelf', 'central', undefined, false],
    ['display', 'edge', 'W1', true],
    ['display', 'edge', 'W2', false],
    ['display', 'central', undefined, true],
    ['gateway', 'edge', 'W1', false],
    ['gateway', 'central', undefined, true],
    ['processor', 'edge', 'W1', false],
    ['processor', 'central', undefined, true],
  ];
  for (const [kind, role, wh, expected] of cases) {
    test(`${kind} to ${role}${wh ? ` of ${wh}` : ''}: ${expected ? 'allowed' : 'refused'}`, () => {
      assert.equal(mayConnect(device(kind), role, wh), expected);
    });
  }
});

describe('malformed topics and filters', () => {
  const processor = device('processor');
  test('publish to a topic with wildcards is refused', () => {
    assert.equal(mayPublish(processor, 'wh/+/status', 'central'), false);
    assert.equal(mayPublish(processor, 'stock/#', 'central'), false);
    assert.equal(mayPublish(processor, '', 'central'), false);
  });
  test('malformed filters are refused even with a # grant', () => {
    for (const filter of ['stock/#/x', 'stock/sku+', 'stock/#x', '']) {
      assert.equal(maySubscribe(processor, filter, 'central'), false, filter);
    }
  });
  test('a device id that is a wildcard gets no grant (the ACL does not rely on the registry alone)', () => {
    const plus: Device = { id: '+', warehouse: 'W1', kind: 'scanner', passwordHash: 'x' };
    const hash: Device = { id: 'd1', warehouse: '#', kind: 'display', passwordHash: 'x' };
    assert.equal(mayPublish(plus, 'wh/W1/dev/d2/event', 'edge'), false);
    assert.equal(maySubscribe(plus, 'wh/W1/dev/d2/ack', 'edge'), false);
    assert.equal(maySubscribe(hash, 'wh/W2/stock/#', 'edge'), false);
  });
});

describe('mayRequest: commands over MQTT per kind (reservations, transfers)', () => {
  test('a processor credential (a trusted central service) may make every request on any warehouse', () => {
    for (const action of REQUEST_ACTIONS) {
      assert.equal(mayRequest(device('processor'), action, ['W2']), true, action);
      assert.equal(mayRequest(device('processor'), action, []), true, `${action} across warehouses`);
    }
  });
  test('a gateway only on its own warehouse: reservations there, transfers out of it; it may read one into it', () => {
    const gw = device('gateway');
    for (const action of ['reservations.create', 'reservations.get', 'reservations.release'] as const) {
      assert.equal(mayRequest(gw, action, ['W1']), true, action);
      assert.equal(mayRequest(gw, action, ['W2']), false, `${action} at another warehouse`);
      assert.equal(mayRequest(gw, action, ['W1', 'W2']), false, `${action} on split parts elsewhere`);
      assert.equal(mayRequest(gw, action, []), false, `${action} allocated across warehouses`);
    }
    // Create and cancel name the warehouse holding the stock (`from`); get names both ends.
    for (const action of ['transfers.create', 'transfers.cancel'] as const) {
      assert.equal(mayRequest(gw, action, ['W1']), true, `${action} out of its warehouse`);
      assert.equal(mayRequest(gw, action, ['W2']), false, `${action} out of another warehouse (holding its stock)`);
      assert.equal(mayRequest(gw, action, []), false, `${action} without a source`);
    }
    assert.equal(mayRequest(gw, 'transfers.get', ['W1', 'W2']), true, 'reading a transfer out of its warehouse');
    assert.equal(mayRequest(gw, 'transfers.get', ['W2', 'W1']), true, 'reading a transfer into its warehouse');
    assert.equal(mayRequest(gw, 'transfers.get', ['W2', 'W3']), false, 'reading a transfer between two others');
  });
  test('devices make no requests', () => {
    for (const kind of ['scanner', 'shelf', 'display'] as const)
      for (const action of REQUEST_ACTIONS)
        assert.equal(mayRequest(device(kind), action, ['W1']), false, `${kind} ${action}`);
  });
});
