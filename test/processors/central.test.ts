import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import pg from 'pg';
import pino from 'pino';
import { Central } from '../../processors/central.js';
import type { Ack, GlobalStock, WarehouseStock } from '../../protocol/index.js';
import { startCentralFixture, type CentralFixture } from '../helpers/central.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { Collector, connect } from '../helpers/mqtt.js';
import { freePort } from '../helpers/process.js';
import { createPool } from '../../processors/db/pool.js';
import { migrate } from '../../processors/db/migrate.js';

const run = promisify(execFile);
const WH = 'WC1';
const READ_TIMEOUT_MS = 1_500; // the API's read timeout here
let fixture: CentralFixture;
let db: TestDatabase;
let central: Central;
let ports: { mqtt: number; ws: number; http: number };
let gateway: MqttClient;
let acks: Collector<Ack>;
let pool: pg.Pool;

const event = (id: string, type: string, qty: number, sku = 'SKU-1', extra: Record<string, unknown> = {}) =>
  JSON.stringify({ v: 1, id, type, sku, qty, ...extra });
const api = async (path: string) => {
  const res = await fetch(`http://127.0.0.1:${ports.http}${path}`);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
};
const metric = async (name: string): Promise<string[]> => {
  const res = await fetch(`http://127.0.0.1:${ports.http}/metrics`);
  return (await res.text()).split('\n').filter((l) => l.startsWith(name));
};

