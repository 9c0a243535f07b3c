import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { Central } from '../../processors/central.js';
import type { Ack } from '../../protocol/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { Collector, connect } from '../helpers/mqtt.js';

// A regression test: publishing one large batch's acks and stock topics into aedes all at once
// recursed through mqemitter's queue until the stack overflowed and central died.
describe('central under a burst of one large batch', () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase('burst');
  });
  after(async () => db.drop());

  it('8,000 events in flight at once with batches of 5,000: every one acked, central alive', {
    timeout: 120_000,
  }, async () => {
    const devices = await writeDevices([{ id: 'gw-b', warehouse: 'WB', kind: 'gateway', password: 'pw-burst-1' }]);
    const central = new Central({
      databaseUrl: db.url,
      redisPrefix: 'x',
      dataDir: devices.dir,
      devicesFile: devices.file,
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: 0,
      httpPort: 0,
      batchMax: 5000,
      batchWaitMs: 20,
      log: pino({ level: 'silent' }),
    });
    const ports = await central.start();
    const gw = await connect(`mqtt://127.0.0.1:${ports.mqtt}`, 'gw-b', 'pw-burst-1');
    const acks = new Collector<Ack>(gw, 'wh/WB/dev/+/ack');
    await gw.subscribeAsync('wh/WB/dev/+/ack', { qos: 1 });
    try {
      for (let i = 0; i < 8000; i++)
        gw.publish(
          `wh/WB/dev/d${i % 20}/event`,
          JSON.stringify({ v: 1, id: `b${i}`, type: 'received', sku: `S${i % 3000}`, qty: 1 }),
          { qos: 1 },
        );
      await acks.waitFor(() => acks.messages.length >= 8000, 90_000, '8,000 acks');
      assert.equal(acks.messages.filter((m) => m.payload.status === 'applied').length, 8000);
      const res = await fetch(`http://127.0.0.1:${ports.http}/healthz`);
      assert.equal(res.status, 200);
    } finally {
      await gw.endAsync();
      await central.stop();
    }
  });
});
