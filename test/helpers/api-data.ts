import type { MqttClient } from 'mqtt';
import { registerDisplay } from '../../dashboards/display/serve.js';
import type { Ack } from '../../protocol/index.js';
import { startCentralFixture, type CentralFixture } from './central.js';
import { call, type HttpAnswer } from './http.js';
import { Collector, connect } from './mqtt.js';

/**
 * A central (with the live display, as `stockwire central` serves it) holding data of every kind the HTTP
 * API lists: stock in WA (one row negative, its edge online), WB (its status topic holding something that is not a
 * LinkStatus) and WD (no status), WC known only by its edge's status (offline); holds active, split, released and a
 * transfer's; transfers reserved, in transit and cancelled.
 */
export interface ApiData {
  fixture: CentralFixture;
  base: string;
  token: string;
  /** WA, WB and WD have stock; WC only a link status */
  warehouses: string[];
  skus: string[];
  reservations: { active: string; split: string; released: string };
  transfers: { reserved: string; inTransit: string; cancelled: string };
  /** an authorised call of the API (the write token reads too) */
  api<T = Record<string, unknown>>(
    method: string,
    path: string,
    o?: { json?: unknown; key?: string },
  ): Promise<HttpAnswer<T>>;
  stop(): Promise<void>;
}

const GATEWAYS = ['WB', 'WC', 'WD'].map((wh) => ({
  id: `gw-${wh.toLowerCase()}`,
  warehouse: wh,
  kind: 'gateway' as const,
  password: `pw-gateway-${wh}`,
}));

export async function startCentralWithData(name: string): Promise<ApiData> {
  const fixture = await startCentralFixture({
    name,
    wh: 'WA',
    gateway: { id: 'gw-wa', password: 'pw-gateway-WA' },
    devices: GATEWAYS,
    options: { httpRoutes: (app, ports) => registerDisplay(app, { scope: { role: 'central' }, wsPort: ports.ws }) },
  });
  const base = `http://127.0.0.1:${fixture.ports.http}`;
  const token = fixture.central.apiToken;
  const url = `mqtt://127.0.0.1:${fixture.ports.mqtt}`;
  const others: MqttClient[] = [];
  for (const g of GATEWAYS) others.push(await connect(url, g.id, g.password, { clientId: g.id }));
  const [gwB, gwC, gwD] = others as [MqttClient, MqttClient, MqttClient];
  const acksB = new Collector<Ack>(gwB, 'wh/WB/dev/+/ack');
  await gwB.subscribeAsync('wh/WB/dev/+/ack', { qos: 1 });

  const event = (client: MqttClient, wh: string, id: string, body: Record<string, unknown>) =>
    client.publishAsync(`wh/${wh}/dev/scan-1/event`, JSON.stringify({ v: 1, id, ...body }), { qos: 1 });
  const committed = async (acks: Collector<Ack>, ids: string[]) =>
    acks.waitFor(
      () => ids.every((id) => acks.messages.some((m) => m.payload.id === id)),
      10_000,
      `acks of ${ids.join(', ')}`,
    );

  const inA: [string, string, number][] = [
    ['a1', 'SKU-1', 10],
    ['a2', 'SKU-2', 5],
    ['a3', 'SKU-3', 20],
    ['a4', 'SKU-4', 1],
  ];
  for (const [id, sku, qty] of inA) await event(fixture.gateway, 'WA', id, { type: 'received', sku, qty });
  await event(fixture.gateway, 'WA', 'a5', { type: 'shipped', sku: 'SKU-4', qty: 3 }); // onHand −2: events are facts
  const inB: [string, string, number][] = [
    ['b1', 'SKU-1', 4],
    ['b2', 'SKU-2', 8],
    ['b3', 'SKU-5', 7],
  ];
  for (const [id, sku, qty] of inB) await event(gwB, 'WB', id, { type: 'received', sku, qty });
  await committed(fixture.acks, ['a1', 'a2', 'a3', 'a4', 'a5']);
  await committed(acksB, ['b1', 'b2', 'b3']);
  const acksD = new Collector<Ack>(gwD, 'wh/WD/dev/+/ack');
  await gwD.subscribeAsync('wh/WD/dev/+/ack', { qos: 1 });
  await event(gwD, 'WD', 'd1', { type: 'received', sku: 'SKU-1', qty: 1 });
  await committed(acksD, ['d1']);

  // Link statuses as edges publish them at central: retained, on their own warehouse's topic.
  const since = new Date().toISOString();
  await fixture.gateway.publishAsync('wh/WA/status', JSON.stringify({ central: 'online', since, backlog: 2 }), {
    qos: 1,
    retain: true,
  });
  await gwC.publishAsync('wh/WC/status', JSON.stringify({ central: 'offline', since, backlog: 41 }), {
    qos: 1,
    retain: true,
  });
  await gwB.publishAsync('wh/WB/status', 'not a status', { qos: 1, retain: true });

  const api = <T = Record<string, unknown>>(method: string, path: string, o: { json?: unknown; key?: string } = {}) =>
    call<T>(base, method, path, { ...o, token });
  const created = async (path: string, key: string, json: unknown) => {
    const res = await api<{ id: string }>('POST', path, { json, key });
    if (res.status !== 201)
      throw new Error(`POST ${path} ${JSON.stringify(json)}: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body.id;
  };
  const active = await created('/v1/reservations', 'seed-r1', { sku: 'SKU-1', qty: 2, warehouse: 'WA' });
  const split = await created('/v1/reservations', 'seed-r2', { sku: 'SKU-2', qty: 10, split: true });
  const released = await created('/v1/reservations', 'seed-r3', { sku: 'SKU-3', qty: 1, warehouse: 'WA' });
  if ((await api('DELETE', `/v1/reservations/${released}`)).status !== 204) throw new Error('release failed');
  const reserved = await created('/v1/transfers', 'seed-t1', { sku: 'SKU-3', qty: 4, from: 'WA', to: 'WB' });
  const inTransit = await created('/v1/transfers', 'seed-t2', { sku: 'SKU-5', qty: 2, from: 'WB', to: 'WA' });
  await event(gwB, 'WB', 'b4', { type: 'shipped', sku: 'SKU-5', qty: 2, reservation: inTransit });
  await committed(acksB, ['b4']);
  const cancelled = await created('/v1/transfers', 'seed-t3', { sku: 'SKU-1', qty: 1, from: 'WB', to: 'WA' });
  if ((await api('DELETE', `/v1/transfers/${cancelled}`)).status !== 204) throw new Error('cancel failed');

  return {
    fixture,
    base,
    token,
    warehouses: ['WA', 'WB', 'WC', 'WD'],
    skus: ['SKU-1', 'SKU-2', 'SKU-3', 'SKU-4', 'SKU-5'],
    reservations: { active, split, released },
    transfers: { reserved, inTransit, cancelled },
    api,
    async stop() {
      for (const c of others) await c.endAsync();
      await fixture.stop();
    },
  };
}
