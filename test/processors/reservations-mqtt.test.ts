import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import type pg from 'pg';
import pino from 'pino';
import { Central } from '../../processors/central.js';
import type {
  Ack,
  CommandResponse,
  GlobalStock,
  ReservationGranted,
  ReservationView,
  TransferView,
} from '../../protocol/index.js';
import { createTestDatabase, testPool, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { call } from '../helpers/http.js';
import { Collector, connect } from '../helpers/mqtt.js';

type Ok<T> = { requestId: string | null; status: 'ok'; data: T };
type Err = Extract<CommandResponse, { status: 'error' }>;

describe('commands over MQTT: requests/{own id} answered on the response topic', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  let central: Central;
  let base: string;
  let url: string;
  const clients: Record<string, MqttClient> = {};
  const responses: Record<string, Collector<CommandResponse>> = {};
  let seq = 0;

  /** Publishes a request (raw string or object) and waits for the response carrying its requestId (or, for unreadable ones, the next one). */
  async function request<T = unknown>(
    who: string,
    body: Record<string, unknown> | string,
    topic = `requests/${who}`,
  ): Promise<CommandResponse & { data?: T }> {
    const c = responses[who] as Collector<CommandResponse>;
    const requestId = typeof body === 'string' ? null : ((body.requestId as string | undefined) ?? null);
    const before = c.messages.length;
    await (clients[who] as MqttClient).publishAsync(topic, typeof body === 'string' ? body : JSON.stringify(body), {
      qos: 1,
    });
    const mine = () => c.messages.slice(before).find((m) => m.payload.requestId === requestId);
    await c.waitFor(() => mine() !== undefined, 10_000, `response to ${requestId ?? 'an unreadable request'}`);
    return mine()?.payload as CommandResponse & { data?: T };
  }
  const reserve = (who: string, data: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
    request<ReservationGranted>(who, {
      requestId: `q-${++seq}`,
      action: 'reservations.create',
      idempotencyKey: `mk-${seq}`,
      data,
      ...extra,
    });

  before(async () => {
    db = await createTestDatabase('resv_mqtt');
    pool = testPool(db.url);
    const devices = await writeDevices([
      { id: 'gw-m1', warehouse: 'M1', kind: 'gateway', password: 'pw-gw-m1-x' },
      { id: 'gw-m2', warehouse: 'M2', kind: 'gateway', password: 'pw-gw-m2-x' },
      { id: 'orders', warehouse: 'M1', kind: 'processor', password: 'pw-orders-x' },
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
      batchMax: 200,
      batchWaitMs: 2,
      log: pino({ level: 'silent' }),
    });
    const ports = await central.start();
    base = `http://127.0.0.1:${ports.http}`;
    url = `mqtt://127.0.0.1:${ports.mqtt}`;
    for (const [id, pw] of [
      ['gw-m1', 'pw-gw-m1-x'],
      ['gw-m2', 'pw-gw-m2-x'],
      ['orders', 'pw-orders-x'],
    ] as const) {
      const c = await connect(url, id, pw);
      clients[id] = c;
      responses[id] = new Collector<CommandResponse>(c, `responses/${id}/#`);
      await c.subscribeAsync(`responses/${id}/#`, { qos: 1 });
    }
    for (const [wh, qty] of [
      ['M1', 10],
      ['M2', 4],
    ] as const) {
      const gw = clients[`gw-${wh.toLowerCase()}`] as MqttClient;
      const acks = new Collector<Ack>(gw, `wh/${wh}/dev/+/ack`);
      await gw.subscribeAsync(`wh/${wh}/dev/+/ack`, { qos: 1 });
      await gw.publishAsync(
        `wh/${wh}/dev/s1/event`,
        JSON.stringify({ v: 1, id: `seed-${wh}`, type: 'received', sku: 'SKU-M', qty }),
        { qos: 1 },
      );
      await acks.waitFor(() => acks.messages.length > 0);
    }
  });
  after(async () => {
    await Promise.all(Object.values(clients).map((c) => c.endAsync(true)));
    await central.stop();
    await pool.end();
    await db.drop();
  });

  it('a gateway reserves at its own warehouse: {status: "ok", data, requestId} on responses/{id}, the same body HTTP answers', async () => {
    const r = (await reserve('gw-m1', { sku: 'SKU-M', qty: 2 })) as Ok<ReservationGranted>;
    assert.equal(r.status, 'ok', JSON.stringify(r));
    assert.deepEqual([r.data.warehouse, r.data.qty, r.data.sku], ['M1', 2, 'SKU-M']);
    assert.ok(r.requestId?.startsWith('q-'));
    const view = await call<ReservationView>(base, 'GET', `/v1/reservations/${r.data.id}`);
    assert.equal(view.body.state, 'active');
    const got = (await request<ReservationView>('gw-m1', {
      requestId: 'get-1',
      action: 'reservations.get',
      data: { id: r.data.id },
    })) as Ok<ReservationView>;
    assert.deepEqual([got.status, got.data.remaining], ['ok', 2]);
    const released = await request('gw-m1', {
      requestId: 'rel-1',
      action: 'reservations.release',
      data: { id: r.data.id },
    });
    assert.deepEqual(released, { requestId: 'rel-1', status: 'ok', data: null });
    assert.equal((await call<ReservationView>(base, 'GET', `/v1/reservations/${r.data.id}`)).body.state, 'released');
  });

  it('the answer goes to a responseTopic below responses/{own id}; one outside it is refused on the default topic', async () => {
    const c = responses['gw-m1'] as Collector<CommandResponse>;
    const r = await reserve('gw-m1', { sku: 'SKU-M', qty: 1 }, { responseTopic: 'responses/gw-m1/orders/42' });
    assert.equal(r.status, 'ok');
    assert.equal(c.messages.find((m) => m.payload.requestId === r.requestId)?.topic, 'responses/gw-m1/orders/42');
    await request('gw-m1', {
      requestId: 'rel-2',
      action: 'reservations.release',
      data: { id: (r as Ok<ReservationGranted>).data.id },
    });
    const bad = (await reserve('gw-m1', { sku: 'SKU-M', qty: 1 }, { responseTopic: 'stock/SKU-M' })) as Err;
    assert.deepEqual([bad.status, bad.error.code, bad.error.field], ['error', 'bad_request', 'responseTopic']);
    assert.equal(c.messages.find((m) => m.payload.requestId === bad.requestId)?.topic, 'responses/gw-m1');
    const other = (await reserve('gw-m1', { sku: 'SKU-M', qty: 1 }, { responseTopic: 'responses/gw-m2' })) as Err;
    assert.equal(other.error.field, 'responseTopic');
  });

  // The brokers take topics of at most 16 levels (MAX_TOPIC_LEVELS), even from central itself: an answer to a deeper
  // responseTopic could never be published, and the request used to run with its answer lost.
  it('a responseTopic deeper than 16 levels is refused before the request runs, answered on the default topic; 16 levels are answered there', async () => {
    const c = responses['gw-m1'] as Collector<CommandResponse>;
    const deep = (levels: number) =>
      ['responses', 'gw-m1', ...Array.from({ length: levels - 2 }, (_, i) => `l${i}`)].join('/');
    const stockBefore = (await call<GlobalStock>(base, 'GET', '/v1/stock/SKU-M')).body;
    const refused = (await reserve('gw-m1', { sku: 'SKU-M', qty: 1 }, { responseTopic: deep(17) })) as Err;
    assert.deepEqual(
      [refused.status, refused.error.code, refused.error.field],
      ['error', 'bad_request', 'responseTopic'],
    );
    assert.match(refused.error.message, /at most 16 levels/);
    assert.equal(c.messages.find((m) => m.payload.requestId === refused.requestId)?.topic, 'responses/gw-m1');
    const stockAfter = (await call<GlobalStock>(base, 'GET', '/v1/stock/SKU-M')).body;
    assert.deepEqual(
      [stockAfter.version, stockAfter.reserved],
      [stockBefore.version, stockBefore.reserved],
      'nothing was reserved',
    );

    const answered = (await reserve(
      'gw-m1',
      { sku: 'SKU-M', qty: 1 },
      { responseTopic: deep(16) },
    )) as Ok<ReservationGranted>;
    assert.equal(answered.status, 'ok');
    assert.equal(c.messages.find((m) => m.payload.requestId === answered.requestId)?.topic, deep(16));
    await request('gw-m1', { requestId: 'rel-deep', action: 'reservations.release', data: { id: answered.data.id } });
  });

  it('per kind: a gateway may not reserve at another warehouse, nor allocate across them; a processor credential may', async () => {
    const before = (await call<GlobalStock>(base, 'GET', '/v1/stock/SKU-M')).body;
    const elsewhere = (await reserve('gw-m1', { sku: 'SKU-M', qty: 1, warehouse: 'M2' })) as Err;
    assert.deepEqual([elsewhere.status, elsewhere.error.code], ['error', 'not_authorized']);
    const transferElsewhere = (await request('gw-m1', {
      requestId: 'tx-x',
      action: 'transfers.create',
      idempotencyKey: 'tx-x',
      data: { sku: 'SKU-M', qty: 1, from: 'M2', to: 'M3' },
    })) as Err;
    assert.equal(transferElsewhere.error.code, 'not_authorized');
    assert.equal(
      (await call<GlobalStock>(base, 'GET', '/v1/stock/SKU-M')).body.version,
      before.version,
      'nothing changed',
    );

    const allocated = (await reserve('orders', { sku: 'SKU-M', qty: 3 })) as Ok<ReservationGranted>;
    assert.deepEqual([allocated.status, allocated.data.warehouse], ['ok', 'M1']);
    const onlyM2 = (await reserve('gw-m2', { sku: 'SKU-M', qty: 1 })) as Ok<ReservationGranted>;
    const cross = (await request('gw-m1', {
      requestId: 'rel-x',
      action: 'reservations.release',
      data: { id: onlyM2.data.id },
    })) as Err;
    assert.equal(cross.error.code, 'not_authorized', "a gateway cannot release another warehouse's hold");
    const pull = (await request('gw-m2', {
      requestId: 'tx-pull',
      action: 'transfers.create',
      idempotencyKey: 'tx-pull',
      data: { sku: 'SKU-M', qty: 2, from: 'M1', to: 'M2' },
    })) as Err;
    assert.equal(
      pull.error.code,
      'not_authorized',
      "a gateway may not hold another warehouse's stock by asking for it",
    );
    const t = (await request<TransferView>('gw-m1', {
      requestId: 'tx-out',
      action: 'transfers.create',
      idempotencyKey: 'tx-out',
      data: { sku: 'SKU-M', qty: 2, from: 'M1', to: 'M2' },
    })) as Ok<TransferView>;
    assert.deepEqual([t.status, t.data.state], ['ok', 'reserved'], 'a gateway may send stock out of its warehouse');
    const seen = (await request<TransferView>('orders', {
      requestId: 'tx-get',
      action: 'transfers.get',
      data: { id: t.data.id },
    })) as Ok<TransferView>;
    assert.equal(seen.data.from, 'M1');
    assert.equal(
      (
        await request<TransferView>('gw-m2', {
          requestId: 'tx-get-2',
          action: 'transfers.get',
          data: { id: t.data.id },
        })
      ).status,
      'ok',
      'the receiving gateway may read it',
    );
    assert.equal(
      (
        (await request('gw-m2', {
          requestId: 'tx-cancel-2',
          action: 'transfers.cancel',
          data: { id: t.data.id },
        })) as Err
      ).error.code,
      'not_authorized',
      'only the source may cancel',
    );
    assert.equal(
      (await request('gw-m1', { requestId: 'tx-cancel', action: 'transfers.cancel', data: { id: t.data.id } })).status,
      'ok',
    );
    for (const id of [allocated.data.id, onlyM2.data.id])
      await call(base, 'DELETE', `/v1/reservations/${id}`, { token: central.apiToken });
  });

  it('bad requests are answered with an error naming the field, and change nothing', async () => {
    const count = async () => (await pool.query(`SELECT count(*)::int AS n FROM reservations`)).rows[0].n as number;
    const before = await count();
    const invalid = (await request('gw-m1', '{"requestId":"x",')) as Err;
    assert.deepEqual([invalid.requestId, invalid.error.code], [null, 'invalid_json']);
    const cases: [Record<string, unknown>, string, string | undefined][] = [
      [{ requestId: 'b1', data: { sku: 'SKU-M', qty: 1 } }, 'bad_request', 'action'],
      [{ requestId: 'b2', action: 'reservations.explode', data: {} }, 'bad_request', 'action'],
      [
        { requestId: 'b3', action: 'reservations.create', data: { sku: 'SKU-M', qty: 1 } },
        'bad_request',
        'idempotencyKey',
      ],
      [
        { requestId: 'b4', action: 'reservations.create', idempotencyKey: 'b4', data: { sku: 'SKU-M', qty: 0 } },
        'bad_request',
        'qty',
      ],
      [
        { requestId: 'b5', action: 'reservations.create', idempotencyKey: 'b5', data: { sku: 'NOPE', qty: 1 } },
        'not_found',
        'sku',
      ],
      [{ requestId: 'b6', action: 'reservations.get', data: { id: 'r-none' } }, 'not_found', 'id'],
      [
        {
          requestId: 'b7',
          action: 'reservations.create',
          idempotencyKey: 'b7',
          data: { sku: 'SKU-M', qty: 1 },
          extra: 1,
        },
        'bad_request',
        'extra',
      ],
    ];
    for (const [body, code, field] of cases) {
      const r = (await request('gw-m1', body)) as Err;
      assert.deepEqual([r.status, r.error.code, r.error.field], ['error', code, field], JSON.stringify(body));
    }
    const tooMuch = (await reserve('gw-m1', { sku: 'SKU-M', qty: 500 })) as Err;
    assert.equal(tooMuch.error.code, 'insufficient_stock');
    assert.equal(await count(), before);
  });

  it('the same request sent 10 times at once with one idempotencyKey creates one reservation', async () => {
    const body = { action: 'reservations.create', idempotencyKey: 'mqtt-same-10', data: { sku: 'SKU-M', qty: 1 } };
    const c = responses.orders as Collector<CommandResponse>;
    await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        (clients.orders as MqttClient).publishAsync(
          'requests/orders',
          JSON.stringify({ ...body, requestId: `same-${i}` }),
          { qos: 1 },
        ),
      ),
    );
    await c.waitFor(
      () => c.messages.filter((m) => String(m.payload.requestId).startsWith('same-')).length === 10,
      10_000,
      '10 responses',
    );
    const ids = new Set(
      c.messages
        .filter((m) => String(m.payload.requestId).startsWith('same-'))
        .map((m) => (m.payload as Ok<ReservationGranted>).data.id),
    );
    assert.equal(ids.size, 1);
    const { rows } = await pool.query(
      `SELECT count(*)::int AS n FROM idempotency_keys WHERE key = 'mqtt:orders mqtt-same-10'`,
    );
    assert.equal(rows[0].n, 1);
    assert.equal((await call<ReservationView>(base, 'GET', `/v1/reservations/${[...ids][0]}`)).body.state, 'active');
  });

  it("idempotency keys are each caller's own: a gateway using an order system's key first does not take it from it, nor from HTTP", async () => {
    const key = 'order-7781';
    const squatted = (await reserve(
      'gw-m1',
      { sku: 'SKU-M', qty: 1 },
      { idempotencyKey: key },
    )) as Ok<ReservationGranted>;
    assert.equal(squatted.status, 'ok', JSON.stringify(squatted));
    const owner = (await reserve(
      'orders',
      { sku: 'SKU-M', qty: 2, warehouse: 'M2' },
      { idempotencyKey: key },
    )) as Ok<ReservationGranted>;
    assert.equal(
      owner.status,
      'ok',
      `the order system's own request is decided, not refused as a reused key: ${JSON.stringify(owner)}`,
    );
    assert.deepEqual([owner.data.warehouse, owner.data.qty], ['M2', 2]);
    const again = (await reserve(
      'orders',
      { sku: 'SKU-M', qty: 2, warehouse: 'M2' },
      { idempotencyKey: key },
    )) as Ok<ReservationGranted>;
    assert.equal(again.data.id, owner.data.id, 'a repeat by the same caller gets its first answer');
    const http = await call<ReservationGranted>(base, 'POST', '/v1/reservations', {
      key,
      token: central.apiToken,
      json: { sku: 'SKU-M', qty: 1, warehouse: 'M1' },
    });
    assert.equal(http.status, 201, JSON.stringify(http.body));
    assert.ok(![squatted.data.id, owner.data.id].includes(http.body.id), 'the HTTP API has keys of its own');
    for (const id of [squatted.data.id, owner.data.id, http.body.id])
      await call(base, 'DELETE', `/v1/reservations/${id}`, { token: central.apiToken });
  });

  it('a client cannot request as another: the broker refuses a publish to requests/{other id}', async () => {
    const intruder = await connect(url, 'gw-m1', 'pw-gw-m1-x', { clientId: 'gw-m1-intruder' });
    const closed = new Promise<void>((resolve) => intruder.once('close', () => resolve()));
    intruder.publish(
      'requests/gw-m2',
      JSON.stringify({
        requestId: 'spoof',
        action: 'reservations.create',
        idempotencyKey: 'spoof',
        data: { sku: 'SKU-M', qty: 1 },
      }),
      { qos: 1 },
    );
    await closed; // a refused publish disconnects the client (the contract's broker rule)
    await intruder.endAsync(true);
    const { rows } = await pool.query(`SELECT count(*)::int AS n FROM idempotency_keys WHERE key LIKE '%spoof'`);
    assert.equal(rows[0].n, 0);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /stockwire_broker_publish_refusals_total\{reason="acl",kind="gateway"\} [1-9]/);
  });
});
