import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { ConfigError, parseConfig } from '../../runtime/options.js';
import { resolveApiToken } from '../../processors/api-token.js';
import { Central } from '../../processors/central.js';
import { centralSpecs, processorSpecs } from '../../processors/config.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { call } from '../helpers/http.js';
import { CapturedLog } from '../helpers/logs.js';
import { startStockwire, type Running } from '../helpers/process.js';

const MOSQUITTO = process.env.MOSQUITTO_URL ?? 'mqtt://127.0.0.1:1883';
const tempDir = () => fs.mkdtemp(path.join(os.tmpdir(), 'stockwire-token-'));

describe('API token: configured, or generated once into DATA_DIR/api-token', () => {
  it('unset: a random token is written (0600) and reused; the log names the file, never the token', async () => {
    const dir = path.join(await tempDir(), 'data'); // DATA_DIR need not exist yet
    const log = new CapturedLog();
    const token = await resolveApiToken(undefined, dir, log.log);
    assert.match(token, /^[A-Za-z0-9_-]{43}$/, '32 random bytes, base64url');
    const file = path.join(dir, 'api-token');
    assert.equal((await fs.readFile(file, 'utf8')).trim(), token);
    assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
    assert.equal(await resolveApiToken(undefined, dir, log.log), token, 'a restart reuses it');
    assert.ok(log.lines.some((l) => l.file === file && /generated/.test(String(l.msg))));
    assert.ok(log.lines.some((l) => l.file === file && /read from file/.test(String(l.msg))));
    assert.ok(!JSON.stringify(log.lines).includes(token), 'the token is never logged');
    await fs.rm(path.dirname(dir), { recursive: true });
  });

  it('processes sharing DATA_DIR agree on one token; a configured token wins and writes nothing', async () => {
    const dir = await tempDir();
    const silent = pino({ level: 'silent' });
    const tokens = await Promise.all(Array.from({ length: 5 }, () => resolveApiToken(undefined, dir, silent)));
    assert.equal(new Set(tokens).size, 1);
    assert.deepEqual((await fs.readdir(dir)).sort(), ['api-token'], 'no temp file left behind');
    const other = await tempDir();
    assert.equal(await resolveApiToken('configured-token-0123456789', other, silent), 'configured-token-0123456789');
    assert.deepEqual(await fs.readdir(other), []);
    await Promise.all([dir, other].map((d) => fs.rm(d, { recursive: true })));
  });

  it('a token file others can read is used with a warning; an unusable one stops the start with its path', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'api-token');
    const log = new CapturedLog();
    await fs.writeFile(file, 'kept-token-0123456789abcdef\n', { mode: 0o644 });
    await fs.chmod(file, 0o644);
    assert.equal(await resolveApiToken(undefined, dir, log.log), 'kept-token-0123456789abcdef');
    assert.ok(
      log.lines.some((l) => l.level === 40 && /readable by other users/.test(String(l.msg)) && l.mode === '644'),
    );
    await fs.rm(file);
    await fs.mkdir(file); // unreadable as a file
    await assert.rejects(
      resolveApiToken(undefined, dir, log.log),
      new RegExp(`cannot read the API token file ${file}`),
    );
    await fs.rmdir(file);
    for (const content of ['', 'tiny-secret', 'has space in it 0123456789']) {
      await fs.writeFile(file, content);
      await assert.rejects(
        resolveApiToken(undefined, dir, log.log),
        (err: Error) =>
          err.message.includes(file) &&
          /fix or remove the file/.test(err.message) &&
          (content === '' || !err.message.includes(content)),
      );
    }
    await fs.rm(dir, { recursive: true });
  });

  it('API_TOKEN and API_READ_TOKEN are secret options: a bad one is refused without being echoed', () => {
    for (const specs of [centralSpecs, processorSpecs]) {
      assert.equal(specs.apiToken.secret, true);
      assert.equal(specs.apiReadToken.secret, true);
      const err = (() => {
        try {
          parseConfig(specs, [], { API_TOKEN: 'tiny-secret', API_READ_TOKEN: 'has space in it 0123456789' });
        } catch (e) {
          return e;
        }
        return null;
      })();
      assert.ok(err instanceof ConfigError);
      const text = err.problems.join('\n');
      assert.match(text, /--api-token \(API_TOKEN\) must be at least 16 characters/);
      assert.match(text, /--api-read-token \(API_READ_TOKEN\) must be visible ASCII characters without spaces/);
      assert.ok(!text.includes('tiny-secret') && !text.includes('has space'), 'the values are not echoed');
    }
  });
});

