import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import type pg from 'pg';
import pino from 'pino';
import { Registry } from 'prom-client';
import { createPool } from '../../processors/db/pool.js';
import { migrate } from '../../processors/db/migrate.js';
import { applyBatch } from '../../processors/ingest/batch.js';
import type { Publisher } from '../../processors/publish/publisher.js';
import type { Parsed } from '../../processors/ingest/types.js';
import { MemoryReadModel } from '../../processors/readmodel/readmodel.js';
import { createReservationMetrics } from '../../processors/reservations/metrics.js';
import { reserveBatch, type ReserveRequest } from '../../processors/reservations/holds.js';
import { requestHash } from '../../processors/reservations/idempotency.js';
import { defaultCommandConfig, ReservationService } from '../../processors/reservations/service.js';
import { defaultPolicy } from '../../processors/ledger/reservations.js';
import { parseEvent, ValidationError, type ReservationGranted, type ReservationRequest } from '../../protocol/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { pinFastCheck } from '../helpers/seed.js';

pinFastCheck('processors/reservation-model');

/**
 * The simple model: per warehouse onHand and reserved, a list of holds, a clock. Written from the
 * contract's words, independently of processors/ledger/reservations.ts, to check the whole SQL
 * implementation (commands, sweeper, consumption inside the event batch) against it.
 */
interface ModelHold {
  wh: string;
  remaining: number;
  state: 'active' | 'consumed' | 'released' | 'expired';
  expiresAt: number;
}
class Model {
  readonly onHand = new Map<string, number>();
  readonly holds: ModelHold[] = [];
  now = 0;

  reservedAt(wh: string): number {
    return this.holds.filter((h) => h.wh === wh && h.state === 'active').reduce((n, h) => n + h.remaining, 0);
  }
  available(wh: string): number {
    return (this.onHand.get(wh) ?? 0) - this.reservedAt(wh);
  }
  /** Grants only while available ≥ qty; without a warehouse the one with most available (ties: lowest id); split: biggest first. */
  reserve(
    whs: string[],
    qty: number,
    wh: string | undefined,
    split: boolean,
    ttl: number,
  ): { wh: string; qty: number }[] | null {
    const known = whs.filter((w) => this.onHand.has(w));
    let parts: { wh: string; qty: number }[] | null = null;
    if (wh !== undefined) parts = this.available(wh) >= qty && this.onHand.has(wh) ? [{ wh, qty }] : null;
    else {
      const order = [...known].sort((a, b) => this.available(b) - this.available(a) || (a < b ? -1 : 1));
      const one = order.find((w) => this.available(w) >= qty);
      if (one) parts = [{ wh: one, qty }];
      else if (split) {
        const got: { wh: string; qty: number }[] = [];
        let left = qty;
        for (const w of order) {
          const take = Math.min(left, this.available(w));
          if (take > 0) {
            got.push({ wh: w, qty: take });
            left -= take;
          }
        }
        parts = left === 0 ? got : null;
      }
    }
    for (const p of parts ?? [])
      this.holds.push({ wh: p.wh, remaining: p.qty, state: 'active', expiresAt: this.now + ttl * 1000 });
    return parts;
  }
  release(i: number): void {
    const h = this.holds[i];
    if (h && h.state === 'active') {
      h.state = 'released';
      h.remaining = 0;
    }
  }
  /** Returns how many holds expired. */
  advance(ms: number): number {
    this.now += ms;
    let n = 0;
    for (const h of this.holds)
      if (h.state === 'active' && h.expiresAt <= this.now) {
        h.state = 'expired';
        h.remaining = 0;
        n++;
      }
    return n;
  }
  receive(wh: string, qty: number): void {
    this.onHand.set(wh, (this.onHand.get(wh) ?? 0) + qty);
  }
  /** A shipment is a fact: onHand drops; it takes from the hold it names only at that hold's warehouse. Returns what it took. */
  ship(wh: string, qty: number, i: number): number {
    this.onHand.set(wh, (this.onHand.get(wh) ?? 0) - qty);
    const h = this.holds[i];
    if (h?.state !== 'active' || h.wh !== wh) return 0;
    const take = Math.min(qty, h.remaining);
    h.remaining -= take;
    if (h.remaining === 0) h.state = 'consumed';
    return take;
  }
}

