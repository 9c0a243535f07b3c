import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { Registry } from 'prom-client';
import { createEdgeMetrics, type EdgeMetrics } from '../../gateway/metrics.js';
import fc from 'fast-check';
import { DownlinkMirror, kindOf, orderOf } from '../../gateway/mirror.js';
import { SqliteOutbox, type RetainedRow, type RetainedStore } from '../../gateway/outbox/index.js';
import { topicMatches } from '../../protocol/index.js';
import { pinFastCheck } from '../helpers/seed.js';

pinFastCheck('gateway/mirror');

const silent = pino({ level: 'silent' });
const stock = (sku: string, version: number, onHand = version) =>
  Buffer.from(
    JSON.stringify({
      sku,
      warehouse: 'W1',
      onHand,
      reserved: 0,
      available: onHand,
      version,
      asOf: '2026-11-26T08:00:00.000Z',
    }),
  );
const shelf = (ts: string, qty: number) =>
  Buffer.from(JSON.stringify({ sku: 'A', warehouse: 'W1', location: 'L1', qty, ts, device: 'shelf-1' }));

interface Published {
  topic: string;
  payload: string;
  retain: boolean;
}

/** A mirror whose broker is a list of what it published. */
function mirrorOn(store: RetainedStore, saveEveryMs = 60_000) {
  const registry = new Registry();
  const metrics = createEdgeMetrics(registry);
  const published: Published[] = [];
  const mirror = new DownlinkMirror({
    store,
    metrics,
    log: silent,
    saveEveryMs,
    publish: async (topic, payload, retain) => void published.push({ topic, payload: payload.toString(), retain }),
  });
  const value = async (m: keyof EdgeMetrics, labels: Record<string, string> = {}) =>
    (await metrics[m].get()).values.find((v) =>
      Object.entries(labels).every(([k, l]) => (v.labels as Record<string, string | number | undefined>)[k] === l),
    )?.value ?? 0;
  return { mirror, published, value };
}

let dir: string;
let files = 0;
const freshStore = () => SqliteOutbox.open({ path: join(dir, `mirror-${++files}.db`), maxBytes: 1 << 20 });
before(async () => (dir = await mkdtemp(join(tmpdir(), 'stockwire-mirror-'))));
after(async () => rm(dir, { recursive: true, force: true }));

describe('kindOf', () => {
  // The mirror's filters, matched one by one in the order the mirror tried them before kindOf split the topic once.
  const byFilters = (topic: string) =>
    topicMatches('wh/+/dev/+/ack', topic)
      ? 'ack'
      : topicMatches('alerts/+/+', topic)
        ? 'alert'
        : topicMatches('stock/+', topic) || topicMatches('wh/+/stock/+', topic)
          ? 'stock'
          : topicMatches('wh/+/shelf/+/+', topic)
            ? 'shelf'
            : null;

  test('names what the filters name, for any topic of those levels', () => {
    const level = fc.constantFrom('wh', 'W1', 'stock', 'dev', 'ack', 'shelf', 'alerts', 'L1', '', 'x+');
    fc.assert(
      fc.property(fc.array(level, { minLength: 1, maxLength: 6 }), (levels) => {
        const topic = levels.join('/');
        assert.equal(kindOf(topic), byFilters(topic), topic);
      }),
      { numRuns: 5_000 },
    );
  });

  test('a sku called ack is stock, an ack of another shape is nothing', () => {
    assert.equal(kindOf('wh/W1/stock/ack'), 'stock');
    assert.equal(kindOf('stock/ack'), 'stock');
    assert.equal(kindOf('wh/W1/dev/D1/ack'), 'ack');
    assert.equal(kindOf('wh/W1/dev/ack'), null);
    assert.equal(kindOf('alerts/W1/negative-stock'), 'alert');
    assert.equal(kindOf('wh/W1/status'), null);
  });
});