describe('central with API_TOKEN and API_READ_TOKEN (in process)', () => {
  let db: TestDatabase;
  let central: Central;
  let base: string;
  const write = `w-${randomBytes(16).toString('hex')}`;
  const read = `r-${randomBytes(16).toString('hex')}`;
  before(async () => {
    db = await createTestDatabase('apitoken');
    const devices = await writeDevices([{ id: 'disp-a', warehouse: 'WA', kind: 'display', password: 'pw-display-a' }]);
    central = new Central({
      databaseUrl: db.url,
      redisPrefix: 'x',
      dataDir: devices.dir,
      devicesFile: devices.file,
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: 0,
      httpPort: 0,
      batchMax: 100,
      batchWaitMs: 5,
      apiToken: write,
      apiReadToken: read,
      log: pino({ level: 'silent' }),
    });
    base = `http://127.0.0.1:${(await central.start()).http}`;
    await assert.rejects(fs.access(path.join(devices.dir, 'api-token')), 'a configured token writes no file');
  });
  after(async () => {
    await central?.stop();
    await db?.drop();
  });

  it('every write route refuses a request without the token and changes nothing; with it the request is decided', async () => {
    const routes: [string, string, unknown][] = [
      ['POST', '/v1/reservations', { sku: 'SKU-A', qty: 1 }],
      ['DELETE', '/v1/reservations/r-unknown', undefined],
      ['POST', '/v1/transfers', { sku: 'SKU-A', qty: 1, from: 'WA', to: 'WB' }],
      ['DELETE', '/v1/transfers/t-unknown', undefined],
    ];
    for (const [method, route, json] of routes) {
      for (const token of [undefined, read, 'not-the-token-0123456789']) {
        const r = await call<{ error: { code: string } }>(base, method, route, {
          json,
          key: 'k-1',
          ...(token !== undefined && { token }),
        });
        assert.equal(r.status, 401, `${method} ${route} with ${token ?? 'no token'}`);
        assert.equal(r.body.error.code, 'unauthorized');
        assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer realm="stockwire"/);
      }
      const decided = await call<{ error: { code: string } }>(base, method, route, { json, key: 'k-1', token: write });
      assert.equal(decided.status, 404, `${method} ${route}: decided (unknown sku or id), not refused`);
    }
  });

  it('reads need the read or the write token; health, readiness and metrics stay open', async () => {
    assert.equal((await call(base, 'GET', '/v1/stock/SKU-A')).status, 401);
    assert.equal((await call(base, 'GET', '/v1/warehouses/WA/stock/SKU-A')).status, 401);
    assert.equal((await call(base, 'GET', '/v1/stock/SKU-A/history')).status, 401);
    assert.equal((await call(base, 'GET', '/v1/reservations/r-x')).status, 401);
    assert.equal((await call(base, 'GET', '/v1/stock/SKU-A', { token: read })).status, 404);
    assert.equal((await call(base, 'GET', '/v1/stock/SKU-A', { token: write })).status, 404);
    for (const route of ['/healthz', '/readyz', '/metrics'])
      assert.equal((await fetch(`${base}${route}`)).status, 200, route);
  });
});

describe('stockwire processor without API_TOKEN (a real process)', () => {
  let db: TestDatabase;
  let proc: Running | null = null;
  let dataDir: string;
  before(async () => {
    db = await createTestDatabase('apitoken_proc');
    dataDir = await tempDir();
  });
  after(async () => {
    proc?.child.kill('SIGKILL');
    await db?.drop();
    await fs.rm(dataDir, { recursive: true, force: true });
  });

  it('generates the token into DATA_DIR/api-token, logs only its path, and keeps it across a restart', {
    timeout: 120_000,
  }, async () => {
    const tag = randomBytes(3).toString('hex');
    const args = [
      'processor',
      '--central-url',
      MOSQUITTO,
      '--warehouses',
      `WP${tag}`,
      '--instance',
      `tok${tag}`,
      '--http-port',
      '0',
      '--host',
      '127.0.0.1',
      '--data-dir',
      dataDir,
    ];
    const file = path.join(dataDir, 'api-token');
    let first: string | undefined;
    for (const round of [1, 2]) {
      proc = await startStockwire(args, { DATABASE_URL: db.url, API_TOKEN: undefined });
      const token = (await fs.readFile(file, 'utf8')).trim();
      first ??= token;
      assert.equal(token, first, 'the restart keeps the token');
      assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
      const logs = proc.logs.join('\n');
      assert.ok(logs.includes(file), `round ${round}: the log names the file`);
      assert.ok(!logs.includes(token), `round ${round}: the log never shows the token`);
      const base = `http://127.0.0.1:${proc.ports.http}`;
      assert.equal(
        (await call(base, 'POST', '/v1/reservations', { json: { sku: 'SKU-P', qty: 1 }, key: 'p-1' })).status,
        401,
      );
      assert.equal(
        (await call(base, 'POST', '/v1/reservations', { json: { sku: 'SKU-P', qty: 1 }, key: 'p-1', token })).status,
        404,
        'decided: unknown sku',
      );
      proc.child.kill('SIGTERM');
      assert.equal(await proc.exited, 0);
      proc = null;
    }
  });
});
