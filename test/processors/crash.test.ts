import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { createPool } from '../../processors/db/pool.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { freePort, kill9, startStockwire, type Running } from '../helpers/process.js';
import { ResendingPublisher } from '../helpers/resending-publisher.js';
import { assertExact } from '../helpers/exactly-once.js';
import { workload } from '../helpers/workload.js';

const TOTAL = 20_000;
const MOSQUITTO = process.env.MOSQUITTO_URL ?? 'mqtt://127.0.0.1:1883';

describe('kill -9 in the middle of a stream of 20,000 events', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  before(async () => {
    db = await createTestDatabase('crash');
    pool = createPool({ url: db.url, max: 2 });
  });
  after(async () => {
    await pool.end();
    await db.drop();
  });

  it('standalone processor behind the machine\'s Mosquitto: every event applied exactly once', { timeout: 240_000 }, async () => {
    const wh = `WK${randomBytes(3).toString('hex')}`;
    const { events, expected } = workload(wh, TOTAL, 7);
    const args = ['processor', '--central-url', MOSQUITTO, '--warehouses', wh, '--instance', wh, '--http-port', '0', '--host', '127.0.0.1'];
    const env = { DATABASE_URL: db.url };
    let proc: Running = await startStockwire(args, env);
    let killed = false;
    const publisher = new ResendingPublisher(MOSQUITTO, wh, events, {
      clientId: `edge-${wh}`,
      onAck: (n) => {
        if (n >= 6_000 && !killed) {
          killed = true;
          void (async () => {
            await kill9(proc);
            await new Promise((r) => setTimeout(r, 1_000));
            proc = await startStockwire(args, env);
          })();
        }
      },
    });
    try {
      const stats = await publisher.run();
      assert.ok(killed, 'the processor was killed mid-stream');
      assert.equal(stats.acked, TOTAL);
      await assertExact(pool, wh, TOTAL, expected);
    } finally {
      await publisher.close();
      proc.child.kill('SIGTERM');
      assert.equal(await proc.exited, 0, 'clean exit on SIGTERM');
    }
  });

  it('central (broker and processor in one process): every event applied exactly once', { timeout: 240_000 }, async () => {
    const wh = `WC${randomBytes(3).toString('hex')}`;
    const { events, expected } = workload(wh, TOTAL, 11);
    const devices = await writeDevices([{ id: 'gw-crash', warehouse: wh, kind: 'gateway', password: 'pw-crash-1' }]);
    const mqttPort = await freePort();
    const args = ['central', '--mqtt-port', String(mqttPort), '--ws-port', '0', '--http-port', '0', '--host', '127.0.0.1', '--devices-file', devices.file, '--data-dir', devices.dir];
    const env = { DATABASE_URL: db.url };
    let central: Running = await startStockwire(args, env);
    let killed = false;
    const publisher = new ResendingPublisher(`mqtt://127.0.0.1:${mqttPort}`, wh, events, {
      username: 'gw-crash',
      password: 'pw-crash-1',
      clientId: 'gw-crash',
      onAck: (n) => {
        if (n >= 6_000 && !killed) {
          killed = true;
          void (async () => {
            await kill9(central);
            await new Promise((r) => setTimeout(r, 1_000));
            central = await startStockwire(args, env);
          })();
        }
      },
    });
    try {
      const stats = await publisher.run();
      assert.ok(killed, 'central was killed mid-stream');
      assert.equal(stats.acked, TOTAL);
      await assertExact(pool, wh, TOTAL, expected);
    } finally {
      await publisher.close();
      central.child.kill('SIGTERM');
      assert.equal(await central.exited, 0, 'clean exit on SIGTERM');
    }
  });
});
