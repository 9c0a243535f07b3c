import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import type { Edge } from '../../gateway/edge.js';
import type { GlobalStock, LinkStatus, WarehouseStock } from '../../protocol/index.js';
import { startCentralFixture, type CentralFixture } from '../helpers/central.js';
import { writeDevices } from '../helpers/devices.js';
import { testEdge } from '../helpers/edge.js';
import { Collector, connect } from '../helpers/mqtt.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

// The edge takes central's stock and shelf topics at QoS 0 (gateway/forwarder.ts): a value is superseded by the next,
// TCP loses nothing within a connection, and what a dropped connection lost comes back because the clean session
// subscribes again on every reconnect and central sends every retained value anew. This checks that last part: stock
// that changed at central while the edge's link was down reaches the edge's displays once the link is back.
const WH = 'WMR';

describe("the edge's mirror after a link drop (stock topics at QoS 0)", () => {
  let fx: CentralFixture;
  let edge: Edge;
  let proxy: TcpProxy;
  let edgePort = 0;
  const clients: MqttClient[] = [];

  before(async () => {
    // Central's gateway (the fixture's) stands for another edge of the warehouse, still linked while this one is cut.
    const display = { id: 'disp-mr', warehouse: WH, kind: 'display' as const, password: 'pw-display-mr' };
    const own = { id: 'gw-mr', warehouse: WH, kind: 'gateway' as const, password: 'pw-gateway-mr' };
    fx = await startCentralFixture({
      name: 'mirror_reconnect',
      wh: WH,
      gateway: { id: 'gw-mr2', password: 'pw-gateway-mr2' },
      devices: [own, display],
    });
    proxy = new TcpProxy(fx.ports.mqtt);
    const proxyPort = await proxy.start();
    const d = await writeDevices([
      own,
      display,
      { id: 'scan-mr', warehouse: WH, kind: 'scanner', password: 'pw-scanner-mr' },
    ]);
    edge = testEdge({
      wh: WH,
      devicesFile: d.file,
      dataDir: path.join(d.dir, 'edge'),
      centralUrl: `mqtt://127.0.0.1:${proxyPort}`,
      gateway: own,
    });
    edgePort = (await edge.start()).mqtt;
  });
  after(async () => {
    for (const c of clients) await c.endAsync(true);
    await edge?.stop();
    await proxy?.stop();
    await fx?.stop();
  });

  const client = async (port: number, id: string, password: string) => {
    const c = await connect(`mqtt://127.0.0.1:${port}`, id, password);
    clients.push(c);
    return c;
  };
  const event = (id: string, qty: number) => JSON.stringify({ v: 1, id, type: 'received', sku: 'SKU-MR', qty });

  it('stock changed at central while the link was down reaches the edge display after the reconnect', async () => {
    const display = await client(edgePort, 'disp-mr', 'pw-display-mr');
    const filters = [`wh/${WH}/stock/SKU-MR`, 'stock/SKU-MR', `wh/${WH}/status`];
    const seen = new Collector<WarehouseStock & GlobalStock & LinkStatus>(display, filters);
    await display.subscribeAsync(filters, { qos: 1 });
    const onHandAtEdge = () => seen.last(`wh/${WH}/stock/SKU-MR`)?.onHand;

    // Linked: an event through the edge shows at the edge display.
    const scanner = await client(edgePort, 'scan-mr', 'pw-scanner-mr');
    await scanner.publishAsync(`wh/${WH}/dev/scan-mr/event`, event('mr-1', 3), { qos: 1 });
    await seen.waitFor(() => onHandAtEdge() === 3, 15_000, 'onHand 3 at the edge');

    // The link drops and stays down; meanwhile another gateway of the warehouse forwards a scan of the same sku.
    proxy.cut({ refuse: true });
    await seen.waitFor(() => seen.last(`wh/${WH}/status`)?.central === 'offline', 15_000, 'status offline');
    await fx.gateway.publishAsync(`wh/${WH}/dev/scan-mr/event`, event('mr-2', 4), { qos: 1 });
    await fx.acks.waitFor(() => fx.acks.last(`wh/${WH}/dev/scan-mr/ack`)?.id === 'mr-2', 15_000, 'mr-2 committed');
    assert.equal(onHandAtEdge(), 3, 'nothing crosses a cut link');

    // Back: the edge subscribes again and central sends the retained values anew, the one missed among them.
    proxy.restore();
    await seen.waitFor(() => onHandAtEdge() === 7, 15_000, 'onHand 7 at the edge after the reconnect');
    await seen.waitFor(() => seen.last('stock/SKU-MR')?.onHand === 7, 15_000, 'global onHand 7 at the edge');
  });
});
