import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import type { LinkStatus, WarehouseStock } from '../../protocol/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { Collector, connect } from '../helpers/mqtt.js';
import { freePort } from '../helpers/process.js';
import { metric, Proc, until } from '../faults/cluster.js';

// Issue 15, item 7: "displays in a cut-off warehouse keep the last known values" (README) must hold across a
// restart of the edge. Real processes: central and edge are `stockwire` processes, killed with SIGKILL.
const WH = `LV${randomBytes(3).toString('hex')}`;

type Retained = { sku?: string; version?: number; onHand?: number; qty?: number; central?: string };
const FILTERS = [`wh/${WH}/stock/#`, `wh/${WH}/shelf/#`, 'stock/#', `wh/${WH}/status`];
const MIRRORED = [
  `wh/${WH}/stock/SKU-A`,
  `wh/${WH}/stock/SKU-B`,
  'stock/SKU-A',
  'stock/SKU-B',
  `wh/${WH}/shelf/L1/SKU-A`,
];

describe('last known values across a kill -9 of the edge while central is unreachable (issue 15, item 7)', () => {
  let db: TestDatabase;
  let files: { dir: string; file: string };
  let central: Proc;
  let edge: Proc;
  let edgeUrl: string;
  const clients: MqttClient[] = [];
  const client = async (url: string, id: string) => {
    const c = await connect(url, id, `pw-${id}`);
    c.on('error', () => {}); // a killed edge drops them; each phase connects anew
    clients.push(c);
    return c;
  };
  /** A display at the edge, subscribed to what an edge display may read. */
  const display = async () => {
    const c = await client(edgeUrl, 'disp');
    const seen = new Collector<Retained>(c, FILTERS);
    await c.subscribeAsync(FILTERS, { qos: 1 });
    return seen;
  };

  // Proc unrefs its processes (faults/cluster.ts): while a killed edge's clients close before its exit is reported,
  // nothing else would hold the event loop, and the runner would cancel the test as finished.
  let holdLoop: NodeJS.Timeout;

  before(async () => {
    holdLoop = setInterval(() => {}, 60_000);
    db = await createTestDatabase('last_values');
    files = await writeDevices([
      { id: 'gw', warehouse: WH, kind: 'gateway', password: 'pw-gw' },
      { id: 'scan', warehouse: WH, kind: 'scanner', password: 'pw-scan' },
      { id: 'shelf', warehouse: WH, kind: 'shelf', password: 'pw-shelf' },
      { id: 'disp', warehouse: WH, kind: 'display', password: 'pw-disp' },
      { id: 'proc', warehouse: WH, kind: 'processor', password: 'pw-proc' },
    ]);
    const [centralPort, edgePort] = [await freePort(), await freePort()];
    edgeUrl = `mqtt://127.0.0.1:${edgePort}`;
    const env = { DATABASE_URL: db.url };
    central = new Proc(
      'central',
      () => [
        'central',
        '--mqtt-port',
        String(centralPort),
        '--ws-port',
        '0',
        '--http-port',
        '0',
        '--host',
        '127.0.0.1',
        '--devices-file',
        files.file,
        '--data-dir',
        files.dir,
      ],
      env,
    );
    edge = new Proc(
      'edge',
      () => [
        'edge',
        '--warehouse',
        WH,
        '--devices-file',
        files.file,
        '--data-dir',
        path.join(files.dir, 'edge'),
        '--mqtt-port',
        String(edgePort),
        '--ws-port',
        '0',
        '--http-port',
        '0',
        '--host',
        '127.0.0.1',
        '--central-url',
        `mqtt://127.0.0.1:${centralPort}`,
        '--central-username',
        'gw',
        '--central-password',
        'pw-gw',
        '--keepalive',
        '3',
      ],
      env,
    );
  });
  after(async () => {
    for (const c of clients) await c.endAsync(true);
    await edge?.stop();
    await central?.stop();
    await db?.drop();
    clearInterval(holdLoop);
  });

  it('restarted, the edge serves every last value with status offline; central back, newer versions replace them and an older one never does', {
    timeout: 300_000,
  }, async () => {
    await central.start();
    await edge.start();
    // 1. Central is up: scans and a shelf reading reach it, and the edge mirrors the stock and shelf topics.
    const scan = await client(edgeUrl, 'scan');
    const shelf = await client(edgeUrl, 'shelf');
    const first = await display();
    for (const [id, sku, qty] of [
      ['a1', 'SKU-A', 5],
      ['b1', 'SKU-B', 7],
      ['a2', 'SKU-A', 2],
    ] as const) {
      await scan.publishAsync(`wh/${WH}/dev/scan/event`, JSON.stringify({ v: 1, id, type: 'received', sku, qty }), {
        qos: 1,
      });
    }
    await shelf.publishAsync(
      `wh/${WH}/dev/shelf/event`,
      JSON.stringify({ v: 1, id: 'l1', type: 'level', sku: 'SKU-A', qty: 4, location: 'L1' }),
      { qos: 1 },
    );
    const has = (seen: Collector<Retained>, topic: string, pred: (m: Retained) => boolean) =>
      seen.messages.some((m) => m.topic === topic && pred(m.payload));
    await first.waitFor(
      () =>
        has(first, `wh/${WH}/stock/SKU-A`, (m) => m.onHand === 7) &&
        has(first, 'stock/SKU-A', (m) => m.onHand === 7) &&
        has(first, `wh/${WH}/stock/SKU-B`, (m) => m.onHand === 7) &&
        has(first, 'stock/SKU-B', (m) => m.onHand === 7) &&
        has(first, `wh/${WH}/shelf/L1/SKU-A`, (m) => m.qty === 4),
      30_000,
      'the stock and shelf topics mirrored at the edge',
    );
    const last = Object.fromEntries(MIRRORED.map((t) => [t, first.last(t) as Retained]));
    // What the display saw was published by the mirror, which marks it for its next write: once nothing waits, it is on disk.
    // (Written as "none waits" rather than "=== 0", so an edge without the gauge fails below, where it matters.)
    await until(
      async () => !((await metric(edge.current, 'stockwire_edge_mirror_unsaved_topics')) > 0),
      30_000,
      'the mirror written to the outbox file',
    );

    // 2. Central goes away, then the edge is killed and started again while central is still unreachable.
    await central.kill9();
    await first.waitFor(
      () => first.last(`wh/${WH}/status`)?.central === 'offline',
      30_000,
      'the edge saying central is offline',
    );
    await edge.kill9();
    await edge.start();
    const second = await display();
    await second.waitFor(
      () => MIRRORED.every((t) => second.last(t) !== undefined) && second.last(`wh/${WH}/status`) !== undefined,
      30_000,
      'every last known value from the restarted edge',
    );
    for (const t of MIRRORED) assert.deepEqual(second.last(t), last[t], `${t}: the last value before the kill`);
    assert.ok(
      second.messages.filter((m) => MIRRORED.includes(m.topic)).every((m) => m.retain),
      'served as retained values',
    );
    const status = second.last(`wh/${WH}/status`) as LinkStatus;
    assert.equal(status.central, 'offline', 'marked stale: the edge says central is unreachable');
    assert.ok(
      Number.isFinite(Date.parse((second.last(`wh/${WH}/stock/SKU-A`) as WarehouseStock).asOf)),
      'and each stock value carries its asOf',
    );
    assert.equal(await metric(edge.current, 'stockwire_edge_mirror_restored_topics'), MIRRORED.length);

    // 3. Central is back: a newer version replaces the last value.
    await central.start();
    await second.waitFor(() => second.last(`wh/${WH}/status`)?.central === 'online', 30_000, 'the edge back online');
    const scanAgain = await client(edgeUrl, 'scan');
    await scanAgain.publishAsync(
      `wh/${WH}/dev/scan/event`,
      JSON.stringify({ v: 1, id: 'a3', type: 'received', sku: 'SKU-A', qty: 1 }),
      { qos: 1 },
    );
    await second.waitFor(
      () => second.last(`wh/${WH}/stock/SKU-A`)?.onHand === 8 && second.last('stock/SKU-A')?.onHand === 8,
      30_000,
      'the newer stock of SKU-A',
    );
    assert.ok(
      (second.last(`wh/${WH}/stock/SKU-A`)?.version ?? 0) > (last[`wh/${WH}/stock/SKU-A`]?.version ?? Infinity),
    );

    // 4. An older version of SKU-B at central (as several processors can leave one): never served, live or after a restart.
    const versionB = last[`wh/${WH}/stock/SKU-B`]?.version as number;
    const older: WarehouseStock = {
      sku: 'SKU-B',
      warehouse: WH,
      onHand: 999,
      reserved: 0,
      available: 999,
      version: versionB - 1,
      asOf: new Date().toISOString(),
    };
    const proc = await connect(centralUrl(central), 'proc', 'pw-proc');
    clients.push(proc);
    await proc.publishAsync(`wh/${WH}/stock/SKU-B`, JSON.stringify(older), { qos: 1, retain: true });
    await until(
      async () => (await metric(edge.current, 'stockwire_edge_mirror_older_dropped_total')) >= 1,
      30_000,
      'the edge dropping the older version',
    );
    const servedB = (seen: Collector<Retained>) =>
      seen.messages.filter((m) => m.topic === `wh/${WH}/stock/SKU-B`).map((m) => m.payload.version);
    assert.deepEqual(servedB(second), [versionB], 'the display never saw the older version');
    await edge.stop(); // and central's broker keeps the older copy retained: it comes again on the next connection
    await edge.start();
    const third = await display();
    await until(
      async () => (await metric(edge.current, 'stockwire_edge_mirror_older_dropped_total')) >= 1,
      30_000,
      'the restarted edge dropping the older copy again',
    );
    await third.waitFor(() => third.last(`wh/${WH}/stock/SKU-B`) !== undefined, 30_000, 'SKU-B at the restarted edge');
    assert.deepEqual(servedB(third), [versionB], 'after a restart too');
  });
});

function centralUrl(central: Proc): string {
  return `mqtt://127.0.0.1:${central.ports.mqtt}`;
}
