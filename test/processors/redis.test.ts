import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { createClient } from 'redis';
import { Central } from '../../processors/central.js';
import type { Ack } from '../../protocol/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { Collector, connect } from '../helpers/mqtt.js';
import { freePort } from '../helpers/process.js';
import { PrivateRedis } from '../helpers/redis-server.js';

const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const WH = 'WR1';

async function startCentral(db: TestDatabase, redisUrl: string, prefix: string) {
  const devices = await writeDevices([{ id: 'gw-r', warehouse: WH, kind: 'gateway', password: 'pw-redis-1' }]);
  const central = new Central({
    databaseUrl: db.url,
    redisUrl,
    redisPrefix: prefix,
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
  const gateway = await connect(`mqtt://127.0.0.1:${ports.mqtt}`, 'gw-r', 'pw-redis-1');
  const acks = new Collector<Ack>(gateway, `wh/${WH}/dev/+/ack`);
  await gateway.subscribeAsync(`wh/${WH}/dev/+/ack`, { qos: 1 });
  const send = async (id: string, qty: number, sku: string) => {
    await gateway.publishAsync(`wh/${WH}/dev/s1/event`, JSON.stringify({ v: 1, id, type: 'received', sku, qty }), {
      qos: 1,
    });
    await acks.waitFor(() => acks.messages.some((m) => m.payload.id === id));
    return acks.messages.find((m) => m.payload.id === id)?.payload as Ack;
  };
  const get = async (path: string) => {
    const res = await fetch(`http://127.0.0.1:${ports.http}${path}`);
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  return { central, ports, gateway, send, get };
}

describe('Redis read model (REDIS_URL set)', () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase('redis');
  });
  after(async () => db.drop());

  it('writes through on every commit and serves the HTTP reads from Redis', async () => {
    const redis = createClient({ url: REDIS_URL });
    await redis.connect().catch((err: Error) => {
      throw new Error(
        `Redis is not reachable at ${REDIS_URL} (${err.message}); start it with redis-server --daemonize yes --port 6379 --save "" --appendonly no`,
      );
    });
    const prefix = `swtest:${randomBytes(4).toString('hex')}:`;
    const c = await startCentral(db, REDIS_URL, prefix);
    try {
      await c.send('r-1', 7, 'SKU-R');
      const stored = await redis.hGet(`${prefix}stock:SKU-R`, 'json');
      assert.ok(stored, 'the global stock object is in Redis');
      assert.equal(JSON.parse(stored).onHand, 7);
      assert.equal(JSON.parse((await redis.hGet(`${prefix}wh:${WH}:stock:SKU-R`, 'json')) as string).onHand, 7);
      // Reads come from Redis: a value planted there (with a higher version) is what the API answers.
      const planted = { ...JSON.parse(stored), onHand: 4242, version: 999 };
      await redis.hSet(`${prefix}stock:SKU-R`, { v: '999', json: JSON.stringify(planted) });
      assert.equal((await c.get('/v1/stock/SKU-R')).body.onHand, 4242);
      // An older version never overwrites a newer one.
      await c.send('r-2', 1, 'SKU-R');
      assert.equal(JSON.parse((await redis.hGet(`${prefix}stock:SKU-R`, 'json')) as string).onHand, 4242);
    } finally {
      for (const key of await redis.keys(`${prefix}*`)) await redis.del(key);
      await redis.quit();
      await c.gateway.endAsync();
      await c.central.stop();
    }
  });

  it('Redis going away does not stop ingest; reads fall back to PostgreSQL and failures are counted', async () => {
    // Started and waited for until it answers PING, not given a fixed 300 ms that a busy machine may not keep.
    const server = new PrivateRedis(await freePort());
    await server.start();
    const c = await startCentral(db, server.url, 'swtest-outage:');
    try {
      assert.equal((await c.send('o-1', 3, 'SKU-O')).status, 'applied');
      await server.kill();
      const ack = await c.send('o-2', 4, 'SKU-O');
      assert.equal(ack.status, 'applied', 'ingest goes on without Redis');
      assert.deepEqual(ack.stock, { onHand: 7, available: 7 });
      const read = await c.get('/v1/stock/SKU-O');
      assert.equal(read.status, 200);
      assert.equal(read.body.onHand, 7, 'read from PostgreSQL while Redis is down');
      const metrics = await (await fetch(`http://127.0.0.1:${c.ports.http}/metrics`)).text();
      const failed = metrics.split('\n').find((l) => l.startsWith('stockwire_read_model_errors_total{op="write"}'));
      assert.ok(failed && Number(failed.split(' ')[1]) >= 1, `write failures counted: ${failed}`);
    } finally {
      await server.kill();
      await c.gateway.endAsync();
      await c.central.stop();
    }
  });

  it('a Redis that restarts empty gets the whole read model back, rows that did not change since included', {
    timeout: 60_000,
  }, async () => {
    const redis = new PrivateRedis(await freePort());
    await redis.start();
    const c = await startCentral(db, redis.url, `rs${randomBytes(3).toString('hex')}:`);
    const keys = async () => {
      const client = createClient({ url: redis.url });
      await client.connect();
      try {
        return (await client.keys('*')).filter((k) => !k.endsWith('synced')).length;
      } finally {
        await client.quit();
      }
    };
    try {
      for (let i = 0; i < 5; i++) await c.send(`empty-${i}`, 1, `SKU-E${i}`);
      const written = await keys();
      // at least this test's five rows and five skus (the file's database also holds the earlier tests' rows)
      assert.ok(written >= 10, `written through: ${written} keys`);
      await redis.kill(); // its data is gone: no persistence
      await redis.start();
      // Nothing changes after the restart: only a rewrite from the database can bring the rows back.
      const deadline = Date.now() + 15_000;
      while ((await keys().catch(() => 0)) < written && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 200));
      assert.equal(await keys(), written, 'every row back in the restarted Redis');
    } finally {
      await c.gateway.endAsync();
      await c.central.stop();
      await redis.kill();
    }
  });
  /** The keys of the read model in that Redis (the marker aside), and one key's stored stock object. */
  async function inRedis<T>(url: string, f: (client: ReturnType<typeof createClient>) => Promise<T>): Promise<T> {
    const client = createClient({ url });
    await client.connect();
    try {
      return await f(client);
    } finally {
      await client.quit();
    }
  }
  const onHandIn = async (url: string, key: string) => {
    const json = await inRedis(url, (client) => client.hGet(key, 'json')).catch(() => undefined);
    return json ? (JSON.parse(json) as { onHand: number }).onHand : null;
  };
  const waitFor = async (pred: () => Promise<boolean>, ms: number) => {
    for (const deadline = Date.now() + ms; !(await pred()) && Date.now() < deadline; )
      await new Promise((r) => setTimeout(r, 200));
  };

  it('a Redis that restarts from an older snapshot gets the whole read model rewritten, writes it lost included', {
    timeout: 60_000,
  }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'stockwire-redis-'));
    const redis = new PrivateRedis(await freePort(), dir);
    await redis.start();
    const prefix = `sn${randomBytes(3).toString('hex')}:`;
    const key = `${prefix}stock:SKU-SNAP`;
    const c = await startCentral(db, redis.url, prefix);
    try {
      await c.send('snap-1', 5, 'SKU-SNAP');
      await inRedis(redis.url, (client) => client.sendCommand(['SAVE'])); // the snapshot: onHand 5, and the marker
      await c.send('snap-2', 2, 'SKU-SNAP');
      assert.equal(await onHandIn(redis.url, key), 7, 'written through after the snapshot');
      await redis.kill(); // a crash: Redis comes back from the snapshot, without the write of snap-2
      await redis.start();
      // No write fails for snap-2 (it succeeded before the crash): only a rewrite on the new instance brings it back.
      await waitFor(async () => (await onHandIn(redis.url, key)) === 7, 15_000);
      assert.equal(
        await onHandIn(redis.url, key),
        7,
        'the restarted Redis holds the stock of the database, not of its snapshot',
      );
      assert.equal((await c.get('/v1/stock/SKU-SNAP')).body.onHand, 7);
    } finally {
      await c.gateway.endAsync();
      await c.central.stop();
      await redis.kill();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a reconnect check that Redis refuses (LOADING while it reads its data back) is tried again, and the read model catches up', {
    timeout: 60_000,
  }, async () => {
    const redis = new PrivateRedis(await freePort());
    await redis.start();
    const prefix = `ld${randomBytes(3).toString('hex')}:`;
    const key = `${prefix}stock:SKU-LD`;
    const c = await startCentral(db, redis.url, prefix);
    try {
      await c.send('ld-1', 3, 'SKU-LD');
      assert.equal(await onHandIn(redis.url, key), 3);
      await redis.kill();
      assert.equal((await c.send('ld-2', 4, 'SKU-LD')).status, 'applied', 'ingest goes on; the write to Redis fails');
      // The fault: the first command after the reconnect is refused, as a Redis still loading its dataset refuses
      // it. The read model's client is private; reached here to inject that one error into whichever of these
      // commands its reconnect check sends first.
      type Command = (...a: unknown[]) => Promise<unknown>;
      const client = (c.central as unknown as { readModel: { client: Record<'exists' | 'info' | 'get', Command> } })
        .readModel.client;
      let refused = 0;
      for (const name of ['exists', 'info', 'get'] as const) {
        const command = client[name].bind(client);
        client[name] = async (...a: unknown[]) => {
          if (refused === 0 && ++refused) throw new Error('LOADING Redis is loading the dataset in memory');
          return command(...a);
        };
      }
      await redis.start();
      await waitFor(async () => (await onHandIn(redis.url, key)) === 7, 15_000);
      assert.equal(refused, 1, 'the fault was injected');
      assert.equal(await onHandIn(redis.url, key), 7, 'the read model caught up after the refused check');
    } finally {
      await c.gateway.endAsync();
      await c.central.stop();
      await redis.kill();
    }
  });
});
