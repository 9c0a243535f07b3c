import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { MqttClient } from 'mqtt';
import type { Node } from 'node-red';
import type helperType from 'node-red-node-test-helper';
import pino from 'pino';
import { Central } from '../../processors/central.js';
import {
  EVENT_ID_PATTERN,
  EVENT_TYPES,
  EventPayloadV1,
  IDENT_PATTERN,
  MAX_RESERVATION_TTL_S,
  MAX_TRANSFER_TIMEOUT_S,
  parseEvent,
  ReservationRequest,
  TransferRequest,
} from '../../protocol/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { connect } from '../helpers/mqtt.js';
import { startStockwire, type Running } from '../helpers/process.js';

const require = createRequire(import.meta.url);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PACKAGE = path.join(ROOT, 'dashboards/node-red');
const MOSQUITTO = process.env.MOSQUITTO_URL ?? 'mqtt://127.0.0.1:1883';
const WH = 'WN';
const WT = 'WT'; // a second warehouse, for transfers
const NODE_TYPES = [
  'stockwire-server',
  'stockwire-stock-in',
  'stockwire-stock-level',
  'stockwire-submit',
  'stockwire-reserve',
  'stockwire-transfer',
  'stockwire-movements',
];

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
      resolve(
        event === 'input'
          ? (arg as Msg)
          : { error: (arg as { args: [unknown, Msg] }).args[0], msg: (arg as { args: [unknown, Msg] }).args[1] },
      );
    }) as never);
  });
}

