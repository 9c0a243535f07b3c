import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import {
  encodeBatch,
  encodeBatchEvent,
  parseBatchAckMessage,
  topics,
  type BatchAckMessage,
  type BatchAckV1,
  type BatchRefused,
} from '../../protocol/index.js';
import { closeOf } from '../helpers/broker.js';
import { startCentralFixture, type CentralFixture } from '../helpers/central.js';
import { Collector, connect } from '../helpers/mqtt.js';

/**
 * Central's side of the batched link (CONTRACT 2, protocol/batch.ts): a gateway's batch is decided event by event like
 * single events, in one commit, held PUBACK, one batch-ack; poison events and unreadable batches lose nothing else; only
 * the gateway a batch topic names may publish it.
 */
const WH = 'WB1';
const GW = { id: 'gw-b', password: 'gw-b-secret' };
let fixture: CentralFixture;
let batchAcks: Collector<BatchAckMessage>;
let url: string;

const ev = (id: string, type: string, qty: number, sku = 'SKU-B') => JSON.stringify({ v: 1, id, type, sku, qty });
const batchOf = (name: string, events: [device: string, payload: string | Buffer][]) =>
  encodeBatch(
    name,
    events.map(([device, p]) => encodeBatchEvent(device, Buffer.isBuffer(p) ? p : Buffer.from(p))),
  );
const onHand = async (sku: string, wh = WH): Promise<number | null> => {
  const { rows } = await fixture.pool.query<{ on_hand: string }>(
    'SELECT on_hand FROM stock WHERE wh = $1 AND sku = $2',
    [wh, sku],
  );
  return rows[0] ? Number(rows[0].on_hand) : null;
};
const ackOfBatch = async (name: string): Promise<BatchAckV1 | BatchRefused> => {
  await batchAcks.waitFor(
    () => batchAcks.messages.some((m) => 'batch' in m.payload && m.payload.batch === name),
    10_000,
    `batch-ack of ${name}`,
  );
  return batchAcks.messages.find((m) => 'batch' in m.payload && m.payload.batch === name)?.payload as
    | BatchAckV1
    | BatchRefused;
};
const metric = async (line: RegExp): Promise<number> => {
  const text = await fixture.central.registry.metrics();
  const m = text.split('\n').find((l) => line.test(l));
  return m ? Number(m.split(' ').at(-1)) : 0;
};

