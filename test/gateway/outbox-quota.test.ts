import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { MqttClient } from 'mqtt';
import pino from 'pino';
import type pg from 'pg';
import { Edge } from '../../gateway/edge.js';
import { SqliteOutbox } from '../../gateway/outbox/index.js';
import { Central } from '../../processors/central.js';
import type { Ack, Alert } from '../../protocol/index.js';
import { createTestDatabase, testPool, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { Collector, connect } from '../helpers/mqtt.js';
import { freePort } from '../helpers/process.js';

// Issue 15, item 6: during an outage the outbox is all a warehouse has. Payloads that can never be valid (over
// 8 KiB) must not fill it, and no single device may take all of it.
const WH = 'OQ1';
const silent = pino({ level: process.env.TEST_LOG ?? 'silent' });
const KiB = 1024;
const JUNK = 10; // payloads over 8 KiB

/** A metric's value as the edge's /metrics serves it (a scrape refreshes the backlog gauges); NaN when absent. */
async function metric(http: number, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${http}/metrics`)).text();
  const line = text
    .split('\n')
    .find((l) => l.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)));
  return line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** Publishes at QoS 1: 'puback', or 'refused' when the edge drops the connection instead (MQTT 3.1.1 has no negative PUBACK). */
function publish(client: MqttClient, topic: string, payload: string): Promise<'puback' | 'refused'> {
  return new Promise((resolve) => {
    const refused = () => resolve('refused');
    client.once('close', refused);
    client.publish(topic, payload, { qos: 1 }, (err) => {
      client.off('close', refused);
      resolve(err ? 'refused' : 'puback');
    });
  });
}

const event = (id: string, padBytes = 0) =>
  JSON.stringify({
    v: 1,
    id,
    type: 'received',
    sku: 'SKU-Q',
    qty: 1,
    ...(padBytes > 0 && { pad: 'p'.repeat(padBytes) }),
  });

describe('the outbox during an outage, against junk and a greedy device (issue 15, item 6)', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  let files: { dir: string; file: string };
  let dataDir: string;
  let centralPort: number;
  let central: Central | undefined;
  let edge: Edge;
  let edgeUrl: string;
  let http: number;
  const clients: MqttClient[] = [];
  const device = async (id: string) => {
    const c = await connect(edgeUrl, id, `pw-${id}`);
    clients.push(c);
    return c;
  };

  before(async () => {
    db = await createTestDatabase('outbox_quota');
    pool = testPool(db.url);
    files = await writeDevices([
      { id: 'gw-q', warehouse: WH, kind: 'gateway', password: 'pw-gw-q' },
      ...['junk', 'calm', 'noisy'].map((id) => ({ id, warehouse: WH, kind: 'scanner' as const, password: `pw-${id}` })),
      { id: 'disp-q', warehouse: WH, kind: 'display', password: 'pw-disp-q' },
    ]);
    dataDir = path.join(files.dir, 'edge');
    centralPort = await freePort(); // nothing listens there yet: central is unreachable
    edge = new Edge({
      wh: WH,
      devicesFile: files.file,
      dataDir,
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: 0,
      httpPort: 0,
      centralUrl: `mqtt://127.0.0.1:${centralPort}`,
      centralUsername: 'gw-q',
      centralPassword: 'pw-gw-q',
      outboxMaxBytes: 64 * KiB,
      outboxDeviceShare: { fraction: 0.5 },
      forwardWindow: 100,
      resendAfterMs: 2_000,
      keepalive: 5,
      log: silent,
    });
    const ports = await edge.start();
    edgeUrl = `mqtt://127.0.0.1:${ports.mqtt}`;
    http = ports.http;
  });
  after(async () => {
    for (const c of clients) await c.endAsync(true);
    await edge?.stop();
    await central?.stop();
    await pool?.end();
    await db?.drop();
  });

  it(`${JUNK} payloads of 60 KB take no room in a 64 KiB outbox: each is a dead letter answered rejected by the edge at once, and valid events still fit`, {
    timeout: 120_000,
  }, async () => {
    const junk = await device('junk');
    const acks = new Collector<Ack>(junk, `wh/${WH}/dev/junk/ack`);
    await junk.subscribeAsync(`wh/${WH}/dev/junk/ack`, { qos: 1 });
    for (let i = 0; i < JUNK; i++)
      assert.equal(
        await publish(junk, `wh/${WH}/dev/junk/event`, event(`junk-${i}`, 60_000)),
        'puback',
        `junk payload ${i} answered`,
      );
    await acks.waitFor(
      () => acks.messages.length >= JUNK,
      60_000,
      'a rejected ack per junk payload, from the edge while central is away',
    );
    for (const { payload } of acks.messages) {
      assert.equal(payload.status, 'rejected');
      assert.equal(payload.id, null, 'nothing beyond 8 KiB is read, its id included (as at central)');
      assert.equal(payload.error?.code, 'payload_too_large');
      assert.match(payload.error?.message ?? '', /payload is 600\d\d bytes, limit 8192/);
    }
    assert.equal(await metric(http, 'stockwire_edge_dead_letters_total', { code: 'payload_too_large' }), JUNK);
    assert.equal(await metric(http, 'stockwire_edge_backlog_bytes'), 0, 'no junk in the outbox');
    const calm = await device('calm');
    assert.equal(await publish(calm, `wh/${WH}/dev/calm/event`, event('calm-0')), 'puback');
    assert.equal(await metric(http, 'stockwire_edge_backlog_events'), 1);
  });

  it('a device holds at most its share (32 KiB): its next events are refused with a device-share alert, while another device is still taken', {
    timeout: 120_000,
  }, async () => {
    const display = await connect(edgeUrl, 'disp-q', 'pw-disp-q');
    clients.push(display);
    const alerts = new Collector<Alert>(display, `alerts/${WH}/#`);
    await display.subscribeAsync(`alerts/${WH}/#`, { qos: 1 });
    const noisy = await device('noisy');
    noisy.on('error', () => {}); // the edge drops its connection when it refuses a publish
    // 7 KiB each: four fit in its 32 KiB, all six would fit in the 64 KiB outbox.
    for (let i = 0; i < 6; i++)
      void noisy.publishAsync(`wh/${WH}/dev/noisy/event`, event(`noisy-${i}`, 7 * KiB), { qos: 1 }).catch(() => {});
    await alerts.waitFor(
      () => alerts.messages.some((m) => m.topic === `alerts/${WH}/device-share`),
      60_000,
      'the device-share alert',
    );
    const alert = alerts.last(`alerts/${WH}/device-share`);
    assert.match(alert?.message ?? '', /device noisy holds its share of the outbox/);
    assert.equal((await metric(http, 'stockwire_edge_events_refused_total', { reason: 'device_share' })) >= 1, true);
    assert.equal(await metric(http, 'stockwire_edge_events_refused_total', { reason: 'outbox_full' }), 0);
    assert.equal(await metric(http, 'stockwire_edge_outbox_device_max_bytes'), 32 * KiB);
    // The gauge counts committed bytes and is refreshed after each commit; the refusal counted the accepted ones
    // still in their group commit too, so the gauge may trail the alert for a moment: wait for it, bounded.
    let held = await metric(http, 'stockwire_edge_backlog_largest_device_bytes');
    for (let i = 0; i < 300 && held <= 24 * KiB; i++) {
      await new Promise((r) => setTimeout(r, 100));
      held = await metric(http, 'stockwire_edge_backlog_largest_device_bytes');
    }
    assert.ok(held > 24 * KiB && held <= 32 * KiB, `noisy holds ${held} bytes`);
    const calm = clients[1] as MqttClient;
    for (let i = 1; i <= 3; i++)
      assert.equal(
        await publish(calm, `wh/${WH}/dev/calm/event`, event(`calm-${i}`, 7 * KiB)),
        'puback',
        `calm-${i} taken`,
      );
    assert.equal(
      alerts.messages.filter((m) => m.topic === `alerts/${WH}/outbox-full`).length,
      0,
      'the outbox itself never filled',
    );
  });

  it("central back: each junk payload had exactly one answer (the edge's), central never saw it, and the valid events are applied", {
    timeout: 180_000,
  }, async () => {
    const [junk, calm] = clients as [MqttClient, MqttClient];
    const calmAcks = new Collector<Ack>(calm, `wh/${WH}/dev/calm/ack`);
    await calm.subscribeAsync(`wh/${WH}/dev/calm/ack`, { qos: 1 });
    const junkAcks = new Collector<Ack>(junk, `wh/${WH}/dev/junk/ack`);
    central = new Central({
      databaseUrl: db.url,
      redisPrefix: 'q',
      dataDir: files.dir,
      devicesFile: files.file,
      host: '127.0.0.1',
      mqttPort: centralPort,
      wsPort: 0,
      httpPort: 0,
      batchMax: 500,
      batchWaitMs: 5,
      log: silent,
    });
    await central.start();
    await junk.publishAsync(`wh/${WH}/dev/junk/event`, event('junk-valid'), { qos: 1 });
    await junkAcks.waitFor(
      () => junkAcks.messages.some((m) => m.payload.id === 'junk-valid'),
      60_000,
      'the ack of a valid event after the junk',
    );
    await calmAcks.waitFor(
      () =>
        ['calm-0', 'calm-1', 'calm-2', 'calm-3'].every((id) =>
          calmAcks.messages.some((m) => m.payload.id === id && m.payload.status === 'applied'),
        ),
      60_000,
      "calm's acks",
    );
    // Every event in the outbox confirmed by central's ack, which the edge hands on as it confirms: had any junk been
    // forwarded, its answer from central would be in by now.
    for (let i = 0; i < 600 && (await metric(http, 'stockwire_edge_backlog_events')) !== 0; i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.equal(await metric(http, 'stockwire_edge_backlog_events'), 0, 'central confirmed the whole outbox');
    assert.deepEqual(
      junkAcks.messages.map((m) => m.payload.status),
      ['applied'],
      'no second answer to any junk payload',
    );
    const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM dead_letters WHERE wh = $1', [WH]);
    assert.equal(rows[0]?.n, 0, 'central never received the junk');
  });

  it('the dead letters are on disk after the edge stops: the first 8 KiB as sent, its size, the reason and the sender', async () => {
    await edge.stop();
    const file = new Database(path.join(dataDir, `outbox-${WH}.db`), { readonly: true });
    try {
      const rows = file
        .prepare('SELECT device, topic, code, reason, source, bytes, raw FROM dead_letters ORDER BY id')
        .all() as {
        device: string;
        topic: string;
        code: string;
        reason: string;
        source: string;
        bytes: number;
        raw: Buffer;
      }[];
      assert.equal(rows.length, JUNK);
      rows.forEach((r, i) => {
        const sent = Buffer.from(event(`junk-${i}`, 60_000));
        assert.deepEqual(
          { device: r.device, topic: r.topic, code: r.code, source: r.source, bytes: r.bytes },
          {
            device: 'junk',
            topic: `wh/${WH}/dev/junk/event`,
            code: 'payload_too_large',
            source: 'junk',
            bytes: sent.length,
          },
        );
        assert.deepEqual(r.raw, sent.subarray(0, 8 * KiB));
        assert.match(r.reason, /limit 8192/);
      });
    } finally {
      file.close();
    }
  });
});

