import type { MqttClient } from 'mqtt';
import type pg from 'pg';
import pino from 'pino';
import { Central, type CentralOptions } from '../../processors/central.js';
import type { Ack } from '../../protocol/index.js';
import { createTestDatabase, testPool, type TestDatabase } from './db.js';
import { writeDevices, type TestDevice } from './devices.js';
import { Collector, connect } from './mqtt.js';

/** An in-process central on a test database, with a gateway connected and collecting its warehouse's acks. */
export interface CentralFixture {
  db: TestDatabase;
  central: Central;
  ports: { mqtt: number; ws: number; http: number };
  gateway: MqttClient;
  acks: Collector<Ack>;
  /** a pool of the test's own on the same database */
  pool: pg.Pool;
  stop(): Promise<void>;
}

export async function startCentralFixture(o: {
  /** names the test database */
  name: string;
  wh: string;
  gateway: { id: string; password: string };
  /** more devices in the devices file (displays, scanners…) */
  devices?: TestDevice[];
  options?: Partial<Pick<CentralOptions, 'batchMax' | 'batchWaitMs' | 'apiReadTimeoutMs' | 'httpRoutes'>>;
}): Promise<CentralFixture> {
  const db = await createTestDatabase(o.name);
  const files = await writeDevices([
    { id: o.gateway.id, warehouse: o.wh, kind: 'gateway', password: o.gateway.password },
    ...(o.devices ?? []),
  ]);
  const central = new Central({
    databaseUrl: db.url,
    redisPrefix: 'x',
    dataDir: files.dir,
    devicesFile: files.file,
    host: '127.0.0.1',
    mqttPort: 0,
    wsPort: 0,
    httpPort: 0,
    batchMax: 500,
    batchWaitMs: 5,
    ...o.options,
    log: pino({ level: 'silent' }),
  });
  const ports = await central.start();
  const gateway = await connect(`mqtt://127.0.0.1:${ports.mqtt}`, o.gateway.id, o.gateway.password);
  const acks = new Collector<Ack>(gateway, `wh/${o.wh}/dev/+/ack`);
  await gateway.subscribeAsync(`wh/${o.wh}/dev/+/ack`, { qos: 1 });
  const pool = testPool(db.url);
  const fixture: CentralFixture = {
    db,
    central,
    ports,
    gateway,
    acks,
    pool,
    // Stops what the fields hold then: a test that restarted central puts the new one in `central`.
    async stop() {
      await fixture.gateway.endAsync();
      await fixture.central.stop();
      await pool.end();
      await db.drop();
    },
  };
  return fixture;
}
