import { spawn } from 'node:child_process';
import { ROOT, type Pass } from './passes.js';

export const CONCURRENCY = 2; // test files at a time, per pass: the machine has 2 cores
const FILE_TIMEOUT_MS = 600_000; // per test, as before the runner: a hang fails, it does not block CI

export interface PassResult {
  pass: Pass;
  /** node's exit code; null when it died of a signal */
  code: number | null;
  ms: number;
  /** what node printed, when `capture` was asked for */
  output?: string;
}

/**
 * Runs one pass with node's test runner, TEST_DATABASE_URL on the pass's server. Its output goes straight to
 * ours (TAP in CI, with node's `# tests`/`# pass`/`# fail` summary), unless `capture` (the runner's own tests).
 */
export function runPass(
  pass: Pass,
  env: NodeJS.ProcessEnv,
  o: { capture?: boolean; onChild?: (kill: (signal: NodeJS.Signals) => void) => void } = {},
): Promise<PassResult> {
  const started = Date.now();
  const args = [
    '--import',
    'tsx',
    '--test',
    `--test-concurrency=${pass.concurrency ?? CONCURRENCY}`,
    `--test-timeout=${FILE_TIMEOUT_MS}`,
    ...pass.files,
  ];
  // NODE_TEST_CONTEXT (set when this runs inside a test, as the runner's own tests do) would make node report to a parent that is not there.
  const { NODE_TEST_CONTEXT: _parent, ...own } = env;
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...own, TEST_DATABASE_URL: pass.databaseUrl, STOCKWIRE_TEST_PASS: pass.name },
    stdio: o.capture ? ['ignore', 'pipe', 'pipe'] : 'inherit',
  });
  o.onChild?.((signal) => child.kill(signal));
  let output = '';
  child.stdout?.on('data', (b: Buffer) => (output += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (output += b.toString()));
  return new Promise((resolve) => {
    child.once('error', (err) =>
      resolve({ pass, code: null, ms: Date.now() - started, output: `${output}${err.message}` }),
    );
    child.once('close', (code) => resolve({ pass, code, ms: Date.now() - started, ...(o.capture ? { output } : {}) }));
  });
}

/** 5 min 12 s */
export function duration(ms: number): string {
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

/**
 * Runs the passes one after the other — a failed pass does not stop the next, so one run shows every failure —
 * until `stopped()` says so (an interrupt). The run fails when any pass failed.
 */
export async function runPasses(
  passes: Pass[],
  env: NodeJS.ProcessEnv,
  o: {
    capture?: boolean;
    starting?: (pass: Pass, i: number) => void;
    stopped?: () => boolean;
    onChild?: (kill: ((signal: NodeJS.Signals) => void) | null) => void;
  } = {},
): Promise<{ results: PassResult[]; ok: boolean }> {
  const results: PassResult[] = [];
  for (const [i, pass] of passes.entries()) {
    if (o.stopped?.()) break;
    o.starting?.(pass, i);
    results.push(await runPass(pass, env, { capture: o.capture, onChild: o.onChild }));
    o.onChild?.(null);
  }
  return { results, ok: results.length === passes.length && results.every((r) => r.code === 0) };
}
