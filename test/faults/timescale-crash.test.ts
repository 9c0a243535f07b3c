import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import { createPool } from '../../processors/db/pool.js';
import { createDatabaseOn, timescaleSkip, type TestDatabase } from '../helpers/db.js';
import { waitApplied } from '../helpers/exactly-once.js';
import { freePort } from '../helpers/process.js';
import { testSeed } from '../helpers/seed.js';
import { PrivateTimescale } from '../helpers/timescale-server.js';
import { rng, workload } from '../helpers/workload.js';
import { metric, MOSQUITTO, Proc, randomThresholds, stuckDetail, until, warehouse, within } from './cluster.js';
import { assertOutcome, measure } from './outcome.js';

const TOTAL = 5_000;
const SEED = testSeed('faults/timescale-crash');
const NOTICE_MS = 60_000; // the process meets the outage on its next batch; this bounds a process that never tries

/**
 * The database server itself crashes under a process's feet — not one connection (postgres.test.ts) but every
 * server process at once, as at a power cut or an OOM kill — and comes back after crash recovery. The server is a
 * TimescaleDB of this file's own (the shared ones serve other tests and must never be crashed), started with
 * the shared start script as a user would, so the hypertables' WAL recovery is exercised too.
 */
describe(`TimescaleDB server crashed mid-stream and started again (seed ${SEED})`, { skip: timescaleSkip() }, () => {
  let server: PrivateTimescale | undefined;
  let db: TestDatabase;
  let pool: pg.Pool;
  before(async () => {
    server = new PrivateTimescale(await freePort());
    await server.start();
    db = await createDatabaseOn(server.url, 'faults_tsdb');
    pool = createPool({ url: db.url, max: 2, applicationName: 'faults-test' });
  });
  after(async () => {
    await pool?.end();
    await server?.remove(); // the database goes with the cluster
  });
  const crashes = [
    { how: 'pg_ctl stop -m immediate', crash: (s: PrivateTimescale) => s.stopImmediate() },
    { how: 'kill -9 of the postmaster', crash: async (s: PrivateTimescale) => void (await s.kill9()) },
  ];

  for (const kind of ['central', 'processor'] as const) {
    it(`${kind}: the server crashed by ${crashes.map((c) => c.how).join(', then ')} while ${TOTAL} events stream; ingest resumes by itself`, {
      timeout: 300_000,
    }, async () => {
      const s = server as PrivateTimescale;
      const startedAt = Date.now();
      const w = await warehouse(kind === 'central' ? 'TC' : 'TP');
      const random = rng(SEED + (kind === 'central' ? 0 : 1));
      const { events, expected } = workload(w.wh, TOTAL, SEED + (kind === 'central' ? 0 : 1), {
        devices: w.scanners.length,
      });
      const env = { DATABASE_URL: db.url };
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
      const dbErrors = async () => {
        const n = await metric(target.current, 'stockwire_db_errors_total');
        return Number.isNaN(n) ? 0 : n;
      };
      const met: number[] = [];
      let stopCode: number | null = null;
      let publishes = 0;
      // The stream in parts: one before the crashes, one sent while each crash lasts. The edge takes a part
      // (its own fsync) while the server is down, so the process must meet the outage with a batch in hand;
      // crashing at a share of the commits instead raced a fast drain, which could commit everything first.
      const cuts = [0, ...randomThresholds(random, crashes.length, TOTAL * 0.15, TOTAL * 0.75).map(Math.round), TOTAL];
      const parts = cuts.slice(1).map((end, i) => events.slice(cuts[i], end));
      let devices = w.devices();
      const send = async (part: typeof events) => {
        devices = w.devices();
        try {
          await within(200_000, 'devices publishing to the edge', devices.run(part), stuckDetail(devices, edge));
        } finally {
          publishes += devices.publishes;
          await devices.close();
        }
      };
      try {
        await send(parts[0] as typeof events);
        for (const [i, c] of crashes.entries()) {
          await waitApplied(pool, w.wh, cuts[i + 1] as number, 90_000);
          const before = await dbErrors();
          await c.crash(s);
          await send(parts[i + 1] as typeof events);
          // The server stays down until the process has met the outage: a batch failed on it and waits to be retried.
          await until(
            async () => (await dbErrors()) > before,
            NOTICE_MS,
            `${kind} meeting the crashed database (${c.how})`,
          );
          met.push((await dbErrors()) - before);
          await s.start();
        }
        await waitApplied(pool, w.wh, TOTAL, 90_000).catch((err: Error) => {
          throw new Error(`${err.message}\n${kind} log:\n${target.logTail()}`);
        });
        const o = await measure({
          pool,
          databaseUrl: db.url,
          wh: w.wh,
          expected,
          sent: TOTAL,
          deliveries: publishes,
          centralHttp: `http://127.0.0.1:${target.ports.http}`,
          scenario: `TimescaleDB crash (${kind})`,
          faults: `private TimescaleDB crashed by ${crashes.map((c) => c.how).join(', then ')} mid-stream, started again (crash recovery) once ${kind} had failed a batch on it (${met.join(' and ')} failed attempts)`,
          injected: met.length,
          startedAt,
        });
        assertOutcome(o);
        assert.equal(met.length, crashes.length, 'both crashes met');
        assert.ok(target.alive, `${kind} still runs`);
        // It really was TimescaleDB, through both recoveries: the event log is a hypertable with chunks.
        const { rows } = await pool.query<{ chunks: number }>(
          `SELECT count(*)::int AS chunks FROM timescaledb_information.chunks WHERE hypertable_name = 'events'`,
        );
        assert.ok((rows[0]?.chunks ?? 0) > 0, 'events is a hypertable with chunks');
      } finally {
        await devices.close();
        await s.start().catch(() => {}); // the next scenario gets its server back (a no-op when it is up)
        await edge.stop();
        stopCode = await target.stop();
      }
      assert.equal(stopCode, 0, `${kind} stops cleanly after the crashes`);
    });
  }
});

describe('the private TimescaleDB of a crash test, when it cannot be had', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sw-tsdb-helper-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const script = (name: string, body: string) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
    return file;
  };

  it('an absent start script: the test fails saying where it looked and how to get it', async () => {
    const absent = path.join(dir, 'no-start');
    await assert.rejects(
      new PrivateTimescale(1, absent).start(),
      (err: Error) => err.message.includes(`${absent} is absent`) && /\.\.\/shared/.test(err.message),
    );
  });

  it('a start that fails, or prints another URL: the test fails with what it said; crashing a server never started fails too', async () => {
    const failing = new PrivateTimescale(
      1,
      script('fails', 'echo "[timescaledb] start failed; the log ends: FATAL boom" >&2; exit 1'),
    );
    await assert.rejects(failing.start(), (err: Error) => /exit 1/.test(err.message) && /FATAL boom/.test(err.message));
    await failing.remove();
    const elsewhere = new PrivateTimescale(1, script('elsewhere', 'echo postgres://postgres@127.0.0.1:5433/postgres'));
    await assert.rejects(elsewhere.start(), /on port 1 failed/);
    await elsewhere.remove();
    const never = new PrivateTimescale(1);
    await assert.rejects(never.kill9(), /not been started/);
    await assert.rejects(never.stopImmediate(), /not been started/);
  });
});
