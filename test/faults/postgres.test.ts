import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { waitApplied } from '../helpers/exactly-once.js';
import { testSeed } from '../helpers/seed.js';
import { rng, workload } from '../helpers/workload.js';
import {
  atProgress,
  metric,
  MOSQUITTO,
  Proc,
  randomThresholds,
  scenarioDatabase,
  sleep,
  stuckDetail,
  until,
  warehouse,
  within,
} from './cluster.js';
import { assertOutcome, measure } from './outcome.js';

const TOTAL = 5_000;
const TERMINATIONS = 4;
const SEED = testSeed('faults/postgres');

/**
 * PostgreSQL connections killed under a process's feet with pg_terminate_backend (the machine's
 * PostgreSQL is shared with other tests, so it is not restarted): the same errors a database
 * restart or failover gives a client — FATAL 57P01, then a reset socket — for this process only.
 */
describe(`PostgreSQL connections terminated mid-stream (seed ${SEED})`, () => {
  const s = scenarioDatabase('faults_pg');

  /** Terminates every connection of one application to this file's database; returns how many. */
  const terminate = async (applicationName: string): Promise<number> => {
    const { rows } = await s.pool.query<{ n: number }>(
      'SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = $2',
      [s.db.name, applicationName],
    );
    return rows[0]?.n ?? 0;
  };

  /**
   * Locks the stock table (before the devices publish, so that their events are still to come); `terminateWaiting`
   * then waits until a statement of `applicationName` waits for the lock and terminates its connections.
   */
  const lockStock = async () => {
    const holder = await s.pool.connect();
    await holder.query('BEGIN');
    await holder.query('LOCK TABLE stock IN ACCESS EXCLUSIVE MODE');
    return {
      terminateWaiting: async (applicationName: string): Promise<number> => {
        await until(
          async () =>
            ((
              await s.pool.query<{ n: number }>(
                "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = $2 AND wait_event_type = 'Lock'",
                [s.db.name, applicationName],
              )
            ).rows[0]?.n ?? 0) > 0,
          30_000,
          `a statement of ${applicationName} waiting for the locked stock table`,
        );
        return terminate(applicationName);
      },
      release: async () => {
        await holder.query('ROLLBACK').catch(() => {});
        holder.release();
      },
    };
  };

  for (const kind of ['central', 'processor'] as const) {
    it(`${kind}: every connection terminated ${TERMINATIONS} times while ${TOTAL} events stream; ingest resumes by itself`, {
      timeout: 180_000,
    }, async () => {
      const startedAt = Date.now();
      const w = await warehouse(kind === 'central' ? 'PC' : 'PP');
      const random = rng(SEED + (kind === 'central' ? 0 : 1));
      const { events, expected } = workload(w.wh, TOTAL, SEED, { devices: w.scanners.length });
      const env = { DATABASE_URL: s.db.url };
      const target =
        kind === 'central'
          ? new Proc('central', () => w.centralArgs(), env)
          : new Proc('processor', () => w.processorArgs(MOSQUITTO), env);
      await target.start();
      const edge = new Proc(
        'edge',
        () =>
          kind === 'central' ? w.edgeArgs(`mqtt://127.0.0.1:${w.centralPort}`) : w.edgeArgs(MOSQUITTO, { auth: false }),
        env,
      );
      await edge.start();
      const devices = w.devices();
      let terminated = 0;
      let stopCode: number | null = null;
      const chaos = atProgress(
        () => s.inbox(w.wh),
        randomThresholds(random, TERMINATIONS, TOTAL * 0.1, TOTAL * 0.8),
        async () => {
          // A burst, so that some termination lands inside a batch's transaction, not only on idle connections.
          for (let i = 0; i < 10; i++) {
            terminated += await terminate(`stockwire-${kind}`);
            await sleep(30);
          }
        },
      );
      try {
        // One termination cannot miss a batch's transaction, whatever the machine's speed: the stock table is locked
        // before the devices publish, and the target's connections are terminated once PostgreSQL shows one of its
        // statements waiting for the lock. The bursts at moments of chance come after, on idle connections too.
        const lock = await lockStock();
        const stream = devices.run(events);
        stream.catch(() => {}); // its failure is reported by the race below
        try {
          terminated += await lock.terminateWaiting(`stockwire-${kind}`);
        } finally {
          await lock.release();
        }
        await within(
          120_000,
          'devices publishing to the edge',
          Promise.race([stream, chaos.failed]),
          stuckDetail(devices, edge),
        );
        await until(() => chaos.done >= TERMINATIONS, 60_000, 'the terminations');
        await chaos.stop();
        assert.ok(terminated >= TERMINATIONS, `connections terminated: ${terminated}`);
        await waitApplied(s.pool, w.wh, TOTAL, 60_000).catch((err: Error) => {
          throw new Error(`${err.message}\n${kind} log:\n${target.logTail()}`);
        });
        const o = await measure({
          pool: s.pool,
          databaseUrl: s.db.url,
          wh: w.wh,
          expected,
          sent: TOTAL,
          deliveries: devices.publishes,
          centralHttp: `http://127.0.0.1:${target.ports.http}`,
          scenario: `pg_terminate_backend (${kind})`,
          faults: `all of ${kind}'s PostgreSQL connections terminated in ${TERMINATIONS} bursts mid-stream (${terminated} connections)`,
          injected: TERMINATIONS,
          startedAt,
        });
        assertOutcome(o);
        assert.ok(target.alive, `${kind} still runs`);
        const failedBatches = await metric(target.current, 'stockwire_db_errors_total');
        assert.ok(
          failedBatches > 0,
          `some batch lost its connection mid-transaction and was retried (${failedBatches})`,
        );
      } finally {
        await chaos.stop().catch(() => {});
        await devices.close();
        await edge.stop();
        stopCode = await target.stop();
      }
      assert.equal(stopCode, 0, `${kind} stops cleanly after the outages`);
    });
  }
});
