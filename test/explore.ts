/**
 * `npm run test:explore [-- FILE…]`: `npm test` with a fresh seed for every randomised test (fast-check, fault
 * scenarios, the simulator), to look for failures the fixed seeds of `npm test` and CI do not reach. Each seed
 * is printed; a failing one replays with `TEST_SEED=N npm test -- FILE` and becomes a regression example.
 */
import { spawnSync } from 'node:child_process';
import { ROOT } from './runner/passes.js';

if (/^(true|1)$/i.test(process.env.CI ?? '')) {
  process.stderr.write('npm run test:explore: not in CI (CI=true); CI runs the fixed seeds of npm test\n');
  process.exit(2);
}
const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/run.ts', ...process.argv.slice(2)], {
  cwd: ROOT,
  env: { ...process.env, STOCKWIRE_TEST_EXPLORE: '1' },
  stdio: 'inherit',
});
process.exitCode = r.status ?? 1;
