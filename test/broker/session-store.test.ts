import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, test } from 'node:test';
import {
  SessionStore,
  type AedesPersistence,
  type SessionBounds,
  type StoredPacket,
} from '../../broker/session-store.js';
import { DEFAULT_DEVICE_LIMITS } from '../../broker/index.js';

// aedes-persistence (aedes's own dependency) is the store the session store wraps, and its contract suite is the
// one every aedes persistence passes: run it against the wrapper, as MQTT.js runs its store suite on every store.
const require = createRequire(import.meta.url);
const AsyncMemory = require('aedes-persistence/asyncPersistence.js') as new () => AedesPersistence;
const abstractPersistence = require('aedes-persistence/abstract.js') as (opts: {
  test: typeof test;
  persistence: () => AedesPersistence;
  testAsync: boolean;
}) => void;

const d = DEFAULT_DEVICE_LIMITS;
const DEFAULT_BOUNDS: SessionBounds = {
  queuedPerSession: d.queuedPerSession,
  queuedBytesPerSession: d.queuedBytesPerSession,
  brokerBytes: d.sessionBytes,
  qos2PerDevice: d.qos2PerDevice,
};

function storeWith(bounds: Partial<SessionBounds> = {}, granted: (topic: string) => boolean = () => true) {
  const drops: Array<{ clientId: string; reason: string; messages: number }> = [];
  const refusals: string[] = [];
  const store = new SessionStore(
    new AsyncMemory(),
    { ...DEFAULT_BOUNDS, ...bounds },
    {
      ownerOf: (clientId) => clientId.split('-')[0],
      isGranted: (_client, topic) => granted(topic),
      onDrop: (clientId, reason, messages) => drops.push({ clientId, reason, messages }),
      onQos2Refused: (_clientId, reason) => refusals.push(reason),
    },
  );
  return { store, drops, refusals };
}

describe('session store: the aedes-persistence contract', () => {
  abstractPersistence({ test, persistence: () => storeWith().store, testAsync: true });
});

let counter = 0;
const message = (payload: string, topic = 'stock/SKU-1'): StoredPacket => ({
  cmd: 'publish',
  topic,
  payload: Buffer.from(payload),
  qos: 1,
  retain: false,
  dup: false,
  brokerId: 'b1',
  brokerCounter: ++counter,
});
async function queued(store: SessionStore, clientId: string): Promise<string[]> {
  const out: string[] = [];
  for await (const p of store.outgoingStream({ id: clientId })) out.push(String((p as StoredPacket).payload));
  return out;
}

describe('session store: bounded queues', () => {
  test('given a session at its message bound, when more arrive, then the oldest are dropped and counted', async () => {
    const { store, drops } = storeWith({ queuedPerSession: 3 });
    for (const p of ['m1', 'm2', 'm3', 'm4', 'm5'])
      await store.outgoingEnqueueCombi([{ clientId: 'disp-a' }, { clientId: 'disp-b' }], message(p));
    assert.deepEqual(await queued(store, 'disp-a'), ['m3', 'm4', 'm5']);
    assert.deepEqual(await queued(store, 'disp-b'), ['m3', 'm4', 'm5']);
    assert.equal(
      drops.filter((x) => x.reason === 'session_messages').reduce((n, x) => n + x.messages, 0),
      4,
    );
    assert.equal(store.messages, 6);
  });

  test('given a byte bound per session, the oldest go until the new one fits; one larger than the bound is dropped alone', async () => {
    const { store, drops } = storeWith({ queuedBytesPerSession: 3 * (200 + 11 + 100) });
    const big = 'x'.repeat(100);
    for (let i = 0; i < 5; i++) await store.outgoingEnqueue({ clientId: 'disp-a' }, message(`${i}${big.slice(1)}`));
    assert.equal((await queued(store, 'disp-a')).length, 3);
    assert.equal(drops.at(-1)?.reason, 'session_bytes');
    await store.outgoingEnqueue({ clientId: 'disp-a' }, message('y'.repeat(2_000)));
    assert.equal((await queued(store, 'disp-a')).length, 3, 'the queue is untouched');
    assert.deepEqual(drops.at(-1), { clientId: 'disp-a', reason: 'session_bytes', messages: 1 });
  });

  test('given the broker-wide byte bound, a session drops its own oldest, and a session with none queued gets nothing', async () => {
    const size = 200 + 11 + 10; // overhead + topic + payload
    const { store, drops } = storeWith({ brokerBytes: 4 * size, queuedBytesPerSession: 10 * size });
    for (let i = 0; i < 4; i++) await store.outgoingEnqueue({ clientId: 'disp-a' }, message(`a${i}`.padEnd(10, '.')));
    await store.outgoingEnqueue({ clientId: 'disp-a' }, message('a4'.padEnd(10, '.')));
    assert.deepEqual(
      (await queued(store, 'disp-a')).map((p) => p.slice(0, 2)),
      ['a1', 'a2', 'a3', 'a4'],
    );
    await store.outgoingEnqueue({ clientId: 'disp-b' }, message('b0'.padEnd(10, '.')));
    assert.deepEqual(await queued(store, 'disp-b'), []);
    assert.deepEqual(
      drops.slice(-2).map((x) => x.reason),
      ['broker_bytes', 'broker_bytes'],
    );
    assert.ok(store.bytes <= 4 * size);
  });

  test('acknowledged messages leave the count; a message dropped before its delivery is still updated without an error', async () => {
    const { store } = storeWith({ queuedPerSession: 2 });
    const a = message('a');
    await store.outgoingEnqueue({ clientId: 'disp-a' }, a);
    await store.outgoingUpdate({ id: 'disp-a' }, { ...a, messageId: 7 });
    assert.equal((await store.outgoingClearMessageId({ id: 'disp-a' }, { messageId: 7 }))?.payload?.toString(), 'a');
    assert.equal(store.messages, 0);
    assert.equal(store.bytes, 0);
    const b = message('b');
    await store.outgoingEnqueue({ clientId: 'disp-a' }, b);
    for (const p of ['c', 'd']) await store.outgoingEnqueue({ clientId: 'disp-a' }, message(p));
    await store.outgoingUpdate({ id: 'disp-a' }, { ...b, messageId: 8 }); // b was dropped: aedes delivers it all the same
    assert.deepEqual(await queued(store, 'disp-a'), ['c', 'd']);
  });

  test('ending a session drops its queue (counted) and forgets its subscriptions', async () => {
    const { store, drops } = storeWith();
    await store.addSubscriptions({ id: 'disp-a' }, [{ topic: 'stock/#', qos: 1 }]);
    await store.outgoingEnqueue({ clientId: 'disp-a' }, message('m'));
    await store.endSession('disp-a');
    assert.deepEqual(await store.subscriptionsByClient({ id: 'disp-a' }), []);
    assert.deepEqual(await queued(store, 'disp-a'), []);
    assert.deepEqual(drops, [{ clientId: 'disp-a', reason: 'session_ended', messages: 1 }]);
    assert.equal(store.bytes, 0);
  });
});

