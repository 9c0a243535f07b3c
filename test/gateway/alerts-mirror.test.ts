import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import pino from 'pino';
import { Edge } from '../../gateway/edge.js';
import { Central } from '../../processors/central.js';
import type { Ack, Alert } from '../../protocol/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { Collector, connect } from '../helpers/mqtt.js';

// Issue 18: central's alerts for a warehouse reach that warehouse's edge, so its live display shows negative-stock.
const WH = 'AM1';
const silent = pino({ level: process.env.TEST_LOG ?? 'silent' });

describe("an edge mirrors its warehouse's alerts from central", () => {
  let db: TestDatabase;
  let central: Central;
  let edge: Edge;
  let clients: MqttClient[] = [];

  before(async () => {
    db = await createTestDatabase('alerts_mirror');
    const d = await writeDevices([
      { id: 'gw-am', warehouse: WH, kind: 'gateway', password: 'pw-gateway-am' },
      { id: 'gw-other', warehouse: 'AM2', kind: 'gateway', password: 'pw-gateway-o' },
      { id: 'scan-am', warehouse: WH, kind: 'scanner', password: 'pw-scanner-am' },
      { id: 'disp-am', warehouse: WH, kind: 'display', password: 'pw-display-am' },
    ]);
    const dataDir = path.join(d.dir, 'data');
    central = new Central({
      databaseUrl: db.url,
      redisPrefix: 'x',
      dataDir,
      devicesFile: d.file,
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: 0,
      httpPort: 0,
      batchMax: 500,
      batchWaitMs: 5,
      log: silent,
    });
    const cp = await central.start();
    edge = new Edge({
      wh: WH,
      devicesFile: d.file,
      dataDir,
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: 0,
      httpPort: 0,
      centralUrl: `mqtt://127.0.0.1:${cp.mqtt}`,
      centralUsername: 'gw-am',
      centralPassword: 'pw-gateway-am',
      outboxMaxBytes: 64 * 1024 * 1024,
      forwardWindow: 500,
      resendAfterMs: 2_000,
      keepalive: 5,
      log: silent,
    });
    const ep = await edge.start();
    const display = await connect(`mqtt://127.0.0.1:${ep.mqtt}`, 'disp-am', 'pw-display-am');
    const scanner = await connect(`mqtt://127.0.0.1:${ep.mqtt}`, 'scan-am', 'pw-scanner-am');
    const other = await connect(`mqtt://127.0.0.1:${cp.mqtt}`, 'gw-other', 'pw-gateway-o');
    clients = [display, scanner, other];
  });
  after(async () => {
    for (const c of clients) await c.endAsync();
    await edge?.stop();
    await central?.stop();
    await db?.drop();
  });

  it("a shipment that oversells raises negative-stock on the edge's broker, where its display hears it; another warehouse's alert does not come", async () => {
    const [display, scanner, other] = clients as [MqttClient, MqttClient, MqttClient];
    const alerts = new Collector<Alert>(display, `alerts/${WH}/#`);
    await display.subscribeAsync(`alerts/${WH}/#`, { qos: 1 });
    const acks = new Collector<Ack>(scanner, `wh/${WH}/dev/scan-am/ack`);
    await scanner.subscribeAsync(`wh/${WH}/dev/scan-am/ack`, { qos: 1 });
    // The edge's link is up once its status says so at central; then an event of AM2 that oversells too, sent by AM2's gateway.
    await other.publishAsync(
      'wh/AM2/dev/s2/event',
      JSON.stringify({ v: 1, id: 'o-1', type: 'shipped', sku: 'SKU-N', qty: 4 }),
      { qos: 1 },
    );
    await scanner.publishAsync(
      `wh/${WH}/dev/scan-am/event`,
      JSON.stringify({ v: 1, id: 'n-1', type: 'shipped', sku: 'SKU-N', qty: 3 }),
      { qos: 1 },
    );
    await acks.waitFor(() => acks.messages.some((m) => m.payload.id === 'n-1'), 30_000, 'the ack of the shipment');
    await alerts.waitFor(
      () => alerts.messages.some((m) => m.topic === `alerts/${WH}/negative-stock`),
      30_000,
      'negative-stock at the edge',
    );
    const alert = alerts.last(`alerts/${WH}/negative-stock`);
    assert.equal(alert?.wh, WH);
    assert.equal(alert?.sku, 'SKU-N');
    assert.equal(
      alerts.messages.find((m) => m.topic === `alerts/${WH}/negative-stock`)?.retain,
      false,
      'not retained, as at central',
    );
    assert.ok(
      alerts.messages.every((m) => m.topic.startsWith(`alerts/${WH}/`)),
      'only its own warehouse',
    );
  });
});