describe('orderOf', () => {
  test('a stock topic is ordered by its version, a shelf reading by its time; anything else has no order', () => {
    assert.equal(orderOf('wh/W1/stock/A', stock('A', 7)), 7);
    assert.equal(orderOf('stock/A', Buffer.from('{"sku":"A","version":12}')), 12);
    assert.equal(
      orderOf('wh/W1/shelf/L1/A', shelf('2026-11-26T08:00:00.000Z', 3)),
      Date.parse('2026-11-26T08:00:00.000Z'),
    );
    assert.equal(orderOf('wh/W1/stock/A', Buffer.from('not json')), null);
    assert.equal(orderOf('wh/W1/stock/A', Buffer.from('{"version":"7"}')), null);
    assert.equal(orderOf('wh/W1/stock/A', Buffer.from('null')), null);
    assert.equal(orderOf('wh/W1/shelf/L1/A', Buffer.from('{"ts":"yesterday"}')), null);
    assert.equal(orderOf('wh/W1/status', Buffer.from('{"version":3}')), null);
  });
});

describe('DownlinkMirror', () => {
  test('republishes retained; an older version is dropped and counted, the same version is not published again; acks pass plainly and are not kept', async () => {
    const store = await freshStore();
    const { mirror, published, value } = mirrorOn(store);
    mirror.offer('wh/W1/stock/A', stock('A', 5));
    mirror.offer('wh/W1/stock/A', stock('A', 4));
    mirror.offer('wh/W1/stock/A', stock('A', 5));
    mirror.offer('wh/W1/stock/A', stock('A', 6));
    mirror.offer('wh/W1/shelf/L1/A', shelf('2026-11-26T08:00:00.000Z', 3));
    mirror.offer('wh/W1/shelf/L1/A', shelf('2026-11-26T07:00:00.000Z', 9));
    mirror.offer('wh/W1/dev/scan-1/ack', Buffer.from('{"id":"e1","status":"applied"}'));
    mirror.offer('wh/W1/stock/ack', stock('ack', 1)); // a sku named ack is a stock topic
    assert.deepEqual(
      published.map((p) => [
        p.topic,
        JSON.parse(p.payload).version ?? JSON.parse(p.payload).qty ?? JSON.parse(p.payload).id,
        p.retain,
      ]),
      [
        ['wh/W1/stock/A', 5, true],
        ['wh/W1/stock/A', 6, true],
        ['wh/W1/shelf/L1/A', 3, true],
        ['wh/W1/dev/scan-1/ack', 'e1', false],
        ['wh/W1/stock/ack', 1, true],
      ],
    );
    assert.equal(await value('mirrorOlder'), 2);
    assert.equal(
      await value('mirrorUnsaved'),
      3,
      'stock A, stock ack and shelf A wait for their write; the ack is not kept',
    );
    await mirror.stop();
    assert.equal(await value('mirrorUnsaved'), 0);
    assert.deepEqual(
      (await store.loadRetained('', 10)).map((r) => [r.topic, r.order]),
      [
        ['wh/W1/shelf/L1/A', Date.parse('2026-11-26T08:00:00.000Z')],
        ['wh/W1/stock/A', 6],
        ['wh/W1/stock/ack', 1],
      ],
    );
    await store.close();
  });

  test('restore serves what was kept, retained, and an older value from central after it is still dropped', async () => {
    const store = await freshStore();
    const first = mirrorOn(store);
    first.mirror.offer('stock/A', stock('A', 8));
    first.mirror.offer('wh/W1/stock/B', stock('B', 3));
    first.mirror.offer('wh/W1/stock/C', Buffer.from('{"unversioned":true}'));
    await first.mirror.stop();

    const second = mirrorOn(store);
    assert.equal(await second.mirror.restore(), 3);
    assert.equal(await second.value('mirrorRestored'), 3);
    assert.deepEqual(
      second.published.map((p) => [p.topic, p.retain]),
      [
        ['stock/A', true],
        ['wh/W1/stock/B', true],
        ['wh/W1/stock/C', true],
      ],
    );
    second.mirror.offer('stock/A', stock('A', 7)); // a stale copy in central's broker
    second.mirror.offer('wh/W1/stock/B', stock('B', 4));
    second.mirror.offer('wh/W1/stock/C', Buffer.from('{"unversioned":"again"}')); // no order: replaces
    assert.deepEqual(
      second.published.slice(3).map((p) => p.topic),
      ['wh/W1/stock/B', 'wh/W1/stock/C'],
    );
    assert.equal(await second.value('mirrorOlder'), 1);
    await second.mirror.stop();
    assert.deepEqual(
      (await store.loadRetained('', 10)).map((r) => [r.topic, r.order]),
      [
        ['stock/A', 8],
        ['wh/W1/stock/B', 4],
        ['wh/W1/stock/C', null],
      ],
    );
    await store.close();
  });

  test('an empty retained payload (MQTT: no retained message) is passed on and removes the kept value', async () => {
    const store = await freshStore();
    const { mirror, published } = mirrorOn(store);
    mirror.offer('wh/W1/stock/A', stock('A', 2));
    await mirror.save();
    mirror.offer('wh/W1/stock/A', Buffer.alloc(0));
    await mirror.stop();
    assert.deepEqual(
      published.map((p) => [p.topic, p.payload.length, p.retain]),
      [
        ['wh/W1/stock/A', stock('A', 2).length, true],
        ['wh/W1/stock/A', 0, true],
      ],
    );
    assert.deepEqual(await store.loadRetained('', 10), []);
    await store.close();
  });

  test('changes are written together on a timer, not one write per message', async () => {
    const writes: number[] = [];
    let wrote: () => void = () => {};
    const written = new Promise<void>((resolve) => (wrote = resolve));
    const store: RetainedStore = {
      saveRetained: async (rows) => {
        writes.push(rows.length);
        wrote();
        return rows.length;
      },
      loadRetained: async () => [],
    };
    const { mirror } = mirrorOn(store, 20);
    for (let v = 1; v <= 50; v++) mirror.offer('wh/W1/stock/A', stock('A', v));
    mirror.offer('wh/W1/stock/B', stock('B', 1));
    await written;
    assert.deepEqual(writes, [2], 'one write, with the newest value of each topic');
    await mirror.stop();
  });

  test('a failed write keeps the rows (a newer value of a topic wins) and they are written by the next save', async () => {
    const saved: RetainedRow[][] = [];
    let failures = 1;
    const store: RetainedStore = {
      saveRetained: async (rows) => {
        if (failures-- > 0) throw new Error('disk I/O error');
        saved.push([...rows]);
        return rows.length;
      },
      loadRetained: async () => [],
    };
    const { mirror, value } = mirrorOn(store);
    mirror.offer('wh/W1/stock/A', stock('A', 1));
    mirror.offer('wh/W1/stock/B', stock('B', 1));
    const failing = mirror.save();
    mirror.offer('wh/W1/stock/A', stock('A', 2)); // arrives while the failing write is in flight
    await failing;
    assert.equal(await value('mirrorErrors', { op: 'save' }), 1);
    assert.equal(await value('mirrorUnsaved'), 2);
    await mirror.stop();
    assert.deepEqual(
      saved.map((rows) => rows.map((r) => [r.topic, r.order])),
      [
        [
          ['wh/W1/stock/A', 2],
          ['wh/W1/stock/B', 1],
        ],
      ],
    );
    assert.equal(await value('mirrorUnsaved'), 0);
  });

  test('a store that cannot be read at start leaves the mirror empty but working, counted and logged', async () => {
    const store: RetainedStore = {
      saveRetained: async (rows) => rows.length,
      loadRetained: async (after) => {
        if (after !== '') throw new Error('database disk image is malformed');
        return Array.from({ length: 2_000 }, (_, i) => ({
          topic: `stock/S${String(i).padStart(5, '0')}`,
          order: 1,
          payload: stock(`S${i}`, 1),
        }));
      },
    };
    const { mirror, published, value } = mirrorOn(store);
    assert.equal(await mirror.restore(), 2_000, 'the first page was served');
    assert.equal(await value('mirrorErrors', { op: 'restore' }), 1);
    mirror.offer('stock/S00000', stock('S0', 2));
    assert.equal(published.at(-1)?.topic, 'stock/S00000');
    await mirror.stop();
  });
});
