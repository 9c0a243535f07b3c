import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createClient } from 'redis';
import { centralOnHand } from '../../device-sim/verify.js';
import { waitApplied } from '../helpers/exactly-once.js';
import { freePort } from '../helpers/process.js';
import { PrivateRedis } from '../helpers/redis-server.js';
import { testSeed } from '../helpers/seed.js';
import { workload } from '../helpers/workload.js';
import { atProgress, metric, Proc, scenarioDatabase, sleep, stuckDetail, until, warehouse, within } from './cluster.js';
import { assertOutcome, measure } from './outcome.js';

const TOTAL = 5_000;
const SEED = testSeed('faults/redis');

describe(`Redis (read model) killed and started again mid-stream (seed ${SEED})`, () => {
  const s = scenarioDatabase('faults_redis');

  it(`ingest goes on while Redis is away, reads fall back to PostgreSQL, and the read model catches up (${TOTAL} events)`, {
    timeout: 180_000,
  }, async () => {
    const startedAt = Date.now();
    const redis = new PrivateRedis(await freePort());
    await redis.start();
    const w = await warehouse('RD');
    const prefix = `faults:${w.wh}:`;
    const { events, expected } = workload(w.wh, TOTAL, SEED, { devices: w.scanners.length });
    const env = { DATABASE_URL: s.db.url };
    const central = new Proc('central', () => w.centralArgs(['--redis-url', redis.url, '--redis-prefix', prefix]), env);
    await central.start();
    const edge = new Proc('edge', () => w.edgeArgs(`mqtt://127.0.0.1:${w.centralPort}`), env);
    await edge.start();
    const devices = w.devices();
    const http = () => `http://127.0.0.1:${central.ports.http}`;
    let readsWhileAway = 0;
    let stopCode: number | null = null;
    // The restart waits for 60 % committed: if ingest stopped while Redis is away, this never happens and the scenario fails.
    const chaos = atProgress(
      () => s.inbox(w.wh),
      [TOTAL * 0.25, TOTAL * 0.6],
      async (i) => {
        if (i === 0) {
          await redis.kill();
          return;
        }
        // Reads while Redis is away: answered from PostgreSQL, equal to the stored stock.
        const { rows } = await s.pool.query<{ sku: string; on_hand: number }>(
          'SELECT sku, on_hand FROM stock WHERE wh = $1 ORDER BY sku LIMIT 5',
          [w.wh],
        );
        for (const r of rows) {
          const onHand = await centralOnHand(http(), w.wh, r.sku);
          assert.equal(typeof onHand, 'number', `read of ${r.sku} while Redis is away`);
          readsWhileAway++;
        }
        await redis.start();
      },
    );
    const reader = createClient({ url: redis.url });
    reader.on('error', () => {});
    try {
      await within(
        120_000,
        'devices publishing to the edge',
        Promise.race([devices.run(events), chaos.failed]),
        stuckDetail(devices, edge),
      );
      await until(() => chaos.done >= 2, 60_000, 'Redis kill and restart');
      await chaos.stop();
      await waitApplied(s.pool, w.wh, TOTAL, 60_000);
      assert.ok(readsWhileAway > 0, 'reads were answered while Redis was away');
      const writeErrors = await readModelWriteErrors(http());
      assert.ok(writeErrors > 0, 'read-model writes failed while Redis was away (the fault took effect)');
      const o = await measure({
        pool: s.pool,
        databaseUrl: s.db.url,
        wh: w.wh,
        expected,
        sent: TOTAL,
        deliveries: devices.publishes,
        centralHttp: http(),
        scenario: 'Redis killed and restarted',
        faults: 'private Redis SIGKILL at 25 % committed, started again (empty) at 60 %',
        injected: 1,
        startedAt,
      });
      assertOutcome(o);
      // Caught up: once reconnected, Redis holds the stored stock of the rows whose writes failed while it was away.
      await reader.connect();
      const { rows } = await s.pool.query<{ sku: string; on_hand: number; version: number }>(
        'SELECT sku, on_hand, version FROM stock WHERE wh = $1',
        [w.wh],
      );
      const cached = async () => {
        const out = new Map<string, { onHand: number; version: number }>();
        for (const r of rows) {
          const json = await reader.hGet(`${prefix}wh:${w.wh}:stock:${r.sku}`, 'json');
          if (json !== null) out.set(r.sku, JSON.parse(json) as { onHand: number; version: number });
        }
        return out;
      };
      await until(
        async () => (await cached()).size === rows.length,
        15_000,
        `Redis holding all ${rows.length} rows again`,
      ).catch(async (err: Error) => {
        throw new Error(`${err.message}: it holds ${(await cached()).size}\ncentral log:\n${central.logTail()}`);
      });
      const now = await cached();
      for (const r of rows)
        assert.deepEqual(
          now.get(r.sku) && { onHand: now.get(r.sku)?.onHand, version: now.get(r.sku)?.version },
          { onHand: r.on_hand, version: r.version },
          `Redis holds the stored stock of ${r.sku}`,
        );
    } finally {
      await chaos.stop().catch(() => {});
      await reader.quit().catch(() => {});
      await devices.close();
      await edge.stop();
      stopCode = await central.stop();
      await redis.kill();
    }
    assert.equal(stopCode, 0, 'central stops cleanly');
  });

  it(`Redis hung (SIGSTOP, connections open, no answer) for 10 s: commit acks keep flowing (${TOTAL} events)`, {
    timeout: 180_000,
  }, async () => {
    const startedAt = Date.now();
    const redis = new PrivateRedis(await freePort());
    await redis.start();
    const w = await warehouse('RH');
    const { events, expected } = workload(w.wh, TOTAL, SEED + 1, { devices: w.scanners.length });
    const env = { DATABASE_URL: s.db.url };
    const central = new Proc(
      'central',
      () => w.centralArgs(['--redis-url', redis.url, '--redis-prefix', `faults:${w.wh}:`]),
      env,
    );
    await central.start();
    const edge = new Proc('edge', () => w.edgeArgs(`mqtt://127.0.0.1:${w.centralPort}`), env);
    await edge.start();
    const devices = w.devices();
    const confirmed = () => metric(edge.current, 'stockwire_edge_events_confirmed_total');
    let confirmedWhilePaused = 0;
    let pausedMs = 0;
    let readWhilePaused: number | null = null;
    let stopCode: number | null = null;
    const chaos = atProgress(
      () => s.inbox(w.wh),
      [TOTAL * 0.2],
      async () => {
        redis.pause();
        const pausedAt = Date.now();
        const before = await confirmed();
        await sleep(3_000);
        // A read while Redis hangs: answered (from PostgreSQL), not held.
        readWhilePaused = await within(
          5_000,
          'a read while Redis hangs',
          centralOnHand(`http://127.0.0.1:${central.ports.http}`, w.wh, 'SKU-1'),
        );
        // Hung for at least 10 s, and until 1,000 acks came through it: a count waited for, not raced against a
        // fixed 10 s that a busy machine may not keep. The 40 s guard still fails the bug (73 acks in 10 s before
        // the fix: ~300 in 40 s).
        await until(async () => (await confirmed()) - before >= 1_000, 40_000, '1,000 acks while Redis hangs').catch(
          () => undefined,
        );
        await sleep(Math.max(0, pausedAt + 10_000 - Date.now()));
        confirmedWhilePaused = (await confirmed()) - before;
        pausedMs = Date.now() - pausedAt;
        redis.resume();
      },
    );
    try {
      await within(
        120_000,
        'devices publishing to the edge',
        Promise.race([devices.run(events), chaos.failed]),
        stuckDetail(devices, edge),
      );
      await until(() => chaos.done >= 1, 60_000, 'the pause');
      await chaos.stop();
      await waitApplied(s.pool, w.wh, TOTAL, 60_000);
      const o = await measure({
        pool: s.pool,
        databaseUrl: s.db.url,
        wh: w.wh,
        expected,
        sent: TOTAL,
        deliveries: devices.publishes,
        centralHttp: `http://127.0.0.1:${central.ports.http}`,
        scenario: 'Redis hung (SIGSTOP)',
        faults: `private Redis SIGSTOP for ${Math.round(pausedMs / 1_000)} s at 20 % committed, then SIGCONT (${confirmedWhilePaused} events confirmed to the edge meanwhile)`,
        injected: 1,
        startedAt,
      });
      assertOutcome(o);
      // The read model is a cache: a Redis that does not answer must not hold back the acks that empty the edges' outboxes.
      // Measured before the fix: 73 in 10 s, the acks stuck behind a read-model write that never returned.
      assert.ok(
        confirmedWhilePaused >= 1_000,
        `the edge got commit acks while Redis hung (${confirmedWhilePaused} confirmed in ${pausedMs} ms)`,
      );
      assert.equal(typeof readWhilePaused, 'number', 'a read was answered while Redis hung');
    } finally {
      await chaos.stop().catch(() => {});
      redis.resume();
      await devices.close();
      await edge.stop();
      stopCode = await central.stop();
      await redis.kill();
    }
    assert.equal(stopCode, 0, 'central stops cleanly');
  });
});

async function readModelWriteErrors(http: string): Promise<number> {
  const text = await (await fetch(`${http}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('stockwire_read_model_errors_total{op="write"}'));
  return Number(line?.split(' ').at(-1) ?? 0);
}
