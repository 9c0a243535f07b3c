import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import pino from 'pino';
import { Central } from '../../processors/central.js';
import type { Ack, GlobalStock, WarehouseStock } from '../../protocol/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { Collector, connect } from '../helpers/mqtt.js';

const WH = 'WM1';

// An edge's downlink mirror subscribes to acks and stock topics at once, while other clients publish
// retained status messages: it must still see every stock topic a commit changes. (The aedes#955 case
// itself, a retained publish overtaken by a plain one, is reproduced in test/broker/ordered-publisher.test.ts.)
describe('a subscriber of acks and stock topics (the edge mirror) at central', () => {
  let db: TestDatabase;
  let central: Central;
  let mirror: MqttClient;
  let gateway: MqttClient;
  before(async () => {
    db = await createTestDatabase('mirror');
    const devices = await writeDevices([
      { id: 'gw-m', warehouse: WH, kind: 'gateway', password: 'gw-m-secret' },
      { id: 'gw-m2', warehouse: WH, kind: 'gateway', password: 'gw-m2-secret' },
    ]);
    central = new Central({
      databaseUrl: db.url,
      redisPrefix: 'x',
      dataDir: devices.dir,
      devicesFile: devices.file,
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: 0,
      httpPort: 0,
      batchMax: 100,
      batchWaitMs: 2,
      log: pino({ level: 'silent' }),
    });
    const ports = await central.start();
    const url = `mqtt://127.0.0.1:${ports.mqtt}`;
    mirror = await connect(url, 'gw-m', 'gw-m-secret', { clientId: 'gw-m' });
    gateway = await connect(url, 'gw-m2', 'gw-m2-secret', { clientId: 'gw-m2' });
  });
  after(async () => {
    await mirror.endAsync();
    await gateway.endAsync();
    await central.stop();
    await db.drop();
  });

  it("sees every sku's warehouse and global stock while acks and status publishes flow", {
    timeout: 60_000,
  }, async () => {
    const stock = new Collector<WarehouseStock>(mirror, [`wh/${WH}/stock/#`]);
    const global = new Collector<GlobalStock>(mirror, ['stock/#']);
    const acks = new Collector<Ack>(mirror, [`wh/${WH}/dev/+/ack`]);
    await mirror.subscribeAsync([`wh/${WH}/dev/+/ack`, `wh/${WH}/stock/#`, 'stock/#'], { qos: 1 });
    const N = 250;
    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < N; i++) {
      sends.push(
        mirror.publishAsync(
          `wh/${WH}/dev/d${i % 5}/event`,
          JSON.stringify({ v: 1, id: `m-${i}`, type: 'received', sku: `SKU-${i}`, qty: 1 + (i % 3) }),
          { qos: 1 },
        ),
      );
      // another client's retained publishes in between, as edges' status messages are
      if (i % 10 === 0)
        sends.push(
          gateway.publishAsync(
            `wh/${WH}/status`,
            JSON.stringify({ central: 'online', since: new Date().toISOString(), backlog: i }),
            { qos: 1, retain: true },
          ),
        );
    }
    await Promise.all(sends);
    await acks.waitFor(() => acks.messages.length >= N, 30_000, 'every ack');
    // Wait for the topics themselves rather than a fixed second after the acks: a lost topic still fails (after
    // the hang guard), and a slow machine no longer does.
    const missingIn = (c: { messages: readonly { payload: { sku: string } }[] }) => {
      const seen = new Set(c.messages.map((m) => m.payload.sku));
      return Array.from({ length: N }, (_, i) => `SKU-${i}`).filter((s) => !seen.has(s));
    };
    await stock.waitFor(() => missingIn(stock).length === 0, 30_000).catch(() => undefined);
    await global.waitFor(() => missingIn(global).length === 0, 30_000).catch(() => undefined);
    const missing = missingIn(stock);
    assert.deepEqual(missing, [], `${missing.length} of ${N} warehouse stock topics never reached the mirror`);
    const missingGlobal = missingIn(global);
    assert.deepEqual(missingGlobal, [], `${missingGlobal.length} of ${N} global stock topics never reached the mirror`);
  });
});
