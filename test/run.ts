/**
 * `npm test`: every test file on the machine's plain PostgreSQL, then the database suites again on TimescaleDB
 * (test/runner/passes.ts lists them), so that both storage paths are tested on every run and in CI.
 *
 *   npm test                          # both passes; TimescaleDB from TIMESCALE_URL or ../shared/timescaledb/start
 *   npm test -- test/cli.test.ts      # these files only (the second pass takes those of them on its list)
 *   STOCKWIRE_TEST_TIMESCALE=0 npm test   # no TimescaleDB pass (refused in CI)
 *   STOCKWIRE_TEST_INSTALL=0 npm test     # list missing packages and services instead of installing or starting them
 *
 * Exits 1 when a pass fails or cannot start, 130/143 when interrupted; prints which server each pass used.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { duration, runPasses } from './runner/pass.js';
import { NEEDS, prepareMachine, SERVICES } from './runner/machine.js';
import { allTestFiles, planPasses, ROOT } from './runner/passes.js';
import { chooseTimescale, inCi, RunnerError, serverFacts, type ServerFacts } from './runner/timescale.js';

const DEFAULT_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/postgres'; // as test/helpers/db.ts

// TAP comments: CI reads node's TAP on stdout, and these lines stay out of its way.
const say = (line: string) => process.stdout.write(`# stockwire test: ${line}\n`);
const loud = (lines: string[]) => {
  const bar = '!'.repeat(100);
  for (const l of [bar, ...lines, bar]) process.stdout.write(`# ${l}\n`);
  for (const l of lines) process.stderr.write(`stockwire test: ${l}\n`);
};

const hostOf = (url: string) => {
  const u = new URL(url);
  return `${u.host}${u.pathname}`;
};
const describeServer = (f: ServerFacts) =>
  `PostgreSQL ${f.version}, ${f.timescale ? `timescaledb ${f.timescale}` : 'no timescaledb'}`;

async function main(argv: string[]): Promise<number> {
  const env = process.env;
  const files = argv.length > 0 ? argv.map((f) => path.relative(ROOT, path.resolve(f))) : allTestFiles();
  const plainUrl = env.TEST_DATABASE_URL ?? DEFAULT_DATABASE_URL;

  // A fresh machine: the Debian packages the tests drive and the services they talk to (README's first screen).
  await prepareMachine(NEEDS, env.TEST_DATABASE_URL ? SERVICES.filter((s) => s.name !== 'PostgreSQL') : SERVICES, {
    install: env.STOCKWIRE_TEST_INSTALL !== '0',
    root: process.getuid?.() === 0,
    say,
  });
  const choice = await chooseTimescale(env);
  const timescaleUrl = 'url' in choice ? choice.url : null;
  const plain = await serverFacts(plainUrl, false).catch((err: Error) => {
    throw new RunnerError(
      `${err.message}\nStart the machine's PostgreSQL with \`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\`, or set TEST_DATABASE_URL.`,
    );
  });
  if (plain.timescale && timescaleUrl !== null) {
    const why = `the first pass's server ${hostOf(plainUrl)} (TEST_DATABASE_URL) offers timescaledb: the plain-PostgreSQL path would go untested`;
    if (inCi(env)) throw new RunnerError(`${why}. Point TEST_DATABASE_URL at a PostgreSQL without TimescaleDB.`);
    say(`warning: ${why}`);
  }
  say(`pass 1 database: ${hostOf(plainUrl)}: ${describeServer(plain)}`);
  if (timescaleUrl === null) {
    loud([
      'STOCKWIRE_TEST_TIMESCALE=0: the TimescaleDB pass is SKIPPED, and so are the suites that need TimescaleDB.',
      'The database suites run on plain PostgreSQL only. CI never skips it.',
    ]);
  } else {
    const ts = await serverFacts(timescaleUrl, true).catch((err: Error) => {
      throw err instanceof RunnerError ? err : new RunnerError(`TimescaleDB at ${timescaleUrl}: ${err.message}`);
    });
    if (!ts.timescale) throw new RunnerError(`${timescaleUrl} has no timescaledb extension after CREATE EXTENSION`);
    say(
      `pass 2 database: ${hostOf(timescaleUrl)} (from ${'source' in choice ? choice.source : '?'}): ${describeServer(ts)} (select extversion from pg_extension where extname='timescaledb' in a fresh database)`,
    );
  }

  // Pass 1 gets TIMESCALE_URL too: the suites that need TimescaleDB itself (timescaleAdminUrl()) run in it.
  const passEnv: NodeJS.ProcessEnv = { ...env, ...(timescaleUrl ? { TIMESCALE_URL: timescaleUrl } : {}) };
  let kill: ((signal: NodeJS.Signals) => void) | null = null;
  let interrupted: NodeJS.Signals | null = null;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      interrupted = signal;
      kill?.(signal);
    });
  }

  const passes = planPasses(files, plainUrl, timescaleUrl);
  if (timescaleUrl !== null && passes.length === 1)
    say('pass 2: none of these files is on the TimescaleDB list (test/runner/passes.ts)');
  const { results, ok } = await runPasses(passes, passEnv, {
    starting: (pass, i) =>
      say(
        `pass ${i + 1} of ${passes.length}: ${pass.files.length} files on ${pass.name} at ${hostOf(pass.databaseUrl)}`,
      ),
    stopped: () => interrupted !== null,
    onChild: (k) => (kill = k),
  });

  for (const [i, r] of results.entries()) {
    const verdict = r.code === 0 ? 'passed' : `FAILED (exit ${r.code})`;
    say(
      `pass ${i + 1} (${r.pass.name} at ${hostOf(r.pass.databaseUrl)}, ${r.pass.files.length} files): ${verdict} in ${duration(r.ms)}`,
    );
  }
  if (timescaleUrl === null) loud(['the TimescaleDB pass was SKIPPED (STOCKWIRE_TEST_TIMESCALE=0)']);
  if (interrupted) return interrupted === 'SIGINT' ? 130 : 143;
  return ok ? 0 : 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    process.exitCode = await main(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof RunnerError)) throw err;
    process.stderr.write(`stockwire test: ${err.message}\n`);
    say(`not run: ${err.message.split('\n')[0]}`);
    process.exitCode = 1;
  }
}