describe('stockwire central (in-process processor)', () => {
  before(async () => {
    fixture = await startCentralFixture({
      name: 'central',
      wh: WH,
      gateway: { id: 'gw1', password: 'gw-secret' },
      devices: [{ id: 'disp1', warehouse: WH, kind: 'display', password: 'disp-secret' }],
      options: { apiReadTimeoutMs: READ_TIMEOUT_MS },
    });
    ({ db, central, ports, gateway, acks, pool } = fixture);
  });
  after(async () => {
    await fixture?.stop();
  });

  it('mosquitto_pub with a gateway credential yields the retained stock/{sku} for mosquitto_sub and the same numbers over HTTP; 100 repeats count once', async () => {
    const pub = (payload: string) =>
      run('mosquitto_pub', [
        '-h',
        '127.0.0.1',
        '-p',
        String(ports.mqtt),
        '-u',
        'gw1',
        '-P',
        'gw-secret',
        '-i',
        'gw1-cli',
        '-q',
        '1',
        '-t',
        `wh/${WH}/dev/scan-7/event`,
        '-m',
        payload,
      ]);
    await pub(event('r-1', 'received', 40, 'SKU-P'));
    // The same event 100 times: one mosquitto_pub per line of stdin (-l), all with the same id.
    const repeated = Array.from({ length: 100 }, () => event('s-1', 'shipped', 15, 'SKU-P')).join('\n');
    await new Promise<void>((resolve, reject) => {
      const child = execFile(
        'mosquitto_pub',
        [
          '-h',
          '127.0.0.1',
          '-p',
          String(ports.mqtt),
          '-u',
          'gw1',
          '-P',
          'gw-secret',
          '-i',
          'gw1-cli2',
          '-q',
          '1',
          '-t',
          `wh/${WH}/dev/scan-7/event`,
          '-l',
        ],
        (err) => (err ? reject(err) : resolve()),
      );
      child.stdin?.end(`${repeated}\n`);
    });
    const { stdout } = await run('mosquitto_sub', [
      '-h',
      '127.0.0.1',
      '-p',
      String(ports.mqtt),
      '-u',
      'disp1',
      '-P',
      'disp-secret',
      '-i',
      'disp1-cli',
      '-t',
      'stock/SKU-P',
      '-C',
      '1',
      '-W',
      '5',
    ]);
    const retained = JSON.parse(stdout) as GlobalStock;
    assert.equal(retained.onHand, 25);
    assert.equal(retained.available, 25);
    assert.deepEqual(retained.warehouses, { [WH]: { onHand: 25, reserved: 0, available: 25 } });
    const http = await api('/v1/stock/SKU-P');
    assert.equal(http.status, 200);
    assert.equal(http.body.onHand, 25);
    assert.equal(http.body.version, retained.version);
    const wh = await api(`/v1/warehouses/${WH}/stock/SKU-P`);
    assert.equal((wh.body as unknown as WarehouseStock).onHand, 25);
    const { rows } = await pool.query(`SELECT count(*)::int AS n FROM events WHERE sku = 'SKU-P'`);
    assert.equal(rows[0].n, 2, 'the repeated event is in the log once');
  });

  it('acks applied, then duplicate with the stock, over MQTT', async () => {
    await gateway.publishAsync(`wh/${WH}/dev/scan-1/event`, event('a-1', 'received', 5), { qos: 1 });
    await acks.waitFor(() => acks.messages.some((m) => m.payload.id === 'a-1'));
    assert.deepEqual(acks.last(`wh/${WH}/dev/scan-1/ack`), {
      id: 'a-1',
      status: 'applied',
      stock: { onHand: 5, available: 5 },
    });
    await gateway.publishAsync(`wh/${WH}/dev/scan-1/event`, event('a-1', 'received', 5), { qos: 1 });
    await acks.waitFor(() => acks.messages.filter((m) => m.payload.id === 'a-1').length === 2);
    assert.deepEqual(acks.last(`wh/${WH}/dev/scan-1/ack`), {
      id: 'a-1',
      status: 'duplicate',
      stock: { onHand: 5, available: 5 },
    });
  });

  const bad: [string, string | Buffer, string][] = [
    ['invalid JSON', '{"v":1,"id":', 'invalid_json'],
    ['a schema violation', event('bad-qty', 'received', 0), 'schema_violation'],
    ['an oversized payload', event('big', 'received', 1, 'SKU-1', { note: 'x'.repeat(9000) }), 'payload_too_large'],
    [
      'an unknown version',
      JSON.stringify({ v: 2, id: 'v2', type: 'received', sku: 'S', qty: 1 }),
      'unsupported_version',
    ],
  ];
  for (const [what, payload, code] of bad) {
    it(`${what} becomes a dead letter with a rejected ack and a metric, and the processor keeps going`, async () => {
      const device = `bad-${code}`;
      const before = await pool.query(`SELECT count(*)::int AS n FROM dead_letters WHERE code = $1`, [code]);
      await gateway.publishAsync(`wh/${WH}/dev/${device}/event`, payload, { qos: 1 });
      await acks.waitFor(() => acks.messages.some((m) => m.topic === `wh/${WH}/dev/${device}/ack`));
      const ack = acks.last(`wh/${WH}/dev/${device}/ack`) as Ack;
      assert.equal(ack.status, 'rejected');
      assert.equal(ack.error?.code, code);
      const { rows } = await pool.query(
        `SELECT wh, device, code, reason, raw, source FROM dead_letters WHERE code = $1 ORDER BY seq DESC LIMIT 1`,
        [code],
      );
      assert.equal(rows.length, 1);
      assert.equal(
        (await pool.query(`SELECT count(*)::int AS n FROM dead_letters WHERE code = $1`, [code])).rows[0].n,
        before.rows[0].n + 1,
      );
      assert.equal(rows[0].wh, WH);
      assert.equal(rows[0].device, device);
      assert.equal(rows[0].source, 'gw1');
      assert.ok((rows[0].raw as Buffer).length <= 8192, 'raw payload truncated to 8 KiB');
      assert.ok((rows[0].raw as Buffer).length > 0);
      const lines = await metric(`stockwire_dead_letters_total{code="${code}"}`);
      assert.ok(lines.length === 1 && Number(lines[0]?.split(' ')[1]) >= 1, `metric for ${code}: ${lines.join()}`);
      // The next valid event is applied.
      const okId = `after-${code}`;
      await gateway.publishAsync(`wh/${WH}/dev/${device}/event`, event(okId, 'received', 1, 'SKU-AFTER'), { qos: 1 });
      await acks.waitFor(() => acks.messages.some((m) => m.payload.id === okId));
      assert.equal(acks.last(`wh/${WH}/dev/${device}/ack`)?.status, 'applied');
    });
  }

  it("an edge's ts stands at central, even one more than 5 minutes ahead of central's clock (the edge's clock decides, CONTRACT 3)", async () => {
    // The edge's clock is 10 minutes ahead of central's: it accepted this ts, and central must not replace it with
    // its own receipt time, which would depend on when the event arrives (after an outage: hours later).
    const ts = Date.now() + 10 * 60_000;
    await gateway.publishAsync(`wh/${WH}/dev/ahead/event`, event('ahead-1', 'counted', 5, 'SKU-AHEAD', { ts }), {
      qos: 1,
    });
    await acks.waitFor(() => acks.messages.some((m) => m.payload.id === 'ahead-1'));
    const { rows } = await pool.query<{ ts: Date }>(`SELECT ts FROM events WHERE id = 'ahead-1'`);
    assert.equal(rows[0]?.ts.getTime(), ts);
  });

  it('a poison event among valid ones is rejected alone; the batch behind it commits', async () => {
    const device = 'mixed';
    const sends = [];
    for (let i = 0; i < 20; i++)
      sends.push(
        gateway.publishAsync(
          `wh/${WH}/dev/${device}/event`,
          i === 7 ? '{"v":1,' : event(`m-${i}`, 'received', 1, 'SKU-MIX'),
          { qos: 1 },
        ),
      );
    await Promise.all(sends);
    await acks.waitFor(() => acks.messages.filter((m) => m.topic === `wh/${WH}/dev/${device}/ack`).length === 20);
    const statuses = acks.messages.filter((m) => m.topic === `wh/${WH}/dev/${device}/ack`).map((m) => m.payload.status);
    assert.equal(statuses.filter((s) => s === 'applied').length, 19);
    assert.equal(statuses.filter((s) => s === 'rejected').length, 1);
    assert.equal((await api('/v1/stock/SKU-MIX')).body.onHand, 19);
  });

  it('a shelf reading is retained at wh/{wh}/shelf/{location}/{sku}; an older reading does not replace it', async () => {
    const display = await connect(`mqtt://127.0.0.1:${ports.mqtt}`, 'disp1', 'disp-secret');
    const shelf = new Collector<{ qty: number; location: string }>(display, `wh/${WH}/shelf/#`);
    await display.subscribeAsync(`wh/${WH}/shelf/#`, { qos: 1 });
    const now = Date.now();
    await gateway.publishAsync(
      `wh/${WH}/dev/shelf-1/event`,
      event('l-1', 'level', 12, 'SKU-L', { location: 'A-01', ts: now }),
      { qos: 1 },
    );
    await shelf.waitFor(() => shelf.messages.length === 1);
    await gateway.publishAsync(
      `wh/${WH}/dev/shelf-1/event`,
      event('l-0', 'level', 99, 'SKU-L', { location: 'A-01', ts: now - 60_000 }),
      { qos: 1 },
    );
    await acks.waitFor(() => acks.messages.some((m) => m.payload.id === 'l-0'));
    assert.equal(shelf.last(`wh/${WH}/shelf/A-01/SKU-L`)?.qty, 12);
    // A barrier instead of a pause: a newer reading from the same device is published after anything the older
    // one could have published, so once it is here, an unwanted publish of 99 would be here too.
    await gateway.publishAsync(
      `wh/${WH}/dev/shelf-1/event`,
      event('l-2', 'level', 13, 'SKU-L', { location: 'A-01', ts: now + 1 }),
      { qos: 1 },
    );
    await shelf.waitFor(() => shelf.messages.some((m) => m.payload.qty === 13), 10_000, 'the newer reading');
    assert.deepEqual(
      shelf.messages.map((m) => m.payload.qty),
      [12, 13],
      'the older reading published nothing',
    );
    const { rows } = await pool.query(`SELECT count(*)::int AS n FROM shelf_readings WHERE sku = 'SKU-L'`);
    assert.equal(rows[0].n, 3, 'every reading is stored, the older one too');
    assert.equal((await api('/v1/stock/SKU-L')).status, 404, 'shelf readings do not change book stock');
    await display.endAsync();
  });

  it('stock below zero is applied (events are facts) and raises alerts/{wh}/negative-stock', async () => {
    const display = await connect(`mqtt://127.0.0.1:${ports.mqtt}`, 'disp1', 'disp-secret');
    const alerts = new Collector<{ kind: string; sku: string }>(display, 'alerts/#');
    await display.subscribeAsync('alerts/#', { qos: 1 });
    await gateway.publishAsync(`wh/${WH}/dev/scan-9/event`, event('n-1', 'received', 2, 'SKU-NEG'), { qos: 1 });
    await gateway.publishAsync(`wh/${WH}/dev/scan-9/event`, event('n-2', 'shipped', 5, 'SKU-NEG'), { qos: 1 });
    await alerts.waitFor(() => alerts.messages.some((m) => m.topic === `alerts/${WH}/negative-stock`));
    assert.equal(alerts.last(`alerts/${WH}/negative-stock`)?.sku, 'SKU-NEG');
    assert.equal((await api('/v1/stock/SKU-NEG')).body.onHand, -3);
    const lines = await metric('stockwire_negative_stock_total');
    assert.ok(Number(lines[0]?.split(' ')[1]) >= 1);
    await display.endAsync();
  });

  it('HTTP: 404 for an unknown sku, 400 naming the field for a bad one, history per bucket', async () => {
    assert.equal((await api('/v1/stock/NOPE')).status, 404);
    const bad = await api('/v1/stock/bad%20sku');
    assert.equal(bad.status, 400);
    assert.equal((bad.body.error as { field: string }).field, 'sku');
    const hist = await api('/v1/stock/SKU-P/history?bucket=1h');
    assert.equal(hist.status, 200);
    const movements = hist.body.movements as { warehouse: string; received: number; shipped: number; net: number }[];
    assert.equal(movements.length, 1);
    assert.deepEqual(
      [movements[0]?.warehouse, movements[0]?.received, movements[0]?.shipped, movements[0]?.net],
      [WH, 40, 15, 25],
    );
    assert.equal((await api('/v1/stock/SKU-P/history?bucket=7x')).status, 400);
    assert.equal((await api('/healthz')).status, 200);
    assert.equal((await api('/readyz')).status, 200);
  });

  it('HTTP: a read the database does not answer within API_READ_TIMEOUT_MS is a 503 `unavailable`, and the next one works', async () => {
    const locker = await pool.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE events IN ACCESS EXCLUSIVE MODE'); // what a migration holds: every read of events waits
      const started = Date.now();
      const stuck = await api('/v1/stock/SKU-P/history?bucket=1h');
      const waited = Date.now() - started;
      assert.equal(stuck.status, 503);
      assert.deepEqual(stuck.body.error, {
        code: 'unavailable',
        message: 'the database did not answer in time; try again',
      });
      // The lock is held until `finally`, so only the timeout can have answered; the upper bound is a liveness
      // bound (no event marks "the API gave up"), generous so that a busy machine's scheduling cannot fail it.
      assert.ok(
        waited >= READ_TIMEOUT_MS - 100 && waited < READ_TIMEOUT_MS + 15_000,
        `answered after the timeout, not before or long after (${waited} ms)`,
      );
      assert.equal((await api('/readyz')).status, 200, 'readiness does not read events');
    } finally {
      await locker.query('ROLLBACK');
      locker.release();
    }
    assert.equal((await api('/v1/stock/SKU-P/history?bucket=1h')).status, 200);
  });

  it('republishes every stock topic from the database on start', async () => {
    await central.stop();
    await gateway.endAsync(true);
    const devices = await writeDevices([{ id: 'disp2', warehouse: WH, kind: 'display', password: 'pw-disp-2' }]);
    // The fixture stops this one at the end.
    central = fixture.central = new Central({
      databaseUrl: db.url,
      redisPrefix: 'x',
      dataDir: devices.dir,
      devicesFile: devices.file,
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: 0,
      httpPort: 0,
      batchMax: 500,
      batchWaitMs: 5,
      log: pino({ level: 'silent' }),
    });
    ports = await central.start();
    const display = await connect(`mqtt://127.0.0.1:${ports.mqtt}`, 'disp2', 'pw-disp-2');
    const seen = new Collector<GlobalStock>(display, 'stock/#');
    await display.subscribeAsync('stock/#', { qos: 1 });
    await seen.waitFor(() => seen.messages.some((m) => m.topic === 'stock/SKU-P'));
    const m = seen.messages.find((x) => x.topic === 'stock/SKU-P');
    assert.equal(m?.retain, true);
    assert.equal(m?.payload.onHand, 25);
    const shelf = new Collector<{ qty: number }>(display, `wh/${WH}/shelf/#`);
    await display.subscribeAsync(`wh/${WH}/shelf/#`, { qos: 1 });
    await shelf.waitFor(() => shelf.messages.length === 1);
    assert.equal(shelf.last(`wh/${WH}/shelf/A-01/SKU-L`)?.qty, 13, 'the newest reading (l-2)');
    await display.endAsync();
  });
});

