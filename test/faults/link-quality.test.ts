import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { testSeed } from '../helpers/seed.js';
import { rng } from '../helpers/workload.js';
import { scenarioDatabase, until } from './cluster.js';
import { runLinkScenario } from './link.js';

const TOTAL = 4_000;
const SEED = testSeed('faults/link-quality');

describe(`edge↔central link slow and lossy (seed ${SEED})`, () => {
  const s = scenarioDatabase('faults_quality');

  it(`slow: every chunk delayed 400 ms each way while ${TOTAL} events stream`, { timeout: 180_000 }, async () => {
    await runLinkScenario(s.db, s.pool, {
      name: 'link slow',
      faults: 'every TCP chunk edge↔central delayed 400 ms, from 10 % to 70 % committed',
      total: TOTAL,
      seed: SEED,
      at: [0.1, 0.7],
      fault: async (proxy, i) => {
        if (i === 0) proxy.slow(400);
        else proxy.restore();
      },
    });
  });

  // "Lossy" at the TCP level: TCP itself repairs lost packets, so what the edge sees of a lossy network is
  // connections that stall and die. Here each chunk resets its connection (RST) with probability 3 %.
  it(`lossy: connections reset at random (3 % of chunks) while ${TOTAL} events stream`, {
    timeout: 180_000,
  }, async () => {
    const random = rng(SEED + 1);
    const r = await runLinkScenario(s.db, s.pool, {
      name: 'link lossy (random resets)',
      faults:
        'each TCP chunk edge↔central resets its connection with probability 0.03 (the first one surely), from 10 % to 60 % committed',
      total: TOTAL,
      seed: SEED + 1,
      at: [0.1, 0.6],
      fault: async (proxy, i) => {
        // Large coalesced chunks can carry the whole rest of the stream in a few dozen chunks, none of which
        // may draw its 3 %: the first chunk after the fault starts resets for sure, the rest at random.
        if (i === 0) proxy.lossy(0.03, random, { resetFirst: true });
        else {
          await until(() => proxy.resets > 0, 60_000, 'a connection reset while the link is lossy');
          proxy.restore();
        }
      },
    });
    assert.ok(r.proxy.resets > 0, `connections were reset (${r.proxy.resets})`);
  });
});
