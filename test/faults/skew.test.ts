import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { waitApplied } from '../helpers/exactly-once.js';
import { testSeed } from '../helpers/seed.js';
import { rng, workload } from '../helpers/workload.js';
import { Proc, scenarioDatabase, stuckDetail, warehouse, within } from './cluster.js';
import { assertOutcome, measure } from './outcome.js';

const TOTAL = 2_500;
const MIN = 60_000; // ms
const HOUR = 60 * MIN;
const SEED = testSeed('faults/skew');
/** Debian's libfaketime (`apt-get install faketime`): shifts a process's wall clock, here the edge's and central's. */
const LIBFAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';
const hasFaketime = fs.existsSync(LIBFAKETIME);

/** A process whose wall clock is `offset` off (libfaketime syntax: `-2h`, `+1h`); timers keep the true monotonic clock. */
const skewed = (offset: string) => ({ LD_PRELOAD: LIBFAKETIME, FAKETIME: offset, FAKETIME_DONT_FAKE_MONOTONIC: '1' });

/**
 * Device clocks, one kind per device (by index mod 5): right; 1 min–2 h behind; 10 s–4 min ahead
 * (within the 5 min the contract trusts); 10 min–1 day ahead (the edge stamps its own time); none.
 */
function deviceClocks(random: () => number): (device: string, ts: number) => number | null {
  const offsets = new Map<string, number | null>();
  return (device, ts) => {
    if (!offsets.has(device)) {
      const kind = Number(device.split('-')[1]) % 5;
      const offs = [0, -(MIN + random() * 2 * HOUR), 10_000 + random() * 4 * MIN, 10 * MIN + random() * 24 * HOUR];
      offsets.set(device, kind === 4 ? null : Math.round(offs[kind] as number));
    }
    const off = offsets.get(device);
    return off === null || off === undefined ? null : ts + off;
  };
}

describe(`clock skew (seed ${SEED})`, () => {
  const s = scenarioDatabase('faults_skew');

  async function scenario(
    name: string,
    faults: string,
    o: { edgeEnv?: Record<string, string>; centralEnv?: Record<string, string>; edgeBehindMs?: number; seed: number },
  ) {
    const startedAt = Date.now();
    const w = await warehouse('SK');
    // Event times 3–8 h ago: every count lies before any time an edge stamps, even one 2 h behind.
    const { events, expected } = workload(w.wh, TOTAL, o.seed, {
      devices: w.scanners.length,
      tsAgoMs: 8 * HOUR,
      tsSpanMs: 5 * HOUR,
      clock: deviceClocks(rng(o.seed)),
      trustedUntil: Date.now() - (o.edgeBehindMs ?? 0),
    });
    const env = { DATABASE_URL: s.db.url };
    const central = new Proc('central', () => w.centralArgs(), { ...env, ...o.centralEnv });
    await central.start();
    const edge = new Proc('edge', () => w.edgeArgs(`mqtt://127.0.0.1:${w.centralPort}`), { ...env, ...o.edgeEnv });
    await edge.start();
    const devices = w.devices();
    try {
      await within(120_000, 'devices publishing', devices.run(events), stuckDetail(devices, edge));
      await waitApplied(s.pool, w.wh, TOTAL, 60_000);
      const out = await measure({
        pool: s.pool,
        databaseUrl: s.db.url,
        wh: w.wh,
        expected,
        sent: TOTAL,
        deliveries: devices.publishes,
        centralHttp: `http://127.0.0.1:${central.ports.http}`,
        scenario: name,
        faults,
        injected: w.scanners.length - 2,
        startedAt,
      });
      assertOutcome(out);
      // Times the edge stamped (deltas of the devices sending none: dev-4, dev-9) and central's receipt times, relative to the true clock, in ms.
      const { rows } = await s.pool.query<{ stamped: number; received: number }>(
        `SELECT avg(extract(epoch FROM ts) * 1000 - $2)::float8 AS stamped, avg(extract(epoch FROM received_at) * 1000 - $2)::float8 AS received
         FROM events WHERE wh = $1 AND device IN ('dev-4', 'dev-9') AND type <> 'counted'`,
        [w.wh, Date.now()],
      );
      return rows[0] as { stamped: number; received: number };
    } finally {
      await devices.close();
      await edge.stop();
      await central.stop();
    }
  }

  it(`devices with clocks hours behind, minutes and days ahead, or none (${TOTAL} events)`, {
    timeout: 120_000,
  }, async () => {
    const clocks = await scenario(
      'device clocks skewed',
      'device clocks right / 1 min–2 h behind / 10 s–4 min ahead / 10 min–1 day ahead / absent',
      { seed: SEED },
    );
    assert.ok(Math.abs(clocks.stamped) < 5 * MIN, "events without a time carry the edge's receipt time");
  });

  it(`edge clock 2 h behind and central clock 1 h ahead of the devices (libfaketime) (${TOTAL} events)`, {
    timeout: 120_000,
    skip: hasFaketime ? false : `needs ${LIBFAKETIME}: apt-get install faketime`,
  }, async () => {
    const clocks = await scenario(
      'edge −2 h, central +1 h, device clocks skewed',
      'edge wall clock −2 h, central +1 h (libfaketime), device clocks as above',
      { seed: SEED + 1, edgeEnv: skewed('-2h'), centralEnv: skewed('+1h'), edgeBehindMs: 2 * HOUR },
    );
    // The skew took effect: the edge stamped its own (early) time, central received by its own (late) clock.
    assert.ok(
      Math.abs(clocks.stamped + 2 * HOUR) < 5 * MIN,
      `edge-stamped times are 2 h behind (${Math.round(clocks.stamped / MIN)} min)`,
    );
    assert.ok(
      Math.abs(clocks.received - HOUR) < 5 * MIN,
      `central's receipt times are 1 h ahead (${Math.round(clocks.received / MIN)} min)`,
    );
  });
});
