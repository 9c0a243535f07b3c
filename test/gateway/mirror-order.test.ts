import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import pino from 'pino';
import { Edge } from '../../gateway/edge.js';
import { Central } from '../../processors/central.js';
import type { Ack, WarehouseStock } from '../../protocol/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { Collector, connect } from '../helpers/mqtt.js';
import { freePort } from '../helpers/process.js';

const WH = 'WO1';
const silent = pino({ level: 'silent' });

// The edge mirrors acks (plain) and stock topics (retained) from central into its broker. Aedes drops a
// message for a subscriber that already got one with a higher internal counter (moscajs/aedes#955), which
// at central lost stock topics behind acks (broker/ordered-publisher.ts). A scanner subscribed to both
// at the edge must see every stock topic. The edge publishes everything of its own
// through the same ordered publisher as central (broker/ordered-publisher.ts), so this holds by construction, not by timing.
describe('the edge mirror, for a device subscribed to its acks and to stock', () => {
  let db: TestDatabase;
  let central: Central;
  let edge: Edge;
  let scanner: MqttClient;
  before(async () => {
    db = await createTestDatabase('mirror_order');
    const d = await writeDevices([
      { id: 'gw-o', warehouse: WH, kind: 'gateway', password: 'pw-gateway-o' },
      { id: 'scan-o', warehouse: WH, kind: 'scanner', password: 'pw-scanner-o' },
    ]);
    const dataDir = path.join(d.dir, 'data');
    const port = await freePort();
    central = new Central({
      databaseUrl: db.url,
      redisPrefix: 'x',
      dataDir,
      devicesFile: d.file,
      host: '127.0.0.1',
      mqttPort: port,
      wsPort: 0,
      httpPort: 0,
      batchMax: 500,
      batchWaitMs: 2,
      log: silent,
    });
    await central.start();
    edge = new Edge({
      wh: WH,
      devicesFile: d.file,
      dataDir,
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: 0,
      httpPort: 0,
      centralUrl: `mqtt://127.0.0.1:${port}`,
      centralUsername: 'gw-o',
      centralPassword: 'pw-gateway-o',
      outboxMaxBytes: 64 * 1024 * 1024,
      forwardWindow: 500,
      resendAfterMs: 2_000,
      keepalive: 5,
      log: silent,
    });
    const ports = await edge.start();
    scanner = await connect(`mqtt://127.0.0.1:${ports.mqtt}`, 'scan-o', 'pw-scanner-o');
  });
  after(async () => {
    await scanner?.endAsync();
    await edge?.stop();
    await central?.stop();
    await db?.drop();
  });

  it('sees the stock topic of every sku its events changed, and every ack', { timeout: 60_000 }, async () => {
    const acks = new Collector<Ack>(scanner, `wh/${WH}/dev/scan-o/ack`);
    const stock = new Collector<WarehouseStock>(scanner, `wh/${WH}/stock/#`);
    await scanner.subscribeAsync([`wh/${WH}/dev/scan-o/ack`, `wh/${WH}/stock/#`], { qos: 1 });
    const N = 300;
    await Promise.all(
      Array.from({ length: N }, (_, i) =>
        scanner.publishAsync(
          `wh/${WH}/dev/scan-o/event`,
          JSON.stringify({ v: 1, id: `o-${i}`, type: 'received', sku: `SKU-${i}`, qty: 1 }),
          { qos: 1 },
        ),
      ),
    );
    await acks.waitFor(() => acks.messages.length >= N, 30_000, 'every ack');
    // Wait for the stock topics themselves rather than a fixed second after the acks: a lost topic still fails
    // (after the hang guard), and a slow machine no longer does.
    const missing = () => {
      const seen = new Set(stock.messages.map((m) => m.payload.sku));
      return Array.from({ length: N }, (_, i) => `SKU-${i}`).filter((s) => !seen.has(s));
    };
    await stock.waitFor(() => missing().length === 0, 30_000, 'every stock topic').catch(() => undefined);
    assert.deepEqual(missing(), [], `${missing().length} of ${N} stock topics never reached the scanner`);
  });
});
