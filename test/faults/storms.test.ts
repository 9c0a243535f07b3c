import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { waitApplied } from '../helpers/exactly-once.js';
import type { OutgoingEvent } from '../helpers/resending-publisher.js';
import { testSeed } from '../helpers/seed.js';
import { rng, workload } from '../helpers/workload.js';
import { Proc, scenarioDatabase, stuckDetail, warehouse, within } from './cluster.js';
import { assertOutcome, measure } from './outcome.js';

const UNIQUE = 1_500;
const HOUR = 3_600_000; // ms
const SEED = testSeed('faults/storms');

/**
 * Every event 3–10 times: the copies follow the first at random distances (up to `spread` later
 * publishes), so they land in other batches, on other connections and after other events.
 */
function storm(events: OutgoingEvent[], random: () => number, spread: number): OutgoingEvent[] {
  const placed: { at: number; e: OutgoingEvent }[] = [];
  events.forEach((e, i) => {
    const copies = 3 + Math.floor(random() * 8);
    placed.push({ at: i, e });
    for (let c = 1; c < copies; c++) placed.push({ at: i + random() * spread, e });
  });
  return placed.sort((a, b) => a.at - b.at).map((p) => p.e);
}

describe(`duplicate storms and reordering by hours (seed ${SEED})`, () => {
  const s = scenarioDatabase('faults_storm');

  it(`${UNIQUE} events, each delivered 3–10 times across reconnects, event times spread over 5 hours`, {
    timeout: 180_000,
  }, async () => {
    const startedAt = Date.now();
    const w = await warehouse('DS');
    const random = rng(SEED);
    const { events, expected } = workload(w.wh, UNIQUE, SEED, {
      devices: w.scanners.length,
      tsAgoMs: 8 * HOUR,
      tsSpanMs: 5 * HOUR,
    });
    const deliveries = storm(events, random, 400);
    const env = { DATABASE_URL: s.db.url };
    const central = new Proc('central', () => w.centralArgs(), env);
    await central.start();
    const edge = new Proc('edge', () => w.edgeArgs(`mqtt://127.0.0.1:${w.centralPort}`), env);
    await edge.start();
    // Each device drops its connection about every 2 s: copies and resends also straddle reconnects. A storm faster
    // than the first of those drops would see none, so every device also drops once a third of the way through.
    const third = Math.floor(deliveries.length / 3);
    const devices = w.devices({
      disconnectEveryMs: 2_000,
      random,
      onProgress: (n) => n === third && devices.dropAll(),
    });
    try {
      await within(120_000, 'the storm', devices.run(deliveries), stuckDetail(devices, edge));
      await waitApplied(s.pool, w.wh, UNIQUE, 60_000);
      assert.ok(devices.drops > 0, 'devices dropped connections mid-storm');
      const o = await measure({
        pool: s.pool,
        databaseUrl: s.db.url,
        wh: w.wh,
        expected,
        sent: UNIQUE,
        deliveries: devices.publishes,
        centralHttp: `http://127.0.0.1:${central.ports.http}`,
        scenario: 'duplicate storm, reordered by hours',
        faults: `each event published 3–10 times (${deliveries.length} copies), ts spread over 5 h, ${devices.drops} device disconnects`,
        injected: deliveries.length - UNIQUE + devices.drops,
        startedAt,
      });
      assertOutcome(o);
      const { rows } = await s.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM inbox WHERE wh = $1', [w.wh]);
      assert.equal(rows[0]?.n, UNIQUE, 'the inbox holds each key once');
    } finally {
      await devices.close();
      await edge.stop();
      await central.stop();
    }
  });
});
