import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import pino from 'pino';
import { Edge } from '../../gateway/edge.js';
import { Central } from '../../processors/central.js';
import type { GlobalStock, LinkStatus, WarehouseStock } from '../../protocol/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { Collector, connect } from '../helpers/mqtt.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

// The edge takes central's stock and shelf topics at QoS 0 (gateway/forwarder.ts): a value is superseded by the next,
// TCP loses nothing within a connection, and what a dropped connection lost comes back because the clean session
// subscribes again on every reconnect and central sends every retained value anew. This checks that last part: stock
// that changed at central while the edge's link was down reaches the edge's displays once the link is back.
const WH = 'WMR';
const silent = pino({ level: process.env.TEST_LOG ?? 'silent' });

describe("the edge's mirror after a link drop (stock topics at QoS 0)", () => {
  let db: TestDatabase;
  let central: Central;
  let edge: Edge;
  let proxy: TcpProxy;
  const ports = { edge: 0, central: 0 };
  const clients: MqttClient[] = [];

  before(async () => {
    db = await createTestDatabase('mirror_reconnect');
    const d = await writeDevices([
      { id: 'gw-mr', warehouse: WH, kind: 'gateway', password: 'pw-gateway-mr' },
      { id: 'gw-mr2', warehouse: WH, kind: 'gateway', password: 'pw-gateway-mr2' },
      { id: 'scan-mr', warehouse: WH, kind: 'scanner', password: 'pw-scanner-mr' },
      { id: 'disp-mr', warehouse: WH, kind: 'display', password: 'pw-display-mr' },
    ]);
    central = new Central({
      databaseUrl: db.url,
      redisPrefix: 'mr',
      dataDir: path.join(d.dir, 'central'),
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
    edge = new Edge({
      wh: WH,
      devicesFile: d.file,
      dataDir: path.join(d.dir, 'edge'),
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: 0,
      httpPort: 0,
      centralUrl: `mqtt://127.0.0.1:${proxyPort}`,
      centralUsername: 'gw-mr',
      centralPassword: 'pw-gateway-mr',
      outboxMaxBytes: 64 * 1024 * 1024,
      forwardWindow: 500,
      resendAfterMs: 2_000,
      keepalive: 5,
      log: silent,
    });
    ports.edge = (await edge.start()).mqtt;
    ports.central = centralPorts.mqtt;
  });
  after(async () => {
    for (const c of clients) await c.endAsync(true);
    await edge?.stop();
    await proxy?.stop();
    await central?.stop();
    await db?.drop();
  });

  const client = async (port: number, id: string, password: string) => {
    const c = await connect(`mqtt://127.0.0.1:${port}`, id, password);
    clients.push(c);
    return c;
  };
  const event = (id: string, qty: number) => JSON.stringify({ v: 1, id, type: 'received', sku: 'SKU-MR', qty });

  it('stock changed at central while the link was down reaches the edge display after the reconnect', async () => {
    const display = await client(ports.edge, 'disp-mr', 'pw-display-mr');
    const filters = [`wh/${WH}/stock/SKU-MR`, 'stock/SKU-MR', `wh/${WH}/status`];
    const seen = new Collector<WarehouseStock & GlobalStock & LinkStatus>(display, filters);
    await display.subscribeAsync(filters, { qos: 1 });
    const onHandAtEdge = () => seen.last(`wh/${WH}/stock/SKU-MR`)?.onHand;

    // Linked: an event through the edge shows at the edge display.
    const scanner = await client(ports.edge, 'scan-mr', 'pw-scanner-mr');
    await scanner.publishAsync(`wh/${WH}/dev/scan-mr/event`, event('mr-1', 3), { qos: 1 });
    await seen.waitFor(() => onHandAtEdge() === 3, 15_000, 'onHand 3 at the edge');

    // The link drops and stays down; meanwhile another gateway of the warehouse forwards a scan of the same sku.
    proxy.cut({ refuse: true });
    await seen.waitFor(() => seen.last(`wh/${WH}/status`)?.central === 'offline', 15_000, 'status offline');
    const direct = await client(ports.central, 'gw-mr2', 'pw-gateway-mr2');
    await direct.publishAsync(`wh/${WH}/dev/scan-mr/event`, event('mr-2', 4), { qos: 1 });
    const atCentral = await client(ports.central, 'disp-mr', 'pw-display-mr');
    const centralSeen = new Collector<WarehouseStock>(atCentral, `wh/${WH}/stock/SKU-MR`);
    await atCentral.subscribeAsync(`wh/${WH}/stock/SKU-MR`, { qos: 1 });
    await centralSeen.waitFor(
      () => centralSeen.last(`wh/${WH}/stock/SKU-MR`)?.onHand === 7,
      15_000,
      'onHand 7 at central',
    );
    assert.equal(onHandAtEdge(), 3, 'nothing crosses a cut link');

    // Back: the edge subscribes again and central sends the retained values anew, the one missed among them.
    proxy.restore();
    await seen.waitFor(() => onHandAtEdge() === 7, 15_000, 'onHand 7 at the edge after the reconnect');
    await seen.waitFor(() => seen.last('stock/SKU-MR')?.onHand === 7, 15_000, 'global onHand 7 at the edge');
  });
});