describe('a dead letter the outbox cannot write', () => {
  it('gets no PUBACK and no ack: the device keeps it and sends it again; counted as an outbox error', async () => {
    const wh = 'OQ2';
    const files = await writeDevices([{ id: 'junk2', warehouse: wh, kind: 'scanner', password: 'pw-junk2' }]);
    const dataDir = path.join(files.dir, 'edge');
    const outboxFile = path.join(dataDir, `outbox-${wh}.db`);
    await import('node:fs/promises').then((fs) => fs.mkdir(dataDir, { recursive: true }));
    await (await SqliteOutbox.open({ path: outboxFile, maxBytes: 64 * KiB })).close();
    // A real write failure in the outbox's own transaction (no mocks): a trigger on its file.
    const raw = new Database(outboxFile);
    raw.exec(`CREATE TRIGGER refuse BEFORE INSERT ON dead_letters BEGIN SELECT RAISE(ABORT, 'injected failure'); END`);
    raw.close();
    const edge = new Edge({
      wh,
      devicesFile: files.file,
      dataDir,
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: 0,
      httpPort: 0,
      centralUrl: `mqtt://127.0.0.1:${await freePort()}`,
      outboxMaxBytes: 64 * KiB,
      forwardWindow: 100,
      resendAfterMs: 2_000,
      keepalive: 5,
      log: silent,
    });
    const ports = await edge.start();
    const junk = await connect(`mqtt://127.0.0.1:${ports.mqtt}`, 'junk2', 'pw-junk2');
    junk.on('error', () => {});
    try {
      const acks = new Collector<Ack>(junk, `wh/${wh}/dev/junk2/ack`);
      await junk.subscribeAsync(`wh/${wh}/dev/junk2/ack`, { qos: 1 });
      const closed = new Promise<void>((resolve) => junk.once('close', () => resolve()));
      let acknowledged = false;
      void junk.publishAsync(`wh/${wh}/dev/junk2/event`, event('junk2-0', 10_000), { qos: 1 }).then(
        () => (acknowledged = true),
        () => {},
      );
      await closed; // the edge refuses the publish and drops the connection: MQTT 3.1.1 has no negative PUBACK
      assert.equal(acknowledged, false, 'no PUBACK');
      assert.deepEqual(acks.messages, [], 'no rejected ack for a payload that was not kept');
      assert.equal(await metric(ports.http, 'stockwire_edge_events_refused_total', { reason: 'outbox_error' }), 1);
      assert.equal(await metric(ports.http, 'stockwire_edge_dead_letters_total', { code: 'payload_too_large' }), 0);
    } finally {
      await junk.endAsync(true);
      await edge.stop();
    }
  });
});
