import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import mqtt, { type MqttClient } from 'mqtt';
import type { Ack } from '../../protocol/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices, type TestDevice } from '../helpers/devices.js';
import { Collector, connect } from '../helpers/mqtt.js';
import { startStockwire, type Running } from '../helpers/process.js';

/**
 * One device floods its edge (`stockwire edge`, a real process, with a real `stockwire central`) as
 * fast as it can, one at QoS 1 and one at QoS 0, while five others publish normally. The others'
 * events all get PUBACKs and are applied at central; the flooders are throttled, then disconnected
 * and counted; whatever a flooder had acknowledged is applied too; the edge stays healthy.
 */
const RATE = 50; // publishes/s per device at this edge
const BURST = 20; // so a device is cut after 10 × 20 held back publishes
const NORMAL = 5;
const EACH = 30; // events per normal device, 10 a second
const FLOOD_LIMIT_MS = 60_000; // the QoS 0 flooder must be cut off within this

const wh = `WL${randomBytes(3).toString('hex')}`;
const password = (id: string) => `pw-${id}-flood`;
const event = (id: string, sku: string) => JSON.stringify({ v: 1, id, type: 'received', sku, qty: 1 });

async function metricSum(r: Running, name: string, label: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${r.ports.http}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) && l.includes(label))
    .reduce((sum, l) => sum + Number(l.split(' ').at(-1)), 0);
}

