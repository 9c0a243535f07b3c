import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { MqttClient } from 'mqtt';
import type { Node } from 'node-red';
import type helperType from 'node-red-node-test-helper';
import pino from 'pino';
import { Central } from '../../processors/central.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { connect } from '../helpers/mqtt.js';

const require = createRequire(import.meta.url);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PACKAGE = path.join(ROOT, 'dashboards/node-red');
const MOSQUITTO = process.env.MOSQUITTO_URL ?? 'mqtt://127.0.0.1:1883';
const WH = 'WN';

type Helper = typeof helperType;
type Msg = Record<string, unknown> & { payload?: unknown };
interface Spied extends Node {
  on(event: string, listener: (...args: never[]) => void): this;
}

/** The next message a node receives (a helper node) or the next error it reports. */
function next(node: Spied, event: 'input' | 'call:error', timeoutMs = 20_000): Promise<Msg> {
  const id = node.id;
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${event} on node ${id} within ${timeoutMs} ms`)), timeoutMs);
    node.on(event, ((arg: Msg | { args: [unknown, Msg] }) => {
      clearTimeout(t);
      resolve(event === 'input' ? (arg as Msg) : { error: (arg as { args: [unknown, Msg] }).args[0], msg: (arg as { args: [unknown, Msg] }).args[1] });
    }) as never);
  });
}

/**
 * A stand-in for central's reservations API, to CONTRACT section 6. Reservations are being built on
 * another branch at the same time; this fake follows the contract so the node is tested against it.
 */
function fakeReservations(available: Record<string, number>, token: string): Promise<{ url: string; keys: string[]; close: () => Promise<void> }> {
  const answers = new Map<string, { status: number; body: unknown }>();
  const reservations = new Map<string, { sku: string; qty: number }>();
  const keys: string[] = [];
  const server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (c: Buffer) => (raw += c.toString()));
    req.on('end', () => {
      const reply = (status: number, body?: unknown) => {
        res.writeHead(status, body === undefined ? {} : { 'content-type': 'application/json' });
        res.end(body === undefined ? undefined : JSON.stringify(body));
      };
      if (req.headers.authorization !== `Bearer ${token}`) {
        res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Bearer realm="stockwire"' });
        return res.end(JSON.stringify({ error: { code: 'unauthorized', message: 'the API token is not valid' } }));
      }
      const release = /^\/v1\/reservations\/([^/]+)$/.exec(req.url ?? '');
      if (req.method === 'DELETE' && release) {
        const r = reservations.get(decodeURIComponent(release[1] as string));
        if (!r) return reply(404, { error: { code: 'not_found', message: 'no such reservation' } });
        reservations.delete(decodeURIComponent(release[1] as string));
        available[r.sku] = (available[r.sku] ?? 0) + r.qty;
        return reply(204);
      }
      if (req.method !== 'POST' || req.url !== '/v1/reservations') return reply(404, { error: { code: 'not_found', message: 'no route' } });
      const key = req.headers['idempotency-key'];
      if (typeof key !== 'string' || key === '') return reply(400, { error: { code: 'bad_request', message: 'Idempotency-Key header is required', field: 'Idempotency-Key' } });
      keys.push(key);
      const first = answers.get(key);
      if (first) return reply(first.status, first.body);
      const body = JSON.parse(raw) as { sku: string; qty: number; warehouse?: string; ttlSeconds?: number };
      if (!Number.isInteger(body.qty) || body.qty < 1) return reply(400, { error: { code: 'bad_request', message: 'qty must be a positive integer', field: 'qty' } });
      const answer =
        (available[body.sku] ?? 0) >= body.qty
          ? { status: 201, body: { id: `r-${randomUUID()}`, sku: body.sku, qty: body.qty, warehouse: body.warehouse ?? 'WN', expiresAt: new Date(Date.now() + (body.ttlSeconds ?? 900) * 1000).toISOString() } }
          : { status: 409, body: { error: { code: 'insufficient_stock', message: `only ${available[body.sku] ?? 0} available` } } };
      if (answer.status === 201) {
        available[body.sku] = (available[body.sku] ?? 0) - body.qty;
        reservations.set((answer.body as { id: string }).id, { sku: body.sku, qty: body.qty });
      }
      answers.set(key, answer);
      reply(answer.status, answer.body);
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const a = server.address() as { port: number };
      resolve({ url: `http://127.0.0.1:${a.port}`, keys, close: () => new Promise((r) => server.close(() => r())) });
    }),
  );
}

