import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { fixedSeed } from '../helpers/seed.js';
import { MAKES_A_DATABASE, UNIT } from './passes.js';

const TEST_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Every .ts file under test/, as paths relative to the repository (test/…). */
function testSources(dir = TEST_DIR): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === 'artifacts' ? [] : testSources(full);
    return e.name.endsWith('.ts') ? [path.relative(path.dirname(TEST_DIR), full)] : [];
  });
}

const read = (rel: string) => fs.readFileSync(path.join(TEST_DIR, '..', rel), 'utf8');

describe('seeds of randomised tests (fixed and printed in CI)', () => {
  it('every file that calls fc.assert pins fast-check with pinFastCheck', () => {
    const users = testSources().filter((f) => /\bfc\.assert\(/.test(read(f)));
    assert.ok(users.length >= 9, `found the property-test files (${users.length})`);
    const unpinned = users.filter((f) => !/^pinFastCheck\('[^']+'\);$/m.test(read(f)));
    assert.deepEqual(unpinned, [], 'these call fc.assert without pinFastCheck(name) at the top');
  });

  it('no seed is taken from the clock or Math.random: seeds come from testSeed', () => {
    const clockSeeds = testSources().filter((f) => /seed\w*\s*=[^;\n]*(Date\.now\(\)|Math\.random\(\))/i.test(read(f)));
    assert.deepEqual(clockSeeds, [], 'these take a seed from the clock; use testSeed(name)');
  });

  it('Math.random decides nothing a test asserts on: only the allowed uses, each harmless for a verdict', () => {
    // Everything else draws from a generator seeded by testSeed(name) (rng(SEED), fast-check), so that a run
    // replays and a fixed seed gives the same verdict on every machine.
    const allowed: Record<string, string> = {
      'test/helpers/mqtt.ts': 'a client id unique among concurrent clients; nothing asserts on it',
      'test/helpers/broker.ts': 'a client id unique among concurrent clients; nothing asserts on it',
      'test/broker/broker.test.ts': 'a client id unique among concurrent clients; the test matches only its prefix',
      'test/helpers/process.ts':
        'freePort: must differ between test files running at once; a fixed seed would make them pick the same ports',
      'test/runner/guards.unit.test.ts': 'this test names it',
    };
    const users = testSources().filter((f) => /\bMath\.random\b/.test(read(f)));
    assert.deepEqual(
      users.filter((f) => !(f in allowed)),
      [],
      'these use Math.random: draw from rng(testSeed(name)) instead, or add the file to the list with why it is harmless',
    );
    const stale = Object.keys(allowed).filter((f) => !users.includes(f));
    assert.deepEqual(stale, [], 'allowed but no longer using Math.random: take them off the list');
  });

  it('the CI seed of a name is stable and differs between names', () => {
    assert.equal(fixedSeed('faults/kill'), fixedSeed('faults/kill'));
    assert.notEqual(fixedSeed('faults/kill'), fixedSeed('faults/postgres'));
    for (const name of ['a', 'faults/kill', 'processors/ledger'])
      assert.ok(fixedSeed(name) >= 0 && fixedSeed(name) < 1_000_000);
  });
});

describe('the unit tier (npm run test:unit)', () => {
  it('is the *.unit.test.ts files: there are some, they exist and none makes a database', () => {
    assert.ok(UNIT.length >= 10, `${UNIT.length} unit files`);
    for (const f of UNIT) {
      assert.ok(fs.existsSync(path.join(TEST_DIR, '..', f)), `${f} exists`);
      assert.ok(!MAKES_A_DATABASE.test(read(f)), `${f} makes no database`);
    }
  });
});
