import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import type pg from 'pg';
import pino from 'pino';
import { Edge } from '../../gateway/edge.js';
import { Central } from '../../processors/central.js';
import type { Ack, WarehouseStock } from '../../protocol/index.js';
import { createTestDatabase, testPool, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { call } from '../helpers/http.js';
import { Collector, connect } from '../helpers/mqtt.js';

// Issue 15, "Hold against hostile clients": a scanner at a real edge, bridged to a real central.
const WH = 'HE1';
const silent = pino({ level: process.env.TEST_LOG ?? 'silent' });

describe('a real edge and central against a hostile scanner', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  let central: Central;
  let edge: Edge;
  let dataDir: string;
  let centralHttp: string;
  let scanner: MqttClient;
  let acks: Collector<Ack>;

  const topic = `wh/${WH}/dev/scan-h/event`;
  const event = (fields: Record<string, unknown>) => JSON.stringify({ v: 1, sku: 'SKU-F', ...fields });
  async function send(payload: string): Promise<Ack> {
    const id = (JSON.parse(payload) as { id: string }).id;
    await scanner.publishAsync(topic, payload, { qos: 1 });
    await acks.waitFor(() => acks.messages.some((m) => m.payload.id === id), 10_000, `the ack of ${id}`);
    return acks.messages.find((m) => m.payload.id === id)?.payload as Ack;
  }

  before(async () => {
    db = await createTestDatabase('hostile_edge');
    pool = testPool(db.url);
    const d = await writeDevices([
      { id: 'gw-h', warehouse: WH, kind: 'gateway', password: 'pw-gateway-h' },
      { id: 'scan-h', warehouse: WH, kind: 'scanner', password: 'pw-scanner-h' },
      { id: 'disp-h', warehouse: WH, kind: 'display', password: 'pw-display-h' },
    ]);
    dataDir = path.join(d.dir, 'data');
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
    centralHttp = `http://127.0.0.1:${cp.http}`;
    edge = new Edge({
      wh: WH,
      devicesFile: d.file,
      dataDir,
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: 0,
      httpPort: 0,
      centralUrl: `mqtt://127.0.0.1:${cp.mqtt}`,
      centralUsername: 'gw-h',
      centralPassword: 'pw-gateway-h',
      outboxMaxBytes: 64 * 1024 * 1024,
      forwardWindow: 500,
      resendAfterMs: 2_000,
      keepalive: 5,
      log: silent,
    });
    const ep = await edge.start();
    scanner = await connect(`mqtt://127.0.0.1:${ep.mqtt}`, 'scan-h', 'pw-scanner-h');
    acks = new Collector<Ack>(scanner, `wh/${WH}/dev/scan-h/ack`);
    await scanner.subscribeAsync(`wh/${WH}/dev/scan-h/ack`, { qos: 1 });
  });
  after(async () => {
    await scanner?.endAsync();
    await edge?.stop();
    await central?.stop();
    await pool?.end();
    await db?.drop();
  });

  it('a count of nearly 8 KiB with ts year 9999 and numbers that grow when re-serialised reaches the database with the edge receipt time; the next count supersedes it', async () => {
    const head = event({ id: 'phantom-e', type: 'counted', qty: 1_000_000, ts: '9999-12-31T23:59:59Z' }).slice(0, -1);
    const raw = `${head},"n":[${Array(1_600).fill('1e20').join(',')}]}`;
    assert.ok(
      Buffer.byteLength(raw) <= 8 * 1024 && Buffer.byteLength(JSON.stringify(JSON.parse(raw))) > 8 * 1024 + 32,
      'the attack shape',
    );
    const before = Date.now();
    assert.equal((await send(raw)).status, 'applied');
    const { rows } = await pool.query<{ ts: Date; n: number }>(
      `SELECT ts, jsonb_array_length(payload->'n') AS n FROM events WHERE id = 'phantom-e'`,
    );
    const ts = rows[0]?.ts.getTime() ?? Infinity;
    assert.ok(ts >= before - 5 && ts <= Date.now(), `stored ts ${rows[0]?.ts.toISOString()} is the edge receipt time`);
    assert.equal(rows[0]?.n, 1_600, 'the device fields kept');
    assert.equal((await send(event({ id: 'recount-e', type: 'counted', qty: 3 }))).status, 'applied');
    assert.equal((await send(event({ id: 'recv-e', type: 'received', qty: 2 }))).status, 'applied');
    const stock = await call<WarehouseStock>(centralHttp, 'GET', `/v1/warehouses/${WH}/stock/SKU-F`);
    assert.equal(stock.body.onHand, 5, JSON.stringify(stock.body));
  });

  it('retain on a device event is dropped at the edge: the broker keeps no event, only its own status', async () => {
    await scanner.publishAsync(
      topic,
      event({ id: 'retain-big-e', type: 'received', qty: 1, pad: 'p'.repeat(60_000) }),
      { qos: 1, retain: true },
    );
    await scanner.publishAsync(topic, event({ id: 'retain-e', type: 'received', qty: 1 }), { qos: 1, retain: true });
    await acks.waitFor(() => acks.messages.some((m) => m.payload.id === 'retain-e'));
    const persistence = (
      edge as unknown as {
        broker: { aedes: { persistence: { createRetainedStream(pattern: string): AsyncIterable<{ topic: string }> } } };
      }
    ).broker.aedes.persistence;
    const retained: string[] = [];
    for await (const packet of persistence.createRetainedStream('#')) retained.push(packet.topic);
    assert.ok(retained.includes(`wh/${WH}/status`), `the edge's own retained status is there: ${retained.join(', ')}`);
    assert.deepEqual(
      retained.filter((t) => t.includes('/dev/')),
      [],
      'no device event retained',
    );
  });

  it('an invalid payload is answered with one rejected ack, not one from the edge and another from central', async () => {
    await scanner.publishAsync(topic, '{"v":1,"id":"bad-once","type":"received","sku":"SKU-F","qty":0}', { qos: 1 });
    await acks.waitFor(() => acks.messages.some((m) => m.payload.id === 'bad-once'), 10_000, 'a rejected ack');
    // Once central has committed the dead letter, its ack goes out before the ack of anything sent after.
    const deadLetters = async () =>
      (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM dead_letters WHERE event_id = 'bad-once'`))
        .rows[0]?.n;
    while ((await deadLetters()) !== 1);
    assert.equal((await send(event({ id: 'after-bad', type: 'received', qty: 1 }))).status, 'applied');
    const answers = acks.messages.filter((m) => m.payload.id === 'bad-once').map((m) => m.payload.status);
    assert.deepEqual(answers, ['rejected']);
  });
});