describe('session store: subscriptions and QoS 2', () => {
  test('only filters granted to the client are stored: a refused filter in the same SUBSCRIBE never matches', async () => {
    const { store } = storeWith({}, (topic) => topic !== '#');
    await store.addSubscriptions({ id: 'scan-1' }, [
      { topic: 'stock/#', qos: 1 },
      { topic: '#', qos: 1 },
    ]);
    assert.deepEqual(
      (await store.subscriptionsByClient({ id: 'scan-1' })).map((s) => s.topic),
      ['stock/#'],
    );
    assert.deepEqual(await store.subscriptionsByTopic('wh/W1/dev/x/event'), []);
  });

  test('QoS 2 publishes awaiting PUBREL are bounded per device across its client ids; PUBREL and a clean session free them', async () => {
    const { store, refusals } = storeWith({ qos2PerDevice: 3 });
    const p = (id: number): StoredPacket => ({ ...message('x'.repeat(1000)), qos: 2, messageId: id });
    await store.incomingStorePacket({ id: 'scan-a' }, p(1));
    await store.incomingStorePacket({ id: 'scan-b' }, p(1));
    await store.incomingStorePacket({ id: 'scan-b' }, p(1)); // the same message again: not a second one
    await store.incomingStorePacket({ id: 'scan' }, p(2));
    assert.equal(store.qos2Pending('scan'), 3);
    await assert.rejects(store.incomingStorePacket({ id: 'scan-c' }, p(9)), {
      name: 'Qos2Refused',
      reason: 'qos2_inflight',
    });
    assert.equal(store.qos2Pending('other'), 0);
    await store.incomingStorePacket({ id: 'other' }, p(9));
    await store.incomingDelPacket({ id: 'scan-a' }, p(1));
    await store.incomingStorePacket({ id: 'scan-c' }, p(9));
    await store.cleanIncoming({ id: 'scan-b' });
    assert.equal(store.qos2Pending('scan'), 2);
    assert.deepEqual(refusals, ['qos2_inflight']);
  });

  test('QoS 2 publishes count in the broker-wide bytes: past them one is refused', async () => {
    const { store, refusals } = storeWith({ brokerBytes: 3_000, queuedBytesPerSession: 1_024 });
    const p = (id: number): StoredPacket => ({ ...message('x'.repeat(1000)), qos: 2, messageId: id });
    await store.incomingStorePacket({ id: 'a' }, p(1));
    await store.incomingStorePacket({ id: 'b' }, p(1));
    await assert.rejects(store.incomingStorePacket({ id: 'c' }, p(1)), { reason: 'broker_bytes' });
    assert.deepEqual(refusals, ['broker_bytes']);
  });
});