type Command =
  | { c: 'receive'; wh: string; qty: number }
  | { c: 'reserve'; wh: string | undefined; qty: number; split: boolean; ttl: number }
  | { c: 'release'; pick: number }
  | { c: 'advance'; s: number }
  | { c: 'ship'; pick: number; qty: number; elsewhere: boolean };

const WHS = ['W1', 'W2', 'W3'];
const wh = fc.constantFrom(...WHS);
const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ c: fc.constant('receive' as const), wh, qty: fc.integer({ min: 1, max: 8 }) }) },
  {
    weight: 5,
    arbitrary: fc.record({
      c: fc.constant('reserve' as const),
      wh: fc.option(wh, { nil: undefined }),
      qty: fc.integer({ min: 1, max: 12 }),
      split: fc.boolean(),
      ttl: fc.integer({ min: 600, max: 3600 }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ c: fc.constant('release' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ c: fc.constant('advance' as const), s: fc.integer({ min: 300, max: 2400 }) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      c: fc.constant('ship' as const),
      pick: fc.nat(),
      qty: fc.integer({ min: 1, max: 6 }),
      elsewhere: fc.boolean(),
    }),
  },
);

describe('reservations: the SQL implementation against a simple model (grant, release, expire, consume)', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  before(async () => {
    db = await createTestDatabase('resv_model');
    pool = createPool({ url: db.url, max: 4 });
    await migrate(pool);
  });
  after(async () => {
    await pool.end();
    await db.drop();
  });

  it('property: every decision and every row (onHand, reserved) and hold agree with the model, step by step', {
    timeout: 240_000,
  }, async () => {
    const published: string[] = [];
    const seen = { granted: 0, split: 0, refused: 0, released: 0, expired: 0, consumed: 0, shippedUnreserved: 0 };
    const publisher: Publisher = { publish: async (topic) => void published.push(topic) };
    let seq = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 9 }), { minLength: 3, maxLength: 3 }),
        fc.array(command, { minLength: 5, maxLength: 30, size: 'max' }),
        async (seed, commands) => {
          await pool.query('TRUNCATE inbox, events, stock, sku_versions, reservations, transfers, idempotency_keys');
          // Simulated time runs ahead of the database clock (holds of 10 minutes and more), so only
          // the sweeper, driven by this clock, ends holds — as the model does when time advances.
          const base = Date.now();
          const model = new Model();
          const service = new ReservationService(
            {
              pool,
              publisher,
              readModel: new MemoryReadModel(pool),
              log: pino({ level: 'silent' }),
              metrics: createReservationMetrics(new Registry()),
              clock: () => base + model.now,
            },
            { ...defaultCommandConfig, sweepIntervalMs: 0 },
          );
          const holdIds: string[] = []; // the implementation's id of the model's hold i
          const event = async (whId: string, type: 'received' | 'shipped', qty: number, reservation?: string) => {
            const id = `e${++seq}`;
            const payload = Buffer.from(
              JSON.stringify({ v: 1, id, type, sku: 'S', qty, ...(reservation && { reservation }) }),
            );
            const r = parseEvent(payload, { wh: whId, device: 'd1', receivedAt: Date.now() });
            if (!r.ok) throw new Error(r.error.message);
            const item: Parsed = {
              delivery: {
                topic: `wh/${whId}/dev/d1/event`,
                payload,
                wh: whId,
                device: 'd1',
                source: 't',
                receivedAt: Date.now(),
              },
              ok: true,
              event: r.event,
            };
            const result = await applyBatch(pool, [item]);
            assert.equal(result.decisions[0]?.status, 'applied');
          };
          for (const [i, qty] of seed.entries())
            if (qty > 0) {
              model.receive(WHS[i] as string, qty);
              await event(WHS[i] as string, 'received', qty);
            }
          for (const cmd of commands) {
            switch (cmd.c) {
              case 'receive':
                model.receive(cmd.wh, cmd.qty);
                await event(cmd.wh, 'received', cmd.qty);
                break;
              case 'reserve': {
                const body = {
                  sku: 'S',
                  qty: cmd.qty,
                  ttlSeconds: cmd.ttl,
                  ...(cmd.wh && { warehouse: cmd.wh }),
                  ...(cmd.split && { split: true }),
                };
                const known = model.onHand.size > 0 && (cmd.wh === undefined || model.onHand.has(cmd.wh));
                const expected = known ? model.reserve(WHS, cmd.qty, cmd.wh, cmd.split, cmd.ttl) : null;
                const answer = await service
                  .reserve(`k${++seq}`, body)
                  .catch((err: { code?: string }) => ({ status: 404, body: err.code }));
                if (!known) {
                  assert.equal(answer.status, 404, `unknown sku or warehouse: ${JSON.stringify(answer.body)}`);
                  break;
                }
                if (expected === null) {
                  assert.equal(
                    answer.status,
                    409,
                    `model refuses ${JSON.stringify(cmd)}; got ${JSON.stringify(answer.body)}`,
                  );
                  assert.equal((answer.body as { error: { code: string } }).error.code, 'insufficient_stock');
                  seen.refused++;
                  break;
                }
                assert.equal(
                  answer.status,
                  201,
                  `model grants ${JSON.stringify(expected)} for ${JSON.stringify(cmd)}; got ${JSON.stringify(answer.body)}`,
                );
                const granted = answer.body as ReservationGranted;
                const parts = granted.parts ?? [
                  { id: granted.id, warehouse: granted.warehouse as string, qty: granted.qty },
                ];
                assert.deepEqual(
                  parts.map((p) => ({ wh: p.warehouse, qty: p.qty })),
                  expected,
                );
                holdIds.push(...parts.map((p) => p.id));
                seen.granted++;
                if (parts.length > 1) seen.split++;
                break;
              }
              case 'release': {
                if (holdIds.length === 0) break;
                const i = cmd.pick % holdIds.length;
                if (model.holds[i]?.state === 'active') seen.released++;
                model.release(i);
                const answer = await service.release(holdIds[i]);
                assert.equal(answer.status, 204);
                break;
              }
              case 'advance':
                seen.expired += model.advance(cmd.s * 1000);
                await service.sweeper.expireDue();
                break;
              case 'ship': {
                if (holdIds.length === 0) break;
                const i = cmd.pick % holdIds.length;
                const own = model.holds[i]?.wh as string;
                const at = cmd.elsewhere ? (WHS.find((w) => w !== own) as string) : own;
                if (model.ship(at, cmd.qty, i) > 0) seen.consumed++;
                else seen.shippedUnreserved++;
                await event(at, 'shipped', cmd.qty, holdIds[i]);
                break;
              }
            }
            // After every step: every row and every hold as the model says.
            const { rows } = await pool.query<{ wh: string; on_hand: number; reserved: number }>(
              `SELECT wh, on_hand, reserved FROM stock WHERE sku = 'S' ORDER BY wh`,
            );
            for (const r of rows) {
              assert.equal(r.on_hand, model.onHand.get(r.wh) ?? 0, `onHand of ${r.wh} after ${JSON.stringify(cmd)}`);
              assert.equal(r.reserved, model.reservedAt(r.wh), `reserved of ${r.wh} after ${JSON.stringify(cmd)}`);
            }
            const { rows: holds } = await pool.query<{ id: string; remaining: number; state: string }>(
              `SELECT id, remaining, state FROM reservations`,
            );
            const byId = new Map(holds.map((h) => [h.id, h]));
            holdIds.forEach((id, i) => {
              const m = model.holds[i] as ModelHold;
              assert.deepEqual(
                { remaining: byId.get(id)?.remaining, state: byId.get(id)?.state },
                { remaining: m.remaining, state: m.state },
                `hold ${i} after ${JSON.stringify(cmd)}`,
              );
            });
          }
        },
      ),
      {
        numRuns: 40,
        // Random runs come across a split only now and then (one CI run of 40 had none), so one
        // hand-written run goes first and takes every rule at least once: a split of 4 over W1 (3)
        // and W2 (2), a refusal, a grant, its release, a consuming shipment, a shipment at another
        // warehouse than its hold's, and expiry of what is left.
        examples: [
          [
            [3, 2, 0],
            [
              { c: 'reserve', wh: undefined, qty: 4, split: true, ttl: 600 },
              { c: 'reserve', wh: 'W1', qty: 5, split: false, ttl: 600 },
              { c: 'reserve', wh: 'W2', qty: 1, split: false, ttl: 600 },
              { c: 'release', pick: 2 },
              { c: 'ship', pick: 0, qty: 2, elsewhere: false },
              { c: 'ship', pick: 1, qty: 1, elsewhere: true },
              { c: 'advance', s: 700 },
            ],
          ],
        ],
      },
    );
    assert.ok(
      published.some((t) => t === 'stock/S'),
      'commands published the stock topics',
    );
    // The property is only as good as what it exercised: every rule must have come up.
    for (const [rule, n] of Object.entries(seen)) assert.ok(n > 0, `no run exercised ${rule}: ${JSON.stringify(seen)}`);
  });

  it('property: a batch decided in one transaction answers exactly as the same requests one at a time', {
    timeout: 120_000,
  }, async () => {
    const request = fc.record({
      wh: fc.option(fc.constantFrom('W1', 'W2', 'W9'), { nil: undefined }), // W9 is unknown: 404, nothing stored
      qty: fc.integer({ min: 1, max: 8 }),
      split: fc.boolean(),
      key: fc.integer({ min: 0, max: 14 }), // small range: keys repeat inside a batch
    });
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 12 }), { minLength: 2, maxLength: 2 }),
        fc.array(request, { minLength: 1, maxLength: 20 }),
        async ([s1, s2], reqs) => {
          await pool.query('TRUNCATE stock, sku_versions, reservations, idempotency_keys');
          await pool.query(
            `INSERT INTO stock (wh, sku, on_hand, version) VALUES ('W1', 'S', $1, 1), ('W2', 'S', $2, 1)`,
            [s1, s2],
          );
          const model = new Model();
          model.receive('W1', s1 as number);
          model.receive('W2', s2 as number);
          run++;
          const batch: ReserveRequest[] = reqs.map((r) => {
            const req: ReservationRequest = {
              sku: 'S',
              qty: r.qty,
              ...(r.wh && { warehouse: r.wh }),
              ...(r.split && { split: true }),
            };
            return { req, ttlSeconds: 900, key: `run${run}-k${r.key}`, hash: requestHash('reservations.create', req) };
          });
          const runner = new ReservationService(
            {
              pool,
              publisher: { publish: async () => {} },
              readModel: new MemoryReadModel(pool),
              log: pino({ level: 'silent' }),
              metrics: createReservationMetrics(new Registry()),
            },
            { ...defaultCommandConfig, sweepIntervalMs: 0 },
          ).runner;
          const { answers } = await runner.transaction((client, now) =>
            reserveBatch(client, now, 'S', batch, defaultPolicy),
          );

          // One at a time: a key's first request decides; a repeat with the same request gets that answer, another request 422.
          const first = new Map<string, { hash: string; i: number }>();
          batch.forEach((b, i) => {
            const got = answers[i];
            const label = `request ${i} ${JSON.stringify(b.req)} key ${b.key}`;
            if (b.req.warehouse === 'W9') {
              assert.ok(got instanceof ValidationError && got.code === 'not_found' && got.field === 'warehouse', label);
              return;
            }
            const earlier = first.get(b.key);
            if (earlier) {
              if (earlier.hash !== b.hash) {
                assert.ok(got instanceof ValidationError && got.code === 'idempotency_key_reused', label);
                return;
              }
              const a = answers[earlier.i];
              assert.deepEqual(got, a instanceof ValidationError ? a : { ...a, replayed: true }, label);
              return;
            }
            first.set(b.key, { hash: b.hash, i });
            const expected = model.reserve(['W1', 'W2'], b.req.qty, b.req.warehouse, b.req.split === true, 900);
            assert.ok(!(got instanceof ValidationError), `${label}: ${String(got)}`);
            if (expected === null) {
              assert.equal(got?.status, 409, label);
              return;
            }
            assert.equal(got?.status, 201, label);
            const body = got?.body as ReservationGranted;
            assert.deepEqual(
              (body.parts ?? [{ warehouse: body.warehouse as string, qty: body.qty }]).map((p) => ({
                wh: p.warehouse,
                qty: p.qty,
              })),
              expected,
              label,
            );
          });
          const { rows } = await pool.query<{ wh: string; reserved: number }>(
            `SELECT wh, reserved FROM stock ORDER BY wh`,
          );
          for (const r of rows) assert.equal(r.reserved, model.reservedAt(r.wh), `reserved at ${r.wh}`);
          const keys = await pool.query<{ key: string; status: number }>(`SELECT key, status FROM idempotency_keys`);
          assert.deepEqual(
            keys.rows.map((k) => k.key).sort(),
            [...first.keys()].sort(),
            'one stored answer per decided key, none for a 404',
          );
          assert.ok(
            keys.rows.every((k) => k.status === 201 || k.status === 409),
            'every stored answer is final',
          );
        },
      ),
      { numRuns: 60 },
    );
  });
});