describe('a flooding device at an edge', () => {
  let db: TestDatabase;
  let dir: string;
  let central: Running;
  let edge: Running;
  const clients: MqttClient[] = [];

  before(async () => {
    db = await createTestDatabase('edge_flood');
    const devices: TestDevice[] = [
      ...Array.from({ length: NORMAL }, (_, i) => ({
        id: `n-${i}`,
        warehouse: wh,
        kind: 'scanner' as const,
        password: password(`n-${i}`),
      })),
      { id: 'flood-q1', warehouse: wh, kind: 'scanner', password: password('flood-q1') },
      { id: 'flood-q0', warehouse: wh, kind: 'shelf', password: password('flood-q0') },
      { id: 'late', warehouse: wh, kind: 'scanner', password: password('late') },
      { id: 'gw', warehouse: wh, kind: 'gateway', password: password('gw') },
    ];
    const files = await writeDevices(devices);
    dir = files.dir;
    const common = [
      '--ws-port',
      '0',
      '--http-port',
      '0',
      '--host',
      '127.0.0.1',
      '--devices-file',
      files.file,
      '--log-level',
      'warn',
    ];
    central = await startStockwire(['central', '--mqtt-port', '0', '--data-dir', files.dir, ...common], {
      DATABASE_URL: db.url,
    });
    edge = await startStockwire(
      [
        'edge',
        '--warehouse',
        wh,
        '--mqtt-port',
        '0',
        '--data-dir',
        path.join(files.dir, 'edge'),
        '--central-url',
        `mqtt://127.0.0.1:${central.ports.mqtt}`,
        '--central-username',
        'gw',
        '--central-password',
        password('gw'),
        '--device-publish-rate',
        String(RATE),
        '--device-publish-burst',
        String(BURST),
        ...common,
      ],
      { DATABASE_URL: db.url },
    );
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)));
    for (const r of [edge, central]) {
      r?.child.kill('SIGTERM');
      await r?.exited;
    }
    await db?.drop();
    await fs.rm(dir, { recursive: true, force: true });
  });

  const edgeUrl = () => `mqtt://127.0.0.1:${edge.ports.mqtt}`;
  async function device(id: string): Promise<MqttClient> {
    const c = await connect(edgeUrl(), id, password(id), { clientId: id });
    c.on('error', () => undefined);
    clients.push(c);
    return c;
  }
  const stockAtCentral = async (sku: string): Promise<number> => {
    const res = await fetch(`http://127.0.0.1:${central.ports.http}/v1/warehouses/${wh}/stock/${sku}`);
    return res.status === 200 ? ((await res.json()) as { onHand: number }).onHand : 0;
  };
  async function untilStock(sku: string, n: number): Promise<void> {
    for (let i = 0; i < 300 && (await stockAtCentral(sku)) !== n; i++) await sleep(100);
    assert.equal(await stockAtCentral(sku), n, `stock of ${sku} at central`);
  }

  /** A device publishing normally: 10 events a second, each awaited; resolves with its commit acks. */
  async function normal(id: string): Promise<Ack[]> {
    const c = await device(id);
    const acks = new Collector<Ack>(c, `wh/${wh}/dev/${id}/ack`);
    await c.subscribeAsync(`wh/${wh}/dev/${id}/ack`, { qos: 1 });
    for (let i = 0; i < EACH; i++) {
      await c.publishAsync(`wh/${wh}/dev/${id}/event`, event(`${id}-${i}`, 'SKU-NORMAL'), { qos: 1 });
      await sleep(100);
    }
    await acks.waitFor(() => acks.messages.length >= EACH, 30_000, `${id}: every commit ack`);
    return acks.messages.map((m) => m.payload);
  }

  /** QoS 1 as fast as MQTT.js can write; resolves with how many got a PUBACK once the edge cuts it off. */
  async function floodQos1(): Promise<number> {
    const c = await device('flood-q1');
    let acked = 0;
    const closed = new Promise<void>((resolve) => c.once('close', () => resolve()));
    for (let i = 0; i < 20_000; i++)
      c.publish(
        `wh/${wh}/dev/flood-q1/event`,
        event(`f1-${i}`, 'SKU-FLOOD'),
        { qos: 1 },
        (err) => void (err ? undefined : acked++),
      );
    await closed;
    return acked;
  }

  /** QoS 0 in batches of 500, each written before the next, until the edge cuts it off (or FLOOD_LIMIT_MS pass). */
  async function floodQos0(): Promise<void> {
    const c = await device('flood-q0');
    let open = true;
    const closed = new Promise<void>((resolve) =>
      c.once('close', () => {
        open = false;
        resolve();
      }),
    );
    // Bounded by time, not by a count: how many publishes the edge holds at once, and so how soon it cuts
    // the flooder off, depends on how much each read takes in (measured: after 1 to 111 batches of 500).
    const deadline = Date.now() + FLOOD_LIMIT_MS;
    for (let batch = 0; open && Date.now() < deadline; batch++) {
      for (let i = 0; i < 499; i++)
        c.publish(`wh/${wh}/dev/flood-q0/event`, event(`f0-${batch}-${i}`, 'SKU-FLOOD0'), { qos: 0 });
      // MQTT.js calls back once the socket drains: the next batch waits for the edge to read this one
      const written = new Promise<void>((resolve) =>
        c.publish(`wh/${wh}/dev/flood-q0/event`, event(`f0-${batch}-499`, 'SKU-FLOOD0'), { qos: 0 }, () => resolve()),
      );
      await Promise.race([written, closed]);
    }
    assert.equal(open, false, 'the QoS 0 flooder was disconnected');
  }

  it('the others are served and applied; the flooders are throttled, disconnected and counted; the edge stays healthy', {
    timeout: 180_000,
  }, async (t) => {
    const [flooded, , ...normals] = await Promise.all([
      floodQos1(),
      floodQos0(),
      ...Array.from({ length: NORMAL }, (_, i) => normal(`n-${i}`)),
    ]);

    for (const acks of normals) assert.deepEqual(new Set(acks.map((a) => a.status)), new Set(['applied']));
    await untilStock('SKU-NORMAL', NORMAL * EACH);
    // Everything the flooder was given a PUBACK for is on the edge's disk, hence applied: nothing acknowledged is lost.
    // (More may be applied: the cut can overtake the PUBACKs of its burst; the device would send those again.)
    for (let i = 0; i < 300 && (await stockAtCentral('SKU-FLOOD')) < Math.max(flooded, 1); i++) await sleep(100);
    assert.ok(
      (await stockAtCentral('SKU-FLOOD')) >= Math.max(flooded, 1),
      `stock ${await stockAtCentral('SKU-FLOOD')} covers the ${flooded} acknowledged`,
    );
    assert.ok((await stockAtCentral('SKU-FLOOD')) <= BURST + 10 * BURST, 'no more than it was let through');

    assert.equal(
      await metricSum(edge, 'stockwire_broker_publish_refusals_total', 'reason="rate_limited"'),
      2,
      'both flooders cut off once',
    );
    assert.ok(
      (await metricSum(edge, 'stockwire_broker_publishes_delayed_total', 'limit="rate"')) >= 2 * 10 * BURST,
      'their publishes were held back first',
    );

    t.diagnostic(
      `flooder QoS 1: ${flooded} PUBACKs, ${await stockAtCentral('SKU-FLOOD')} applied; QoS 0 flooder: ${await stockAtCentral('SKU-FLOOD0')} applied; ` +
        `held back: ${await metricSum(edge, 'stockwire_broker_publishes_delayed_total', 'limit="rate"')}, refused as closed: ${await metricSum(edge, 'stockwire_broker_publish_refusals_total', 'reason="closed"')}`,
    );
    assert.equal(edge.child.exitCode, null, 'the edge process is running');
    for (const p of ['/healthz', '/readyz'])
      assert.equal((await fetch(`http://127.0.0.1:${edge.ports.http}${p}`)).status, 200, p);
    const late = await device('late');
    await late.publishAsync(`wh/${wh}/dev/late/event`, event('late-1', 'SKU-LATE'), { qos: 1 });
    await untilStock('SKU-LATE', 1);
    // Throttled and cut off, not banned: a flooder may connect again.
    const again = await mqtt.connectAsync(edgeUrl(), {
      username: 'flood-q1',
      password: password('flood-q1'),
      clientId: 'flood-q1',
      reconnectPeriod: 0,
    });
    clients.push(again);
    assert.ok(again.connected);
  });
});
