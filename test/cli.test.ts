import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import pg from 'pg';
import pino from 'pino';
import { startEmbeddedPostgres } from '../processors/db/embedded.js';
import { createTestDatabase, latestSchemaVersion, offersTimescale, testPool, type TestDatabase } from './helpers/db.js';
import { BIN } from './helpers/process.js';

const exec = promisify(execFile);

async function stockwire(
  args: string[],
  env: Record<string, string | undefined> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const clean = { ...process.env, DATABASE_URL: undefined, DEVICES_FILE: undefined, ...env } as NodeJS.ProcessEnv;
  for (const k of Object.keys(clean)) if (clean[k] === undefined) delete clean[k];
  try {
    const { stdout, stderr } = await exec(BIN, args, { env: clean, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('stockwire command line', () => {
  let db: TestDatabase;
  let dir: string;
  before(async () => {
    db = await createTestDatabase('cli');
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'stockwire-cli-')); // 0700: user postgres cannot enter it
  });
  after(async () => {
    await db.drop();
    await fs.rm(dir, { recursive: true, force: true });
  });

  for (const command of [
    [],
    ['central'],
    ['processor'],
    ['edge'],
    ['migrate'],
    ['rebuild'],
    ['devices'],
    ['sim'],
    ['demo'],
  ]) {
    it(`stockwire ${command.join(' ')} --help exits 0 with usage`, async () => {
      const r = await stockwire([...command, '--help']);
      assert.equal(r.code, 0);
      assert.match(r.stdout, /Usage: stockwire/);
    });
  }

  it('bad flags and config exit 2 with every problem listed', async () => {
    const r = await stockwire(['central', '--mqtt-port', 'x', '--batch-max', '0', '--database-url', 'http://nope'], {
      LOG_LEVEL: 'loud',
    });
    assert.equal(r.code, 2);
    for (const problem of [
      '--mqtt-port',
      '--batch-max',
      '--database-url',
      '--devices-file (DEVICES_FILE) is required',
      '--log-level',
    ])
      assert.ok(r.stderr.includes(problem), `names ${problem}: ${r.stderr}`);
    assert.equal((await stockwire(['central', '--no-such-flag', '1', '--devices-file', 'x'])).code, 2);
    assert.equal((await stockwire(['frobnicate'])).code, 2);
  });

  it('demo: bad flags exit 2 naming each, before anything starts', async () => {
    const r = await stockwire([
      'demo',
      '--data-dir',
      path.join(dir, 'bad-demo'),
      '--warehouses',
      'WH1,WH1',
      '--sim-rate=-1',
      '--edge-mqtt-port',
      '70000',
      '--scanners',
      'x',
    ]);
    assert.equal(r.code, 2);
    for (const flag of ['--warehouses', '--sim-rate', '--edge-mqtt-port', '--scanners'])
      assert.ok(r.stderr.includes(flag), `names ${flag}: ${r.stderr}`);
  });

  it('devices add creates the file, hashes the password, refuses a duplicate and a bad kind (exit 2)', async () => {
    const file = path.join(dir, 'devices.json');
    const ok = await stockwire([
      'devices',
      'add',
      '--file',
      file,
      '--id',
      'scan-1',
      '--warehouse',
      'W1',
      '--kind',
      'scanner',
      '--password',
      'hunter2-long',
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    const saved = JSON.parse(await fs.readFile(file, 'utf8')) as { devices: { id: string; passwordHash: string }[] };
    assert.equal(saved.devices[0]?.id, 'scan-1');
    assert.match(saved.devices[0]?.passwordHash ?? '', /^scrypt\$/);
    assert.ok(!JSON.stringify(saved).includes('hunter2-long'), 'no clear-text password on disk');
    assert.equal(
      (
        await stockwire([
          'devices',
          'add',
          '--file',
          file,
          '--id',
          'scan-1',
          '--warehouse',
          'W1',
          '--kind',
          'scanner',
          '--password',
          'x12345678',
        ])
      ).code,
      2,
    );
    const bad = await stockwire([
      'devices',
      'add',
      '--file',
      file,
      '--id',
      'x',
      '--warehouse',
      'W1',
      '--kind',
      'toaster',
      '--password',
      'x12345678',
    ]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /kind/);
  });

  it('migrate is idempotent; rebuild reports no drift, then exits 1 on tampered stock', async () => {
    const env = { DATABASE_URL: db.url };
    const first = await stockwire(['migrate'], env);
    assert.equal(first.code, 0, first.stderr);
    // npm test runs this file on plain PostgreSQL, then on TimescaleDB
    const timescale = await offersTimescale(db.url);
    assert.deepEqual(JSON.parse(first.stdout), {
      migrated: true,
      version: latestSchemaVersion(),
      timescale,
      storage: timescale ? 'timescaledb' : 'postgresql',
    });
    assert.equal((await stockwire(['migrate'], env)).code, 0);
    const pool = testPool(db.url, 1);
    await pool.query(`INSERT INTO events (ts, wh, device, id, type, sku, qty, delta, payload, received_at) VALUES
      (now(), 'W1', 'd', 'a', 'received', 'S', 5, 5, '{}', now()), (now(), 'W1', 'd', 'b', 'shipped', 'S', 2, -2, '{}', now())`);
    await pool.query(`INSERT INTO stock (wh, sku, on_hand, version) VALUES ('W1', 'S', 3, 1)`);
    const clean = await stockwire(['rebuild'], env);
    assert.equal(clean.code, 0, clean.stdout + clean.stderr);
    assert.match(clean.stdout, /no drift/);
    await pool.query(`UPDATE stock SET on_hand = 4 WHERE sku = 'S'`);
    const drift = await stockwire(['rebuild', '--format', 'json'], env);
    assert.equal(drift.code, 1);
    assert.deepEqual(JSON.parse(drift.stdout).drift, [{ wh: 'W1', sku: 'S', stored: 4, recomputed: 3 }]);
    // reserved must be what the active reservations hold: a hold the row does not count is drift too.
    await pool.query(`UPDATE stock SET on_hand = 3 WHERE sku = 'S'`);
    await pool.query(
      `INSERT INTO reservations (id, wh, sku, qty, remaining, state, expires_at) VALUES ('r-1', 'W1', 'S', 2, 2, 'active', now() + interval '1 hour')`,
    );
    const held = await stockwire(['rebuild'], env);
    assert.equal(held.code, 1);
    assert.match(held.stdout, /W1 S: reserved 0, active reservations hold 2/);
    await pool.end();
  });

  it('with DATABASE_URL unset, migrate starts the embedded PostgreSQL under DATA_DIR, and again on a second run', async () => {
    const dataDir = path.join(dir, 'data');
    const first = await stockwire(['migrate', '--data-dir', dataDir]);
    assert.equal(first.code, 0, first.stderr.slice(-2000));
    assert.equal(JSON.parse(first.stdout).migrated, true);
    const second = await stockwire(['migrate', '--data-dir', dataDir]);
    assert.equal(second.code, 0, second.stderr.slice(-2000));
    const cluster = await fs.realpath(path.join(dataDir, 'postgres'));
    await fs.access(path.join(cluster, 'PG_VERSION'));
    // Its superuser password was made for this cluster and is readable by its owner only: the server listens on
    // 127.0.0.1, where every local user can reach it.
    const passwordFile = path.join(path.dirname(cluster), 'postgres-password');
    assert.equal((await fs.stat(passwordFile)).mode & 0o777, 0o600);
    assert.match((await fs.readFile(passwordFile, 'utf8')).trim(), /^[A-Za-z0-9_-]{32}$/);
    const server = await startEmbeddedPostgres(dataDir, pino({ level: 'silent' }));
    try {
      const port = new URL(server.url).port;
      const guess = new pg.Client({
        connectionString: `postgres://postgres:stockwire-local@127.0.0.1:${port}/postgres`,
      });
      guess.on('error', () => {});
      await assert.rejects(
        guess.connect(),
        /password authentication failed/,
        'the old fixed password does not let anyone in',
      );
      await guess.end().catch(() => {});
      const owner = new pg.Client({ connectionString: server.url });
      await owner.connect();
      await owner.end();
    } finally {
      await server.stop();
    }
    if (process.getuid?.() === 0) {
      // As root the server runs as user postgres, which cannot enter this 0700 folder: the cluster lives outside it.
      assert.notEqual(cluster, path.join(dataDir, 'postgres'));
      await fs.rm(path.dirname(cluster), { recursive: true, force: true });
    }
  });

  it('SIGTERM or Ctrl-C during rebuild closes the database and exits 143 or 130 (an embedded server it started would stop with it)', {
    timeout: 60_000,
  }, async () => {
    assert.equal((await stockwire(['migrate', '--database-url', db.url])).code, 0);
    const locker = new pg.Client(db.url);
    locker.on('error', () => {});
    await locker.connect();
    const watch = testPool(db.url, 1);
    try {
      for (const [signal, code] of [
        ['SIGTERM', 143],
        ['SIGINT', 130],
      ] as const) {
        await locker.query('BEGIN');
        await locker.query('LOCK TABLE stock IN ACCESS EXCLUSIVE MODE'); // rebuild waits for it: an interruptible moment
        const child = spawn(BIN, ['rebuild', '--database-url', db.url], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stderr = '';
        child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
        const exited = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
        // rebuild is waiting once its connection waits on the lock
        for (let i = 0; i < 200; i++) {
          const { rows } = await watch.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'`,
            [db.name],
          );
          if ((rows[0]?.n ?? 0) > 0) break;
          await new Promise((r) => setTimeout(r, 50));
        }
        child.kill(signal);
        assert.equal(await exited, code, `${signal}: ${stderr.slice(-1000)}`);
        assert.match(stderr, /interrupted; closing the database/);
        await locker.query('ROLLBACK');
      }
    } finally {
      await locker.end();
      await watch.end();
    }
  });

  it('a central whose devices file is missing fails to start with a clear message (exit 1)', async () => {
    const r = await stockwire([
      'central',
      '--devices-file',
      path.join(dir, 'absent.json'),
      '--database-url',
      db.url,
      '--mqtt-port',
      '0',
      '--ws-port',
      '0',
      '--http-port',
      '0',
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /absent\.json/);
  });
});