describe('central whose start fails after its listener is up', () => {
  it('refuses the publishes that waited for the start-up republish, and stop() returns', {
    timeout: 60_000,
  }, async () => {
    const db = await createTestDatabase('central_start_fails');
    const setup = createPool({ url: db.url, max: 1 });
    await migrate(setup);
    await setup.end();
    const devices = await writeDevices([{ id: 'gw-f', warehouse: 'WF', kind: 'gateway', password: 'pw-gw-f' }]);
    // The start-up republish fails: a session holds a table it reads, and the database gives up waiting after 2 s.
    const locker = new pg.Client(db.url);
    await locker.connect();
    await locker.query(`ALTER DATABASE ${db.name} SET lock_timeout = '2s'`);
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE shelf_latest IN ACCESS EXCLUSIVE MODE');
    const port = await freePort();
    const central = new Central({
      databaseUrl: db.url,
      redisPrefix: 'x',
      dataDir: path.join(devices.dir, 'data'),
      devicesFile: devices.file,
      host: '127.0.0.1',
      mqttPort: port,
      wsPort: 0,
      httpPort: 0,
      batchMax: 100,
      batchWaitMs: 5,
      log: pino({ level: 'silent' }),
    });
    const started = central.start().then(
      () => 'started',
      (err: Error) => `failed: ${err.message}`,
    );
    let gateway: MqttClient | undefined;
    try {
      // An edge connects as soon as the listener is up and sends its backlog; its publish waits for the republish.
      for (let i = 0; i < 100 && !gateway; i++) {
        gateway = await mqtt
          .connectAsync(`mqtt://127.0.0.1:${port}`, {
            clientId: 'gw-f',
            username: 'gw-f',
            password: 'pw-gw-f',
            reconnectPeriod: 0,
          })
          .catch(() => undefined);
        if (!gateway) await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(gateway, 'connected while central was starting');
      let puback = false;
      void gateway
        .publishAsync(
          'wh/WF/dev/s1/event',
          JSON.stringify({ v: 1, id: 'f-1', type: 'received', sku: 'SKU-F', qty: 1 }),
          { qos: 1 },
        )
        .then(
          () => (puback = true),
          () => {},
        );
      assert.match(await started, /^failed: .*lock timeout/);
      await central.stop(); // what `stockwire central` does on a failed start before it exits; it waited for ever
      assert.equal(puback, false, 'no PUBACK: the edge keeps the event and sends it to the next start');
      const { rows } = await (async () => {
        await locker.query('ROLLBACK');
        const check = createPool({ url: db.url, max: 1 });
        try {
          return await check.query<{ n: number }>('SELECT count(*)::int AS n FROM events');
        } finally {
          await check.end();
        }
      })();
      assert.equal(rows[0]?.n, 0, 'nothing applied');
    } finally {
      gateway?.end(true);
      await locker.end().catch(() => {});
      await db.drop();
    }
  });
});
