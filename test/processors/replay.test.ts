import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import type pg from 'pg';
import pino from 'pino';
import { Central } from '../../processors/central.js';
import { migrate } from '../../processors/db/migrate.js';
import { createPool } from '../../processors/db/pool.js';
import { parseTopicTemplate } from '../../processors/replay.js';
import { ajv, ReplayedEvent } from '../../protocol/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { Collector, connect } from '../helpers/mqtt.js';
import { BIN, freePort } from '../helpers/process.js';

const MOSQUITTO = process.env.MOSQUITTO_URL ?? 'mqtt://127.0.0.1:1883';
const T0 = Date.parse('2026-01-01T00:00:00Z');
const MINUTE = 60_000; // ms
const isReplayedEvent = ajv.compile(ReplayedEvent);

interface Stored {
  ts: number;
  wh: string;
  device: string;
  id: string;
}

function run(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      BIN,
      ['replay', ...args],
      { env: { ...process.env, LOG_LEVEL: 'warn', ...env }, timeout: 60_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** Ledger order: (ts, id, device), bytewise, as the database sorts with COLLATE "C". */
const ledgerOrder = (a: Stored, b: Stored) =>
  a.ts - b.ts || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0) || (a.device < b.device ? -1 : a.device > b.device ? 1 : 0);
const key = (e: { wh: string; device: string; id: string }) => `${e.wh}/${e.device}/${e.id}`;

describe('stockwire replay', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  let env: Record<string, string>;
  const stored: Stored[] = [];
  const from = new Date(T0 + 6 * MINUTE).toISOString(); // an event falls on each bound: from is in, to is out
  const to = new Date(T0 + 30 * MINUTE).toISOString();
  const inRange = () => stored.filter((e) => e.ts >= T0 + 6 * MINUTE && e.ts < T0 + 30 * MINUTE).sort(ledgerOrder);

  before(async () => {
    db = await createTestDatabase('replay');
    env = { DATABASE_URL: db.url };
    pool = createPool({ url: db.url, max: 2 });
    await migrate(pool);
    // 40 minutes of events in two warehouses, inserted out of order; pairs share an event time, so the id decides.
    const rows: unknown[][] = [];
    for (let i = 0; i < 40; i++) {
      const e: Stored = {
        ts: T0 + Math.floor(i / 2) * 2 * MINUTE,
        wh: i % 2 === 0 ? 'RA' : 'RB',
        device: `dev-${i % 3}`,
        id: `ev-${String(39 - i).padStart(2, '0')}`,
      };
      stored.push(e);
      const type = ['received', 'shipped', 'adjusted', 'counted'][i % 4] as string;
      const qty = type === 'adjusted' ? -2 : 3;
      const delta = type === 'received' ? qty : type === 'shipped' ? -qty : type === 'adjusted' ? qty : 0;
      const payload = {
        v: 1,
        id: e.id,
        type,
        sku: `SKU-${i % 5}`,
        qty,
        ts: new Date(e.ts).toISOString(),
        reason: 'replay test',
        extra: { kept: i },
      };
      rows.push([
        new Date(e.ts),
        e.wh,
        e.device,
        e.id,
        type,
        payload.sku,
        qty,
        delta,
        i % 7 === 0 ? 'BIN-1' : null,
        payload.reason,
        JSON.stringify(payload),
      ]);
    }
    for (const r of rows.reverse()) {
      await pool.query(
        'INSERT INTO events (ts, wh, device, id, type, sku, qty, delta, location, reason, payload, received_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11, now())',
        r,
      );
    }
  });

  after(async () => {
    await pool.end();
    await db.drop();
  });

  async function subscribe(
    url: string,
    filter: string,
    username = 'replay-test',
    password = 'x',
  ): Promise<{ client: MqttClient; got: Collector<ReplayedEvent> }> {
    const client = await connect(url, username, password).catch((err: Error) => {
      throw new Error(
        `cannot reach the broker at ${url} (${err.message}); start Mosquitto with \`mosquitto -d\` or set MOSQUITTO_URL`,
      );
    });
    const got = new Collector<ReplayedEvent>(client, filter);
    await client.subscribeAsync(filter, { qos: 1 });
    return { client, got };
  }

  /**
   * Instead of a pause for "nothing more follows": a marker published through the same broker after the replay
   * exited reaches the subscriber after everything the broker took from the replay before (for QoS 1, every
   * event the replay saw acknowledged). The marker is then taken out of `got`.
   */
  async function drained(client: MqttClient, got: Collector<ReplayedEvent>, prefix: string): Promise<void> {
    const topic = `${prefix}/drained/marker`;
    await client.publishAsync(topic, '{"marker":true}', { qos: 1 });
    await got.waitFor(() => got.messages.some((m) => m.topic === topic), 10_000, 'the marker');
    got.messages.splice(
      got.messages.findIndex((m) => m.topic === topic),
      1,
    );
  }

  it("republishes exactly the events of [from, to), in ledger order, to the machine's Mosquitto", {
    timeout: 60_000,
  }, async () => {
    const prefix = `rp${randomBytes(3).toString('hex')}`;
    const { client, got } = await subscribe(MOSQUITTO, `${prefix}/#`);
    try {
      const r = await run(
        ['--from', from, '--to', to, '--topic', `${prefix}/{wh}/{sku}`, '--central-url', MOSQUITTO],
        env,
      );
      assert.equal(r.code, 0, r.stderr);
      const expected = inRange();
      assert.equal(expected.length, 24);
      const report = JSON.parse(r.stdout) as {
        replayed: number;
        complete: boolean;
        from: string;
        to: string;
        last: { id: string };
      };
      assert.deepEqual(
        { replayed: report.replayed, complete: report.complete, from: report.from, to: report.to },
        { replayed: 24, complete: true, from, to },
      );
      assert.equal(report.last.id, expected.at(-1)?.id);
      await got.waitFor(() => got.messages.length >= 24, 10_000, 'replayed events');
      await drained(client, got, prefix); // nothing beyond the range follows
      assert.deepEqual(
        got.messages.map((m) => key(m.payload)),
        expected.map(key),
        'exactly the range, in ledger order',
      );
      for (const m of got.messages) {
        assert.ok(isReplayedEvent(m.payload), `schema: ${ajv.errorsText(isReplayedEvent.errors)}`);
        assert.equal(m.topic, `${prefix}/${m.payload.wh}/${m.payload.sku}`);
        assert.equal(m.payload.payload.id, m.payload.id, 'the stored payload travels along');
      }
      const first = got.messages[0]?.payload as ReplayedEvent;
      assert.equal(first.ts, from);
      assert.deepEqual(
        first.payload.extra,
        { kept: stored.findIndex((e) => e.id === first.id && e.wh === first.wh) },
        'fields the ledger ignores are kept',
      );
    } finally {
      await client.endAsync();
    }
  });

  it('--warehouses narrows the replay to those warehouses', { timeout: 60_000 }, async () => {
    const prefix = `rp${randomBytes(3).toString('hex')}`;
    const { client, got } = await subscribe(MOSQUITTO, `${prefix}/#`);
    try {
      const r = await run(
        [
          '--from',
          from,
          '--to',
          to,
          '--topic',
          `${prefix}/{type}/{id}`,
          '--warehouses',
          'RB',
          '--central-url',
          MOSQUITTO,
          '--qos',
          '0',
        ],
        env,
      );
      assert.equal(r.code, 0, r.stderr);
      const expected = inRange().filter((e) => e.wh === 'RB');
      assert.equal(JSON.parse(r.stdout).replayed, expected.length);
      await got.waitFor(() => got.messages.length >= expected.length, 10_000, 'replayed events');
      await drained(client, got, prefix);
      assert.deepEqual(
        got.messages.map((m) => key(m.payload)),
        expected.map(key),
      );
    } finally {
      await client.endAsync();
    }
  });

  describe('against central', () => {
    let central: Central;
    let url: string;
    before(async () => {
      const devices = await writeDevices([
        { id: 'proc-r', warehouse: 'RA', kind: 'processor', password: 'pw-processor-r' },
        { id: 'gw-r', warehouse: 'RA', kind: 'gateway', password: 'pw-gateway-r' },
      ]);
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
        log: pino({ level: 'silent' }),
      });
      url = `mqtt://127.0.0.1:${(await central.start()).mqtt}`;
    });
    after(async () => central.stop());

    it("a processor credential replays under wh/{wh}/replay/…, which central's ACL allows it", {
      timeout: 60_000,
    }, async () => {
      const { client, got } = await subscribe(url, 'wh/+/replay/#', 'proc-r', 'pw-processor-r');
      try {
        const r = await run(
          [
            '--from',
            from,
            '--to',
            to,
            '--topic',
            'wh/{wh}/replay/{sku}',
            '--central-url',
            url,
            '--central-username',
            'proc-r',
            '--central-password',
            'pw-processor-r',
          ],
          env,
        );
        assert.equal(r.code, 0, r.stderr);
        await got.waitFor(() => got.messages.length >= 24, 10_000, 'replayed events');
        assert.deepEqual(
          got.messages.map((m) => key(m.payload)),
          inRange().map(key),
        );
      } finally {
        await client.endAsync();
      }
    });

    it('a credential that may not publish there fails the run (exit 1) with the reason', {
      timeout: 60_000,
    }, async () => {
      const r = await run(
        [
          '--from',
          from,
          '--to',
          to,
          '--topic',
          'wh/{wh}/replay/{sku}',
          '--central-url',
          url,
          '--central-username',
          'gw-r',
          '--central-password',
          'pw-gateway-r',
        ],
        env,
      );
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, /closed the connection during the replay/);
      assert.equal(r.stdout, '', 'no report of success');
    });
  });

  it('SIGTERM stops after the events already sent are acknowledged: exit 0, and the report says where it stopped', {
    timeout: 90_000,
  }, async () => {
    const prefix = `rp${randomBytes(3).toString('hex')}`;
    const { client, got } = await subscribe(MOSQUITTO, `${prefix}/#`);
    try {
      const child = spawn(
        BIN,
        ['replay', '--from', from, '--to', to, '--topic', `${prefix}/{wh}`, '--central-url', MOSQUITTO, '--rate', '10'],
        { env: { ...process.env, ...env, LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let stdout = '';
      child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      await got.waitFor(() => got.messages.length >= 3, 60_000, 'the first replayed events'); // the process starts first
      child.kill('SIGTERM');
      assert.equal(await exited, 0);
      const report = JSON.parse(stdout) as {
        replayed: number;
        complete: boolean;
        last: { wh: string; device: string; id: string };
      };
      assert.equal(report.complete, false);
      assert.ok(report.replayed >= 3 && report.replayed < 24, `stopped early (${report.replayed})`);
      // Every reported event was acknowledged by the broker: wait for them, then for the marker behind them.
      await got.waitFor(() => got.messages.length >= report.replayed, 10_000, 'the reported events');
      await drained(client, got, prefix);
      assert.deepEqual(
        got.messages.map((m) => key(m.payload)),
        inRange().slice(0, report.replayed).map(key),
        'what arrived is exactly the reported prefix',
      );
      assert.equal(key(report.last), key(inRange()[report.replayed - 1] as Stored));
    } finally {
      await client.endAsync();
    }
  });

  it('bad flags exit 2 listing every problem; --help exits 0; an unreachable broker exits 1', {
    timeout: 60_000,
  }, async () => {
    const [help, bad, backwards, nobody] = await Promise.all([
      run(['--help'], env),
      run(['--from', 'yesterday', '--topic', 'wh/{wh}/dev/{device}/event', '--qos', '2'], env),
      run(['--from', to, '--to', from, '--topic', 'x/{wh}'], env),
      freePort().then((port) =>
        run(['--from', from, '--to', to, '--topic', 'x/{wh}', '--central-url', `mqtt://127.0.0.1:${port}`], env),
      ),
    ]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Usage: stockwire replay/);
    assert.equal(bad.code, 2);
    for (const p of [
      '--from must be RFC 3339',
      '--to is required',
      '--topic could publish to the live topic wh/+/dev/+/event',
      '--qos',
    ])
      assert.ok(bad.stderr.includes(p), `names ${p}: ${bad.stderr}`);
    assert.equal(backwards.code, 2);
    assert.match(backwards.stderr, /--to must be after --from/);
    assert.equal(nobody.code, 1);
    assert.match(nobody.stderr, /ECONNREFUSED/);
  });

  it('topic templates: placeholders are filled, live topics and wildcards are refused', () => {
    assert.equal(parseTopicTemplate('analytics/{wh}/{device}/{type}/{id}'), 'analytics/{wh}/{device}/{type}/{id}');
    for (const [template, problem] of [
      ['stock/{sku}', /live topic stock\/\+/],
      ['wh/{wh}/stock/{sku}', /live topic wh\/\+\/stock\/\+/],
      ['wh/{wh}/{sku}', /live topic wh\/\+\/status/], // a sku called "status" would land on the status topic
      ['alerts/{wh}/{type}', /live topic alerts/],
      ['replay/#', /without \+ or #/],
      ['$SYS/{wh}', /must not start with \$/],
      ['replay/{warehouse}', /unknown placeholders \{warehouse\}/],
      ['replay/{wh', /unbalanced/],
      ['replay//{wh}', /empty levels/],
    ] as const)
      assert.throws(() => parseTopicTemplate(template), problem, template);
  });
});
