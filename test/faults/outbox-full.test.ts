import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { waitApplied } from '../helpers/exactly-once.js';
import { Collector, connect } from '../helpers/mqtt.js';
import { testSeed } from '../helpers/seed.js';
import { workload } from '../helpers/workload.js';
import { metric, Proc, scenarioDatabase, sleep, stuckDetail, until, warehouse, within } from './cluster.js';
import { assertOutcome, measure } from './outcome.js';

const TOTAL = 3_000;
const OUTBOX_MAX = '256KiB'; // about 1,000 events of this workload
const SEED = testSeed('faults/outbox-full');

describe(`outbox full while central is away (seed ${SEED})`, () => {
  const s = scenarioDatabase('faults_full');

  it(`OUTBOX_MAX_BYTES=${OUTBOX_MAX}: refusals, the outbox-full alert, devices keep their events, nothing lost when central returns (twice)`, {
    timeout: 180_000,
  }, async () => {
    const startedAt = Date.now();
    const w = await warehouse('OF');
    const { events, expected } = workload(w.wh, TOTAL, SEED, { devices: w.scanners.length });
    const env = { DATABASE_URL: s.db.url };
    const central = new Proc('central', () => w.centralArgs(), env);
    const edge = new Proc(
      'edge',
      () => w.edgeArgs(`mqtt://127.0.0.1:${w.centralPort}`, { extra: ['--outbox-max-bytes', OUTBOX_MAX] }),
      env,
    );
    await edge.start(); // central is not there yet
    const display = await connect(`mqtt://127.0.0.1:${w.edgePort}`, `disp-${w.wh}`, 'pw-display-x');
    const alerts = new Collector<{ kind: string; wh: string }>(display, `alerts/${w.wh}/#`);
    await display.subscribeAsync(`alerts/${w.wh}/#`, { qos: 1 });
    const devices = w.devices();
    const refused = () => metric(edge.current, 'stockwire_edge_events_refused_total', { reason: 'outbox_full' });
    /** Waits until the edge refuses and the devices stop getting PUBACKs: the outbox is full. */
    const untilFull = async (before: number) => {
      await until(async () => (await refused()) > before, 60_000, 'the outbox filling up');
      const stalled = devices.count;
      await sleep(1_000);
      assert.ok(
        devices.count - stalled < 200,
        `devices are held back while the outbox is full (${devices.count - stalled} PUBACKs in 1 s)`,
      );
      assert.ok(devices.count < TOTAL, 'devices still hold events the edge refused');
    };
    try {
      const run = devices.run(events);
      await untilFull(0);
      await alerts.waitFor(
        () => alerts.messages.some((m) => m.topic === `alerts/${w.wh}/outbox-full` && m.payload.kind === 'outbox-full'),
        10_000,
        'outbox-full alert on the edge',
      );
      const firstRefusals = await refused();
      await central.start();
      // Second outage once central has caught up part of the way.
      await until(() => devices.count >= TOTAL * 0.6, 60_000, 'central catching up');
      await central.kill9();
      await untilFull(await refused());
      await central.start();
      await within(120_000, 'devices handing every event over', run, stuckDetail(devices, edge, central));
      await waitApplied(s.pool, w.wh, TOTAL, 60_000);
      const refusals = await refused();
      assert.ok(refusals > firstRefusals, `refused again in the second outage (${firstRefusals} → ${refusals})`);
      const o = await measure({
        pool: s.pool,
        databaseUrl: s.db.url,
        wh: w.wh,
        expected,
        sent: TOTAL,
        deliveries: devices.publishes,
        centralHttp: `http://127.0.0.1:${central.ports.http}`,
        scenario: 'outbox full',
        faults: `OUTBOX_MAX_BYTES=${OUTBOX_MAX}, central away twice until the outbox was full (${refusals} refusals)`,
        injected: 2,
        startedAt,
      });
      assertOutcome(o);
      assert.equal(await metric(edge.current, 'stockwire_edge_backlog_events'), 0, 'the backlog drained');
    } finally {
      await devices.close();
      await display.endAsync(true);
      await edge.stop();
      await central.stop();
    }
  });
});
