import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import pino from 'pino';
import { Central } from '../../processors/central.js';
import { createPool } from '../../processors/db/pool.js';
import { migrate } from '../../processors/db/migrate.js';
import { applyBatch } from '../../processors/ingest/batch.js';
import { Ingest } from '../../processors/ingest/ingest.js';
import type { Publisher } from '../../processors/publish/publisher.js';
import { createIngestMetrics } from '../../processors/metrics.js';
import { MemoryReadModel } from '../../processors/readmodel/readmodel.js';
import { Registry } from 'prom-client';
import { parseEvent } from '../../protocol/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { startStockwire } from '../helpers/process.js';
import { until } from '../helpers/broker.js';

/** The pool's next connection attempt fails, as a reset connection would; later ones connect. */
function failNextConnect(pool: pg.Pool): void {
  let failOnce = true;
  const realConnect = pool.connect.bind(pool) as (...args: unknown[]) => unknown;
  pool.connect = ((...args: unknown[]) => {
    if (!failOnce) return realConnect(...args);
    failOnce = false;
    return Promise.reject(Object.assign(new Error('connection reset (injected)'), { code: '08006' }));
  }) as typeof pool.connect;
}

describe('stockwire processor error paths', () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase('processor');
  });
  after(async () => db.drop());

  async function withCentral<T>(fn: (url: string, central: Central) => Promise<T>): Promise<T> {
    const devices = await writeDevices([
      { id: 'gw-p', warehouse: 'WP', kind: 'gateway', password: 'pw-gateway-p' },
      { id: 'proc-p', warehouse: 'WP', kind: 'processor', password: 'pw-processor-p' },
    ]);
    const central = new Central({
      databaseUrl: db.url,
      redisPrefix: 'x',
      dataDir: devices.dir,
      devicesFile: devices.file,
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: 0,
      httpPort: 0,
      batchMax: 100,
      batchWaitMs: 5,
      log: pino({ level: 'silent' }),
    });
    const ports = await central.start();
    try {
      return await fn(`mqtt://127.0.0.1:${ports.mqtt}`, central);
    } finally {
      await central.stop().catch(() => {});
    }
  }

  it('a subscription central refuses fails the start (exit 1) instead of waiting forever', {
    timeout: 60_000,
  }, async () => {
    await withCentral(async (url) => {
      // A gateway credential may not subscribe to every warehouse's events.
      const err = await startStockwire(
        [
          'processor',
          '--central-url',
          url,
          '--central-username',
          'gw-p',
          '--central-password',
          'pw-gateway-p',
          '--http-port',
          '0',
          '--host',
          '127.0.0.1',
        ],
        { DATABASE_URL: db.url },
      ).then(
        () => null,
        (e: Error) => e,
      );
      assert.ok(err, 'the processor did not become ready');
      assert.match(err.message, /exited with 1/);
      assert.match(err.message, /subscribing at central failed/);
    });
  });

  it('SIGTERM while central is unreachable: the processor still exits 0', { timeout: 60_000 }, async () => {
    await withCentral(async (url, central) => {
      const proc = await startStockwire(
        [
          'processor',
          '--central-url',
          url,
          '--central-username',
          'proc-p',
          '--central-password',
          'pw-processor-p',
          '--http-port',
          '0',
          '--host',
          '127.0.0.1',
          '--instance',
          'sigterm',
        ],
        { DATABASE_URL: db.url },
      );
      await central.stop();
      // The processor has seen central go (its log says so) before the SIGTERM: not a fixed 500 ms, after which a
      // busy machine's processor may not have noticed yet and the test would not reach its case.
      await until(
        () => proc.logs.some((l) => l.includes('connection to central lost')),
        'the processor losing central',
      );
      proc.child.kill('SIGTERM');
      const code = await Promise.race([proc.exited, new Promise((r) => setTimeout(() => r('hung'), 20_000))]);
      if (code === 'hung') proc.child.kill('SIGKILL');
      assert.equal(code, 0);
    });
  });

  it('after a failed attempt, the retried batch publishes the current stock even of events it now finds committed', async () => {
    const pool = createPool({ url: db.url, max: 2 });
    await migrate(pool);
    const item = (id: string, qty: number) => {
      const payload = Buffer.from(JSON.stringify({ v: 1, id, type: 'received', sku: 'SKU-RETRY', qty }));
      const r = parseEvent(payload, { wh: 'WR', device: 'd1', receivedAt: Date.now() });
      if (!r.ok) throw new Error('bad test event');
      return {
        delivery: { topic: 'wh/WR/dev/d1/event', payload, wh: 'WR', device: 'd1', source: 't', receivedAt: Date.now() },
        ok: true as const,
        event: r.event,
      };
    };
    // The first attempt "committed but lost its reply": the event is in the database already.
    await applyBatch(pool, [item('r-1', 4)]);
    failNextConnect(pool);
    const flaky = pool;
    const published: string[] = [];
    const publisher: Publisher = { publish: async (topic) => void published.push(topic) };
    const ingest = new Ingest({
      pool: flaky,
      publisher,
      readModel: new MemoryReadModel(pool),
      metrics: createIngestMetrics(new Registry()),
      log: pino({ level: 'silent' }),
      maxBatch: 10,
      maxWaitMs: 1,
    });
    const decision = await ingest.submit(item('r-1', 4).delivery);
    await ingest.stop();
    assert.equal(decision.status, 'duplicate');
    assert.ok(published.includes('wh/WR/stock/SKU-RETRY'), `published: ${published.join(', ')}`);
    assert.ok(published.includes('stock/SKU-RETRY'));
    await pool.end();
  });
  it('a stop while the database fails, though it looked healthy when the stop began, hands the batch back instead of retrying for ever', {
    timeout: 30_000,
  }, async () => {
    // Nothing listens on this port: every connection attempt fails at once, as with a database that just died.
    const dead = createPool({ url: 'postgres://postgres@127.0.0.1:9/none', max: 2 });
    const ingest = new Ingest({
      pool: dead,
      publisher: { publish: async () => {} },
      readModel: new MemoryReadModel(dead),
      metrics: createIngestMetrics(new Registry()),
      log: pino({ level: 'silent' }),
      maxBatch: 10,
      maxWaitMs: 1,
    });
    const payload = Buffer.from(JSON.stringify({ v: 1, id: 'dead-1', type: 'received', sku: 'SKU-D', qty: 1 }));
    const decided = ingest.submit({
      topic: 'wh/WD/dev/d1/event',
      payload,
      wh: 'WD',
      device: 'd1',
      source: 't',
      receivedAt: Date.now(),
    });
    assert.equal(ingest.databaseHealthy, true, 'no batch has failed yet');
    await ingest.stop(); // before the fix it retried for ever and this never returned (the test's timeout caught it)
    await assert.rejects(decided, /ingest stopped/, 'handed back: its sender resends it');
    await dead.end();
  });
  it('after a failed attempt, the retried batch also publishes the latest shelf reading of level events it now finds committed', async () => {
    const pool = createPool({ url: db.url, max: 2 });
    await migrate(pool);
    const payload = Buffer.from(
      JSON.stringify({ v: 1, id: 'lv-retry', type: 'level', sku: 'SKU-SHELF-R', qty: 9, location: 'B-07' }),
    );
    const r = parseEvent(payload, { wh: 'WR', device: 'd1', receivedAt: Date.now() });
    if (!r.ok) throw new Error('bad test event');
    const delivery = {
      topic: 'wh/WR/dev/d1/event',
      payload,
      wh: 'WR',
      device: 'd1',
      source: 't',
      receivedAt: Date.now(),
    };
    // The first attempt "committed but lost its reply": the reading is in the database already.
    await applyBatch(pool, [{ delivery, ok: true, event: r.event }]);
    failNextConnect(pool);
    const published: { topic: string; payload: string }[] = [];
    const publisher: Publisher = {
      publish: async (topic, body) => void published.push({ topic, payload: String(body) }),
    };
    const ingest = new Ingest({
      pool,
      publisher,
      readModel: new MemoryReadModel(pool),
      metrics: createIngestMetrics(new Registry()),
      log: pino({ level: 'silent' }),
      maxBatch: 10,
      maxWaitMs: 1,
    });
    const decision = await ingest.submit(delivery);
    await ingest.stop();
    assert.equal(decision.status, 'duplicate');
    const shelf = published.find((p) => p.topic === 'wh/WR/shelf/B-07/SKU-SHELF-R');
    assert.ok(shelf, `published: ${published.map((p) => p.topic).join(', ')}`);
    assert.equal((JSON.parse(shelf.payload) as { qty: number }).qty, 9);
    await pool.end();
  });
});
