import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { Registry } from 'prom-client';
import { createPool } from '../../processors/db/pool.js';
import { migrate } from '../../processors/db/migrate.js';
import type { Publisher } from '../../processors/publish/publisher.js';
import { MemoryReadModel } from '../../processors/readmodel/readmodel.js';
import { createReservationMetrics } from '../../processors/reservations/metrics.js';
import { ReservationService } from '../../processors/reservations/service.js';
import type { GlobalStock } from '../../protocol/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

describe('reservations behind a broker that is away (stockwire processor)', () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase('resv_publish');
  });
  after(async () => db.drop());

  it('commands are answered, and later ones decided, while the stock publishes wait for the broker', {
    timeout: 30_000,
  }, async () => {
    const pool = createPool({ url: db.url, max: 4 });
    try {
      await migrate(pool);
      await pool.query(`INSERT INTO stock (wh, sku, on_hand) VALUES ('W1', 'S', 10)`);
      // MQTT.js keeps a QoS 1 publish while its broker is away and settles it only once it is back: never, here.
      const waiting: string[] = [];
      const publisher: Publisher = {
        publish: (topic) => {
          waiting.push(topic);
          return new Promise<void>(() => {});
        },
      };
      const registry = new Registry();
      const readModel = new MemoryReadModel(pool);
      const service = new ReservationService({
        pool,
        publisher,
        readModel,
        log: pino({ level: 'silent' }),
        metrics: createReservationMetrics(registry),
      });
      const first = await service.reserve('k1', { sku: 'S', qty: 2, warehouse: 'W1' });
      assert.equal(first.status, 201, JSON.stringify(first.body));
      const second = await service.reserve('k2', { sku: 'S', qty: 1, warehouse: 'W1' });
      assert.equal(second.status, 201, 'the next command of the sku is decided too');
      assert.ok(waiting.includes('stock/S'), `the stock topics were handed to the broker: ${waiting.join(', ')}`);
      assert.equal(((await readModel.global('S')) as GlobalStock).available, 7, 'the read model has both holds');
      const errors = (await registry.getMetricsAsJSON()).find(
        (m) => m.name === 'stockwire_command_publish_errors_total',
      );
      assert.ok((errors?.values.reduce((n, v) => n + v.value, 0) ?? 0) > 0, 'the publishes still waiting are counted');
      await service.stop();
    } finally {
      await pool.end();
    }
  });
});
