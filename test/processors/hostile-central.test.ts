import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Ack, GlobalStock, WarehouseStock } from '../../protocol/index.js';
import { startCentralFixture, type CentralFixture } from '../helpers/central.js';
import { call } from '../helpers/http.js';
import { Collector, connect } from '../helpers/mqtt.js';

// Issue 15, "Hold against hostile clients", at central: what a gateway (an old edge, or a hostile one) sends.
const WH = 'HC1';
const MIN = 60_000; // ms
let f: CentralFixture;
let base: string;

const event = (fields: Record<string, unknown>) => JSON.stringify({ v: 1, sku: 'SKU-F', ...fields });
async function send(device: string, payload: string): Promise<Ack> {
  const id = (JSON.parse(payload) as { id: string }).id;
  await f.gateway.publishAsync(`wh/${WH}/dev/${device}/event`, payload, { qos: 1 });
  await f.acks.waitFor(() => f.acks.messages.some((m) => m.payload.id === id), 10_000, `the ack of ${id}`);
  return f.acks.messages.find((m) => m.payload.id === id)?.payload as Ack;
}

describe('central against a hostile gateway', () => {
  before(async () => {
    f = await startCentralFixture({
      name: 'hostile_central',
      wh: WH,
      gateway: { id: 'gw-hc', password: 'pw-gateway-hc' },
      devices: [{ id: 'proc-hc', warehouse: WH, kind: 'processor', password: 'pw-processor-hc' }],
    });
    base = `http://127.0.0.1:${f.ports.http}`;
  });
  after(async () => f?.stop());

  it('a count forwarded with ts year 9999 does not become an anchor no later event can supersede', async () => {
    const before = Date.now();
    // The shape: nearly 8 KiB, numbers that grow when re-serialised, so an old edge forwarded it raw.
    const head = event({ id: 'phantom-1', type: 'counted', qty: 1_000_000, ts: '9999-12-31T23:59:59Z' }).slice(0, -1);
    const raw = `${head},"n":[${Array(1_600).fill('1e20').join(',')}]}`;
    assert.ok(Buffer.byteLength(raw) <= 8 * 1024);
    assert.equal((await send('scan-1', raw)).status, 'applied');
    const { rows } = await f.pool.query<{ ts: Date }>(`SELECT ts FROM events WHERE id = 'phantom-1'`);
    const ts = rows[0]?.ts.getTime() ?? Infinity;
    assert.ok(
      ts >= before && ts <= Date.now() + 10 * MIN,
      `stored ts ${rows[0]?.ts.toISOString()} is not trusted beyond 10 min ahead of central`,
    );
    // The next count supersedes it, and a delta after that adds (both without ts: central's receipt time).
    assert.equal((await send('scan-2', event({ id: 'recount-1', type: 'counted', qty: 3 }))).status, 'applied');
    assert.equal((await send('scan-2', event({ id: 'recv-1', type: 'received', qty: 2 }))).status, 'applied');
    const stock = await call<WarehouseStock>(base, 'GET', `/v1/warehouses/${WH}/stock/SKU-F`);
    assert.equal(stock.body.onHand, 5, JSON.stringify(stock.body));
  });

  it('a gateway-forwarded ts a few minutes ahead (an edge clock slightly fast) still stands', async () => {
    const ahead = Date.now() + 7 * MIN;
    assert.equal(
      (await send('scan-3', event({ id: 'fast-1', type: 'received', qty: 1, sku: 'SKU-G', ts: ahead }))).status,
      'applied',
    );
    const { rows } = await f.pool.query<{ ts: Date }>(`SELECT ts FROM events WHERE id = 'fast-1'`);
    assert.equal(rows[0]?.ts.getTime(), ahead);
  });

  it('retain on an event topic is dropped: a later subscriber gets no event replayed, only the retained stock topic', async () => {
    const topic = `wh/${WH}/dev/scan-r/event`;
    const big = event({ id: 'retain-big', type: 'received', qty: 1, sku: 'SKU-R', pad: 'p'.repeat(60_000) });
    await f.gateway.publishAsync(topic, big, { qos: 1, retain: true });
    assert.equal(
      (await send('scan-r', event({ id: 'retain-1', type: 'received', qty: 4, sku: 'SKU-R' }))).status,
      'applied',
    );
    await f.gateway.publishAsync(topic, event({ id: 'retain-2', type: 'received', qty: 1, sku: 'SKU-R' }), {
      qos: 1,
      retain: true,
    });
    await f.acks.waitFor(() => f.acks.messages.some((m) => m.payload.id === 'retain-2'));
    const reader = await connect(`mqtt://127.0.0.1:${f.ports.mqtt}`, 'proc-hc', 'pw-processor-hc');
    try {
      const seen = new Collector<GlobalStock | { id: string }>(reader, [`wh/${WH}/dev/+/event`, 'stock/SKU-R']);
      // One SUBSCRIBE: the broker sends the retained messages of its filters in their order, events first.
      await reader.subscribeAsync([`wh/${WH}/dev/+/event`, 'stock/SKU-R'], { qos: 1 });
      await seen.waitFor(
        () => seen.messages.some((m) => m.topic === 'stock/SKU-R'),
        10_000,
        'the retained stock topic',
      );
      assert.deepEqual(
        seen.messages.map((m) => m.topic),
        ['stock/SKU-R'],
        'no event retained',
      );
    } finally {
      await reader.endAsync();
    }
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /^stockwire_broker_retain_dropped_total\{kind="gateway"\} 2$/m);
  });
});
