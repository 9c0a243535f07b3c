/**
 * `npm run test:unit`: the fast tier (test/runner/passes.ts UNIT), with every service the full suite uses pointed at
 * a closed port (127.0.0.1:9, discard), so that it proves it needs none. Seeds as in `npm test`.
 */
import { spawnSync } from 'node:child_process';
import { ROOT, UNIT } from './runner/passes.js';

const CLOSED = '127.0.0.1:9';
const env = {
  ...process.env,
  TEST_DATABASE_URL: `postgres://nobody@${CLOSED}/none`,
  TIMESCALE_URL: `postgres://nobody@${CLOSED}/none`,
  TEST_REDIS_URL: `redis://${CLOSED}`,
  MOSQUITTO_URL: `mqtt://${CLOSED}`,
};
const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=2', ...UNIT], {
  cwd: ROOT,
  env,
  stdio: 'inherit',
});
process.exitCode = r.status ?? 1;
