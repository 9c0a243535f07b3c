import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import pino from 'pino';
import { Central } from '../../processors/central.js';
import { chooseStorage, preloads, StorageError, type TimescaleProbe } from '../../processors/db/migrate.js';
import type { Ack } from '../../protocol/index.js';
import { ADMIN_URL, createDatabaseOn, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { call } from '../helpers/http.js';
import { Collector, connect } from '../helpers/mqtt.js';
import { BIN, freePort } from '../helpers/process.js';
import { createTimescaleDatabase, startUnpreloadedCluster, stopCluster } from '../helpers/timescale.js';

const exec = promisify(execFile);

async function stockwire(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const clean: NodeJS.ProcessEnv = { ...process.env, ...env };
  delete clean.TIMESCALEDB;
  Object.assign(clean, env);
  try {
    const { stdout, stderr } = await exec(BIN, args, { env: clean, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}
const warnings = (stderr: string) => stderr.split('\n').filter((l) => l.includes('"level":40'));

const probe = (p: Partial<TimescaleProbe>): TimescaleProbe => ({
  installed: null,
  available: false,
  preloaded: false,
  postgres: '15.20',
  ...p,
});

describe('choosing the storage (TIMESCALEDB)', () => {
  it('reads shared_preload_libraries as PostgreSQL does: names, paths, quotes', () => {
    assert.ok(preloads('timescaledb', 'timescaledb'));
    assert.ok(preloads("pg_stat_statements, 'timescaledb'", 'timescaledb'));
    assert.ok(preloads('"$libdir/timescaledb"', 'timescaledb'));
    assert.ok(!preloads('', 'timescaledb'));
    assert.ok(!preloads('timescaledb_toolkit', 'timescaledb'));
  });

  it('auto uses TimescaleDB only when loadable, and says why not otherwise', () => {
    assert.deepEqual(chooseStorage('auto', probe({ available: true, preloaded: true })), { timescale: true });
    const installedOnly = chooseStorage('auto', probe({ available: true }));
    assert.equal(installedOnly.timescale, false);
    assert.match(
      installedOnly.warning ?? '',
      /installed on this PostgreSQL server but not preloaded.*shared_preload_libraries/,
    );
    assert.match(
      chooseStorage('auto', probe({})).warning ?? '',
      /not installed on this PostgreSQL server.*PostgreSQL 15/,
    );
  });

  it('on refuses without it, off refuses a database that already uses it, and nobody runs an unloaded extension', () => {
    assert.throws(
      () => chooseStorage('on', probe({ available: true })),
      (e: Error) => e instanceof StorageError && /not preloaded/.test(e.message),
    );
    assert.throws(() => chooseStorage('on', probe({})), /TIMESCALEDB=on: TimescaleDB is not installed/);
    assert.deepEqual(chooseStorage('on', probe({ available: true, preloaded: true })), { timescale: true });
    assert.deepEqual(chooseStorage('off', probe({ available: true, preloaded: true })), { timescale: false });
    assert.throws(
      () => chooseStorage('off', probe({ installed: '2.28.3', available: true, preloaded: true })),
      /already uses TimescaleDB 2\.28\.3/,
    );
    assert.throws(
      () => chooseStorage('auto', probe({ installed: '2.28.3', available: true })),
      /uses TimescaleDB 2\.28\.3, but the server does not preload it/,
    );
  });
});

describe('the storage settings against real servers', () => {
  let port: number;
  const dir = path.join(os.tmpdir(), `stockwire-tsdb-nopreload-${randomBytes(4).toString('hex')}`);
  let unpreloaded: string;
  const dbs: TestDatabase[] = [];
  before(async () => {
    port = await freePort();
    unpreloaded = startUnpreloadedCluster(port, dir);
  });
  after(async () => {
    for (const d of dbs) await d.drop().catch(() => {});
    stopCluster(port, dir);
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('a server with the package installed but not preloaded: on refuses with what to do, auto runs on PostgreSQL with one warning', async () => {
    const db = await createDatabaseOn(unpreloaded, 'nopreload');
    dbs.push(db);
    const on = await stockwire(['migrate', '--timescaledb', 'on'], { DATABASE_URL: db.url });
    assert.equal(on.code, 1, on.stdout);
    assert.match(
      on.stderr,
      /TIMESCALEDB=on: TimescaleDB is installed on this PostgreSQL server but not preloaded; to use it, add timescaledb to shared_preload_libraries/,
    );
    const auto = await stockwire(['migrate'], { DATABASE_URL: db.url });
    assert.equal(auto.code, 0, auto.stderr);
    assert.equal(JSON.parse(auto.stdout).storage, 'postgresql');
    const warned = warnings(auto.stderr);
    assert.equal(warned.length, 1, auto.stderr);
    assert.match(warned[0] as string, /not preloaded/);
    assert.match(auto.stderr, /database ready on PostgreSQL 15\.\d+ \(no TimescaleDB\)/);
    const off = await stockwire(['migrate'], { DATABASE_URL: db.url, TIMESCALEDB: 'off' });
    assert.equal(off.code, 0, off.stderr);
    assert.equal(warnings(off.stderr).length, 0, 'off: no warning');
  });

  it('plain PostgreSQL: on refuses; a TimescaleDB database: off refuses, on and auto use it', async () => {
    const plain = await createDatabaseOn(ADMIN_URL, 'storage_plain');
    dbs.push(plain);
    const refused = await stockwire(['migrate'], { DATABASE_URL: plain.url, TIMESCALEDB: 'on' });
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /TIMESCALEDB=on: TimescaleDB is not installed on this PostgreSQL server/);

    const ts = await createTimescaleDatabase('storage_ts');
    dbs.push(ts);
    const on = await stockwire(['migrate', '--timescaledb', 'on'], { DATABASE_URL: ts.url });
    assert.equal(on.code, 0, on.stderr);
    assert.equal(JSON.parse(on.stdout).storage, 'timescaledb');
    assert.match(on.stderr, /database ready on TimescaleDB 2\.\d+\.\d+ on PostgreSQL 15/);
    assert.equal(warnings(on.stderr).length, 0);
    const off = await stockwire(['migrate', '--timescaledb', 'off'], { DATABASE_URL: ts.url });
    assert.equal(off.code, 1);
    assert.match(off.stderr, /TIMESCALEDB=off, but this database already uses TimescaleDB/);
    assert.equal((await stockwire(['migrate'], { DATABASE_URL: ts.url })).code, 0);
  });

  it('central on TimescaleDB names it in /readyz, and stopped and started again serves the same stock', async () => {
    const db = await createTimescaleDatabase('storage_central');
    dbs.push(db);
    const files = await writeDevices([{ id: 'gw-T', warehouse: 'T1', kind: 'gateway', password: 'gateway-pass-1' }]);
    const start = async () => {
      const central = new Central({
        databaseUrl: db.url,
        redisPrefix: 'x',
        dataDir: files.dir,
        devicesFile: files.file,
        host: '127.0.0.1',
        mqttPort: 0,
        wsPort: 0,
        httpPort: 0,
        batchMax: 500,
        batchWaitMs: 5,
        timescaledb: 'on',
        log: pino({ level: 'silent' }),
      });
      return { central, ports: await central.start() };
    };
    const send = async (mqttPort: number, from: number, count: number) => {
      const gw = await connect(`mqtt://127.0.0.1:${mqttPort}`, 'gw-T', 'gateway-pass-1');
      const acks = new Collector<Ack>(gw, 'wh/T1/dev/+/ack');
      await gw.subscribeAsync('wh/T1/dev/+/ack', { qos: 1 });
      for (let i = from; i < from + count; i++) {
        const type = i % 3 === 2 ? 'shipped' : 'received';
        await gw.publishAsync(
          `wh/T1/dev/s${i % 4}/event`,
          JSON.stringify({ v: 1, id: `e${i}`, type, sku: `K${i % 5}`, qty: 1 + (i % 7) }),
          { qos: 1 },
        );
      }
      await acks.waitFor(() => acks.messages.length >= count, 30_000, `${count} acks`);
      await gw.endAsync();
    };
    const stock = async (http: number) => {
      const out: Record<string, unknown> = {};
      for (let k = 0; k < 5; k++)
        out[`K${k}`] = (await call(`http://127.0.0.1:${http}`, 'GET', `/v1/warehouses/T1/stock/K${k}`)).body;
      return out;
    };

    const a = await start();
    const ready = await call(`http://127.0.0.1:${a.ports.http}`, 'GET', '/readyz');
    assert.equal(ready.status, 200);
    assert.equal((ready.body.storage as { kind: string; timescaledb: string }).kind, 'timescaledb');
    await send(a.ports.mqtt, 0, 300);
    const before = await stock(a.ports.http);
    await a.central.stop();

    const b = await start();
    try {
      assert.deepEqual(await stock(b.ports.http), before, 'the same stock after the restart');
      await send(b.ports.mqtt, 0, 300); // all repeats: nothing changes
      assert.deepEqual(await stock(b.ports.http), before);
      await send(b.ports.mqtt, 300, 30);
      const after = (
        await call<{ onHand: number }>(`http://127.0.0.1:${b.ports.http}`, 'GET', '/v1/warehouses/T1/stock/K0')
      ).body;
      let expected = 0;
      for (let i = 0; i < 330; i++) if (i % 5 === 0) expected += (i % 3 === 2 ? -1 : 1) * (1 + (i % 7));
      assert.equal(after.onHand, expected);
    } finally {
      await b.central.stop();
    }
  });
});
