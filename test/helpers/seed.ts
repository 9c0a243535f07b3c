import { randomInt } from 'node:crypto';
import fc from 'fast-check';
import { IN_CI } from './ci.js';

const SEED_RANGE = 1_000_000; // seeds stay short enough to read in a log and type back

/** `npm run test:explore` sets this: every seed fresh, to look for failures no fixed seed finds. */
export const EXPLORING = /^(true|1)$/i.test(process.env.STOCKWIRE_TEST_EXPLORE ?? '');

/**
 * The seed of a randomised test, printed (a TAP comment) so that any run can be replayed with
 * `TEST_SEED=N` (`FAULT_SEED=N` too, the fault suite's older name). In `npm test`, in CI and everywhere
 * else, it is fixed — derived from `name`, so files differ from each other but not from run to run — and
 * a failure fails again the same way: no verdict depends on luck. Fresh seeds only under
 * `npm run test:explore` (never in CI); a seed that ever failed becomes a regression example in its test.
 */
export function testSeed(name: string): number {
  const override = process.env.TEST_SEED || process.env.FAULT_SEED;
  let seed: number;
  let why: string;
  if (override) {
    seed = Number(override);
    if (!Number.isSafeInteger(seed) || seed < 0)
      throw new Error(`TEST_SEED (or FAULT_SEED) must be a non-negative integer, not ${JSON.stringify(override)}`);
    why = 'from TEST_SEED/FAULT_SEED';
  } else if (EXPLORING) {
    if (IN_CI) throw new Error('STOCKWIRE_TEST_EXPLORE is for exploring on a workstation: CI runs fixed seeds');
    seed = randomInt(SEED_RANGE);
    why = 'fresh: exploring';
  } else {
    seed = fixedSeed(name);
    why = 'fixed';
  }
  process.stdout.write(`seed of ${name}: ${seed} (${why}; replay with TEST_SEED=${seed})\n`);
  return seed;
}

/** A stable seed for a name: FNV-1a, 32 bits, folded into the seed range. */
export function fixedSeed(name: string): number {
  let h = 0x811c9dc5;
  for (const c of Buffer.from(name, 'utf8')) h = Math.imul(h ^ c, 0x01000193) >>> 0;
  return h % SEED_RANGE;
}

/**
 * Gives every `fc.assert` of this test file `testSeed(name)` (fast-check's global configuration; each test
 * file runs in a process of its own). Call it once at the top of any file that calls `fc.assert`.
 */
export function pinFastCheck(name: string): number {
  const seed = testSeed(name);
  fc.configureGlobal({ ...fc.readConfigureGlobal(), seed });
  return seed;
}
