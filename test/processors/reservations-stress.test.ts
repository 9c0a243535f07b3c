import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import { createPool } from '../../processors/db/pool.js';
import { rebuild } from '../../processors/rebuild.js';
import type { GlobalStock, ReservationGranted, WarehouseStock } from '../../protocol/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { Collector, connect } from '../helpers/mqtt.js';
import { freePort, kill9, startStockwire, type Running } from '../helpers/process.js';
import { ResendingPublisher, type OutgoingEvent } from '../helpers/resending-publisher.js';

const MOSQUITTO = process.env.MOSQUITTO_URL ?? 'mqtt://127.0.0.1:1883';
const REQUESTS = 200;
const STOCK = { a: 30, b: 20 }; // 50 available across the two warehouses
const LATE_EVENTS = 900; // per warehouse
const OTHER_EVENTS = 600;

/**
 * What "exactly the available quantity" means while events stream in: every event of the sku that
 * streams during the burst leaves `available` of the two warehouses where it is —
 *  - events ordered before each warehouse's latest count (late scans: stored, onHand unchanged, but
 *    they lock the same stock rows as the reservations),
 *  - shipments naming a reservation just granted (onHand and reserved drop together),
 *  - shipments at a third warehouse (its available goes negative: never a candidate),
 *  - and every redelivery the kill causes (duplicates).
 * So the available quantity is 50 throughout, and exactly 50 single units must be granted.
 *
 * Half the requests go to `stockwire central`, half to a `stockwire processor` behind the machine's
 * Mosquitto (it also consumes the event stream). The processor is killed -9 while PostgreSQL shows its
 * reservation transaction waiting for the stock rows, so the kill provably lands mid-decision; its
 * requests are then sent again, with their keys, to the restarted processor.
 */