describe('Node-RED nodes (node-red-contrib-stockwire) on Node-RED 4.1', () => {
  let helper: Helper;
  let stockwire: unknown;
  let db: TestDatabase;
  let central: Central;
  let ports: { mqtt: number; http: number };
  let gateway: MqttClient;
  const server = (mqttUrl: string, httpUrl: string) => ({ id: 'srv', type: 'stockwire-server', mqttUrl, httpUrl });

  before(async () => {
    // The package is TypeScript: compile it as its build script does, then load what Node-RED would load.
    await fs.rm(path.join(PACKAGE, 'dist'), { recursive: true, force: true });
    await promisify(execFile)(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(PACKAGE, 'tsconfig.json')], { timeout: 120_000 });
    await fs.copyFile(path.join(PACKAGE, 'src/stockwire.html'), path.join(PACKAGE, 'dist/stockwire.html'));
    stockwire = require(path.join(PACKAGE, 'dist/stockwire.js'));
    helper = require('node-red-node-test-helper') as Helper;
    helper.init(require.resolve('node-red'));
    await new Promise<void>((resolve) => helper.startServer(resolve));

    db = await createTestDatabase('nodered');
    const devices = await writeDevices([
      { id: 'gw-n', warehouse: WH, kind: 'gateway', password: 'pw-gateway-n' },
      { id: 'disp-n', warehouse: WH, kind: 'display', password: 'pw-display-n' },
    ]);
    central = new Central({ databaseUrl: db.url, redisPrefix: 'x', dataDir: devices.dir, devicesFile: devices.file, host: '127.0.0.1', mqttPort: 0, wsPort: 0, httpPort: 0, batchMax: 100, batchWaitMs: 5, log: pino({ level: 'silent' }) });
    ports = await central.start();
    gateway = await connect(`mqtt://127.0.0.1:${ports.mqtt}`, 'gw-n', 'pw-gateway-n');
  });

  afterEach(async () => helper.unload());

  after(async () => {
    await gateway.endAsync();
    await new Promise<void>((resolve) => helper.stopServer(resolve));
    await central.stop();
    await db.drop();
  });

  const central$ = () => server(`mqtt://127.0.0.1:${ports.mqtt}`, `http://127.0.0.1:${ports.http}`);

  it('the package declares its nodes, and the editor file registers each with help', async () => {
    const pkg = JSON.parse(await fs.readFile(path.join(PACKAGE, 'package.json'), 'utf8')) as { 'node-red': { nodes: Record<string, string> } };
    const html = await fs.readFile(path.join(PACKAGE, 'dist/stockwire.html'), 'utf8');
    for (const file of Object.values(pkg['node-red'].nodes)) await fs.access(path.join(PACKAGE, file));
    const registered = [...html.matchAll(/RED\.nodes\.registerType\('([^']+)'/g)].map((m) => m[1]);
    assert.deepEqual(registered, ['stockwire-server', 'stockwire-stock-in', 'stockwire-stock-level', 'stockwire-submit', 'stockwire-reserve']);
    for (const type of registered) {
      assert.ok(html.includes(`data-template-name="${type}"`), `${type} has an edit form`);
      assert.ok(html.includes(`data-help-name="${type}"`), `${type} has help`);
    }
  });

  it('stock in: a stock change at central arrives as a message with the global stock', async () => {
    await helper.load(stockwire as never, [central$(), { id: 'in', type: 'stockwire-stock-in', server: 'srv', stream: 'stock', warehouse: '', sku: 'SKU-IN', wires: [['out']] }, { id: 'out', type: 'helper' }] as never, { srv: { username: 'disp-n', password: 'pw-display-n' } });
    const received = next(helper.getNode('out') as Spied, 'input');
    // The subscription is made once connected; publish until the node has seen one (a retained value counts too).
    for (let i = 0; i < 20 && !(await Promise.race([received.then(() => true), new Promise((r) => setTimeout(() => r(false), 250))])); i++) {
      await gateway.publishAsync(`wh/${WH}/dev/scan-in/event`, JSON.stringify({ v: 1, id: `in-${i}`, type: 'received', sku: 'SKU-IN', qty: 1 }), { qos: 1 });
    }
    const msg = await received;
    assert.equal(msg.topic, 'stock/SKU-IN');
    const stock = msg.payload as { sku: string; onHand: number; warehouses: Record<string, unknown> };
    assert.equal(stock.sku, 'SKU-IN');
    assert.ok(stock.onHand >= 1 && WH in stock.warehouses);
  });

  it('submit: applied, then duplicate for the same id, rejected on output 2; bad input names the field and sends nothing', async () => {
    await helper.load(
      stockwire as never,
      [central$(), { id: 'sub', type: 'stockwire-submit', server: 'srv', warehouse: WH, device: 'scan-sub', ackTimeout: 10, wires: [['ok'], ['rejected']] }, { id: 'ok', type: 'helper' }, { id: 'rejected', type: 'helper' }] as never,
      { srv: { username: 'gw-n', password: 'pw-gateway-n' } },
    );
    const submit = helper.getNode('sub') as Spied;
    const ok = helper.getNode('ok') as Spied;
    let applied = next(ok, 'input');
    submit.receive({ payload: { id: 'sub-1', type: 'received', sku: 'SKU-SUB', qty: 3 } });
    let msg = await applied;
    assert.deepEqual(msg.payload, { id: 'sub-1', status: 'applied', stock: { onHand: 3, available: 3 } });
    assert.equal((msg.event as { v: number }).v, 1);
    applied = next(ok, 'input');
    submit.receive({ payload: { id: 'sub-1', type: 'received', sku: 'SKU-SUB', qty: 3 } });
    msg = await applied;
    assert.equal((msg.payload as { status: string }).status, 'duplicate', 'a resend is absorbed');

    const rejected = next(helper.getNode('rejected') as Spied, 'input');
    submit.receive({ payload: { type: 'received', sku: 'SKU-SUB', qty: 1, ts: '2026-01-01' } }); // not RFC 3339: central refuses it
    const ack = (await rejected).payload as { status: string; error: { code: string } };
    assert.equal(ack.status, 'rejected');
    assert.equal(ack.error.code, 'schema_violation');

    const failed = next(submit, 'call:error');
    submit.receive({ payload: { type: 'received', sku: 'SKU-SUB', qty: 0 } });
    const { error } = (await failed) as { error: Error };
    assert.match(String(error), /qty: must be an integer from 1 to 1000000/);
    const stock = (await (await fetch(`http://127.0.0.1:${ports.http}/v1/stock/SKU-SUB`)).json()) as { onHand: number };
    assert.equal(stock.onHand, 3, 'nothing more was applied');
  });

  it('submit: without a commit ack in time the message fails (a broker with no processor behind it)', async () => {
    await helper.load(stockwire as never, [server(MOSQUITTO, 'http://127.0.0.1:9'), { id: 'sub', type: 'stockwire-submit', server: 'srv', warehouse: `WX${randomUUID().slice(0, 6)}`, device: 'scan-x', ackTimeout: 1, wires: [[], []] }] as never, {});
    const submit = helper.getNode('sub') as Spied;
    const failed = next(submit, 'call:error');
    submit.receive({ payload: { id: 'lost-1', type: 'received', sku: 'SKU-X', qty: 1 } });
    const { error, msg } = (await failed) as { error: Error; msg: Msg };
    assert.match(String(error), /no commit ack for event lost-1 within 1 s/);
    assert.equal((msg.event as { id: string }).id, 'lost-1', 'the event travels along for a resend with the same id');
  });

  it('stock level: global and per warehouse; an unknown sku is an error with status 404, a bad one names the field', async () => {
    await gateway.publishAsync(`wh/${WH}/dev/scan-lvl/event`, JSON.stringify({ v: 1, id: 'lvl-1', type: 'received', sku: 'SKU-LVL', qty: 4 }), { qos: 1 });
    await helper.load(
      stockwire as never,
      [central$(), { id: 'lvl', type: 'stockwire-stock-level', server: 'srv', warehouse: '', sku: '', wires: [['out']] }, { id: 'out', type: 'helper' }] as never,
      {},
    );
    const level = helper.getNode('lvl') as Spied;
    const out = helper.getNode('out') as Spied;
    let got = next(out, 'input');
    level.receive({ payload: 'SKU-LVL' });
    assert.equal(((await got).payload as { onHand: number }).onHand, 4);
    got = next(out, 'input');
    level.receive({ payload: { sku: 'SKU-LVL', warehouse: WH } });
    assert.deepEqual(((await got).payload as { warehouse: string; available: number }).warehouse, WH);

    let failed = next(level, 'call:error');
    level.receive({ payload: 'NO-SUCH-SKU' });
    let r = (await failed) as { error: Error; msg: Msg };
    assert.equal(r.msg.statusCode, 404);
    assert.equal((r.msg.error as { code: string }).code, 'not_found');
    failed = next(level, 'call:error');
    level.receive({ payload: 'bad sku' });
    r = (await failed) as { error: Error; msg: Msg };
    assert.match(String(r.error), /sku: must match/);
  });

  it('reserve (against a stand-in of the contract\'s reservations API): granted, refused on output 2, retried with the same key, released', async () => {
    const api = await fakeReservations({ 'SKU-R': 5 }, 'fake-api-token-0123456789');
    try {
      await helper.load(
        stockwire as never,
        [
          server(`mqtt://127.0.0.1:${ports.mqtt}`, api.url),
          { id: 'res', type: 'stockwire-reserve', server: 'srv', action: 'reserve', sku: 'SKU-R', qty: '', warehouse: '', ttlSeconds: '600', wires: [['granted'], ['refused']] },
          { id: 'rel', type: 'stockwire-reserve', server: 'srv', action: 'release', sku: '', qty: '', warehouse: '', ttlSeconds: '', wires: [['released'], ['unknown']] },
          { id: 'granted', type: 'helper' },
          { id: 'refused', type: 'helper' },
          { id: 'released', type: 'helper' },
          { id: 'unknown', type: 'helper' },
        ] as never,
        { srv: { apiToken: 'fake-api-token-0123456789' } },
      );
      const reserve = helper.getNode('res') as Spied;
      let granted = next(helper.getNode('granted') as Spied, 'input');
      reserve.receive({ payload: { qty: 3 }, _msgid: 'm-1' });
      const first = await granted;
      const reservation = first.payload as { id: string; qty: number; sku: string; expiresAt: string };
      assert.equal(reservation.qty, 3);
      assert.equal(reservation.sku, 'SKU-R');
      assert.equal(first.statusCode, 201);

      const refused = next(helper.getNode('refused') as Spied, 'input');
      reserve.receive({ payload: { qty: 3 }, _msgid: 'm-2' });
      assert.deepEqual(((await refused).payload as { error: { code: string } }).error.code, 'insufficient_stock');

      granted = next(helper.getNode('granted') as Spied, 'input');
      reserve.receive({ payload: { qty: 3 }, _msgid: 'm-1' }); // the first message again: same key, same answer
      assert.equal(((await granted).payload as { id: string }).id, reservation.id);
      assert.deepEqual(api.keys, ['node-red-m-1', 'node-red-m-2', 'node-red-m-1']);

      const failed = next(reserve, 'call:error');
      reserve.receive({ payload: { qty: 0 } });
      assert.match(String(((await failed) as { error: Error }).error), /qty: must be an integer from 1/);

      const release = helper.getNode('rel') as Spied;
      const released = next(helper.getNode('released') as Spied, 'input');
      release.receive({ reservation });
      assert.deepEqual((await released).payload, { id: reservation.id, released: true });
      const unknown = next(helper.getNode('unknown') as Spied, 'input');
      release.receive({ payload: { id: reservation.id } });
      assert.equal(((await unknown).payload as { error: { code: string } }).error.code, 'not_found');
    } finally {
      await api.close();
    }
  });

  it('reserve against central: the API token (a credential of the server) is sent; without it central answers 401', async () => {
    await gateway.publishAsync(`wh/${WH}/dev/scan-rc/event`, JSON.stringify({ v: 1, id: 'rc-1', type: 'received', sku: 'SKU-RC', qty: 4 }), { qos: 1 });
    const nodes = [
      central$(),
      { id: 'res', type: 'stockwire-reserve', server: 'srv', action: 'reserve', sku: 'SKU-RC', qty: '', warehouse: WH, ttlSeconds: '', wires: [['granted'], ['refused']] },
      { id: 'rel', type: 'stockwire-reserve', server: 'srv', action: 'release', sku: '', qty: '', warehouse: '', ttlSeconds: '', wires: [['released'], []] },
      { id: 'granted', type: 'helper' },
      { id: 'refused', type: 'helper' },
      { id: 'released', type: 'helper' },
    ];
    await helper.load(stockwire as never, nodes as never, { srv: { apiToken: central.apiToken } });
    const granted = next(helper.getNode('granted') as Spied, 'input');
    (helper.getNode('res') as Spied).receive({ payload: { qty: 3 }, _msgid: 'rc-m-1' });
    const reservation = (await granted).payload as { id: string; qty: number; warehouse: string };
    assert.deepEqual([reservation.qty, reservation.warehouse], [3, WH]);
    const released = next(helper.getNode('released') as Spied, 'input');
    (helper.getNode('rel') as Spied).receive({ reservation });
    assert.deepEqual((await released).payload, { id: reservation.id, released: true });
    await helper.unload();

    await helper.load(stockwire as never, nodes as never, {});
    const reserve = helper.getNode('res') as Spied;
    const failed = next(reserve, 'call:error');
    reserve.receive({ payload: { qty: 1 }, _msgid: 'rc-m-2' });
    const { error, msg } = (await failed) as { error: Error; msg: Msg };
    assert.match(String(error), /reserve: 401 unauthorized/);
    assert.equal(msg.statusCode, 401);
  });

  it('the API token is a credential of the server node (kept out of exported flows), and the example flow has none', async () => {
    const html = await fs.readFile(path.join(PACKAGE, 'src/stockwire.html'), 'utf8');
    const server = html.slice(html.indexOf("registerType('stockwire-server'"), html.indexOf('label:', html.indexOf("registerType('stockwire-server'")));
    const credentials = server.slice(server.indexOf('credentials:'));
    assert.match(credentials, /apiToken: \{ type: 'password' \}/, 'declared as a password credential in the editor');
    assert.doesNotMatch(server.slice(0, server.indexOf('credentials:')), /apiToken/, 'not a property (properties are exported)');
    const flow = await fs.readFile(path.join(PACKAGE, 'examples/stockwire-flow.json'), 'utf8');
    assert.doesNotMatch(flow, /apiToken|authorization/i);
  });

  it('the example flow loads: every node of it starts', async () => {
    const flow = JSON.parse(await fs.readFile(path.join(PACKAGE, 'examples/stockwire-flow.json'), 'utf8')) as { id: string; type: string }[];
    const core = ['20-inject.js', '21-debug.js', '25-catch.js'].map((f) => require(path.join(path.dirname(require.resolve('@node-red/nodes/package.json')), 'core/common', f)) as unknown);
    const local = flow.map((n) => (n.type === 'stockwire-server' ? { ...n, mqttUrl: `mqtt://127.0.0.1:${ports.mqtt}`, httpUrl: `http://127.0.0.1:${ports.http}` } : n));
    await helper.load([stockwire, ...core] as never, local as never, { 'sw-server': { username: 'gw-n', password: 'pw-gateway-n' } });
    const types = new Set(flow.map((n) => n.type));
    for (const t of ['stockwire-server', 'stockwire-stock-in', 'stockwire-stock-level', 'stockwire-submit', 'stockwire-reserve']) assert.ok(types.has(t), `the example uses ${t}`);
    for (const n of flow.filter((x) => x.type !== 'tab')) assert.ok(helper.getNode(n.id), `${n.type} ${n.id} started`);
  });
});
