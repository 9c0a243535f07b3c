import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { Movements } from '../../protocol/index.js';
import { migrate } from '../../processors/db/migrate.js';
import { createPool } from '../../processors/db/pool.js';
import { createApi } from '../../processors/http.js';
import type { TestDatabase } from '../helpers/db.js';
import { call } from '../helpers/http.js';
import { insertEvents, refreshMovements, SEED_EVENTS } from '../helpers/ledger-seed.js';
import { TEST_SERVERS } from '../helpers/timescale.js';

const READ_TIMEOUT_MS = 500; // the read pool's statement timeout here, short so the 503 test is quick
type Row = Movements['movements'][number];
const ZERO = {
  received: 0,
  shipped: 0,
  returned: 0,
  adjusted: 0,
  counts: 0,
  countCorrection: 0,
  net: 0,
  change: 0,
  events: 0,
};
const row = (bucket: string, r: Partial<Row>): Row => ({ ...ZERO, bucket, ...r });

for (const server of TEST_SERVERS) {
  describe(`GET /v1/movements on ${server.name}`, () => {
    let db: TestDatabase;
    let pool: pg.Pool;
    let readPool: pg.Pool;
    let app: FastifyInstance;
    let base: string;
    const get = (path: string) =>
      call<Movements & { error: { code: string; field?: string; message: string } }>(base, 'GET', path);

    before(async () => {
      db = await server.createDatabase('movements');
      pool = createPool({ url: db.url, max: 3 });
      const schema = await migrate(pool);
      assert.equal(
        schema.timescale,
        server.timescale,
        `${server.name}: migrate ${server.timescale ? 'finds' : 'does not find'} TimescaleDB`,
      );
      await insertEvents(pool, SEED_EVENTS);
      await refreshMovements(pool, server.timescale);
      readPool = createPool({ url: db.url, max: 2, statementTimeoutMs: READ_TIMEOUT_MS });
      app = createApi({
        pool: readPool,
        readModel: null as never,
        registry: new Registry(),
        log: pino({ level: 'silent' }),
        tokens: { write: 'movements-test-token-0123' },
        ready: async () => true,
      });
      await app.listen({ host: '127.0.0.1', port: 0 });
      const address = app.server.address();
      assert.ok(address && typeof address === 'object');
      base = `http://127.0.0.1:${address.port}`;
    });
    after(async () => {
      await app?.close();
      await readPool?.end();
      await pool?.end();
      await db?.drop();
    });

    it('one sku of one warehouse per hour: the sums, count corrections in ledger order, net and change', async () => {
      const res = await get(
        '/v1/movements?warehouse=WA&sku=S1&bucket=hour&from=2026-11-02T00:00:00Z&to=2026-11-04T00:00:00Z',
      );
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual(res.body, {
        warehouse: 'WA',
        sku: 'S1',
        bucket: 'hour',
        from: '2026-11-02T00:00:00.000Z',
        to: '2026-11-04T00:00:00.000Z',
        movements: [
          row('2026-11-02T08:00:00.000Z', { received: 100, shipped: 30, net: 70, change: 70, events: 2 }),
          // book before the count k1 = 100 − 30 + 5 − 2 + 1 (a0, ordered before k1) = 74; s2 is ordered after it
          row('2026-11-02T09:00:00.000Z', {
            shipped: 3,
            returned: 5,
            adjusted: -1,
            counts: 1,
            countCorrection: -4,
            net: 1,
            change: -3,
            events: 5,
          }),
          row('2026-11-02T10:00:00.000Z', { shipped: 80, net: -80, change: -80, events: 1 }),
          // book before k2 = 70 − 3 − 80 + 20 = 7
          row('2026-11-03T07:00:00.000Z', {
            received: 20,
            counts: 1,
            countCorrection: 5,
            net: 20,
            change: 25,
            events: 2,
          }),
        ],
      });
      const changes = res.body.movements.reduce((sum, r) => sum + r.change, 0);
      assert.equal(changes, 12, 'the changes add up to the book onHand after the last count');
    });

    it('day buckets roll up the hourly rows; without a sku, every sku of the warehouse is summed', async () => {
      const one = await get(
        '/v1/movements?warehouse=WA&sku=S1&bucket=day&from=2026-11-02T00:00:00Z&to=2026-11-04T00:00:00Z',
      );
      assert.equal(one.status, 200, JSON.stringify(one.body));
      assert.deepEqual(one.body.movements, [
        row('2026-11-02T00:00:00.000Z', {
          received: 100,
          shipped: 113,
          returned: 5,
          adjusted: -1,
          counts: 1,
          countCorrection: -4,
          net: -9,
          change: -13,
          events: 8,
        }),
        row('2026-11-03T00:00:00.000Z', {
          received: 20,
          counts: 1,
          countCorrection: 5,
          net: 20,
          change: 25,
          events: 2,
        }),
      ]);
      const all = await get('/v1/movements?warehouse=WA&bucket=day&from=2026-11-02T00:00:00Z&to=2026-11-04T00:00:00Z');
      assert.equal(all.status, 200, JSON.stringify(all.body));
      assert.equal(all.body.sku, undefined);
      assert.deepEqual(all.body.movements, [
        row('2026-11-02T00:00:00.000Z', {
          received: 110,
          shipped: 113,
          returned: 5,
          adjusted: -1,
          counts: 1,
          countCorrection: -4,
          net: 1,
          change: -3,
          events: 9,
        }),
        // S2's shipment at 23:59:59.999 is still 3 November
        row('2026-11-03T00:00:00.000Z', {
          received: 20,
          shipped: 4,
          counts: 1,
          countCorrection: 5,
          net: 16,
          change: 21,
          events: 3,
        }),
      ]);
    });

    it('the warehouse filter keeps other warehouses out', async () => {
      const wb = await get('/v1/movements?warehouse=WB&bucket=day&from=2026-11-01T00:00:00Z&to=2026-11-05T00:00:00Z');
      assert.equal(wb.status, 200, JSON.stringify(wb.body));
      assert.deepEqual(wb.body.movements, [
        row('2026-11-02T00:00:00.000Z', {
          received: 50,
          counts: 1,
          countCorrection: -5,
          net: 50,
          change: 45,
          events: 2,
        }),
      ]);
      const none = await get('/v1/movements?warehouse=WC&bucket=day&from=2026-11-01T00:00:00Z&to=2026-11-05T00:00:00Z');
      assert.equal(none.status, 200);
      assert.deepEqual(none.body.movements, []);
      const wbS2 = await get(
        '/v1/movements?warehouse=WB&sku=S2&bucket=day&from=2026-11-01T00:00:00Z&to=2026-11-05T00:00:00Z',
      );
      assert.deepEqual(wbS2.body.movements, [], 'S2 moved in WA only');
    });

    it('the range is widened to whole buckets and echoed; epoch milliseconds work as well as RFC 3339', async () => {
      const hour = await get('/v1/movements?warehouse=WA&sku=S1&from=2026-11-02T09:30:00Z&to=2026-11-02T10:00:00Z');
      assert.equal(hour.status, 200, JSON.stringify(hour.body));
      assert.equal(hour.body.bucket, 'hour', 'hour is the default');
      assert.deepEqual([hour.body.from, hour.body.to], ['2026-11-02T09:00:00.000Z', '2026-11-02T10:00:00.000Z']);
      assert.deepEqual(
        hour.body.movements.map((r) => r.bucket),
        ['2026-11-02T09:00:00.000Z'],
        'the 10:00 bucket starts at to: left out',
      );
      const epoch = await get(
        `/v1/movements?warehouse=WA&sku=S1&from=${Date.parse('2026-11-02T09:30:00Z')}&to=${Date.parse('2026-11-02T10:00:00.001Z')}`,
      );
      assert.equal(epoch.body.to, '2026-11-02T11:00:00.000Z');
      assert.deepEqual(
        epoch.body.movements.map((r) => r.bucket),
        ['2026-11-02T09:00:00.000Z', '2026-11-02T10:00:00.000Z'],
      );
      const day = await get(
        '/v1/movements?warehouse=WA&sku=S1&bucket=day&from=2026-11-02T12:00:00Z&to=2026-11-03T01:00:00Z',
      );
      assert.deepEqual([day.body.from, day.body.to], ['2026-11-02T00:00:00.000Z', '2026-11-04T00:00:00.000Z']);
      assert.equal(day.body.movements.length, 2);
      const longDays = await get(
        '/v1/movements?warehouse=WA&bucket=day&from=2000-01-01T00:00:00Z&to=2026-12-01T00:00:00Z',
      );
      assert.equal(longDays.status, 200, '9,831 day buckets are within the bound');
      assert.equal(longDays.body.movements.length, 2);
    });

    it('every bad parameter is a 400 naming its field, out-of-range dates included', async () => {
      const cases: [string, string][] = [
        ['/v1/movements?sku=S1', 'warehouse'],
        ['/v1/movements?warehouse=', 'warehouse'],
        ['/v1/movements?warehouse=bad%20wh', 'warehouse'],
        ['/v1/movements?warehouse=WA&warehouse=WB', 'warehouse'],
        ['/v1/movements?warehouse=WA&sku=bad%2Fsku', 'sku'],
        ['/v1/movements?warehouse=WA&sku=S1&sku=S2', 'sku'],
        ['/v1/movements?warehouse=WA&bucket=week', 'bucket'],
        ['/v1/movements?warehouse=WA&bucket=1h', 'bucket'],
        ['/v1/movements?warehouse=WA&from=yesterday', 'from'],
        ['/v1/movements?warehouse=WA&to=8640000000000001', 'to'],
        ['/v1/movements?warehouse=WA&to=8640000000000000', 'to'],
        ['/v1/movements?warehouse=WA&to=99999-01-01T00:00:00Z', 'to'],
        ['/v1/movements?warehouse=WA&from=-271821-04-20T00:00:00Z', 'from'],
        ['/v1/movements?warehouse=WA&from=1969-12-31T23:59:59Z&to=1970-01-02T00:00:00Z', 'from'],
        ['/v1/movements?warehouse=WA&from=2026-11-02T10:00:00Z&to=2026-11-02T10:00:00Z', 'from'],
        ['/v1/movements?warehouse=WA&from=2026-11-03T00:00:00Z&to=2026-11-02T00:00:00Z', 'from'],
        ['/v1/movements?warehouse=WA&bucket=hour&from=2025-01-01T00:00:00Z&to=2026-11-02T00:00:00Z', 'from'],
        ['/v1/movements?warehouse=WA&bucket=day&from=1970-01-01T00:00:00Z&to=2026-11-02T00:00:00Z', 'from'],
        // The shared time parameters: the history route no longer answers 500 to a date JavaScript cannot hold.
        ['/v1/stock/S1/history?to=8640000000000001', 'to'],
        ['/v1/stock/S1/history?from=-271821-04-20T00:00:00Z', 'from'],
      ];
      for (const [path, field] of cases) {
        const res = await get(path);
        assert.equal(res.status, 400, `${path}: ${JSON.stringify(res.body)}`);
        assert.equal(res.body.error.code, 'bad_request', path);
        assert.equal(res.body.error.field, field, `${path}: ${res.body.error.message}`);
      }
      assert.match(
        (await get('/v1/movements?warehouse=WA&bucket=hour&from=2025-01-01T00:00:00Z&to=2026-11-02T00:00:00Z')).body
          .error.message,
        /use bucket=day/,
      );
    });

    it('a read the database does not answer within the statement timeout is a 503 `unavailable`', async () => {
      const locker = await pool.connect();
      try {
        await locker.query('BEGIN');
        await locker.query('LOCK TABLE events IN ACCESS EXCLUSIVE MODE'); // what a migration holds: every read of events waits
        const stuck = await get('/v1/movements?warehouse=WA&from=2026-11-02T00:00:00Z&to=2026-11-04T00:00:00Z');
        assert.equal(stuck.status, 503, JSON.stringify(stuck.body));
        assert.equal(stuck.body.error.code, 'unavailable');
      } finally {
        await locker.query('ROLLBACK');
        locker.release();
      }
      assert.equal(
        (await get('/v1/movements?warehouse=WA&from=2026-11-02T00:00:00Z&to=2026-11-04T00:00:00Z')).status,
        200,
      );
    });

    it('events after the last refresh: in the answer at once when movements_hourly is real-time, and after a refresh in any case', async () => {
      // Past the aggregate's watermark (the end of what it has materialised): the part a real-time aggregate reads from events.
      const late = { ts: '2026-11-05T10:15:00Z', wh: 'WR', sku: 'S9', id: 'r9', type: 'received' as const, qty: 7 };
      await insertEvents(pool, [late]);
      const path = '/v1/movements?warehouse=WR&bucket=hour&from=2026-11-05T00:00:00Z&to=2026-11-06T00:00:00Z';
      const expected = [row('2026-11-05T10:00:00.000Z', { received: 7, net: 7, change: 7, events: 1 })];
      const realTime = server.timescale
        ? (
            await pool.query<{ m: boolean }>(
              `SELECT materialized_only AS m FROM timescaledb_information.continuous_aggregates WHERE view_name = 'movements_hourly'`,
            )
          ).rows[0]?.m === false
        : true; // a plain view always reads the event log
      if (realTime)
        assert.deepEqual((await get(path)).body.movements, expected, 'not materialised yet, and already there');
      // materialized_only = true: only a refresh (the policy's, or this one) brings the rows in.
      await refreshMovements(pool, server.timescale);
      assert.deepEqual((await get(path)).body.movements, expected);
    });
  });
}
