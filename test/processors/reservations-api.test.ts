import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import type pg from 'pg';
import pino from 'pino';
import { Central, type CentralOptions } from '../../processors/central.js';
import type {
  Ack,
  Alert,
  GlobalStock,
  ReservationGranted,
  ReservationView,
  WarehouseStock,
} from '../../protocol/index.js';
import { createTestDatabase, testPool, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { call, type CallOptions } from '../helpers/http.js';
import { Collector, connect } from '../helpers/mqtt.js';

type ErrorAnswer = { error: { code: string; message: string; field?: string } };

describe('reservations over HTTP (CONTRACT section 6)', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  let devices: { dir: string; file: string };
  let central: Central;
  let base: string;
  let mqttUrl: string;
  let gw: Record<string, MqttClient>;
  let display: MqttClient;
  let acks: Record<string, Collector<Ack>>;
  let seen: Collector<GlobalStock | WarehouseStock | Alert>;
  let seq = 0;

  const options = (over: Partial<CentralOptions> = {}): CentralOptions => ({
    databaseUrl: db.url,
    redisPrefix: 'x',
    dataDir: devices.dir,
    devicesFile: devices.file,
    host: '127.0.0.1',
    mqttPort: 0,
    wsPort: 0,
    httpPort: 0,
    batchMax: 200,
    batchWaitMs: 2,
    sweepIntervalMs: 100,
    log: pino({ level: 'silent' }),
    ...over,
  });
  const api = <T = Record<string, unknown>>(method: string, path: string, o?: CallOptions) =>
    call<T>(base, method, path, { token: central.apiToken, ...o });
  const reserve = (json: unknown, key = `key-${++seq}`) =>
    api<ReservationGranted & ErrorAnswer>('POST', '/v1/reservations', { json, key });

  /** Publishes an event through the warehouse's gateway and waits for its commit ack. */
  async function event(wh: string, body: Record<string, unknown>): Promise<Ack> {
    const id = `ev-${++seq}`;
    await (gw[wh] as MqttClient).publishAsync(`wh/${wh}/dev/scan-1/event`, JSON.stringify({ v: 1, id, ...body }), {
      qos: 1,
    });
    const c = acks[wh] as Collector<Ack>;
    await c.waitFor(() => c.messages.some((m) => m.payload.id === id), 10_000, `ack of ${id}`);
    return c.messages.find((m) => m.payload.id === id)?.payload as Ack;
  }

  /** What a refused request must leave untouched. */
  async function snapshot(): Promise<string> {
    const q = async (sql: string) => JSON.stringify((await pool.query(sql)).rows);
    return [
      await q(`SELECT wh, sku, on_hand, reserved, version FROM stock ORDER BY wh, sku`),
      await q(`SELECT sku, version FROM sku_versions ORDER BY sku`),
      await q(`SELECT count(*)::int AS n FROM reservations`),
      await q(`SELECT count(*)::int AS n FROM idempotency_keys`),
    ].join('\n');
  }

  async function start(over: Partial<CentralOptions> = {}): Promise<void> {
    central = new Central(options(over));
    const ports = await central.start();
    base = `http://127.0.0.1:${ports.http}`;
    mqttUrl = `mqtt://127.0.0.1:${ports.mqtt}`;
    gw = { W1: await connect(mqttUrl, 'gw-w1', 'pw-gw-w1-x'), W2: await connect(mqttUrl, 'gw-w2', 'pw-gw-w2-x') };
    acks = {};
    for (const [wh, client] of Object.entries(gw)) {
      acks[wh] = new Collector<Ack>(client, `wh/${wh}/dev/+/ack`);
      await client.subscribeAsync(`wh/${wh}/dev/+/ack`, { qos: 1 });
    }
    display = await connect(mqttUrl, 'disp', 'pw-display-x');
    seen = new Collector(display, ['stock/#', 'wh/+/stock/#', 'alerts/#']);
    await display.subscribeAsync(['stock/#', 'wh/+/stock/#', 'alerts/#'], { qos: 1 });
  }

  async function stop(): Promise<void> {
    await Promise.all([...Object.values(gw), display].map((c) => c.endAsync()));
    await central.stop();
  }

  before(async () => {
    db = await createTestDatabase('resv_api');
    pool = testPool(db.url);
    devices = await writeDevices([
      { id: 'gw-w1', warehouse: 'W1', kind: 'gateway', password: 'pw-gw-w1-x' },
      { id: 'gw-w2', warehouse: 'W2', kind: 'gateway', password: 'pw-gw-w2-x' },
      { id: 'disp', warehouse: 'W1', kind: 'display', password: 'pw-display-x' },
    ]);
    await start();
    await event('W1', { type: 'received', sku: 'SKU-A', qty: 10 });
    await event('W2', { type: 'received', sku: 'SKU-A', qty: 6 });
    await event('W2', { type: 'received', sku: 'SKU-B', qty: 1 });
  });
  after(async () => {
    await stop();
    await pool.end();
    await db.drop();
  });

  const bad: [string, CallOptions, number, string, string | undefined][] = [
    ['no Idempotency-Key', { json: { sku: 'SKU-A', qty: 1 } }, 400, 'bad_request', 'Idempotency-Key'],
    ['qty 0', { json: { sku: 'SKU-A', qty: 0 }, key: 'bad-1' }, 400, 'bad_request', 'qty'],
    ['qty -2', { json: { sku: 'SKU-A', qty: -2 }, key: 'bad-2' }, 400, 'bad_request', 'qty'],
    ['qty 1.5', { json: { sku: 'SKU-A', qty: 1.5 }, key: 'bad-3' }, 400, 'bad_request', 'qty'],
    ['qty as a string', { json: { sku: 'SKU-A', qty: '3' }, key: 'bad-4' }, 400, 'bad_request', 'qty'],
    ['no qty', { json: { sku: 'SKU-A' }, key: 'bad-5' }, 400, 'bad_request', 'qty'],
    ['no sku', { json: { qty: 1 }, key: 'bad-6' }, 400, 'bad_request', 'sku'],
    ['a malformed sku', { json: { sku: 'a b', qty: 1 }, key: 'bad-7' }, 400, 'bad_request', 'sku'],
    ['an unknown field', { json: { sku: 'SKU-A', qty: 1, ttl: 5 }, key: 'bad-8' }, 400, 'bad_request', 'ttl'],
    ['ttlSeconds 0', { json: { sku: 'SKU-A', qty: 1, ttlSeconds: 0 }, key: 'bad-9' }, 400, 'bad_request', 'ttlSeconds'],
    ['malformed JSON', { raw: '{"sku":"SKU-A",', key: 'bad-10' }, 400, 'invalid_json', undefined],
    ['an empty body', { raw: '', key: 'bad-11' }, 400, 'invalid_json', undefined],
    ['a JSON array', { json: [{ sku: 'SKU-A', qty: 1 }], key: 'bad-12' }, 400, 'bad_request', undefined],
    ['an unknown sku', { json: { sku: 'NO-SUCH-SKU', qty: 1 }, key: 'bad-13' }, 404, 'not_found', 'sku'],
    [
      'an unknown warehouse',
      { json: { sku: 'SKU-A', qty: 1, warehouse: 'W9' }, key: 'bad-14' },
      404,
      'not_found',
      'warehouse',
    ],
  ];
  for (const [what, o, status, code, field] of bad) {
    it(`${what}: ${status} ${code}${field ? ` naming ${field}` : ''}, and nothing changes`, async () => {
      const before = await snapshot();
      const r = await api<ErrorAnswer>('POST', '/v1/reservations', o);
      assert.equal(r.status, status, JSON.stringify(r.body));
      assert.equal(r.body.error.code, code);
      assert.equal(r.body.error.field, field);
      assert.ok(r.body.error.message.length > 0);
      assert.equal(await snapshot(), before, 'stock, versions, reservations and idempotency keys unchanged');
    });
  }

  it('a key first sent with bad input was not stored: the same key with a valid request is granted', async () => {
    const r = await reserve({ sku: 'SKU-B', qty: 1 }, 'bad-1');
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal((await api('DELETE', `/v1/reservations/${r.body.id}`)).status, 204);
  });

  it('a grant answers the contract shape; available drops at once in GET, both retained topics and the next ack', async () => {
    const before = (await api<GlobalStock>('GET', '/v1/stock/SKU-A')).body;
    const r = await reserve({ sku: 'SKU-A', qty: 4, warehouse: 'W1' });
    assert.equal(r.status, 201);
    assert.deepEqual(Object.keys(r.body).sort(), ['expiresAt', 'id', 'qty', 'sku', 'warehouse']);
    assert.deepEqual([r.body.sku, r.body.qty, r.body.warehouse], ['SKU-A', 4, 'W1']);
    assert.ok(Date.parse(r.body.expiresAt) > Date.now() + 800_000, 'default ttl 900 s');
    const g = (await api<GlobalStock>('GET', '/v1/stock/SKU-A')).body;
    assert.deepEqual(
      [g.onHand, g.reserved, g.available, g.warehouses.W1],
      [16, 4, 12, { onHand: 10, reserved: 4, available: 6 }],
    );
    assert.ok(g.version > before.version);
    const w = (await api<WarehouseStock>('GET', '/v1/warehouses/W1/stock/SKU-A')).body;
    assert.deepEqual([w.reserved, w.available], [4, 6]);
    await seen.waitFor(
      () => (seen.last('wh/W1/stock/SKU-A') as WarehouseStock | undefined)?.reserved === 4,
      5_000,
      'wh/W1/stock/SKU-A with the hold',
    );
    await seen.waitFor(
      () => (seen.last('stock/SKU-A') as GlobalStock | undefined)?.version === g.version,
      5_000,
      'stock/SKU-A at the new version',
    );
    assert.equal((seen.last('stock/SKU-A') as GlobalStock).available, 12);
    const ack = await event('W1', { type: 'received', sku: 'SKU-A', qty: 1 });
    assert.deepEqual(ack.stock, { onHand: 11, available: 7 });
    const view = await api<ReservationView>('GET', `/v1/reservations/${r.body.id}`);
    assert.deepEqual(
      [view.body.state, view.body.remaining, view.body.consumed, view.body.warehouse],
      ['active', 4, 0, 'W1'],
    );
    assert.equal((await api('DELETE', `/v1/reservations/${r.body.id}`)).status, 204);
    await event('W1', { type: 'shipped', sku: 'SKU-A', qty: 1 }); // back to 10 at W1
  });

  it('the same request sent 10 times at once with one key creates one reservation; every answer is the first one', async () => {
    const answers = await Promise.all(
      Array.from({ length: 10 }, () => reserve({ sku: 'SKU-A', qty: 2, warehouse: 'W2' }, 'same-key-10')),
    );
    assert.deepEqual(
      answers.map((a) => a.status),
      Array(10).fill(201),
    );
    assert.equal(new Set(answers.map((a) => a.body.id)).size, 1, 'one id');
    assert.equal(answers.filter((a) => a.headers.get('idempotent-replayed') === 'true').length, 9);
    const { rows } = await pool.query(
      `SELECT count(*)::int AS n FROM reservations WHERE sku = 'SKU-A' AND state = 'active'`,
    );
    assert.equal(rows[0].n, 1);
    assert.equal((await api<GlobalStock>('GET', '/v1/stock/SKU-A')).body.warehouses.W2?.reserved, 2);
    const other = await reserve({ sku: 'SKU-A', qty: 3, warehouse: 'W2' }, 'same-key-10');
    assert.equal(other.status, 422, 'a key reused with another request');
    assert.equal(other.body.error.code, 'idempotency_key_reused');
    assert.equal(other.body.error.field, 'Idempotency-Key');
    assert.equal((await api('DELETE', `/v1/reservations/${answers[0]?.body.id}`)).status, 204);
  });

  it('allocation without warehouse: most available; refused with insufficient_stock when no single warehouse can; split lists parts', async () => {
    const one = await reserve({ sku: 'SKU-A', qty: 7 });
    assert.equal(one.status, 201);
    assert.equal(one.body.warehouse, 'W1', 'W1 has 10, W2 has 6');
    const none = await reserve({ sku: 'SKU-A', qty: 7 }); // W1 3, W2 6 left
    assert.equal(none.status, 409);
    assert.equal(none.body.error.code, 'insufficient_stock');
    const split = await reserve({ sku: 'SKU-A', qty: 8, split: true });
    assert.equal(split.status, 201, JSON.stringify(split.body));
    assert.equal(split.body.warehouse, null);
    assert.deepEqual(
      split.body.parts?.map((p) => [p.warehouse, p.qty]),
      [
        ['W2', 6],
        ['W1', 2],
      ],
    );
    assert.equal((await api<GlobalStock>('GET', '/v1/stock/SKU-A')).body.available, 1);
    const group = await api<{ parts: ReservationView[] }>('GET', `/v1/reservations/${split.body.id}`);
    assert.equal(group.body.parts.length, 2);
    assert.equal(
      (await api('DELETE', `/v1/reservations/${split.body.id}`)).status,
      204,
      "the answer's id releases every part",
    );
    assert.equal((await api('DELETE', `/v1/reservations/${one.body.id}`)).status, 204);
    assert.equal((await api<GlobalStock>('GET', '/v1/stock/SKU-A')).body.available, 16);
  });

  it('a refusal is the first answer too: the same key stays 409 after stock arrives, a new key is granted', async () => {
    const first = await reserve({ sku: 'SKU-B', qty: 3 }, 'refused-key');
    assert.equal(first.status, 409);
    await event('W2', { type: 'received', sku: 'SKU-B', qty: 5 });
    const again = await reserve({ sku: 'SKU-B', qty: 3 }, 'refused-key');
    assert.equal(again.status, 409);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    const fresh = await reserve({ sku: 'SKU-B', qty: 3 });
    assert.equal(fresh.status, 201);
    await api('DELETE', `/v1/reservations/${fresh.body.id}`);
  });

  it('DELETE: 204, again 204, 404 for an unknown id, 400 for a malformed one; the hold goes back to available', async () => {
    const r = await reserve({ sku: 'SKU-A', qty: 5, warehouse: 'W1' });
    assert.equal((await api<GlobalStock>('GET', '/v1/stock/SKU-A')).body.warehouses.W1?.available, 5);
    assert.equal((await api('DELETE', `/v1/reservations/${r.body.id}`)).status, 204);
    assert.equal((await api('DELETE', `/v1/reservations/${r.body.id}`)).status, 204);
    assert.equal((await api<GlobalStock>('GET', '/v1/stock/SKU-A')).body.warehouses.W1?.available, 10);
    assert.equal((await api<ReservationView>('GET', `/v1/reservations/${r.body.id}`)).body.state, 'released');
    const unknown = await api<ErrorAnswer>('DELETE', '/v1/reservations/r-nope');
    assert.deepEqual([unknown.status, unknown.body.error.code, unknown.body.error.field], [404, 'not_found', 'id']);
    assert.equal((await api<ErrorAnswer>('DELETE', '/v1/reservations/bad%20id')).status, 400);
    assert.equal((await api('GET', '/v1/reservations/r-nope')).status, 404);
  });

  it('expiry after ttlSeconds: the sweeper releases the hold and republishes both stock topics', async () => {
    const r = await reserve({ sku: 'SKU-A', qty: 3, warehouse: 'W2', ttlSeconds: 1 });
    assert.equal(r.status, 201);
    await seen.waitFor(
      () => (seen.last('wh/W2/stock/SKU-A') as WarehouseStock | undefined)?.reserved === 3,
      5_000,
      'the hold on the topic',
    );
    await seen.waitFor(
      () => (seen.last('wh/W2/stock/SKU-A') as WarehouseStock | undefined)?.reserved === 0,
      10_000,
      'the hold released on the topic',
    );
    await seen.waitFor(
      () => (seen.last('stock/SKU-A') as GlobalStock | undefined)?.reserved === 0,
      5_000,
      'stock/SKU-A released',
    );
    assert.equal((await api<ReservationView>('GET', `/v1/reservations/${r.body.id}`)).body.state, 'expired');
    assert.equal((await api<GlobalStock>('GET', '/v1/stock/SKU-A')).body.reserved, 0);
  });

  it('shipped events consume a reservation partly, then wholly; onHand and reserved drop together, available stays', async () => {
    const r = await reserve({ sku: 'SKU-A', qty: 5, warehouse: 'W1' });
    const ack1 = await event('W1', { type: 'shipped', sku: 'SKU-A', qty: 2, reservation: r.body.id });
    assert.deepEqual(ack1.stock, { onHand: 8, available: 5 });
    let view = (await api<ReservationView>('GET', `/v1/reservations/${r.body.id}`)).body;
    assert.deepEqual([view.state, view.remaining, view.consumed], ['active', 3, 2]);
    const ack2 = await event('W1', { type: 'shipped', sku: 'SKU-A', qty: 4, reservation: r.body.id }); // one more than held
    assert.deepEqual(ack2.stock, { onHand: 4, available: 4 });
    view = (await api<ReservationView>('GET', `/v1/reservations/${r.body.id}`)).body;
    assert.deepEqual([view.state, view.remaining, view.consumed], ['consumed', 0, 5]);
    const w = (await api<WarehouseStock>('GET', '/v1/warehouses/W1/stock/SKU-A')).body;
    assert.deepEqual([w.onHand, w.reserved], [4, 0]);
    await event('W1', { type: 'received', sku: 'SKU-A', qty: 6 }); // back to 10
  });

  it("a shipped naming an unknown, a released or another warehouse's reservation is applied as a fact; reserved is untouched and an alert says why", async () => {
    const held = await reserve({ sku: 'SKU-A', qty: 2, warehouse: 'W1' });
    const released = await reserve({ sku: 'SKU-A', qty: 1, warehouse: 'W1' });
    await api('DELETE', `/v1/reservations/${released.body.id}`);
    const cases: [string, string, RegExp][] = [
      ['W1', 'r-unknown', /\(unknown\)/],
      ['W1', released.body.id, /\(released\)/],
      ['W2', held.body.id, /\(other-warehouse\)/],
    ];
    for (const [wh, reservation, why] of cases) {
      const count = seen.messages.filter((m) => m.topic === `alerts/${wh}/reservation-mismatch`).length;
      const onHand = (await api<WarehouseStock>('GET', `/v1/warehouses/${wh}/stock/SKU-A`)).body.onHand;
      await event(wh, { type: 'shipped', sku: 'SKU-A', qty: 1, reservation });
      await seen.waitFor(
        () => seen.messages.filter((m) => m.topic === `alerts/${wh}/reservation-mismatch`).length > count,
        5_000,
        `reservation-mismatch at ${wh}`,
      );
      const a = seen.last(`alerts/${wh}/reservation-mismatch`) as Alert;
      assert.match(a.message, why);
      assert.equal(a.sku, 'SKU-A');
      assert.equal(
        (await api<WarehouseStock>('GET', `/v1/warehouses/${wh}/stock/SKU-A`)).body.onHand,
        onHand - 1,
        'the shipment counts',
      );
      await event(wh, { type: 'received', sku: 'SKU-A', qty: 1 });
    }
    const g = (await api<GlobalStock>('GET', '/v1/stock/SKU-A')).body;
    assert.deepEqual([g.warehouses.W1?.reserved, g.warehouses.W2?.reserved], [2, 0], 'only the live hold at W1 holds');
    assert.equal((await api<ReservationView>('GET', `/v1/reservations/${held.body.id}`)).body.remaining, 2);
    await api('DELETE', `/v1/reservations/${held.body.id}`);
  });

  it('after a restart the stored answer comes back for a repeated key; a priority policy and a channel list pick the warehouse', async () => {
    const first = await reserve({ sku: 'SKU-A', qty: 1, warehouse: 'W1' }, 'across-restart');
    await stop();
    await start({ allocation: 'priority', allocationPriority: ['W2', 'W1'], allocationChannels: { store: ['W1'] } });
    const again = await reserve({ sku: 'SKU-A', qty: 1, warehouse: 'W1' }, 'across-restart');
    assert.equal(again.status, 201);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(again.body, first.body);
    assert.equal((await api<GlobalStock>('GET', '/v1/stock/SKU-A')).body.reserved, 1);
    const prio = await reserve({ sku: 'SKU-A', qty: 2 });
    assert.equal(prio.body.warehouse, 'W2', 'W2 comes first in the priority list though W1 has more');
    const channel = await reserve({ sku: 'SKU-A', qty: 2, channel: 'store' });
    assert.equal(channel.body.warehouse, 'W1', 'the store channel lists W1');
    for (const id of [first.body.id, prio.body.id, channel.body.id])
      assert.equal((await api('DELETE', `/v1/reservations/${id}`)).status, 204);
    const { rows } = await pool.query(`SELECT wh, reserved FROM stock WHERE reserved <> 0`);
    assert.deepEqual(rows, [], 'nothing held at the end');
  });
});
