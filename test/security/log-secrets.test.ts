import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import mqtt from 'mqtt';
import { addDevice } from '../../broker/index.js';
import { hasOpenssl, makeCerts, type TestCerts } from '../helpers/certs.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { call } from '../helpers/http.js';
import { BIN } from '../helpers/process.js';
import { testSeed } from '../helpers/seed.js';

const WH = 'WL';
const secret = (what: string) => `${what}-${randomBytes(12).toString('hex')}`;

/** A real stockwire process whose every byte of stdout and stderr is kept. */
class Proc {
  output = '';
  stdout = '';
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  constructor(
    readonly name: string,
    args: string[],
    env: Record<string, string>,
  ) {
    this.child = spawn(BIN, args, {
      env: { ...process.env, LOG_LEVEL: 'debug', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout?.on('data', (b: Buffer) => {
      this.output += b.toString();
      this.stdout += b.toString();
    });
    this.child.stderr?.on('data', (b: Buffer) => (this.output += b.toString()));
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  /** The ports of its ready line. */
  async ready(timeoutMs = 60_000): Promise<Record<string, number>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = this.stdout.split('\n').find((l) => l.startsWith('{"ready":true'));
      if (line) return JSON.parse(line) as Record<string, number>;
      if (this.child.exitCode !== null || Date.now() > deadline)
        throw new Error(`${this.name} not ready:\n${this.output.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async waitFor(text: RegExp, what: string, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!text.test(this.output)) {
      if (Date.now() > deadline)
        throw new Error(`${this.name}: no ${what} within ${timeoutMs} ms:\n${this.output.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** The base64 lines of a PEM file's body, each of which must never be printed. */
async function pemLines(file: string): Promise<string[]> {
  return (await fs.readFile(file, 'utf8')).split('\n').filter((l) => l.length >= 16 && !l.startsWith('-----'));
}

/**
 * Credentials never appear in logs (issue 5/7): real processes at LOG_LEVEL=debug — `devices add`, central and an
 * edge linked over mutual TLS, `stockwire sim` — with failed logins, API calls with right and wrong tokens; then
 * everything every process wrote is searched for every password, scrypt hash, token and private key.
 */
describe('no credential in any output', {
  skip: hasOpenssl() ? false : 'needs the openssl CLI (Debian package openssl) to make certificates',
}, () => {
  let certs: TestCerts;
  let db: TestDatabase;
  let dir: string;
  const procs: Proc[] = [];
  const s = {
    gateway: secret('gw-pw'),
    scanner1: secret('scan1-pw'),
    scanner2: secret('scan2-pw'),
    display: secret('disp-pw'),
    wrong: secret('wrong-pw'),
    unknownUser: secret('nobody-pw'),
    apiToken: secret('api-write'),
    apiReadToken: secret('api-read'),
    wrongToken: secret('api-wrong'),
    database: secret('db-pw'),
  };

  before(async () => {
    certs = await makeCerts(['gw-l']);
    db = await createTestDatabase('logsecrets');
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'stockwire-logsecrets-'));
  });
  after(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    await db?.drop();
    await certs?.remove();
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('central, an edge over mutual TLS, devices add and sim at debug level print no password, hash, token or key', {
    timeout: 300_000,
  }, async () => {
    const devicesFile = path.join(dir, 'devices.json');
    // `devices add` as a user runs it: the password by flag, and by environment variable.
    const addByFlag = new Proc(
      'devices add',
      [
        'devices',
        'add',
        '--file',
        devicesFile,
        '--id',
        'gw-l',
        '--warehouse',
        WH,
        '--kind',
        'gateway',
        '--password',
        s.gateway,
      ],
      {},
    );
    procs.push(addByFlag);
    assert.equal(await addByFlag.exited, 0, addByFlag.output);
    const addByEnv = new Proc(
      'devices add (env)',
      ['devices', 'add', '--file', devicesFile, '--id', 'scan-l-1', '--warehouse', WH, '--kind', 'scanner'],
      { DEVICE_PASSWORD: s.scanner1 },
    );
    procs.push(addByEnv);
    assert.equal(await addByEnv.exited, 0, addByEnv.output);
    await addDevice(devicesFile, { id: 'scan-l-2', warehouse: WH, kind: 'scanner', password: s.scanner2 });
    await addDevice(devicesFile, { id: 'disp-l', warehouse: WH, kind: 'display', password: s.display });
    const hashes = (
      JSON.parse(await fs.readFile(devicesFile, 'utf8')) as { devices: { passwordHash: string }[] }
    ).devices.map((d) => d.passwordHash);
    const credentials = path.join(dir, 'sim-credentials.json');
    await fs.writeFile(
      credentials,
      JSON.stringify([
        { id: 'scan-l-1', warehouse: WH, kind: 'scanner', password: s.scanner1 },
        { id: 'scan-l-2', warehouse: WH, kind: 'scanner', password: s.scanner2 },
      ]),
      { mode: 0o600 },
    );

    const dbUrl = new URL(db.url);
    dbUrl.password = s.database; // the machine's PostgreSQL trusts local connections: the password is carried, never checked
    const central = new Proc(
      'central',
      [
        'central',
        '--devices-file',
        devicesFile,
        '--data-dir',
        path.join(dir, 'central'),
        '--host',
        '127.0.0.1',
        '--mqtt-port',
        '0',
        '--ws-port',
        '0',
        '--http-port',
        '0',
      ],
      {
        DATABASE_URL: dbUrl.toString(),
        API_TOKEN: s.apiToken,
        API_READ_TOKEN: s.apiReadToken,
        TLS_PORT: '0',
        TLS_CERT: certs.server,
        TLS_KEY: certs.serverKey,
        TLS_CLIENT_CA: certs.ca,
      },
    );
    procs.push(central);
    const cp = await central.ready();
    assert.ok(cp.mqtts, 'central listens for TLS');
    const edge = new Proc(
      'edge',
      [
        'edge',
        '--warehouse',
        WH,
        '--devices-file',
        devicesFile,
        '--data-dir',
        path.join(dir, 'edge'),
        '--host',
        '127.0.0.1',
        '--mqtt-port',
        '0',
        '--ws-port',
        '0',
        '--http-port',
        '0',
      ],
      {
        CENTRAL_URL: `mqtts://127.0.0.1:${cp.mqtts}`,
        CENTRAL_USERNAME: 'gw-l',
        CENTRAL_PASSWORD: s.gateway,
        CENTRAL_CA: certs.ca,
        CENTRAL_CERT: certs.clientFor('gw-l').cert,
        CENTRAL_KEY: certs.clientFor('gw-l').key,
        TLS_PORT: '0',
        TLS_CERT: certs.server,
        TLS_KEY: certs.serverKey,
      },
    );
    procs.push(edge);
    const ep = await edge.ready();
    await edge.waitFor(/connected to central/, 'the mutual-TLS link to central');

    // Failed logins: a known user with a wrong password, an unknown user, at the edge (TCP and TLS) and at central.
    const refusedLogin = async (url: string, username: string, password: string) => {
      await assert.rejects(
        mqtt.connectAsync(
          url,
          {
            username,
            password,
            clientId: `${username}-x`,
            reconnectPeriod: 0,
            connectTimeout: 10_000,
            ca: await fs.readFile(certs.ca),
          },
          false,
        ),
      );
    };
    await refusedLogin(`mqtt://127.0.0.1:${ep.mqtt}`, 'scan-l-1', s.wrong);
    await refusedLogin(`mqtt://127.0.0.1:${ep.mqtt}`, 'nobody', s.unknownUser);
    await refusedLogin(`mqtts://127.0.0.1:${ep.mqtts}`, 'scan-l-2', s.wrong);
    await refusedLogin(`mqtt://127.0.0.1:${cp.mqtt}`, 'gw-l', s.wrong);
    await edge.waitFor(
      /"reason":"bad_password"[\s\S]*"reason":"unknown_user"|"reason":"unknown_user"[\s\S]*"reason":"bad_password"/,
      'the refusals logged',
    );
    await central.waitFor(/"reason":"bad_password"/, 'the refusal logged');

    // The API with a wrong, a read and the write token.
    const http = `http://127.0.0.1:${cp.http}`;
    assert.equal(
      (
        await call(http, 'POST', '/v1/reservations', {
          json: { sku: 'SKU-L', qty: 1 },
          key: 'l-1',
          token: s.wrongToken,
        })
      ).status,
      401,
    );
    assert.equal(
      (
        await call(http, 'POST', '/v1/reservations', {
          json: { sku: 'SKU-L', qty: 1 },
          key: 'l-1',
          token: s.apiReadToken,
        })
      ).status,
      401,
    );
    assert.equal(
      (await call(http, 'POST', '/v1/reservations', { json: { sku: 'SKU-L', qty: 1 }, key: 'l-1', token: s.apiToken }))
        .status,
      404,
    );
    assert.equal((await call(http, 'GET', '/v1/stock/SKU-L', { token: s.apiReadToken })).status, 404);

    // Devices through the edge, checked at central with the read token (`stockwire sim --verify`).
    const sim = new Proc(
      'sim',
      [
        'sim',
        '--edges',
        `${WH}=mqtt://127.0.0.1:${ep.mqtt}`,
        '--credentials',
        credentials,
        '--central-http',
        http,
        '--count',
        '40',
        '--rate',
        '40',
        '--seed',
        String(testSeed('security/log-secrets sim')),
        '--verify',
        '--verify-timeout',
        '60',
        '--format',
        'json',
      ],
      {
        API_TOKEN: s.apiReadToken,
      },
    );
    procs.push(sim);
    assert.equal(await sim.exited, 0, sim.output.slice(-3000));
    const summary = JSON.parse(sim.stdout.split('\n').find((l) => l.startsWith('{"runId"')) ?? '{}') as {
      verify?: { differences: unknown[]; committed: boolean };
    };
    assert.deepEqual(
      [summary.verify?.committed, summary.verify?.differences.length],
      [true, 0],
      'the events crossed the mutual-TLS link and were applied',
    );

    for (const p of [edge, central]) {
      p.child.kill('SIGTERM');
      assert.equal(await p.exited, 0, `${p.name} stops cleanly:\n${p.output.slice(-2000)}`);
    }

    // The logs did record what happened (so the search below is not vacuous)…
    const all = procs.map((p) => p.output).join('\n');
    for (const expected of ['"reason":"bad_password"', '"reason":"unknown_user"', 'gw-l', 'scan-l-1', '"mqtts":'])
      assert.ok(all.includes(expected), `the output mentions ${expected}`);
    // …and none of the secrets.
    const keyLines = [...(await pemLines(certs.serverKey)), ...(await pemLines(certs.clientFor('gw-l').key))];
    const forbidden: [string, string][] = [
      ...Object.entries(s),
      ...hashes.flatMap((h, i): [string, string][] => [
        [`scrypt hash ${i}`, h],
        ...h
          .split('$')
          .slice(4)
          .map((part, j): [string, string] => [`scrypt hash ${i} part ${j}`, part]),
      ]),
      ...keyLines.map((l, i): [string, string] => [`private key line ${i}`, l]),
    ];
    assert.ok(forbidden.length > 20);
    for (const p of procs) {
      for (const [what, value] of forbidden) assert.ok(!p.output.includes(value), `${p.name} printed the ${what}`);
    }
  });
});
