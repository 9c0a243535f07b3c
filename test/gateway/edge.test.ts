import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { MqttClient } from 'mqtt';
import pino from 'pino';
import { Edge } from '../../gateway/edge.js';
import type { SqliteOutbox } from '../../gateway/outbox/index.js';
import { Central } from '../../processors/central.js';
import { createPool } from '../../processors/db/pool.js';
import type { Ack, GlobalStock, LinkStatus } from '../../protocol/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { Collector, connect } from '../helpers/mqtt.js';
import { freePort } from '../helpers/process.js';

const run = promisify(execFile);
const WH = 'WE1';
const silent = pino({ level: process.env.TEST_LOG ?? 'silent' });

describe('stockwire edge (in process, with central)', () => {
  let db: TestDatabase;
  let central: Central;
  let edge: Edge;
  let centralPorts: { mqtt: number; ws: number; http: number };
  let edgePorts: { mqtt: number; ws: number; http: number };
  let devicesFile: string;
  let dataDir: string;
  let scanner: MqttClient;
  let acks: Collector<Ack>;
  const centralMqtt = { port: 0 };

  const startCentral = async () => {
    central = new Central({
      databaseUrl: db.url,
      redisPrefix: 'x',
      dataDir,
      devicesFile,
      host: '127.0.0.1',
      mqttPort: centralMqtt.port,
      wsPort: 0,
      httpPort: 0,
      batchMax: 500,
      batchWaitMs: 5,
      log: silent,
    });
    centralPorts = await central.start();
  };
  // A device share of the whole outbox: one device fills it here (the share has its test in outbox-quota.test.ts).
  const makeEdge = (outboxMaxBytes = 64 * 1024 * 1024) =>
    new Edge({
      wh: WH,
      devicesFile,
      dataDir,
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: 0,
      httpPort: 0,
      centralUrl: `mqtt://127.0.0.1:${centralMqtt.port}`,
      centralUsername: 'gw-e',
      centralPassword: 'pw-gateway-e',
      outboxMaxBytes,
      outboxDeviceShare: { fraction: 1 },
      forwardWindow: 500,
      resendAfterMs: 2_000,
      keepalive: 5,
      log: silent,
    });
  const event = (id: string, type: string, qty: number, sku = 'SKU-E') => JSON.stringify({ v: 1, id, type, sku, qty });
  const stockAtCentral = async (sku: string) =>
    (await (await fetch(`http://127.0.0.1:${centralPorts.http}/v1/stock/${sku}`)).json()) as GlobalStock;

  before(async () => {
    db = await createTestDatabase('edge');
    const d = await writeDevices([
      { id: 'gw-e', warehouse: WH, kind: 'gateway', password: 'pw-gateway-e' },
      { id: 'scan-e', warehouse: WH, kind: 'scanner', password: 'pw-scanner-e' },
      { id: 'scan-x', warehouse: 'OTHER', kind: 'scanner', password: 'pw-scanner-x' },
      { id: 'disp-e', warehouse: WH, kind: 'display', password: 'pw-display-e' },
    ]);
    devicesFile = d.file;
    dataDir = path.join(d.dir, 'data');
    centralMqtt.port = await freePort();
    await startCentral();
    edge = makeEdge();
    edgePorts = await edge.start();
    scanner = await connect(`mqtt://127.0.0.1:${edgePorts.mqtt}`, 'scan-e', 'pw-scanner-e');
    acks = new Collector<Ack>(scanner, `wh/${WH}/dev/scan-e/ack`);
    await scanner.subscribeAsync(`wh/${WH}/dev/scan-e/ack`, { qos: 1 });
  });
  after(async () => {
    await scanner?.endAsync();
    await edge?.stop();
    await central?.stop();
    await db?.drop();
  });

  it('a scan at the edge is applied at central; the device gets the commit ack; a display at the edge sees retained stock', async () => {
    await scanner.publishAsync(`wh/${WH}/dev/scan-e/event`, event('e-1', 'received', 8), { qos: 1 });
    await acks.waitFor(() => acks.messages.some((m) => m.payload.id === 'e-1'));
    assert.deepEqual(acks.last(`wh/${WH}/dev/scan-e/ack`), {
      id: 'e-1',
      status: 'applied',
      stock: { onHand: 8, available: 8 },
    });
    assert.equal((await stockAtCentral('SKU-E')).onHand, 8);
    const display = await connect(`mqtt://127.0.0.1:${edgePorts.mqtt}`, 'disp-e', 'pw-display-e');
    const seen = new Collector<GlobalStock>(display, ['stock/#', `wh/${WH}/stock/#`]);
    await display.subscribeAsync(['stock/SKU-E', `wh/${WH}/stock/SKU-E`], { qos: 1 });
    await seen.waitFor(() => seen.messages.length >= 2);
    assert.ok(seen.messages.every((m) => m.retain && m.payload.onHand === 8));
    await display.endAsync();
  });

  it('an event without ts gets the edge receipt time, kept through a replay', async () => {
    const before = Date.now();
    await scanner.publishAsync(`wh/${WH}/dev/scan-e/event`, event('e-ts', 'received', 1, 'SKU-TS'), { qos: 1 });
    await acks.waitFor(() => acks.messages.some((m) => m.payload.id === 'e-ts'));
    const pool = createPool({ url: db.url, max: 1 });
    const { rows } = await pool.query<{ ts: Date }>(`SELECT ts FROM events WHERE id = 'e-ts'`);
    await pool.end();
    const ts = rows[0]?.ts.getTime() ?? 0;
    assert.ok(ts >= before - 5 && ts <= Date.now(), 'event time is the edge receipt time');
  });

  it('an event of exactly 8 KiB without ts is applied: the edge stamps its receipt time as text, central allows for the stamp', async () => {
    const head = '{"v":1,"id":"e-8k","type":"received","sku":"SKU-8K","qty":2,"note":"';
    const padded = `${head}${'p'.repeat(8 * 1024 - head.length - 2)}"}`;
    assert.equal(Buffer.byteLength(padded), 8 * 1024);
    const before = Date.now();
    await scanner.publishAsync(`wh/${WH}/dev/scan-e/event`, padded, { qos: 1 });
    await acks.waitFor(() => acks.messages.some((m) => m.payload.id === 'e-8k'));
    assert.equal(
      acks.messages.find((m) => m.payload.id === 'e-8k')?.payload.status,
      'applied',
      JSON.stringify(acks.messages.find((m) => m.payload.id === 'e-8k')?.payload),
    );
    const pool = createPool({ url: db.url, max: 1 });
    const { rows } = await pool.query<{ ts: Date; note: string }>(
      `SELECT ts, payload->>'note' AS note FROM events WHERE id = 'e-8k'`,
    );
    await pool.end();
    assert.ok((rows[0]?.ts.getTime() ?? 0) >= before - 5, 'the event time is the edge receipt time');
    assert.equal(rows[0]?.note.length, 8 * 1024 - head.length - 2, 'the device fields as sent');
    for (
      let i = 0;
      i < 300 && (edge as unknown as { outbox: SqliteOutbox }).outbox.stats().events > 0;
      i++ // 30 s guard
    )
      await new Promise((r) => setTimeout(r, 100));
    assert.equal(
      (edge as unknown as { outbox: SqliteOutbox }).outbox.stats().events,
      0,
      'confirmed and gone from the outbox',
    );
  });

  it('invalid input: the device hears rejected (from central, mirrored), and central keeps the dead letter', async () => {
    await scanner.publishAsync(
      `wh/${WH}/dev/scan-e/event`,
      '{"v":1,"id":"bad-1","type":"received","sku":"S","qty":0}',
      { qos: 1 },
    );
    await acks.waitFor(() => acks.messages.filter((m) => m.payload.id === 'bad-1').length >= 1);
    assert.equal(acks.last(`wh/${WH}/dev/scan-e/ack`)?.status, 'rejected');
    const pool = createPool({ url: db.url, max: 1 });
    for (let i = 0; i < 300; i++) {
      // 30 s guard
      const { rows } = await pool.query(
        `SELECT count(*)::int AS n FROM dead_letters WHERE event_id = 'bad-1' AND source = 'gw-e'`,
      );
      if (rows[0].n === 1) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const { rows } = await pool.query(`SELECT count(*)::int AS n FROM dead_letters WHERE event_id = 'bad-1'`);
    await pool.end();
    assert.equal(rows[0].n, 1);
  });

  it('ACL at the edge: wrong password, anonymous, other warehouse, other device topic, other warehouse subscription — refused and counted', async () => {
    const url = `mqtt://127.0.0.1:${edgePorts.mqtt}`;
    await assert.rejects(connect(url, 'scan-e', 'wrong-password'));
    await assert.rejects(connect(url, '', ''));
    await assert.rejects(
      connect(url, 'scan-x', 'pw-scanner-x'),
      'a scanner of another warehouse cannot connect to this edge',
    );
    const other = await connect(url, 'scan-e', 'pw-scanner-e');
    const closed = new Promise<void>((r) => other.once('close', () => r()));
    other.publish(`wh/${WH}/dev/someone-else/event`, event('x-1', 'received', 1), { qos: 1 });
    await closed;
    const sub = await connect(url, 'scan-e', 'pw-scanner-e');
    await assert.rejects(sub.subscribeAsync('wh/OTHER/stock/#', { qos: 1 }));
    await sub.endAsync();
    const metrics = await (await fetch(`http://127.0.0.1:${edgePorts.http}/metrics`)).text();
    // Every edge series also carries its warehouse (`wh`, a registry default label), after the labels named here.
    const value = (line: string) =>
      Number(
        metrics
          .split('\n')
          .find((l) => l.startsWith(line.replace(/\}$/, '')))
          ?.split(' ')[1] ?? 0,
      );
    assert.ok(value('stockwire_broker_connection_refusals_total{reason="bad_password"}') >= 1);
    assert.ok(value('stockwire_broker_connection_refusals_total{reason="anonymous"}') >= 1);
    assert.ok(value('stockwire_broker_connection_refusals_total{reason="kind_not_allowed"}') >= 1);
    assert.ok(value('stockwire_broker_publish_refusals_total{reason="acl",kind="scanner"}') >= 1);
    assert.ok(value('stockwire_broker_subscribe_refusals_total{kind="scanner"}') >= 1);
  });

  it('mosquitto_pub and mosquitto_sub work against the edge', async () => {
    const p = String(edgePorts.mqtt);
    await run('mosquitto_pub', [
      '-h',
      '127.0.0.1',
      '-p',
      p,
      '-u',
      'scan-e',
      '-P',
      'pw-scanner-e',
      '-i',
      'scan-e-cli',
      '-q',
      '1',
      '-t',
      `wh/${WH}/dev/scan-e/event`,
      '-m',
      event('cli-1', 'received', 3, 'SKU-CLI'),
    ]);
    await acks.waitFor(() => acks.messages.some((m) => m.payload.id === 'cli-1'));
    const { stdout } = await run('mosquitto_sub', [
      '-h',
      '127.0.0.1',
      '-p',
      p,
      '-u',
      'disp-e',
      '-P',
      'pw-display-e',
      '-i',
      'disp-e-cli',
      '-t',
      'stock/SKU-CLI',
      '-C',
      '1',
      '-W',
      '5',
    ]);
    assert.equal((JSON.parse(stdout) as GlobalStock).onHand, 3);
  });

  it('central down: devices still get PUBACKs, the edge says offline; central back: the backlog drains exactly', async () => {
    const display = await connect(`mqtt://127.0.0.1:${edgePorts.mqtt}`, 'disp-e', 'pw-display-e');
    const status = new Collector<LinkStatus>(display, `wh/${WH}/status`);
    await display.subscribeAsync(`wh/${WH}/status`, { qos: 1 });
    await central.stop();
    await status.waitFor(() => status.last(`wh/${WH}/status`)?.central === 'offline', 15_000, 'status offline');
    const sends = [];
    for (let i = 0; i < 300; i++)
      sends.push(
        scanner.publishAsync(`wh/${WH}/dev/scan-e/event`, event(`off-${i}`, 'received', 1, 'SKU-OFF'), { qos: 1 }),
      );
    await Promise.all(sends); // every PUBACK arrived: the events are on the edge's disk
    const metrics = await (await fetch(`http://127.0.0.1:${edgePorts.http}/metrics`)).text();
    assert.match(metrics, /stockwire_edge_backlog_events\{wh="[^"]+"\} 300/);
    await startCentral();
    await status.waitFor(() => status.last(`wh/${WH}/status`)?.central === 'online', 15_000, 'status online');
    for (
      let i = 0;
      i < 300 && (await stockAtCentral('SKU-OFF').catch(() => ({ onHand: 0 }))).onHand !== 300;
      i++ // 30 s guard
    )
      await new Promise((r) => setTimeout(r, 100));
    assert.equal((await stockAtCentral('SKU-OFF')).onHand, 300);
    await display.endAsync();
  });

  it('a full outbox refuses new events (no PUBACK), raises an alert and a metric, and loses nothing acknowledged', async () => {
    await edge.stop();
    await central.stop();
    const small = makeEdge(64 * 1024);
    const ports = await small.start();
    edge = small;
    const display = await connect(`mqtt://127.0.0.1:${ports.mqtt}`, 'disp-e', 'pw-display-e');
    const alerts = new Collector<{ kind: string }>(display, `alerts/${WH}/#`);
    await display.subscribeAsync(`alerts/${WH}/#`, { qos: 1 });
    const device = await connect(`mqtt://127.0.0.1:${ports.mqtt}`, 'scan-e', 'pw-scanner-e', { reconnectPeriod: 0 });
    const big = (i: number) =>
      JSON.stringify({ v: 1, id: `full-${i}`, type: 'received', sku: 'SKU-FULL', qty: 1, reason: 'x'.repeat(150) });
    let acknowledged = 0;
    let refused = false;
    device.on('close', () => (refused = true));
    for (let i = 0; i < 2000 && !refused; i++) {
      const ok = await Promise.race([
        device.publishAsync(`wh/${WH}/dev/scan-e/event`, big(i), { qos: 1 }).then(() => true),
        new Promise<boolean>((r) => device.once('close', () => r(false))),
      ]);
      if (ok) acknowledged++;
    }
    assert.ok(refused, 'the edge refused once the outbox was full');
    assert.ok(acknowledged > 100, `some events were accepted first (${acknowledged})`);
    const metrics = await (await fetch(`http://127.0.0.1:${ports.http}/metrics`)).text();
    assert.match(metrics, /stockwire_edge_events_refused_total\{reason="outbox_full",wh="[^"]+"\} [1-9]/);
    await alerts.waitFor(
      () => alerts.messages.some((m) => m.topic === `alerts/${WH}/outbox-full`),
      5_000,
      'outbox-full alert',
    );
    // Central comes back: every acknowledged event is applied, none of the refused ones.
    await startCentral();
    for (
      let i = 0;
      i < 300 && (await stockAtCentral('SKU-FULL').catch(() => ({ onHand: 0 }))).onHand !== acknowledged; // 30 s guard
      i++
    )
      await new Promise((r) => setTimeout(r, 100));
    const after = await stockAtCentral('SKU-FULL');
    const edgeMetrics = async () =>
      (await (await fetch(`http://127.0.0.1:${ports.http}/metrics`)).text())
        .split('\n')
        .filter((l) => l.startsWith('stockwire_edge'))
        .join('\n');
    assert.equal(after.onHand, acknowledged, after.onHand === acknowledged ? undefined : await edgeMetrics());
    await device.endAsync(true);
    await display.endAsync();
  });
});

describe('stockwire edge whose outbox fails', () => {
  it('logs fatal and calls onFatal (with which main exits) when its outbox reports its thread dead', async () => {
    const d = await writeDevices([{ id: 'gw-f', warehouse: 'WF1', kind: 'gateway', password: 'pw-gateway-f' }]);
    const lines: { level: number; msg: string; err?: string }[] = [];
    const log = pino(
      { level: 'info' },
      { write: (line: string) => void lines.push(JSON.parse(line) as { level: number; msg: string; err?: string }) },
    );
    const fatal: Error[] = [];
    const unreachable = await freePort(); // central is not needed: the edge stores and waits
    const edge = new Edge({
      wh: 'WF1',
      devicesFile: d.file,
      dataDir: path.join(d.dir, 'data'),
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: 0,
      httpPort: 0,
      centralUrl: `mqtt://127.0.0.1:${unreachable}`,
      centralUsername: 'gw-f',
      centralPassword: 'pw-gateway-f',
      outboxMaxBytes: 1 << 20,
      forwardWindow: 10,
      resendAfterMs: 2_000,
      keepalive: 5,
      log,
      onFatal: (err) => fatal.push(err),
    });
    await edge.start();
    try {
      // The outbox's own test kills its thread for real (out of memory); here the edge's reaction is what is checked.
      const outbox = (edge as unknown as { outbox: SqliteOutbox }).outbox;
      outbox.onFailure?.(new Error('outbox /x: its thread died (exit code 1); restart to reopen it'));
      assert.equal(fatal.length, 1);
      const line = lines.find((l) => l.level === 60);
      assert.ok(line, 'a fatal line');
      assert.match(line.msg, /outbox failed/);
      assert.match(line.err ?? '', /its thread died/);
    } finally {
      await edge.stop();
    }
  });
});