/** Polls `ok` until it holds. */
async function until(ok: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * A stand-in for central's reservations API, to CONTRACT section 6. Reservations are being built on
 * another branch at the same time; this fake follows the contract so the node is tested against it.
 */
function fakeReservations(
  available: Record<string, number>,
  token: string,
): Promise<{ url: string; keys: string[]; close: () => Promise<void> }> {
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
      if (req.method !== 'POST' || req.url !== '/v1/reservations')
        return reply(404, { error: { code: 'not_found', message: 'no route' } });
      const key = req.headers['idempotency-key'];
      if (typeof key !== 'string' || key === '')
        return reply(400, {
          error: { code: 'bad_request', message: 'Idempotency-Key header is required', field: 'Idempotency-Key' },
        });
      keys.push(key);
      const first = answers.get(key);
      if (first) return reply(first.status, first.body);
      const body = JSON.parse(raw) as { sku: string; qty: number; warehouse?: string; ttlSeconds?: number };
      if (!Number.isInteger(body.qty) || body.qty < 1)
        return reply(400, { error: { code: 'bad_request', message: 'qty must be a positive integer', field: 'qty' } });
      const answer =
        (available[body.sku] ?? 0) >= body.qty
          ? {
              status: 201,
              body: {
                id: `r-${randomUUID()}`,
                sku: body.sku,
                qty: body.qty,
                warehouse: body.warehouse ?? 'WN',
                expiresAt: new Date(Date.now() + (body.ttlSeconds ?? 900) * 1000).toISOString(),
              },
            }
          : {
              status: 409,
              body: { error: { code: 'insufficient_stock', message: `only ${available[body.sku] ?? 0} available` } },
            };
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

let building: Promise<unknown> | null = null;
/** The package is TypeScript: compile it as its build script does (once per file), then load what Node-RED would load. */
function built(): Promise<unknown> {
  building ??= (async () => {
    await fs.rm(path.join(PACKAGE, 'dist'), { recursive: true, force: true });
    await promisify(execFile)(
      process.execPath,
      [require.resolve('typescript/bin/tsc'), '-p', path.join(PACKAGE, 'tsconfig.json')],
      { timeout: 120_000 },
    );
    await fs.copyFile(path.join(PACKAGE, 'src/stockwire.html'), path.join(PACKAGE, 'dist/stockwire.html'));
    return require(path.join(PACKAGE, 'dist/stockwire.js')) as unknown;
  })();
  return building;
}

async function startHelper(): Promise<Helper> {
  const helper = require('node-red-node-test-helper') as Helper;
  helper.init(require.resolve('node-red'));
  await new Promise<void>((resolve) => helper.startServer(resolve));
  return helper;
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
    stockwire = await built();
    helper = await startHelper();

    db = await createTestDatabase('nodered');
    const devices = await writeDevices([
      { id: 'gw-n', warehouse: WH, kind: 'gateway', password: 'pw-gateway-n' },
      { id: 'disp-n', warehouse: WH, kind: 'display', password: 'pw-display-n' },
      { id: 'gw-t', warehouse: WT, kind: 'gateway', password: 'pw-gateway-t' },
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
    const pkg = JSON.parse(await fs.readFile(path.join(PACKAGE, 'package.json'), 'utf8')) as {
      'node-red': { nodes: Record<string, string> };
    };
    const html = await fs.readFile(path.join(PACKAGE, 'dist/stockwire.html'), 'utf8');
    for (const file of Object.values(pkg['node-red'].nodes)) await fs.access(path.join(PACKAGE, file));
    const registered = [...html.matchAll(/RED\.nodes\.registerType\('([^']+)'/g)].map((m) => m[1]);
    assert.deepEqual(registered, NODE_TYPES);
    for (const type of registered) {
      assert.ok(html.includes(`data-template-name="${type}"`), `${type} has an edit form`);
      assert.ok(html.includes(`data-help-name="${type}"`), `${type} has help`);
    }
  });

  it('stock in: a stock change at central arrives as a message with the global stock', async () => {
    await helper.load(
      stockwire as never,
      [
        central$(),
        {
          id: 'in',
          type: 'stockwire-stock-in',
          server: 'srv',
          stream: 'stock',
          warehouse: '',
          sku: 'SKU-IN',
          wires: [['out']],
        },
        { id: 'out', type: 'helper' },
      ] as never,
      { srv: { username: 'disp-n', password: 'pw-display-n' } },
    );
    const received = next(helper.getNode('out') as Spied, 'input');
    // The subscription is made once connected; publish until the node has seen one (a retained value counts too).
    for (
      let i = 0;
      i < 20 && !(await Promise.race([received.then(() => true), new Promise((r) => setTimeout(() => r(false), 250))]));
      i++
    ) {
      await gateway.publishAsync(
        `wh/${WH}/dev/scan-in/event`,
        JSON.stringify({ v: 1, id: `in-${i}`, type: 'received', sku: 'SKU-IN', qty: 1 }),
        { qos: 1 },
      );
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
      [
        central$(),
        {
          id: 'sub',
          type: 'stockwire-submit',
          server: 'srv',
          warehouse: WH,
          device: 'scan-sub',
          ackTimeout: 10,
          wires: [['ok'], ['rejected']],
        },
        { id: 'ok', type: 'helper' },
        { id: 'rejected', type: 'helper' },
      ] as never,
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
    await helper.load(
      stockwire as never,
      [
        server(MOSQUITTO, 'http://127.0.0.1:9'),
        {
          id: 'sub',
          type: 'stockwire-submit',
          server: 'srv',
          warehouse: `WX${randomUUID().slice(0, 6)}`,
          device: 'scan-x',
          ackTimeout: 1,
          wires: [[], []],
        },
      ] as never,
      {},
    );
    const submit = helper.getNode('sub') as Spied;
    const failed = next(submit, 'call:error');
    submit.receive({ payload: { id: 'lost-1', type: 'received', sku: 'SKU-X', qty: 1 } });
    const { error, msg } = (await failed) as { error: Error; msg: Msg };
    assert.match(String(error), /no commit ack for event lost-1 within 1 s/);
    assert.equal((msg.event as { id: string }).id, 'lost-1', 'the event travels along for a resend with the same id');
  });

  it('stock level: global and per warehouse; an unknown sku is an error with status 404, a bad one names the field', async () => {
    await gateway.publishAsync(
      `wh/${WH}/dev/scan-lvl/event`,
      JSON.stringify({ v: 1, id: 'lvl-1', type: 'received', sku: 'SKU-LVL', qty: 4 }),
      { qos: 1 },
    );
    await helper.load(
      stockwire as never,
      [
        central$(),
        { id: 'lvl', type: 'stockwire-stock-level', server: 'srv', warehouse: '', sku: '', wires: [['out']] },
        { id: 'out', type: 'helper' },
      ] as never,
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

  it("reserve (against a stand-in of the contract's reservations API): granted, refused on output 2, retried with the same key, released", async () => {
    const api = await fakeReservations({ 'SKU-R': 5 }, 'fake-api-token-0123456789');
    try {
      await helper.load(
        stockwire as never,
        [
          server(`mqtt://127.0.0.1:${ports.mqtt}`, api.url),
          {
            id: 'res',
            type: 'stockwire-reserve',
            server: 'srv',
            action: 'reserve',
            sku: 'SKU-R',
            qty: '',
            warehouse: '',
            ttlSeconds: '600',
            wires: [['granted'], ['refused']],
          },
          {
            id: 'rel',
            type: 'stockwire-reserve',
            server: 'srv',
            action: 'release',
            sku: '',
            qty: '',
            warehouse: '',
            ttlSeconds: '',
            wires: [['released'], ['unknown']],
          },
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
    await gateway.publishAsync(
      `wh/${WH}/dev/scan-rc/event`,
      JSON.stringify({ v: 1, id: 'rc-1', type: 'received', sku: 'SKU-RC', qty: 4 }),
      { qos: 1 },
    );
    const nodes = [
      central$(),
      {
        id: 'res',
        type: 'stockwire-reserve',
        server: 'srv',
        action: 'reserve',
        sku: 'SKU-RC',
        qty: '',
        warehouse: WH,
        ttlSeconds: '',
        wires: [['granted'], ['refused']],
      },
      {
        id: 'rel',
        type: 'stockwire-reserve',
        server: 'srv',
        action: 'release',
        sku: '',
        qty: '',
        warehouse: '',
        ttlSeconds: '',
        wires: [['released'], []],
      },
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

  it("the package's limits are protocol/'s: identifiers, event types, each type's quantities as central's parser takes them, reservation and transfer bounds", () => {
    const limits = require(
      path.join(PACKAGE, 'dist/limits.js'),
    ) as typeof import('../../dashboards/node-red/src/limits.js');
    assert.equal(limits.IDENT_PATTERN, IDENT_PATTERN);
    assert.equal(limits.EVENT_ID_PATTERN, EVENT_ID_PATTERN);
    assert.deepEqual(limits.EVENT_TYPES, EVENT_TYPES);
    assert.equal(limits.REASON_MAX_LENGTH, EventPayloadV1.properties.reason.maxLength);
    // Each type's range as central decides it: both ends accepted, one past each refused (and adjusted 0).
    const parse = (type: string, qty: number) =>
      parseEvent(Buffer.from(JSON.stringify({ v: 1, id: 'e-1', type, sku: 'S', qty, location: 'L' })), {
        wh: 'W',
        device: 'd',
        receivedAt: Date.now(),
      });
    for (const [type, [min, max]] of Object.entries(limits.EVENT_QTY)) {
      for (const qty of [min, max]) assert.ok(parse(type, qty).ok, `${type} qty ${qty} accepted by central`);
      for (const qty of [min - 1, max + 1, ...(type === 'adjusted' ? [0] : [])]) {
        const r = parse(type, qty);
        assert.ok(!r.ok && r.error.field === 'qty', `${type} qty ${qty} refused by central`);
      }
    }
    for (const schema of [ReservationRequest, TransferRequest])
      assert.deepEqual(limits.COMMAND_QTY, [schema.properties.qty.minimum, schema.properties.qty.maximum]);
    assert.equal(limits.MAX_RESERVATION_TTL_S, MAX_RESERVATION_TTL_S);
    assert.equal(limits.MAX_RESERVATION_TTL_S, ReservationRequest.properties.ttlSeconds.maximum);
    assert.equal(limits.MAX_TRANSFER_TIMEOUT_S, MAX_TRANSFER_TIMEOUT_S);
    assert.equal(limits.MAX_TRANSFER_TIMEOUT_S, TransferRequest.properties.timeoutSeconds.maximum);
  });

  it("reserve: ttlSeconds above central's 7 days is refused in the node, naming the field, and nothing is sent; 7 days is sent", async () => {
    const api = await fakeReservations({ 'SKU-TTL': 5 }, 'fake-api-token-0123456789');
    try {
      await helper.load(
        stockwire as never,
        [
          server(`mqtt://127.0.0.1:${ports.mqtt}`, api.url),
          {
            id: 'res',
            type: 'stockwire-reserve',
            server: 'srv',
            action: 'reserve',
            sku: 'SKU-TTL',
            qty: '1',
            warehouse: '',
            ttlSeconds: '',
            wires: [['granted'], []],
          },
          { id: 'granted', type: 'helper' },
        ] as never,
        { srv: { apiToken: 'fake-api-token-0123456789' } },
      );
      const reserve = helper.getNode('res') as Spied;
      const failed = next(reserve, 'call:error');
      reserve.receive({ payload: { ttlSeconds: MAX_RESERVATION_TTL_S + 1 }, _msgid: 'ttl-1' });
      assert.match(
        String(((await failed) as { error: Error }).error),
        new RegExp(`ttlSeconds: must be an integer from 1 to ${MAX_RESERVATION_TTL_S}`),
      );
      assert.deepEqual(api.keys, [], 'no request');
      const granted = next(helper.getNode('granted') as Spied, 'input');
      reserve.receive({ payload: { ttlSeconds: MAX_RESERVATION_TTL_S }, _msgid: 'ttl-2' });
      assert.equal(((await granted).payload as { qty: number }).qty, 1);
      assert.deepEqual(api.keys, ['node-red-ttl-2']);
    } finally {
      await api.close();
    }
  });

  it('transfer (against central): created with its key, retried to the same answer, insufficient stock on output 2, got, cancelled; bad input names the field', async () => {
    const other = await connect(`mqtt://127.0.0.1:${ports.mqtt}`, 'gw-t', 'pw-gateway-t');
    try {
      await gateway.publishAsync(
        `wh/${WH}/dev/scan-tr/event`,
        JSON.stringify({ v: 1, id: 'tr-1', type: 'received', sku: 'SKU-TR', qty: 10 }),
        { qos: 1 },
      );
      await other.publishAsync(
        `wh/${WT}/dev/scan-tr/event`,
        JSON.stringify({ v: 1, id: 'tr-2', type: 'received', sku: 'SKU-TR', qty: 1 }),
        { qos: 1 },
      );
    } finally {
      await other.endAsync();
    }
    for (const wh of [WH, WT])
      await until(
        async () => (await fetch(`http://127.0.0.1:${ports.http}/v1/warehouses/${wh}/stock/SKU-TR`)).status === 200,
        `SKU-TR at ${wh}`,
      );
    await helper.load(
      stockwire as never,
      [
        central$(),
        {
          id: 'tr-create',
          type: 'stockwire-transfer',
          server: 'srv',
          action: 'create',
          sku: 'SKU-TR',
          qty: '',
          from: WH,
          to: WT,
          timeoutSeconds: '',
          wires: [['created'], ['refused']],
        },
        {
          id: 'tr-get',
          type: 'stockwire-transfer',
          server: 'srv',
          action: 'get',
          sku: '',
          qty: '',
          from: '',
          to: '',
          timeoutSeconds: '',
          wires: [['got'], ['unknown']],
        },
        {
          id: 'tr-cancel',
          type: 'stockwire-transfer',
          server: 'srv',
          action: 'cancel',
          sku: '',
          qty: '',
          from: '',
          to: '',
          timeoutSeconds: '',
          wires: [['cancelled'], ['unknown']],
        },
        ...['created', 'refused', 'got', 'cancelled', 'unknown'].map((id) => ({ id, type: 'helper' })),
      ] as never,
      { srv: { apiToken: central.apiToken } },
    );
    const create = helper.getNode('tr-create') as Spied;
    const out = (id: string) => next(helper.getNode(id) as Spied, 'input');
    let created = out('created');
    create.receive({ payload: { qty: 4 }, _msgid: 'tr-m-1' });
    const first = await created;
    const transfer = first.payload as { id: string; qty: number; from: string; to: string; state: string };
    assert.deepEqual(
      [transfer.qty, transfer.from, transfer.to, transfer.state, first.statusCode],
      [4, WH, WT, 'reserved', 201],
    );
    assert.deepEqual(first.transfer, transfer);
    created = out('created');
    create.receive({ payload: { qty: 4 }, _msgid: 'tr-m-1' }); // a retry: same key, the first answer
    assert.equal(((await created).payload as { id: string }).id, transfer.id);
    const refused = out('refused');
    create.receive({ payload: { qty: 100 }, _msgid: 'tr-m-2' });
    assert.equal(((await refused).payload as { error: { code: string } }).error.code, 'insufficient_stock');

    let got = out('got');
    (helper.getNode('tr-get') as Spied).receive({ transfer });
    assert.deepEqual(
      [((await got).payload as { id: string; state: string }).id, ((await got).payload as { state: string }).state],
      [transfer.id, 'reserved'],
    );
    const cancelled = out('cancelled');
    (helper.getNode('tr-cancel') as Spied).receive({ payload: transfer.id });
    assert.deepEqual((await cancelled).payload, { id: transfer.id, cancelled: true });
    got = out('got');
    (helper.getNode('tr-get') as Spied).receive({ payload: { id: transfer.id } });
    assert.equal(((await got).payload as { state: string }).state, 'cancelled');
    const unknown = out('unknown');
    (helper.getNode('tr-cancel') as Spied).receive({ payload: 't-no-such' });
    assert.equal(((await unknown).payload as { error: { code: string } }).error.code, 'not_found');

    for (const [payload, error] of [
      [{ qty: 0 }, /qty: must be an integer from 1 to 1000000/],
      [
        { qty: 1, timeoutSeconds: MAX_TRANSFER_TIMEOUT_S + 1 },
        new RegExp(`timeoutSeconds: must be an integer from 1 to ${MAX_TRANSFER_TIMEOUT_S}`),
      ],
      [{ qty: 1, to: WH }, /to: must differ from from/],
      [{ qty: 1, sku: 'bad sku' }, /sku: must match/],
    ] as const) {
      const failed = next(create, 'call:error');
      create.receive({ payload, _msgid: `tr-bad-${String(error)}` });
      assert.match(String(((await failed) as { error: Error }).error), error);
    }
    const failed = next(create, 'call:error');
    create.receive({ payload: { qty: 1, to: 'NO-SUCH-WH' }, _msgid: 'tr-m-3' });
    const r = (await failed) as { error: Error; msg: Msg };
    assert.match(String(r.error), /to: /, "central's 404 names the field");
    assert.deepEqual([r.msg.statusCode, (r.msg.error as { field?: string }).field], [404, 'to']);
  });

  it("movements (against central): per hour and per day for a warehouse and sku; a bad bucket names the field; central's 400 names its field", async () => {
    for (const [i, type, qty] of [
      [1, 'received', 7],
      [2, 'shipped', 2],
      [3, 'returned', 1],
    ] as const) {
      await gateway.publishAsync(
        `wh/${WH}/dev/scan-mv/event`,
        JSON.stringify({ v: 1, id: `mv-${i}`, type, sku: 'SKU-MV', qty }),
        { qos: 1 },
      );
    }
    await until(
      async () =>
        (
          (await (await fetch(`http://127.0.0.1:${ports.http}/v1/warehouses/${WH}/stock/SKU-MV`)).json()) as {
            onHand?: number;
          }
        ).onHand === 6,
      'SKU-MV committed',
    );
    await helper.load(
      stockwire as never,
      [
        central$(),
        {
          id: 'mv',
          type: 'stockwire-movements',
          server: 'srv',
          warehouse: WH,
          sku: '',
          bucket: 'hour',
          wires: [['out']],
        },
        { id: 'out', type: 'helper' },
      ] as never,
      {},
    );
    const movements = helper.getNode('mv') as Spied;
    type Answer = {
      warehouse: string;
      sku?: string;
      bucket: string;
      movements: { received: number; shipped: number; returned: number; net: number }[];
    };
    const total = (a: Answer) =>
      a.movements.reduce(
        (t, m) => ({
          received: t.received + m.received,
          shipped: t.shipped + m.shipped,
          returned: t.returned + m.returned,
          net: t.net + m.net,
        }),
        { received: 0, shipped: 0, returned: 0, net: 0 },
      );
    for (const bucket of ['hour', 'day'] as const) {
      const got = next(helper.getNode('out') as Spied, 'input');
      movements.receive({
        payload: { sku: 'SKU-MV', bucket, from: new Date(Date.now() - 3_600_000), to: Date.now() + 60_000 },
      });
      const answer = (await got).payload as Answer;
      assert.deepEqual([answer.warehouse, answer.sku, answer.bucket], [WH, 'SKU-MV', bucket]);
      assert.deepEqual(total(answer), { received: 7, shipped: 2, returned: 1, net: 6 }, `per ${bucket}`);
    }
    let failed = next(movements, 'call:error');
    movements.receive({ payload: { bucket: 'week' } });
    assert.match(String(((await failed) as { error: Error }).error), /bucket: must be hour or day/);
    failed = next(movements, 'call:error');
    movements.receive({ payload: { from: '2026-01-02T00:00:00Z', to: '2026-01-01T00:00:00Z' } });
    const r = (await failed) as { error: Error; msg: Msg };
    assert.match(String(r.error), /from: from must be before to/);
    assert.equal(r.msg.statusCode, 400);
  });

  it('the API token is a credential of the server node (kept out of exported flows), and the example flow has none', async () => {
    const html = await fs.readFile(path.join(PACKAGE, 'src/stockwire.html'), 'utf8');
    const server = html.slice(
      html.indexOf("registerType('stockwire-server'"),
      html.indexOf('label:', html.indexOf("registerType('stockwire-server'")),
    );
    const credentials = server.slice(server.indexOf('credentials:'));
    assert.match(credentials, /apiToken: \{ type: 'password' \}/, 'declared as a password credential in the editor');
    assert.doesNotMatch(
      server.slice(0, server.indexOf('credentials:')),
      /apiToken/,
      'not a property (properties are exported)',
    );
    const flow = await fs.readFile(path.join(PACKAGE, 'examples/stockwire-flow.json'), 'utf8');
    assert.doesNotMatch(flow, /apiToken|authorization/i);
  });
});

/** The ports of `npm start`'s central (cli/demo.ts defaults), which the example flow names. */
const DEMO_CENTRAL = { mqtt: 1884, http: 8080 };

describe('the example flow, unchanged, against `npm start` (a real stockwire demo on its default central ports)', () => {
  let helper: Helper;
  let stockwire: unknown;
  let db: TestDatabase;
  let dir: string;
  let demo: Running;

  before(async () => {
    stockwire = await built();
    helper = await startHelper();
    db = await createTestDatabase('noderedex');
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'stockwire-nodered-demo-'));
    // What `npm start` runs, simulator included, on a test database; only the edges' and WebSocket ports are free ones.
    demo = await startStockwire(
      [
        'demo',
        '--data-dir',
        dir,
        '--ws-port',
        '0',
        '--edge-mqtt-port',
        '0',
        '--edge-ws-port',
        '0',
        '--edge-http-port',
        '0',
      ],
      { DATABASE_URL: db.url, LOG_LEVEL: 'warn' },
      120_000,
    );
    const taken = Object.entries(DEMO_CENTRAL).filter(([k, port]) => demo.ports[k] !== port);
    if (taken.length > 0)
      throw new Error(
        `the demo could not take its default ports (${taken.map(([k, p]) => `${k} ${p}`).join(', ')}): the example flow targets them; stop whatever holds them (another \`npm start\`?) and run again`,
      );
  });

  after(async () => {
    await helper?.unload();
    await new Promise<void>((resolve) => (helper ? helper.stopServer(resolve) : resolve()));
    demo?.child.kill('SIGTERM');
    await demo?.exited;
    await db?.drop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it('with only the credentials the demo printed (kept outside flows), every node starts and each button gives its answer; stock messages arrive', {
    timeout: 120_000,
  }, async () => {
    const flow = JSON.parse(await fs.readFile(path.join(PACKAGE, 'examples/stockwire-flow.json'), 'utf8')) as {
      id: string;
      type: string;
      z?: string;
    }[];
    const types = new Set(flow.map((n) => n.type));
    for (const t of NODE_TYPES) assert.ok(types.has(t), `the example uses ${t}`);
    const creds = JSON.parse(await fs.readFile(path.join(dir, 'demo-credentials.json'), 'utf8')) as {
      id: string;
      password: string;
    }[];
    const gateway = creds.find((c) => c.id === 'gw-wh1');
    assert.ok(gateway, 'the demo has the gateway the example names');
    const apiToken = (await fs.readFile(path.join(dir, 'api-token'), 'utf8')).trim();
    const core = ['20-inject.js', '21-debug.js', '25-catch.js'].map(
      (f) =>
        require(path.join(path.dirname(require.resolve('@node-red/nodes/package.json')), 'core/common', f)) as unknown,
    );
    // The demo's simulator soon has stock in both warehouses (a transfer's destination must hold some stock).
    await until(
      async () =>
        (
          await Promise.all(
            ['WH1', 'WH2'].map((wh) =>
              fetch(`http://127.0.0.1:${DEMO_CENTRAL.http}/v1/warehouses/${wh}/stock/SKU-001`),
            ),
          )
        ).every((r) => r.status === 200),
      'SKU-001 in WH1 and WH2',
      60_000,
    );

    await helper.load([stockwire, ...core] as never, flow as never, {
      'sw-server': { username: gateway.id, password: gateway.password, apiToken },
    });
    for (const n of flow.filter((x) => x.type !== 'tab')) assert.ok(helper.getNode(n.id), `${n.type} ${n.id} started`);
    const errors: Msg[] = [];
    (helper.getNode('sw-debug-errors') as Spied).on('input', ((m: Msg) => errors.push(m)) as never);
    const press = async (inject: string, debug: string): Promise<Msg> => {
      const got = next(helper.getNode(debug) as Spied, 'input', 30_000);
      (helper.getNode(inject) as Spied).receive({});
      return got;
    };

    const stock = next(helper.getNode('sw-debug-stock') as Spied, 'input', 30_000);
    const applied = (await press('sw-inject-scan', 'sw-debug-applied')).payload as {
      status: string;
      stock: { onHand: number };
    };
    assert.equal(applied.status, 'applied');
    const change = await stock;
    assert.equal(change.topic, 'stock/SKU-001');
    assert.ok(
      (change.payload as { warehouses: Record<string, unknown> }).warehouses.WH1,
      'a stock message of SKU-001 with WH1',
    );

    const level = (await press('sw-inject-level', 'sw-debug-level')).payload as {
      sku: string;
      warehouses: Record<string, unknown>;
    };
    assert.deepEqual([level.sku, 'WH1' in level.warehouses], ['SKU-001', true]);
    const reservation = (await press('sw-inject-reserve', 'sw-debug-granted')).payload as {
      qty: number;
      warehouse: string;
    };
    assert.deepEqual([reservation.qty, reservation.warehouse], [2, 'WH1']);
    const transfer = (await press('sw-inject-transfer', 'sw-debug-transfer')).payload as {
      qty: number;
      from: string;
      to: string;
      state: string;
    };
    assert.deepEqual([transfer.qty, transfer.from, transfer.to, transfer.state], [1, 'WH1', 'WH2', 'reserved']);
    const movements = (await press('sw-inject-movements', 'sw-debug-movements')).payload as {
      warehouse: string;
      sku: string;
      movements: { received: number }[];
    };
    assert.deepEqual([movements.warehouse, movements.sku], ['WH1', 'SKU-001']);
    assert.ok(movements.movements.reduce((n, m) => n + m.received, 0) >= 5, 'the scan is among the movements');
    assert.deepEqual(errors, [], 'the catch node caught nothing');
  });
});
