import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import type pg from 'pg';
import pino from 'pino';
import type { Edge } from '../../gateway/edge.js';
import { Central } from '../../processors/central.js';
import { topics, type Ack, type BatchAckMessage } from '../../protocol/index.js';
import { until } from '../helpers/broker.js';
import { createTestDatabase, testPool, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { testEdge } from '../helpers/edge.js';
import { Collector, connect } from '../helpers/mqtt.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

/**
 * The batched link end to end, in process: devices → edge → batches → central → one batch-ack → per-device acks on the
 * edge. Exactly once with duplicates and a poison event, and a batch whose batch-ack is lost: the link drops while
 * central holds the batch's commit (a row lock of the test's), so the batch commits and its batch-ack goes to a closed
 * connection; the edge sends it again, central answers duplicate, and the stock counts each event once.
 */
const WH = 'WBL';
const GW = { id: 'gw-bl', password: 'pw-gw-bl' };
const SCANNERS = ['sc-0', 'sc-1', 'sc-2', 'sc-3'];
const silent = pino({ level: process.env.TEST_LOG ?? 'silent' });

describe('the batched link, edge to central', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  let central: Central;
  let edge: Edge;
  let proxy: TcpProxy;
  let edgeHttp: string;
  let edgeMqtt: string;
  let monitor: MqttClient; // a processor credential at central: every batch-ack central publishes
  let seenAtCentral: Collector<BatchAckMessage>;
  const clients: MqttClient[] = [];

  const edgeMetric = async (name: string, labels = ''): Promise<number> => {
    const text = await (await fetch(`${edgeHttp}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
    return line === undefined ? NaN : Number(line.split(' ').at(-1));
  };
  const onHand = async (sku: string): Promise<number | null> => {
    const { rows } = await pool.query<{ on_hand: string }>('SELECT on_hand FROM stock WHERE wh = $1 AND sku = $2', [
      WH,
      sku,
    ]);
    return rows[0] ? Number(rows[0].on_hand) : null;
  };
  const scanner = async (id: string) => {
    const c = await connect(edgeMqtt, id, `pw-${id}`);
    clients.push(c);
    const acks = new Collector<Ack>(c, topics.ack(WH, id));
    await c.subscribeAsync(topics.ack(WH, id), { qos: 1 });
    return { client: c, acks };
  };
  const ev = (id: string, type: string, qty: number, sku: string) => JSON.stringify({ v: 1, id, type, sku, qty });

  before(async () => {
    db = await createTestDatabase('batchlink');
    pool = testPool(db.url);
    const d = await writeDevices([
      { id: GW.id, warehouse: WH, kind: 'gateway', password: GW.password },
      { id: 'mon-bl', warehouse: WH, kind: 'processor', password: 'pw-mon-bl' },
      ...SCANNERS.map((id) => ({ id, warehouse: WH, kind: 'scanner' as const, password: `pw-${id}` })),
    ]);
    central = new Central({
      databaseUrl: db.url,
      redisPrefix: 'x',
      dataDir: d.dir,
      devicesFile: d.file,
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: 0,
      httpPort: 0,
      batchMax: 500,
      batchWaitMs: 5,
      log: silent,
    });
    const centralPorts = await central.start();
    proxy = new TcpProxy(centralPorts.mqtt);
    const proxyPort = await proxy.start();
    monitor = await connect(`mqtt://127.0.0.1:${centralPorts.mqtt}`, 'mon-bl', 'pw-mon-bl');
    seenAtCentral = new Collector<BatchAckMessage>(monitor, topics.batchAck(WH, GW.id));
    await monitor.subscribeAsync(topics.batchAck(WH, GW.id), { qos: 1 });
    edge = testEdge(
      {
        wh: WH,
        devicesFile: d.file,
        dataDir: path.join(d.dir, 'edge'),
        centralUrl: `mqtt://127.0.0.1:${proxyPort}`,
        gateway: GW,
      },
      { forwardWindow: 1_000, resendAfterMs: 60_000 }, // no resend on silence here: the lost batch-ack is repaired by the reconnect
    );
    const ports = await edge.start();
    edgeHttp = `http://127.0.0.1:${ports.http}`;
    edgeMqtt = `mqtt://127.0.0.1:${ports.mqtt}`;
    await until(async () => (await edgeMetric('stockwire_edge_link_batching')) === 1, "central's hello at the edge");
  });
  after(async () => {
    for (const c of clients) await c.endAsync(true);
    await monitor?.endAsync(true);
    await edge?.stop();
    await proxy?.stop();
    await central?.stop();
    await pool?.end();
    await db?.drop();
  });

  it('devices publishing at once, with repeats and a poison event, are applied exactly once through batches; each device gets its acks', {
    timeout: 60_000,
  }, async () => {
    const PER_DEVICE = 60;
    const devices = await Promise.all(SCANNERS.map(scanner));
    const batchesBefore = await edgeMetric('stockwire_edge_batches_sent_total', 'attempt="first"');
    await Promise.all(
      devices.map(async ({ client }, d) => {
        for (let i = 0; i < PER_DEVICE; i++) {
          const payload = ev(`x${d}-${i}`, 'received', i + 1, 'SKU-X');
          await client.publishAsync(topics.event(WH, SCANNERS[d] as string), payload, { qos: 1 });
          // every tenth event is published again by its device: a duplicate
          if (i % 10 === 0) await client.publishAsync(topics.event(WH, SCANNERS[d] as string), payload, { qos: 1 });
        }
      }),
    );
    let expected = SCANNERS.length * ((PER_DEVICE * (PER_DEVICE + 1)) / 2);
    // A poison event among the others of one device: rejected alone.
    const poison = JSON.stringify({ v: 1, id: 'poison-1', type: 'received', sku: 'SKU-X', qty: 0 });
    const [first] = devices as [(typeof devices)[number]];
    await first.client.publishAsync(topics.event(WH, 'sc-0'), poison, { qos: 1 });
    await first.client.publishAsync(topics.event(WH, 'sc-0'), ev('after-poison', 'received', 1000, 'SKU-X'), {
      qos: 1,
    });
    expected += 1000;

    const perDevice = PER_DEVICE + PER_DEVICE / 10;
    for (const [d, { acks }] of devices.entries())
      await acks.waitFor(
        () => acks.messages.length >= perDevice + (d === 0 ? 2 : 0),
        30_000,
        `the acks of ${SCANNERS[d]}`,
      );
    assert.equal(await onHand('SKU-X'), expected);
    for (const [d, { acks }] of devices.entries()) {
      const byId = new Map<string | null, string[]>();
      for (const m of acks.messages) byId.set(m.payload.id, [...(byId.get(m.payload.id) ?? []), m.payload.status]);
      for (let i = 0; i < PER_DEVICE; i++)
        assert.deepEqual(
          byId.get(`x${d}-${i}`),
          i % 10 === 0 ? ['applied', 'duplicate'] : ['applied'],
          `acks of x${d}-${i}`,
        );
      if (d === 0) {
        assert.deepEqual(byId.get('poison-1'), ['rejected']);
        assert.equal(acks.messages.find((m) => m.payload.id === 'poison-1')?.payload.error?.code, 'schema_violation');
        assert.deepEqual(byId.get('after-poison'), ['applied']);
      }
    }
    const { rows } = await pool.query("SELECT 1 FROM dead_letters WHERE event_id = 'poison-1'");
    assert.equal(rows.length, 1, 'the poison event is a dead letter');
    assert.ok(
      (await edgeMetric('stockwire_edge_batches_sent_total', 'attempt="first"')) > batchesBefore,
      'the events went in batches',
    );
    await until(async () => (await edgeMetric('stockwire_edge_backlog_events')) === 0, 'an empty outbox');
  });

  it('a batch whose batch-ack is lost (the link drops while it commits) is sent again: duplicates, counted once', {
    timeout: 60_000,
  }, async () => {
    const { client, acks } = await scanner('sc-3');
    // The row exists, so the test can hold its lock: central's batch waits behind it, holding its PUBACK.
    await client.publishAsync(topics.event(WH, 'sc-3'), ev('lost-0', 'received', 1, 'SKU-LOST'), { qos: 1 });
    await acks.waitFor(() => acks.messages.some((m) => m.payload.id === 'lost-0'), 10_000, 'the first ack');
    const lock = await pool.connect();
    let locked = false;
    try {
      await lock.query('BEGIN');
      locked = true;
      await lock.query("SELECT 1 FROM stock WHERE wh = $1 AND sku = 'SKU-LOST' FOR UPDATE", [WH]);
      // One event, so one batch: central reads nothing more of the edge's connection while that batch waits.
      const ids = ['lost-1'];
      await client.publishAsync(topics.event(WH, 'sc-3'), ev('lost-1', 'received', 10, 'SKU-LOST'), { qos: 1 });
      await until(
        async () =>
          (
            await pool.query(
              "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%stockwire_apply_batch%'",
            )
          ).rows.length > 0,
        "central's batch waiting for the row",
      );
      const upBefore = await edgeMetric('stockwire_edge_link_changes_total', 'state="up"');
      proxy.cut({ refuse: true });
      await until(async () => (await edgeMetric('stockwire_edge_link_up')) === 0, 'the edge offline');
      await lock.query('COMMIT');
      locked = false;
      // Central commits and publishes the batch-ack to a connection that is gone.
      await seenAtCentral.waitFor(
        () =>
          seenAtCentral.messages.some(
            (m) => 'acks' in m.payload && m.payload.acks.some((a) => a.id === 'lost-1' && a.status === 'applied'),
          ),
        10_000,
        'the first batch-ack, at central',
      );
      assert.equal(await onHand('SKU-LOST'), 11);
      assert.ok(!acks.messages.some((m) => m.payload.id === 'lost-1'), 'the device has no ack yet');
      proxy.restore();
      await until(
        async () => (await edgeMetric('stockwire_edge_link_changes_total', 'state="up"')) > upBefore,
        'the edge back online',
      );
      await acks.waitFor(() => ids.every((id) => acks.messages.some((m) => m.payload.id === id)), 20_000, 'the acks');
      for (const id of ids)
        assert.deepEqual(
          acks.messages.filter((m) => m.payload.id === id).map((m) => m.payload.status),
          ['duplicate'],
          `${id}: the original outcome, as a duplicate`,
        );
      // At central: each event applied once in the batch whose batch-ack was lost, then a duplicate in the one sent again.
      const acksAtCentral = () =>
        seenAtCentral.messages
          .flatMap((m) => ('acks' in m.payload ? m.payload.acks : []))
          .filter((a) => a.id === 'lost-1');
      await seenAtCentral.waitFor(() => acksAtCentral().length >= 2, 10_000, 'the second batch-ack, at central');
      const said = seenAtCentral.messages
        .flatMap((m) => ('acks' in m.payload ? m.payload.acks : []))
        .filter((a) => ids.includes(a.id ?? ''));
      for (const id of ids)
        assert.deepEqual(
          said.filter((a) => a.id === id).map((a) => a.status),
          ['applied', 'duplicate'],
          `${id} at central`,
        );
      assert.equal(await onHand('SKU-LOST'), 11, 'counted once');
      await until(async () => (await edgeMetric('stockwire_edge_backlog_events')) === 0, 'an empty outbox');
    } finally {
      if (locked) await lock.query('ROLLBACK').catch(() => {});
      lock.release();
      proxy.restore();
    }
  });
});
