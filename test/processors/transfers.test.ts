import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import type pg from 'pg';
import pino from 'pino';
import { Central } from '../../processors/central.js';
import type { Ack, Alert, GlobalStock, ReservationView, TransferView, WarehouseStock } from '../../protocol/index.js';
import { createTestDatabase, testPool, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { call, type CallOptions } from '../helpers/http.js';
import { Collector, connect } from '../helpers/mqtt.js';

type ErrorAnswer = { error: { code: string; message: string; field?: string } };

describe('transfers between warehouses: the saga', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  let central: Central;
  let base: string;
  let gw: Record<string, MqttClient>;
  let acks: Record<string, Collector<Ack>>;
  let display: MqttClient;
  let seen: Collector<GlobalStock | WarehouseStock | Alert>;
  let seq = 0;

  const api = <T = Record<string, unknown>>(method: string, path: string, o?: CallOptions) =>
    call<T>(base, method, path, { token: central.apiToken, ...o });
  const transfer = (json: unknown) =>
    api<TransferView & ErrorAnswer>('POST', '/v1/transfers', { json, key: `t-key-${++seq}` });
  const get = async (id: string) => (await api<TransferView>('GET', `/v1/transfers/${id}`)).body;
  const stock = async (sku: string) => (await api<GlobalStock>('GET', `/v1/stock/${sku}`)).body;

  /** Publishes an event (with any extra fields, kept in the stored payload) and waits for its ack. */
  async function event(wh: string, body: Record<string, unknown>, id = `ev-${++seq}`): Promise<Ack> {
    const c = acks[wh] as Collector<Ack>;
    const before = c.messages.filter((m) => m.payload.id === id).length;
    await (gw[wh] as MqttClient).publishAsync(`wh/${wh}/dev/scan-1/event`, JSON.stringify({ v: 1, id, ...body }), {
      qos: 1,
    });
    await c.waitFor(() => c.messages.filter((m) => m.payload.id === id).length > before, 10_000, `ack of ${id}`);
    return c.messages.filter((m) => m.payload.id === id).at(-1)?.payload as Ack;
  }

  const alertsOf = (topic: string) => seen.messages.filter((m) => m.topic === topic).map((m) => m.payload as Alert);

  before(async () => {
    db = await createTestDatabase('transfers');
    pool = testPool(db.url);
    const devices = await writeDevices([
      { id: 'gw-t1', warehouse: 'T1', kind: 'gateway', password: 'pw-gw-t1-x' },
      { id: 'gw-t2', warehouse: 'T2', kind: 'gateway', password: 'pw-gw-t2-x' },
      { id: 'disp-t', warehouse: 'T1', kind: 'display', password: 'pw-display-t' },
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
      sweepIntervalMs: 100,
      log: pino({ level: 'silent' }),
    });
    const ports = await central.start();
    base = `http://127.0.0.1:${ports.http}`;
    const url = `mqtt://127.0.0.1:${ports.mqtt}`;
    gw = { T1: await connect(url, 'gw-t1', 'pw-gw-t1-x'), T2: await connect(url, 'gw-t2', 'pw-gw-t2-x') };
    acks = {};
    for (const [wh, client] of Object.entries(gw)) {
      acks[wh] = new Collector<Ack>(client, `wh/${wh}/dev/+/ack`);
      await client.subscribeAsync(`wh/${wh}/dev/+/ack`, { qos: 1 });
    }
    display = await connect(url, 'disp-t', 'pw-display-t');
    seen = new Collector(display, ['stock/#', 'alerts/#']);
    await display.subscribeAsync(['stock/#', 'alerts/#'], { qos: 1 });
    await event('T1', { type: 'received', sku: 'SKU-T', qty: 20 });
    await event('T1', { type: 'received', sku: 'SKU-U', qty: 100 }); // for the timeout and cancel cases
    await event('T2', { type: 'received', sku: 'SKU-T', qty: 1 });
  });
  after(async () => {
    await Promise.all([...Object.values(gw), display].map((c) => c.endAsync()));
    await central.stop();
    await pool.end();
    await db.drop();
  });

  it('completion: reserved at the source, in transit on its shipment (visible in stock/{sku}), completed on the receipt', async () => {
    const t = await transfer({ sku: 'SKU-T', qty: 5, from: 'T1', to: 'T2' });
    assert.equal(t.status, 201, JSON.stringify(t.body));
    assert.deepEqual(
      [t.body.state, t.body.reservation, t.body.shipped, t.body.received, t.body.inTransit],
      ['reserved', t.body.id, 0, 0, 0],
    );
    let g = await stock('SKU-T');
    assert.deepEqual([g.warehouses.T1?.reserved, g.warehouses.T1?.available, g.inTransit], [5, 15, 0]);

    await event('T1', { type: 'shipped', sku: 'SKU-T', qty: 5, reservation: t.body.id });
    assert.deepEqual([(await get(t.body.id)).state, (await get(t.body.id)).inTransit], ['in_transit', 5]);
    g = await stock('SKU-T');
    assert.deepEqual([g.onHand, g.reserved, g.inTransit, g.warehouses.T1?.onHand], [16, 0, 5, 15]);
    await seen.waitFor(
      () => (seen.last('stock/SKU-T') as GlobalStock | undefined)?.inTransit === 5,
      5_000,
      'inTransit 5 on stock/SKU-T',
    );

    await event('T2', { type: 'received', sku: 'SKU-T', qty: 5, transfer: t.body.id });
    const done = await get(t.body.id);
    assert.deepEqual([done.state, done.shipped, done.received, done.inTransit], ['completed', 5, 5, 0]);
    g = await stock('SKU-T');
    assert.deepEqual([g.onHand, g.inTransit, g.warehouses.T2?.onHand], [21, 0, 6]);
    await seen.waitFor(
      () => (seen.last('stock/SKU-T') as GlobalStock | undefined)?.inTransit === 0,
      5_000,
      'inTransit back to 0',
    );
    const { rows } = await pool.query(
      `SELECT payload->>'transfer' AS transfer FROM events WHERE wh = 'T2' AND type = 'received' AND payload ? 'transfer'`,
    );
    assert.deepEqual(
      rows.map((r) => r.transfer),
      [t.body.id],
      'the transfer field is kept in the stored event',
    );
  });

  it('a duplicate received (the same event again) does not complete twice or count twice; a second receipt on a completed transfer is a fact with an alert', async () => {
    const t = await transfer({ sku: 'SKU-T', qty: 3, from: 'T1', to: 'T2' });
    await event('T1', { type: 'shipped', sku: 'SKU-T', qty: 3, reservation: t.body.id });
    const onHandT2 = (await stock('SKU-T')).warehouses.T2?.onHand as number;
    const first = await event('T2', { type: 'received', sku: 'SKU-T', qty: 3, transfer: t.body.id }, 'recv-dup');
    const completed = await get(t.body.id);
    assert.equal(first.status, 'applied');
    assert.equal(completed.state, 'completed');
    const again = await event('T2', { type: 'received', sku: 'SKU-T', qty: 3, transfer: t.body.id }, 'recv-dup');
    assert.equal(again.status, 'duplicate');
    const after = await get(t.body.id);
    assert.deepEqual(
      [after.state, after.received, after.updatedAt],
      ['completed', 3, completed.updatedAt],
      'unchanged by the duplicate',
    );
    assert.equal((await stock('SKU-T')).warehouses.T2?.onHand, onHandT2 + 3, 'the receipt counted once');

    const mismatches = alertsOf('alerts/T2/transfer-mismatch').length;
    await event('T2', { type: 'received', sku: 'SKU-T', qty: 3, transfer: t.body.id }, 'recv-extra');
    await seen.waitFor(
      () => alertsOf('alerts/T2/transfer-mismatch').length > mismatches,
      5_000,
      'transfer-mismatch alert',
    );
    assert.match(alertsOf('alerts/T2/transfer-mismatch').at(-1)?.message ?? '', /already completed/);
    assert.deepEqual([(await get(t.body.id)).state, (await get(t.body.id)).received], ['completed', 3]);
    assert.equal(
      (await stock('SKU-T')).warehouses.T2?.onHand,
      onHandT2 + 6,
      'events are facts: the extra receipt is stock',
    );
  });

  it('out of order: a receipt before its shipment is counted, and the shipment then completes the transfer; partial shipments stay in transit', async () => {
    const t = await transfer({ sku: 'SKU-T', qty: 4, from: 'T1', to: 'T2' });
    await event('T2', { type: 'received', sku: 'SKU-T', qty: 4, transfer: t.body.id });
    assert.deepEqual([(await get(t.body.id)).state, (await get(t.body.id)).received], ['reserved', 4]);
    await event('T1', { type: 'shipped', sku: 'SKU-T', qty: 1, reservation: t.body.id });
    assert.equal((await get(t.body.id)).state, 'in_transit', '3 still held at the source');
    assert.equal((await stock('SKU-T')).inTransit, 0, 'received more than shipped: nothing on the road');
    await event('T1', { type: 'shipped', sku: 'SKU-T', qty: 3, reservation: t.body.id });
    assert.deepEqual([(await get(t.body.id)).state, (await get(t.body.id)).shipped], ['completed', 4]);

    const p = await transfer({ sku: 'SKU-T', qty: 6, from: 'T1', to: 'T2' });
    await event('T1', { type: 'shipped', sku: 'SKU-T', qty: 2, reservation: p.body.id });
    assert.deepEqual([(await get(p.body.id)).inTransit, (await stock('SKU-T')).inTransit], [2, 2]);
    await event('T1', { type: 'shipped', sku: 'SKU-T', qty: 4, reservation: p.body.id });
    await event('T2', { type: 'received', sku: 'SKU-T', qty: 5, transfer: p.body.id });
    assert.deepEqual(
      [(await get(p.body.id)).state, (await get(p.body.id)).inTransit, (await stock('SKU-T')).inTransit],
      ['in_transit', 1, 1],
    );
    await event('T2', { type: 'received', sku: 'SKU-T', qty: 1, transfer: p.body.id });
    assert.equal((await get(p.body.id)).state, 'completed');
    assert.equal((await stock('SKU-T')).inTransit, 0);
  });

  it('timeout before shipping: compensated — the hold goes back to available and alerts/{from}/transfer-timeout fires', async () => {
    const before = await stock('SKU-T');
    const t = await transfer({ sku: 'SKU-T', qty: 2, from: 'T1', to: 'T2', timeoutSeconds: 1 });
    assert.equal((await stock('SKU-T')).warehouses.T1?.reserved, (before.warehouses.T1?.reserved ?? 0) + 2);
    await seen.waitFor(
      () => alertsOf('alerts/T1/transfer-timeout').some((a) => a.message.includes(t.body.id)),
      10_000,
      'transfer-timeout alert',
    );
    const a = alertsOf('alerts/T1/transfer-timeout').find((x) => x.message.includes(t.body.id)) as Alert;
    assert.equal(a.sku, 'SKU-T');
    assert.match(a.message, /2 released at T1/);
    assert.equal((await get(t.body.id)).state, 'compensated');
    assert.equal((await api<ReservationView>('GET', `/v1/reservations/${t.body.id}`)).body.state, 'released');
    assert.equal((await stock('SKU-T')).warehouses.T1?.reserved, before.warehouses.T1?.reserved);
    assert.equal(
      alertsOf('alerts/T2/transfer-timeout').filter((x) => x.message.includes(t.body.id)).length,
      0,
      'nothing left: the destination is not alerted',
    );
    // A late shipment naming it is still a shipment, and takes nothing from a hold.
    await event('T1', { type: 'shipped', sku: 'SKU-T', qty: 2, reservation: t.body.id });
    assert.equal((await get(t.body.id)).state, 'compensated');
    await event('T1', { type: 'received', sku: 'SKU-T', qty: 2 });
  });

  it('timeout in transit: compensated, the rest of the hold released, both warehouses alerted, no longer counted in transit', async () => {
    const t = await transfer({ sku: 'SKU-U', qty: 4, from: 'T1', to: 'T2', timeoutSeconds: 2 });
    await event('T1', { type: 'shipped', sku: 'SKU-U', qty: 3, reservation: t.body.id });
    assert.equal((await stock('SKU-U')).inTransit, 3);
    await seen.waitFor(
      () => alertsOf('alerts/T2/transfer-timeout').some((a) => a.message.includes(t.body.id)),
      10_000,
      'transfer-timeout at the destination',
    );
    assert.ok(
      alertsOf('alerts/T1/transfer-timeout').some(
        (a) => a.message.includes(t.body.id) && /shipped 3, received 0\): 1 released/.test(a.message),
      ),
    );
    const g = await stock('SKU-U');
    assert.deepEqual([(await get(t.body.id)).state, g.inTransit, g.warehouses.T1?.reserved], ['compensated', 0, 0]);
    await seen.waitFor(
      () => (seen.last('stock/SKU-U') as GlobalStock | undefined)?.inTransit === 0,
      5_000,
      'stock/SKU-U without the transfer',
    );
    // The goods arrive after all: a receipt (fact), an alert, the transfer stays compensated.
    await event('T2', { type: 'received', sku: 'SKU-U', qty: 3, transfer: t.body.id });
    assert.equal((await get(t.body.id)).state, 'compensated');
  });

  it('cancel: only before anything was shipped or received (204, again 204), else 409; its hold cannot be released as a reservation', async () => {
    const t = await transfer({ sku: 'SKU-U', qty: 2, from: 'T1', to: 'T2' });
    const asHold = await api<ErrorAnswer>('DELETE', `/v1/reservations/${t.body.id}`);
    assert.deepEqual([asHold.status, asHold.body.error.code], [409, 'invalid_state']);
    assert.equal((await api('DELETE', `/v1/transfers/${t.body.id}`)).status, 204);
    assert.equal((await api('DELETE', `/v1/transfers/${t.body.id}`)).status, 204);
    assert.equal((await get(t.body.id)).state, 'cancelled');
    assert.equal((await stock('SKU-U')).warehouses.T1?.reserved, 0);
    const s = await transfer({ sku: 'SKU-U', qty: 2, from: 'T1', to: 'T2' });
    await event('T1', { type: 'shipped', sku: 'SKU-U', qty: 1, reservation: s.body.id });
    const late = await api<ErrorAnswer>('DELETE', `/v1/transfers/${s.body.id}`);
    assert.deepEqual([late.status, late.body.error.code], [409, 'invalid_state']);
    assert.equal((await api('DELETE', '/v1/transfers/t-nope')).status, 404);
  });

  it('bad input answers 400/404 naming the field, not enough at the source 409; none of them changes anything', async () => {
    const count = async () =>
      (
        await pool.query(
          `SELECT (SELECT count(*) FROM transfers)::int AS t, (SELECT sum(reserved) FROM stock)::int AS r, (SELECT count(*) FROM idempotency_keys)::int AS k`,
        )
      ).rows[0];
    const before = await count();
    const cases: [unknown, string | undefined, number, string, string | undefined][] = [
      [{ sku: 'SKU-T', qty: 1, from: 'T1', to: 'T2' }, undefined, 400, 'bad_request', 'Idempotency-Key'],
      [{ sku: 'SKU-T', qty: 1, from: 'T1', to: 'T1' }, 'b1', 400, 'bad_request', 'to'],
      [{ sku: 'SKU-T', qty: 0, from: 'T1', to: 'T2' }, 'b2', 400, 'bad_request', 'qty'],
      [{ sku: 'SKU-T', qty: 1, from: 'T1' }, 'b3', 400, 'bad_request', 'to'],
      [{ sku: 'SKU-T', qty: 1, from: 'T1', to: 'T9' }, 'b4', 404, 'not_found', 'to'],
      [{ sku: 'SKU-T', qty: 1, from: 'T9', to: 'T2' }, 'b5', 404, 'not_found', 'from'],
      [{ sku: 'SKU-NONE', qty: 1, from: 'T1', to: 'T2' }, 'b6', 404, 'not_found', 'sku'],
    ];
    for (const [json, key, status, code, field] of cases) {
      const r = await api<ErrorAnswer>('POST', '/v1/transfers', { json, ...(key && { key }) });
      assert.deepEqual([r.status, r.body.error.code, r.body.error.field], [status, code, field], JSON.stringify(json));
    }
    assert.deepEqual(await count(), before);
    const big = await transfer({ sku: 'SKU-T', qty: 1_000, from: 'T1', to: 'T2' });
    assert.deepEqual([big.status, big.body.error.code], [409, 'insufficient_stock']);
  });
});