describe('gateway batches at central', () => {
  before(async () => {
    fixture = await startCentralFixture({
      name: 'gwbatch',
      wh: WH,
      gateway: GW,
      devices: [
        { id: 'gw-b2', warehouse: WH, kind: 'gateway', password: 'gw-b2-secret' },
        { id: 'gw-x', warehouse: 'WX9', kind: 'gateway', password: 'gw-x-secret' },
        { id: 'proc-b', warehouse: WH, kind: 'processor', password: 'proc-b-secret' },
      ],
    });
    url = `mqtt://127.0.0.1:${fixture.ports.mqtt}`;
    batchAcks = new Collector<BatchAckMessage>(fixture.gateway, topics.batchAck(WH, GW.id));
    await fixture.gateway.subscribeAsync(topics.batchAck(WH, GW.id), { qos: 1 });
  });
  after(async () => {
    await fixture?.stop();
  });

  it('a gateway subscribing to its batch-ack topic hears that central takes batch version 1, and how large', async () => {
    await batchAcks.waitFor(() => batchAcks.messages.some((m) => 'hello' in m.payload), 10_000, 'the hello');
    const hello = batchAcks.messages.find((m) => 'hello' in m.payload)?.payload;
    assert.deepEqual(hello, { v: 1, hello: { versions: [1], maxEvents: 1000, maxBytes: 64 * 1024 } });
    assert.ok(parseBatchAckMessage(Buffer.from(JSON.stringify(hello))), 'it fits the documented schema');
  });

  it('a batch commits before its PUBACK, is answered by one batch-ack in order, with a poison event rejected alone', async () => {
    const poison = JSON.stringify({ v: 1, id: 'b1-3', type: 'received', sku: 'SKU-B', qty: -4 });
    await fixture.gateway.publishAsync(
      topics.batch(WH, GW.id),
      batchOf('b-1', [
        ['scan-1', ev('b1-1', 'received', 10)],
        ['scan-2', ev('b1-2', 'received', 5)],
        ['scan-1', poison],
        ['scan-2', ev('b1-4', 'shipped', 3)],
      ]),
      { qos: 1 },
    );
    // The PUBACK is held until the commit: once publishAsync resolves, the stock is there.
    assert.equal(await onHand('SKU-B'), 12);
    const ack = (await ackOfBatch('b-1')) as BatchAckV1;
    assert.deepEqual(
      ack.acks.map((a) => [a.id, a.status, a.error?.code ?? null]),
      [
        ['b1-1', 'applied', null],
        ['b1-2', 'applied', null],
        ['b1-3', 'rejected', 'schema_violation'],
        ['b1-4', 'applied', null],
      ],
    );
    assert.equal(ack.acks[3]?.stock?.onHand, 12);
    const { rows } = await fixture.pool.query<{ device: string; topic: string; source: string }>(
      "SELECT device, topic, source FROM dead_letters WHERE event_id = 'b1-3'",
    );
    assert.deepEqual(rows, [{ device: 'scan-1', topic: `wh/${WH}/dev/scan-1/event`, source: GW.id }]);
    // No per-device acks for a batch's events: the edge fans the batch-ack out. A single event after it is acked
    // on its own topic, and its ack arrives after any the batch would have had on this connection.
    await fixture.gateway.publishAsync(topics.event(WH, 'scan-3'), ev('s-1', 'received', 1, 'SKU-B2'), { qos: 1 });
    await fixture.acks.waitFor(() => fixture.acks.messages.some((m) => m.payload.id === 's-1'), 10_000, 'ack of s-1');
    assert.deepEqual(
      fixture.acks.messages.map((m) => m.payload.id),
      ['s-1'],
    );
  });

  it('the same events again, split otherwise and repeated inside one batch, are all duplicates and count once', async () => {
    await fixture.gateway.publishAsync(
      topics.batch(WH, GW.id),
      batchOf('b-1-again', [
        ['scan-2', ev('b1-4', 'shipped', 3)],
        ['scan-1', ev('b1-1', 'received', 10)],
        ['scan-1', ev('b1-1', 'received', 10)],
      ]),
      { qos: 1 },
    );
    const ack = (await ackOfBatch('b-1-again')) as BatchAckV1;
    assert.deepEqual(
      ack.acks.map((a) => a.status),
      ['duplicate', 'duplicate', 'duplicate'],
    );
    assert.equal(await onHand('SKU-B'), 12);
  });

  it('a payload that is not UTF-8 travels as base64 and is kept byte for byte as a dead letter', async () => {
    const raw = Buffer.from([0x7b, 0xff, 0xfe, 0x7d]);
    await fixture.gateway.publishAsync(topics.batch(WH, GW.id), batchOf('b-raw', [['scan-1', raw]]), { qos: 1 });
    const ack = (await ackOfBatch('b-raw')) as BatchAckV1;
    assert.equal(ack.acks[0]?.status, 'rejected');
    const { rows } = await fixture.pool.query<{ raw: Buffer }>(
      "SELECT raw FROM dead_letters WHERE device = 'scan-1' AND code = 'invalid_json' ORDER BY seq DESC LIMIT 1",
    );
    assert.deepEqual(rows[0]?.raw, raw);
  });

  for (const [what, payload, code, batch] of [
    ['not JSON', Buffer.from('{"v":1,"batch":"b-x",'), 'invalid_json', null],
    ['of an unknown version', Buffer.from('{"v":2,"batch":"b-v2","events":[]}'), 'unsupported_version', 'b-v2'],
    ['without events', Buffer.from('{"v":1,"batch":"b-empty","events":[]}'), 'schema_violation', 'b-empty'],
    [
      'with an event of a bad device id',
      Buffer.from('{"v":1,"batch":"b-dev","events":[{"device":"a/b","payload":"{}"}]}'),
      'schema_violation',
      'b-dev',
    ],
  ] as const) {
    it(`a batch ${what} is refused with its reason, kept as a dead letter, PUBACKed; the link and the next batch go on`, async () => {
      const before = await metric(/^stockwire_gateway_batches_total\{outcome="refused"\}/);
      await fixture.gateway.publishAsync(topics.batch(WH, GW.id), payload, { qos: 1 });
      await batchAcks.waitFor(
        () =>
          batchAcks.messages.some(
            (m) => 'error' in m.payload && m.payload.batch === batch && m.payload.error.code === code,
          ),
        10_000,
        `the refusal (${code})`,
      );
      const { rows } = await fixture.pool.query<{ device: string; topic: string; raw: Buffer }>(
        'SELECT device, topic, raw FROM dead_letters WHERE code = $1 AND topic = $2 ORDER BY seq DESC LIMIT 1',
        [code, topics.batch(WH, GW.id)],
      );
      assert.equal(rows[0]?.device, GW.id);
      assert.deepEqual(rows[0]?.raw, payload);
      assert.equal(await metric(/^stockwire_gateway_batches_total\{outcome="refused"\}/), before + 1);
      assert.ok(fixture.gateway.connected, 'the gateway stays connected');
      const name = `after-${code}-${batch ?? 'none'}`;
      await fixture.gateway.publishAsync(
        topics.batch(WH, GW.id),
        batchOf(name, [['scan-9', ev(`${name}-e`, 'received', 1, 'SKU-AFTER')]]),
        { qos: 1 },
      );
      assert.equal(((await ackOfBatch(name)) as BatchAckV1).acks[0]?.status, 'applied');
    });
  }

  for (const [who, id, password, topic] of [
    ['another gateway of the warehouse', 'gw-b2', 'gw-b2-secret', topics.batch(WH, GW.id)],
    ["another warehouse's gateway", 'gw-x', 'gw-x-secret', topics.batch(WH, GW.id)],
    ["another warehouse's gateway, on its own gateway id", 'gw-x', 'gw-x-secret', topics.batch(WH, 'gw-x')],
    [
      'a processor credential (the ACL lets it publish under wh/; central does not)',
      'proc-b',
      'proc-b-secret',
      topics.batch(WH, GW.id),
    ],
  ] as const) {
    it(`a batch from ${who} is refused and changes nothing`, async () => {
      const sku = `SKU-ACL-${id}`;
      const intruder: MqttClient = await connect(url, id, password, { clientId: id });
      const closed = closeOf(intruder);
      intruder.publish(topic, batchOf(`acl-${id}`, [['scan-1', ev(`acl-${id}-${topic.length}`, 'received', 7, sku)]]), {
        qos: 1,
      });
      await closed; // a refused QoS 1 publish closes the connection
      intruder.end(true);
      // A batch of the gateway after it is decided; the intruder's, had it been taken, would have come first.
      await fixture.gateway.publishAsync(
        topics.batch(WH, GW.id),
        batchOf(`probe-${id}-${topic.length}`, [['scan-1', ev(`probe-${id}-${topic.length}`, 'received', 1, 'SKU-P')]]),
        { qos: 1 },
      );
      assert.equal(await onHand(sku), null);
      assert.equal(await onHand(sku, 'WX9'), null);
    });
  }
});