describe('no overselling under load: 200 concurrent reservations, events streaming, a processor killed', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  before(async () => {
    db = await createTestDatabase('resv_stress');
    pool = createPool({ url: db.url, max: 2 });
  });
  after(async () => {
    await pool.end();
    await db.drop();
  });

  it('grants exactly the 50 available, refuses the rest with insufficient_stock, never lets available go below zero', {
    timeout: 240_000,
  }, async () => {
    const tag = randomBytes(3).toString('hex');
    const [A, B, C] = [`SA${tag}`, `SB${tag}`, `SC${tag}`];
    const sku = `SKU-${tag}`;
    const token = randomBytes(24).toString('base64url');
    const env = { DATABASE_URL: db.url, LOG_LEVEL: 'warn', API_TOKEN: token }; // one token for central and the processor
    const devices = await writeDevices([{ id: 'disp-s', warehouse: A, kind: 'display', password: 'pw-display-s' }]);
    const central = await startStockwire(
      [
        'central',
        '--mqtt-port',
        '0',
        '--ws-port',
        '0',
        '--http-port',
        '0',
        '--host',
        '127.0.0.1',
        '--devices-file',
        devices.file,
        '--data-dir',
        devices.dir,
      ],
      env,
    );
    const processorHttp = await freePort();
    const processorArgs = [
      'processor',
      '--central-url',
      MOSQUITTO,
      '--warehouses',
      [A, B, C].join(','),
      '--instance',
      `st${tag}`,
      '--http-port',
      String(processorHttp),
      '--host',
      '127.0.0.1',
    ];
    let processor: Running = await startStockwire(processorArgs, env);
    const targets = [`http://127.0.0.1:${central.ports.http}`, `http://127.0.0.1:${processorHttp}`];

    // Watch every stock topic of the sku, on both brokers: central's (its commands) and Mosquitto (the processor's).
    const watchers = [
      await connect(MOSQUITTO, 'watch', 'x', { clientId: `watch-${tag}` }),
      await connect(`mqtt://127.0.0.1:${central.ports.mqtt}`, 'disp-s', 'pw-display-s'),
    ];
    const seen = watchers.map(
      (w) => new Collector<WarehouseStock | GlobalStock>(w, [`stock/${sku}`, `wh/+/stock/${sku}`]),
    );
    for (const w of watchers) await w.subscribeAsync([`stock/${sku}`, `wh/+/stock/${sku}`], { qos: 1 });

    const publishers: Record<string, ResendingPublisher> = {};
    const runs: Promise<unknown>[] = [];
    let sampler: NodeJS.Timeout | undefined;
    try {
      // The starting point: a count in each warehouse, and stock nobody may reserve at C.
      const t0 = Date.now() - 60_000;
      const seed = (wh: string, qty: number): OutgoingEvent => ({
        device: 'counter',
        id: `count-${wh}`,
        payload: JSON.stringify({ v: 1, id: `count-${wh}`, type: 'counted', sku, qty, ts: t0 }),
      });
      const setup = new ResendingPublisher(MOSQUITTO, A, [seed(A, STOCK.a)], { clientId: `setup-a-${tag}` });
      const setupB = new ResendingPublisher(MOSQUITTO, B, [seed(B, STOCK.b)], { clientId: `setup-b-${tag}` });
      await Promise.all([setup.run(), setupB.run()]);
      await Promise.all([setup.close(), setupB.close()]);

      // The stream: late scans at A and B (ordered before the count), shipments at C.
      const late = (): OutgoingEvent[] =>
        Array.from({ length: LATE_EVENTS }, (_, i) => {
          const type = ['received', 'shipped', 'returned', 'adjusted'][i % 4] as string;
          const id = `late-${i}`;
          return {
            device: `scan-${i % 7}`,
            id,
            payload: JSON.stringify({
              v: 1,
              id,
              type,
              sku,
              qty: type === 'adjusted' ? -1 : 1 + (i % 5),
              ts: t0 - 3_600_000 + i,
            }),
          };
        });
      const atC: OutgoingEvent[] = Array.from({ length: OTHER_EVENTS }, (_, i) => ({
        device: 'scan-c',
        id: `c-${i}`,
        payload: JSON.stringify({ v: 1, id: `c-${i}`, type: 'shipped', sku, qty: 1 }),
      }));
      let acked = 0;
      const onAck = () => void acked++;
      for (const [wh, events] of [
        [A, late()],
        [B, late()],
        [C, atC],
      ] as const) {
        publishers[wh] = new ResendingPublisher(MOSQUITTO, wh, [...events], {
          clientId: `edge-${wh}`,
          window: 100,
          open: true,
          onAck,
        });
        runs.push((publishers[wh] as ResendingPublisher).run());
      }
      while (acked < 300) await new Promise((r) => setTimeout(r, 20));

      // The database must never show available < 0 at A or B while this runs.
      let minAvailable = Number.POSITIVE_INFINITY;
      let samples = 0;
      sampler = setInterval(() => {
        void pool
          .query<{ m: number | null }>(
            `SELECT min(on_hand - reserved)::int AS m FROM stock WHERE sku = $1 AND wh = ANY($2)`,
            [sku, [A, B]],
          )
          .then(
            ({ rows }) => {
              minAvailable = Math.min(minAvailable, rows[0]?.m ?? minAvailable);
              samples++;
            },
            () => {},
          );
      }, 15);

      // The burst: 200 at once, half to central, half to the processor; a third each name A, B, or no warehouse.
      const answers: { status: number; body: ReservationGranted & { error?: { code: string } }; attempts: number }[] =
        [];
      let shipments = 0;
      const started = Date.now();
      const ask = async (i: number) => {
        const target = targets[i % 2] as string;
        const body = { sku, qty: 1, ...(i % 3 === 0 ? { warehouse: A } : i % 3 === 1 ? { warehouse: B } : {}) };
        for (let attempt = 1; ; attempt++) {
          try {
            const res = await fetch(`${target}/v1/reservations`, {
              method: 'POST',
              headers: {
                'content-type': 'application/json',
                'idempotency-key': `stress-${tag}-${i}`,
                authorization: `Bearer ${token}`,
              },
              body: JSON.stringify(body),
            });
            const answer = {
              status: res.status,
              body: (await res.json()) as ReservationGranted & { error?: { code: string } },
              attempts: attempt,
            };
            answers.push(answer);
            if (answer.status === 201 && i % 2 === 0) {
              // Ship half of the grants at once, naming the reservation: available must not move.
              const id = `ship-${i}`;
              const wh = answer.body.warehouse as string;
              shipments++;
              publishers[wh]?.append([
                {
                  device: 'packer',
                  id,
                  payload: JSON.stringify({ v: 1, id, type: 'shipped', sku, qty: 1, reservation: answer.body.id }),
                },
              ]);
            }
            return;
          } catch {
            // The processor died under the request: send it again, same key, until it is back.
            if (attempt > 300) throw new Error(`request ${i} got no answer`);
            await new Promise((r) => setTimeout(r, 200));
          }
        }
      };
      // The kill must land while the processor decides: hold both warehouses' rows until PostgreSQL shows
      // its reservation transaction waiting for them, kill it there (-9), then let central carry on.
      const blocker = await pool.connect();
      await blocker.query('BEGIN');
      await blocker.query(`SELECT 1 FROM stock WHERE sku = $1 AND wh = ANY($2) ORDER BY wh FOR UPDATE`, [sku, [A, B]]);
      let waitingAtKill = 0;
      const burst = Promise.all(Array.from({ length: REQUESTS }, (_, i) => ask(i)));
      const killed = (async () => {
        for (let waited = 0; waitingAtKill === 0 && waited < 30_000; waited += 20) {
          await new Promise((r) => setTimeout(r, 20));
          const { rows } = await pool.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'stockwire-processor' AND wait_event_type = 'Lock'`,
          );
          waitingAtKill = rows[0]?.n ?? 0;
        }
        await kill9(processor);
        await blocker.query('COMMIT');
        blocker.release();
        await new Promise((r) => setTimeout(r, 1_000));
        processor = await startStockwire(processorArgs, env);
      })();
      await burst;
      const burstMs = Date.now() - started;
      await killed;
      assert.ok(waitingAtKill > 0, 'the processor was killed while its transaction waited inside PostgreSQL');
      for (const p of Object.values(publishers)) p.end();
      await Promise.all(runs);
      clearInterval(sampler);

      // Exactly the available quantity, and every refusal for the right reason.
      const granted = answers.filter((a) => a.status === 201);
      const refused = answers.filter((a) => a.status !== 201);
      const statuses: Record<string, number> = {};
      for (const a of answers) {
        const key = `${a.status} ${a.body.error?.code ?? ''}`;
        statuses[key] = (statuses[key] ?? 0) + 1;
      }
      const diagnosis = `statuses ${JSON.stringify(statuses)}, burst ${burstMs} ms`;
      assert.equal(answers.length, REQUESTS);
      assert.equal(granted.length, STOCK.a + STOCK.b, `exactly the 50 available were granted; ${diagnosis}`);
      assert.ok(
        refused.every((a) => a.status === 409 && a.body.error?.code === 'insufficient_stock'),
        diagnosis,
      );
      assert.equal(new Set(granted.map((a) => a.body.id)).size, granted.length, 'one hold per granted request');
      assert.ok(
        answers.some((a) => a.attempts > 1),
        `some requests were sent again after the kill; ${diagnosis}`,
      );
      const perWh = (wh: string) => granted.filter((a) => a.body.warehouse === wh).length;
      assert.deepEqual([perWh(A), perWh(B)], [STOCK.a, STOCK.b]);
      const { rows: holds } = await pool.query<{ n: number; qty: number }>(
        `SELECT count(*)::int AS n, sum(qty)::int AS qty FROM reservations WHERE sku = $1`,
        [sku],
      );
      assert.deepEqual(holds[0], { n: 50, qty: 50 }, 'no retry made a second hold');

      // Available never below zero: in the database, and in every stock topic published on either broker.
      assert.ok(samples > 10, `the database was sampled (${samples})`);
      assert.ok(minAvailable >= 0, `available went to ${minAvailable}`);
      let topics = 0;
      for (const s of seen) {
        for (const m of s.messages) {
          const p = m.payload;
          const levels =
            'warehouses' in p ? [p.warehouses[A], p.warehouses[B]] : p.warehouse === A || p.warehouse === B ? [p] : [];
          for (const l of levels)
            if (l) {
              assert.ok(l.available >= 0, `${m.topic} version ${p.version}: available ${l.available}`);
              topics++;
            }
        }
      }
      assert.ok(topics >= 20, `stock topics were observed (${topics})`);

      // The end state: every event once, the holds consumed by the shipments, nothing available, no drift.
      const { rows: stock } = await pool.query<{ wh: string; on_hand: number; reserved: number }>(
        `SELECT wh, on_hand, reserved FROM stock WHERE sku = $1 ORDER BY wh`,
        [sku],
      );
      const { rows: consumed } = await pool.query<{ wh: string; n: number }>(
        `SELECT wh, sum(consumed)::int AS n FROM reservations WHERE sku = $1 GROUP BY wh`,
        [sku],
      );
      const eaten = new Map(consumed.map((c) => [c.wh, c.n]));
      const byWh = new Map(stock.map((r) => [r.wh, r]));
      for (const [wh, qty] of [
        [A, STOCK.a],
        [B, STOCK.b],
      ] as const) {
        const r = byWh.get(wh);
        assert.deepEqual(
          [r?.on_hand, r?.reserved],
          [qty - (eaten.get(wh) ?? 0), qty - (eaten.get(wh) ?? 0)],
          `${wh}: onHand and reserved both dropped by the shipments`,
        );
      }
      assert.equal(
        (eaten.get(A) ?? 0) + (eaten.get(B) ?? 0),
        shipments,
        'each shipment took its unit from the hold it named',
      );
      assert.ok(shipments > 0);
      assert.equal(byWh.get(C)?.on_hand, -OTHER_EVENTS);
      const { rows: ev } = await pool.query<{ n: number; keys: number }>(
        `SELECT count(*)::int AS n, count(DISTINCT (wh, device, id))::int AS keys FROM events WHERE sku = $1`,
        [sku],
      );
      const expectedEvents = 2 + 2 * LATE_EVENTS + OTHER_EVENTS + shipments;
      assert.deepEqual(ev[0], { n: expectedEvents, keys: expectedEvents }, 'every event applied exactly once');
      const report = await rebuild(pool);
      assert.deepEqual(report.drift, [], 'rebuild finds no drift');
      assert.deepEqual(report.reservedDrift, [], 'reserved is the sum of the active holds');
    } finally {
      clearInterval(sampler);
      await Promise.all(Object.values(publishers).map((p) => p.close()));
      await Promise.all(watchers.map((w) => w.endAsync(true)));
      for (const r of [processor, central]) {
        r.child.kill('SIGTERM');
        assert.equal(await r.exited, 0, 'clean exit on SIGTERM');
      }
    }
  });
});
