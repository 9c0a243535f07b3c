import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { LinkStatus } from '../../protocol/index.js';
import { Collector, connect } from '../helpers/mqtt.js';
import { waitApplied } from '../helpers/exactly-once.js';
import { testSeed } from '../helpers/seed.js';
import { rng, workload } from '../helpers/workload.js';
import {
  atProgress,
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

const TOTAL = 4_000;
const EDGE_TOTAL = 10_000; // issue 2/7's acceptance: kill -9 of the edge while devices publish 10,000 events
const KILLS = Number(process.env.FAULT_KILLS ?? 3); // more for a stress run
const SEED = testSeed('faults/kill');

/** kill -9 of each kind of process at random moments, several times in one run, under load through an edge. */
describe(`kill -9 at random moments (seed ${SEED})`, () => {
  const s = scenarioDatabase('faults_kill');

  it(`edge killed ${KILLS} times while devices publish ${EDGE_TOTAL} events`, { timeout: 300_000 }, async () => {
    const startedAt = Date.now();
    const w = await warehouse('KE');
    const random = rng(SEED);
    const { events, expected } = workload(w.wh, EDGE_TOTAL, SEED, { devices: w.scanners.length });
    const env = { DATABASE_URL: s.db.url };
    const central = new Proc('central', () => w.centralArgs(), env);
    await central.start();
    const edge = new Proc('edge', () => w.edgeArgs(`mqtt://127.0.0.1:${w.centralPort}`), env);
    await edge.start();
    // A display at central learns of each lost edge from its will message.
    // It reconnects like a real display (and gets the retained status again); its connection history goes into any failure.
    const display = await connect(`mqtt://127.0.0.1:${w.centralPort}`, `disp-${w.wh}`, 'pw-display-x', {
      reconnectPeriod: 500,
    });
    const displayEvents: string[] = [];
    display.on('close', () => displayEvents.push(`${new Date().toISOString()} close`));
    display.on('connect', () => displayEvents.push(`${new Date().toISOString()} connect`));
    const status = new Collector<LinkStatus>(display, `wh/${w.wh}/status`);
    await display.subscribeAsync(`wh/${w.wh}/status`, { qos: 1 });
    const offline = () => status.messages.filter((m) => m.payload.central === 'offline').length;
    const online = () => status.messages.filter((m) => m.payload.central === 'online').length;
    const devices = w.devices();
    // Thresholds on what the edge acknowledged: each kill lands while devices are mid-stream.
    const chaos = atProgress(
      () => devices.count,
      randomThresholds(random, KILLS, EDGE_TOTAL * 0.1, EDGE_TOTAL * 0.85),
      async () => {
        // The kill must find the edge linked to central, or it leaves no will to see (a link can drop and come back under load).
        await status.waitFor(
          () => status.last(`wh/${w.wh}/status`)?.central === 'online',
          30_000,
          'the edge linked to central before the kill',
        );
        const before = offline();
        await edge.kill9();
        await status
          .waitFor(() => offline() > before, 15_000, "offline status at central (the edge's will)")
          .catch((err: Error) => {
            const shown = `display connected: ${display.connected}, its connection events: ${JSON.stringify(displayEvents)}`;
            throw new Error(
              `${err.message}\n${shown}\nstatus messages: ${JSON.stringify(status.messages.slice(-5))}\ncentral log:\n${central.logTail(30)}`,
            );
          });
        await sleep(200 + random() * 800);
        const onlineBefore = online();
        await edge.start();
        // Linked to central again before the next kill: a kill before the link is up leaves no will to see.
        await status.waitFor(() => online() > onlineBefore, 30_000, 'online status at central after the restart');
      },
    );
    try {
      await within(
        200_000,
        'devices publishing through a dying edge',
        Promise.race([devices.run(events), chaos.failed]),
        stuckDetail(devices, edge, central),
      );
      await chaos.stop();
      assert.equal(chaos.done, KILLS, 'every kill happened mid-stream');
      await status.waitFor(() => status.last(`wh/${w.wh}/status`)?.central === 'online', 15_000, 'online status again');
      await waitApplied(s.pool, w.wh, EDGE_TOTAL, 60_000);
      const o = await measure({
        pool: s.pool,
        databaseUrl: s.db.url,
        wh: w.wh,
        expected,
        sent: EDGE_TOTAL,
        deliveries: devices.publishes,
        centralHttp: `http://127.0.0.1:${central.ports.http}`,
        scenario: 'kill -9 edge',
        faults: `edge SIGKILL ×${edge.kills} mid-stream, restarted 0.2–1 s later`,
        injected: edge.kills,
        startedAt,
      });
      assertOutcome(o);
    } finally {
      await chaos.stop().catch(() => {});
      await devices.close();
      await display.endAsync(true);
      await edge.stop();
      await central.stop();
    }
  });

  it(`central killed ${KILLS} times while ${TOTAL} events stream through an edge`, { timeout: 300_000 }, async () => {
    const startedAt = Date.now();
    const w = await warehouse('KC');
    const random = rng(SEED + 1);
    const { events, expected } = workload(w.wh, TOTAL, SEED + 1, { devices: w.scanners.length });
    const env = { DATABASE_URL: s.db.url };
    const central = new Proc('central', () => w.centralArgs(), env);
    await central.start();
    const edge = new Proc('edge', () => w.edgeArgs(`mqtt://127.0.0.1:${w.centralPort}`), env);
    await edge.start();
    const devices = w.devices();
    // Thresholds on what central committed: each kill lands between a receipt and a commit somewhere.
    const chaos = atProgress(
      () => s.inbox(w.wh),
      randomThresholds(random, KILLS, TOTAL * 0.1, TOTAL * 0.85),
      async () => {
        await central.kill9();
        await sleep(200 + random() * 800);
        await central.start();
      },
    );
    try {
      await within(
        200_000,
        'devices publishing to the edge',
        Promise.race([devices.run(events), chaos.failed]),
        stuckDetail(devices, edge),
      );
      await until(() => chaos.done >= KILLS, 120_000, 'the kills');
      await chaos.stop();
      await waitApplied(s.pool, w.wh, TOTAL, 90_000);
      const o = await measure({
        pool: s.pool,
        databaseUrl: s.db.url,
        wh: w.wh,
        expected,
        sent: TOTAL,
        deliveries: devices.publishes,
        centralHttp: `http://127.0.0.1:${central.ports.http}`,
        scenario: 'kill -9 central',
        faults: `central SIGKILL ×${central.kills} mid-stream, restarted 0.2–1 s later`,
        injected: central.kills,
        startedAt,
      });
      assertOutcome(o);
    } finally {
      await chaos.stop().catch(() => {});
      await devices.close();
      await edge.stop();
      await central.stop();
    }
  });

  it(`standalone processor behind the machine's Mosquitto killed ${KILLS} times`, { timeout: 300_000 }, async () => {
    const startedAt = Date.now();
    const w = await warehouse('KP');
    const random = rng(SEED + 2);
    const { events, expected } = workload(w.wh, TOTAL, SEED + 2, { devices: w.scanners.length });
    const env = { DATABASE_URL: s.db.url };
    const processor = new Proc('processor', () => w.processorArgs(MOSQUITTO), env);
    await processor.start();
    const edge = new Proc('edge', () => w.edgeArgs(MOSQUITTO, { auth: false }), env);
    await edge.start();
    const devices = w.devices();
    const chaos = atProgress(
      () => s.inbox(w.wh),
      randomThresholds(random, KILLS, TOTAL * 0.1, TOTAL * 0.85),
      async () => {
        await processor.kill9();
        await sleep(200 + random() * 800);
        await processor.start();
      },
    );
    try {
      await within(
        200_000,
        'devices publishing to the edge',
        Promise.race([devices.run(events), chaos.failed]),
        stuckDetail(devices, edge),
      );
      await until(() => chaos.done >= KILLS, 120_000, 'the kills');
      await chaos.stop();
      await waitApplied(s.pool, w.wh, TOTAL, 90_000);
      const o = await measure({
        pool: s.pool,
        databaseUrl: s.db.url,
        wh: w.wh,
        expected,
        sent: TOTAL,
        deliveries: devices.publishes,
        centralHttp: `http://127.0.0.1:${processor.ports.http}`,
        scenario: 'kill -9 processor (Mosquitto)',
        faults: `standalone processor SIGKILL ×${processor.kills} mid-stream behind Mosquitto, restarted 0.2–1 s later`,
        injected: processor.kills,
        startedAt,
      });
      assertOutcome(o);
    } finally {
      await chaos.stop().catch(() => {});
      await devices.close();
      await edge.stop();
      await processor.stop();
    }
  });
});
