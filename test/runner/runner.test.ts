import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { ADMIN_URL, timescaleAdminUrl, timescaleSkip } from '../helpers/db.js';
import { runPasses } from './pass.js';
import { allTestFiles, MAKES_A_DATABASE, PLAIN_ONLY, planPasses, ROOT, TIMESCALE_PASS } from './passes.js';
import { chooseTimescale, RunnerError, serverFacts } from './timescale.js';

const FIXTURE = 'test/runner/fixtures/database-url.ts';
const RUN = path.join(ROOT, 'test/run.ts');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sw-runner-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A start script standing in for ../shared/timescaledb/start. */
function script(name: string, body: string): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return file;
}

/** `node test/run.ts …` with this environment (CI and the TimescaleDB variables unset unless given); `signal` it once `when()` holds. */
function runner(
  args: string[],
  env: Record<string, string>,
  o: { signal?: NodeJS.Signals; when?: () => boolean } = {},
): Promise<{ code: number | null; out: string; err: string }> {
  const base = { ...process.env };
  for (const k of ['CI', 'TIMESCALE_URL', 'STOCKWIRE_TEST_TIMESCALE', 'TEST_DATABASE_URL', 'NODE_TEST_CONTEXT'])
    delete base[k];
  const child = spawn(process.execPath, ['--import', 'tsx', RUN, ...args], {
    cwd: ROOT,
    env: { ...base, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const watch = setInterval(() => {
    if (o.signal && o.when?.()) {
      clearInterval(watch);
      child.kill(o.signal);
    }
  }, 50);
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  return new Promise((resolve) =>
    child.once('close', (code) => {
      clearInterval(watch);
      resolve({ code, out, err });
    }),
  );
}

describe('which TimescaleDB the second pass uses', () => {
  const absent = path.join(tmp, 'no-such-start');

  it('TIMESCALE_URL wins, and the start script is not run', async () => {
    const never = script('never', 'echo ran >&2; exit 1');
    assert.deepEqual(await chooseTimescale({ TIMESCALE_URL: 'postgres://x@h:1/db' }, never), {
      url: 'postgres://x@h:1/db',
      source: 'TIMESCALE_URL',
    });
  });

  it('without TIMESCALE_URL, the URL the start script prints', async () => {
    const start = script(
      'start-ok',
      'echo "[timescaledb] laying out" >&2; echo postgres://postgres@127.0.0.1:5999/postgres',
    );
    assert.deepEqual(await chooseTimescale({ CI: 'true' }, start), {
      url: 'postgres://postgres@127.0.0.1:5999/postgres',
      source: start,
    });
  });

  it('a start script that fails stops the run with what it said, in CI or not', async () => {
    const start = script('start-fails', 'echo "[timescaledb] start failed; the log ends: FATAL boom" >&2; exit 1');
    for (const CI of ['true', undefined])
      await assert.rejects(
        chooseTimescale({ CI }, start),
        (err: Error) => err instanceof RunnerError && /exit 1/.test(err.message) && /FATAL boom/.test(err.message),
      );
    const garbage = script('start-garbage', 'echo not-a-url');
    await assert.rejects(chooseTimescale({}, garbage), RunnerError);
  });

  it('no start script and no TIMESCALE_URL: fails, saying how to get TimescaleDB; the opt-out is offered only outside CI', async () => {
    await assert.rejects(
      chooseTimescale({ CI: 'true' }, absent),
      (err: Error) =>
        err instanceof RunnerError &&
        /TIMESCALE_URL/.test(err.message) &&
        err.message.includes(absent) &&
        !/STOCKWIRE_TEST_TIMESCALE/.test(err.message),
    );
    await assert.rejects(
      chooseTimescale({}, absent),
      (err: Error) => err instanceof RunnerError && /STOCKWIRE_TEST_TIMESCALE=0/.test(err.message),
    );
  });

  it('STOCKWIRE_TEST_TIMESCALE=0 opts out outside CI and is refused in CI', async () => {
    assert.deepEqual(
      await chooseTimescale({ STOCKWIRE_TEST_TIMESCALE: '0', TIMESCALE_URL: 'postgres://x@h:1/db' }, absent),
      { optedOut: true },
    );
    await assert.rejects(
      chooseTimescale({ STOCKWIRE_TEST_TIMESCALE: '0', CI: 'true' }, absent),
      (err: Error) => err instanceof RunnerError && /refused in CI/.test(err.message),
    );
  });
});

describe('what each pass runs on', () => {
  it('every test file that makes a database is on the TimescaleDB list or, with a reason, on the plain-only one', () => {
    const files = allTestFiles();
    assert.ok(files.length > 50, `found the test files (${files.length})`);
    for (const f of [...TIMESCALE_PASS, ...Object.keys(PLAIN_ONLY)])
      assert.ok(files.includes(f), `${f} is listed in test/runner/passes.ts and exists`);
    const both = TIMESCALE_PASS.filter((f) => f in PLAIN_ONLY);
    assert.deepEqual(both, [], 'on both lists');
    const databaseFiles = files.filter((f) => MAKES_A_DATABASE.test(fs.readFileSync(path.join(ROOT, f), 'utf8')));
    const unlisted = databaseFiles.filter((f) => !TIMESCALE_PASS.includes(f) && !(f in PLAIN_ONLY));
    assert.deepEqual(unlisted, [], 'these make a database but are on neither list of test/runner/passes.ts');
    for (const f of TIMESCALE_PASS)
      assert.ok(databaseFiles.includes(f), `${f} makes a database (else the second pass tests nothing new)`);
  });

  it('the second pass takes the listed files among those asked for, on the TimescaleDB server; none without it', () => {
    const files = ['test/a.test.ts', 'test/processors/batch.test.ts', 'test/faults/kill.test.ts'];
    assert.deepEqual(planPasses(files, 'postgres://plain', 'postgres://ts'), [
      { name: 'PostgreSQL', databaseUrl: 'postgres://plain', files },
      {
        name: 'TimescaleDB',
        databaseUrl: 'postgres://ts',
        files: ['test/processors/batch.test.ts', 'test/faults/kill.test.ts'],
      },
    ]);
    assert.equal(planPasses(files, 'postgres://plain', null).length, 1);
    assert.equal(planPasses(['test/a.test.ts'], 'postgres://plain', 'postgres://ts').length, 1);
  });

  it("a SOLO file (bounds about the machine's load) runs after the first pass, alone", () => {
    const files = ['test/a.test.ts', 'test/security/abuse.test.ts'];
    assert.deepEqual(planPasses(files, 'postgres://plain', null), [
      { name: 'PostgreSQL', databaseUrl: 'postgres://plain', files: ['test/a.test.ts'] },
      {
        name: 'PostgreSQL, one file at a time',
        databaseUrl: 'postgres://plain',
        files: ['test/security/abuse.test.ts'],
        concurrency: 1,
      },
    ]);
  });

  it('each pass gets its server as TEST_DATABASE_URL; a failed pass does not stop the next, and fails the run', async () => {
    const passes = [
      { name: 'A', databaseUrl: 'postgres://a@h/a', files: [FIXTURE] },
      { name: 'B', databaseUrl: 'postgres://b@h/b', files: [FIXTURE] },
    ];
    const env = (expected: string) => ({ ...process.env, FIXTURE_EXPECTED_DATABASE_URL: expected });
    const first = await runPasses(passes, env('postgres://a@h/a'), { capture: true });
    assert.deepEqual(
      first.results.map((r) => r.code),
      [0, 1],
    );
    assert.equal(first.ok, false);
    assert.match(first.results[1]?.output ?? '', /# fail 1/);
    const second = await runPasses(passes, env('postgres://b@h/b'), { capture: true });
    assert.deepEqual(
      second.results.map((r) => r.code),
      [1, 0],
      'the second pass ran after the first failed',
    );
    assert.equal(second.ok, false);
    const stopped = await runPasses(passes, env('postgres://a@h/a'), { capture: true, stopped: () => true });
    assert.deepEqual(stopped, { results: [], ok: false }, 'an interrupted run is not a pass');
  });
});

describe('the servers, probed before any test runs', () => {
  it('an unreachable server stops the run, naming it', async () => {
    await assert.rejects(
      serverFacts('postgres://postgres@127.0.0.1:1/postgres', false),
      (err: Error) => err instanceof RunnerError && /127\.0\.0\.1:1/.test(err.message),
    );
  });

  it('the plain PostgreSQL offers no timescaledb, and CREATE EXTENSION fails there with a clear message', async () => {
    assert.equal((await serverFacts(ADMIN_URL, false)).timescale, null);
    await assert.rejects(
      serverFacts(ADMIN_URL, true),
      (err: Error) => err instanceof RunnerError && /CREATE EXTENSION timescaledb fails/.test(err.message),
    );
  });

  it('the TimescaleDB server reports the extversion a fresh database gets', { skip: timescaleSkip() }, async () => {
    assert.match((await serverFacts(timescaleAdminUrl(), true)).timescale ?? '', /^2\.\d+\.\d+$/);
  });
});

describe('npm test (test/run.ts) end to end', () => {
  it('STOCKWIRE_TEST_TIMESCALE=0 in CI: exit 1 before any test', async () => {
    const r = await runner([FIXTURE], { CI: 'true', STOCKWIRE_TEST_TIMESCALE: '0' });
    assert.equal(r.code, 1);
    assert.match(r.err, /refused in CI/);
    assert.doesNotMatch(r.out, /TAP version/);
  });

  it('STOCKWIRE_TEST_TIMESCALE=0 outside CI: one pass, and the skip said loudly', async () => {
    const r = await runner([FIXTURE], {
      STOCKWIRE_TEST_TIMESCALE: '0',
      FIXTURE_EXPECTED_DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/postgres',
    });
    assert.equal(r.code, 0, r.out + r.err);
    assert.match(r.err, /the TimescaleDB pass is SKIPPED/);
    assert.match(r.out, /pass 1 \(PostgreSQL at 127\.0\.0\.1:5432\/postgres, 1 files\): passed/);
    assert.doesNotMatch(r.out, /pass 2/);
  });

  it('SIGTERM or SIGINT while a pass runs: its tests are stopped and the run exits 143 or 130', async () => {
    for (const [signal, code] of [
      ['SIGTERM', 143],
      ['SIGINT', 130],
    ] as const) {
      const pidFile = path.join(tmp, `slow-${signal}.pid`);
      // The runner is signalled once the fixture's test runs (it writes its pid then), 2 minutes before it would end by itself.
      // A pid, not just the file: writeFileSync creates the file before it writes the number into it.
      const pidIn = () => (fs.existsSync(pidFile) ? Number(fs.readFileSync(pidFile, 'utf8')) : 0);
      const r = await runner(
        ['test/runner/fixtures/slow.ts'],
        { STOCKWIRE_TEST_TIMESCALE: '0', FIXTURE_PID_FILE: pidFile },
        { signal, when: () => pidIn() > 0 },
      );
      assert.equal(r.code, code, r.out + r.err);
      assert.match(r.out, /pass 1 \(PostgreSQL .*\): FAILED/);
      const pid = pidIn();
      assert.ok(pid > 0, `the fixture wrote its pid (${pid})`);
      const gone = () => {
        try {
          process.kill(pid, 0);
          return false;
        } catch {
          return true;
        }
      };
      for (let i = 0; i < 100 && !gone(); i++) await new Promise((res) => setTimeout(res, 100));
      assert.ok(gone(), `the interrupted test process ${pid} is gone`);
    }
  });

  it('a TIMESCALE_URL without TimescaleDB, or a first-pass server with it in CI, stops the run before any test', {
    skip: timescaleSkip(),
  }, async () => {
    const notTs = await runner([FIXTURE], { CI: 'true', TIMESCALE_URL: ADMIN_URL });
    assert.equal(notTs.code, 1);
    assert.match(notTs.err, /CREATE EXTENSION timescaledb fails/);
    const tsFirst = await runner([FIXTURE], {
      CI: 'true',
      TIMESCALE_URL: timescaleAdminUrl(),
      TEST_DATABASE_URL: timescaleAdminUrl(),
    });
    assert.equal(tsFirst.code, 1);
    assert.match(tsFirst.err, /the plain-PostgreSQL path would go untested/);
    for (const r of [notTs, tsFirst]) assert.doesNotMatch(r.out, /TAP version/);
  });

  it('both passes run a listed file, the second on TimescaleDB, and print both servers', {
    skip: timescaleSkip(),
  }, async () => {
    const r = await runner(['test/processors/schema.test.ts'], { CI: 'true', TIMESCALE_URL: timescaleAdminUrl() });
    assert.equal(r.code, 0, r.out + r.err);
    const ts = new URL(timescaleAdminUrl()).host;
    assert.match(r.out, /pass 1 database: 127\.0\.0\.1:5432\/postgres: PostgreSQL [\d.]+.*, no timescaledb/);
    assert.match(
      r.out,
      new RegExp(
        `pass 2 database: ${ts.replaceAll('.', '\\.')}/postgres \\(from TIMESCALE_URL\\): PostgreSQL [\\d.]+.*, timescaledb 2\\.\\d+\\.\\d+`,
      ),
    );
    assert.match(r.out, /schema on the pass's server \(127\.0\.0\.1:5432\)/);
    assert.match(r.out, new RegExp(`schema on the pass's server \\(${ts.replaceAll('.', '\\.')}\\)`));
    assert.equal(r.out.match(/^# pass \d+$/gm)?.length, 2, "node's summary of each pass is printed");
    assert.match(r.out, /pass 2 \(TimescaleDB at .*, 1 files\): passed/);
  });
});
