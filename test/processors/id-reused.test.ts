import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import type { StockEvent } from '../../protocol/index.js';
import { createPool } from '../../processors/db/pool.js';
import { migrate } from '../../processors/db/migrate.js';
import { applyBatch } from '../../processors/ingest/batch.js';
import type { Parsed } from '../../processors/ingest/types.js';
import { startCentralFixture, type CentralFixture } from '../helpers/central.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { Collector, connect } from '../helpers/mqtt.js';
import { until } from '../helpers/broker.js';

// CONTRACT 4: a repeat of a key gets the original outcome with status `duplicate`. A repeat whose content differs
// (a device reusing an id: a firmware bug, a reset counter) used to be acked `duplicate` and forgotten; it is now
// kept as a dead letter `id_reused`, counted and alerted, and still acked `duplicate` with the original outcome.

const base = { v: 1 } as const;
function parsed(e: Omit<StockEvent, 'receivedAt' | 'payload'> & { payload?: Record<string, unknown> }): Parsed {
  const payload = e.payload ?? { ...base, id: e.id, type: e.type, sku: e.sku, qty: e.qty };
  const event = { ...e, receivedAt: e.ts, payload } as StockEvent;
  return {
    delivery: {
      topic: `wh/${e.wh}/dev/${e.device}/event`,
      payload: Buffer.from(JSON.stringify(payload)),
      wh: e.wh,
      device: e.device,
      source: 'gw-test',
      receivedAt: e.ts,
    },
    ok: true,
    event,
  };
}

describe('a reused event id (same key, other content)', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  const deadLetters = async (wh: string) =>
    (
      await pool.query<{ event_id: string; code: string; raw: Buffer; reason: string }>(
        `SELECT event_id, code, raw, reason FROM dead_letters WHERE wh = $1 ORDER BY seq`,
        [wh],
      )
    ).rows;
  const onHand = async (wh: string) =>
    Object.fromEntries(
      (
        await pool.query<{ sku: string; on_hand: number }>(
          `SELECT sku, on_hand FROM stock WHERE wh = $1 ORDER BY sku`,
          [wh],
        )
      ).rows.map((r) => [r.sku, r.on_hand]),
    );

  before(async () => {
    db = await createTestDatabase('id_reused');
    pool = createPool({ url: db.url, max: 4 });
    await migrate(pool);
  });
  after(async () => {
    await pool.end();
    await db.drop();
  });

  it('an honest resend (only ts differs, as an edge stamps a ts-less event anew) is a plain duplicate', async () => {
    const first = parsed({ wh: 'R1', device: 'd1', id: 'e1', type: 'received', sku: 'A', qty: 5, ts: 1_000 });
    assert.deepEqual(
      (await applyBatch(pool, [first])).decisions.map((d) => d.status),
      ['applied'],
    );
    const resend = parsed({ wh: 'R1', device: 'd1', id: 'e1', type: 'received', sku: 'A', qty: 5, ts: 9_000 });
    const r = await applyBatch(pool, [resend]);
    assert.deepEqual(r.decisions, [{ status: 'duplicate', id: 'e1', stock: { onHand: 5, available: 5 } }]);
    assert.deepEqual(r.deadLetters, []);
    assert.deepEqual(await deadLetters('R1'), []);
  });

  it('another qty or sku under a decided id: acked duplicate with the original stock, the copy dead-lettered, nothing applied', async () => {
    await applyBatch(pool, [
      parsed({ wh: 'R2', device: 'd1', id: 'e1', type: 'received', sku: 'A', qty: 5, ts: 1_000 }),
    ]);
    const otherSku = parsed({ wh: 'R2', device: 'd1', id: 'e1', type: 'shipped', sku: 'B', qty: 3, ts: 2_000 });
    const r = await applyBatch(pool, [otherSku]);
    // The original outcome: the stock of the sku the id first named, A, not of B (which has no row).
    assert.deepEqual(r.decisions, [{ status: 'duplicate', id: 'e1', stock: { onHand: 5, available: 5 } }]);
    assert.deepEqual(
      r.deadLetters.map((d) => [d.code, d.sku]),
      [['id_reused', 'B']],
    );
    const dl = await deadLetters('R2');
    assert.deepEqual(
      dl.map((d) => [d.event_id, d.code, d.raw.toString()]),
      [['e1', 'id_reused', otherSku.delivery.payload.toString()]],
    );
    assert.match(dl[0]?.reason ?? '', /first used for other content \(sku A\)/);
    assert.deepEqual(await onHand('R2'), { A: 5 }, 'the copy changed nothing');

    const otherQty = parsed({ wh: 'R2', device: 'd1', id: 'e1', type: 'received', sku: 'A', qty: 6, ts: 1_000 });
    const location = parsed({
      wh: 'R2',
      device: 'd1',
      id: 'e1',
      type: 'received',
      sku: 'A',
      qty: 5,
      ts: 1_000,
      location: 'BIN-9',
    });
    const r2 = await applyBatch(pool, [otherQty, location, otherQty]);
    assert.deepEqual(
      r2.decisions.map((d) => d.status),
      ['duplicate', 'duplicate', 'duplicate'],
    );
    assert.equal(r2.deadLetters.length, 2, 'one dead letter per distinct content in a batch, however often it came');
    assert.deepEqual(await onHand('R2'), { A: 5 });
  });

  it('two contents for one new key in one batch: the first is applied, the other dead-lettered', async () => {
    const a = parsed({ wh: 'R3', device: 'd1', id: 'e1', type: 'received', sku: 'A', qty: 5, ts: 1_000 });
    const b = parsed({ wh: 'R3', device: 'd1', id: 'e1', type: 'received', sku: 'A', qty: 50, ts: 1_000 });
    const r = await applyBatch(pool, [a, b, a]);
    assert.deepEqual(
      r.decisions.map((d) => d.status),
      ['applied', 'duplicate', 'duplicate'],
    );
    assert.deepEqual(
      r.deadLetters.map((d) => d.code),
      ['id_reused'],
    );
    assert.deepEqual(await onHand('R3'), { A: 5 });
  });

  it('a key decided before migrations/004 (no content stored) is not checked: a plain duplicate', async () => {
    await pool.query(`INSERT INTO inbox (wh, device, id, sku) VALUES ('R4', 'd1', 'old', 'A')`);
    const r = await applyBatch(pool, [
      parsed({ wh: 'R4', device: 'd1', id: 'old', type: 'received', sku: 'A', qty: 7, ts: 1_000 }),
    ]);
    assert.deepEqual(
      r.decisions.map((d) => d.status),
      ['duplicate'],
    );
    assert.deepEqual(r.deadLetters, []);
  });

  // The key committed by another transaction after the batch's statement took its snapshot: the conflict is seen,
  // the stored row is not; a second read finds it.
  it('a key committed concurrently, while the batch waited on it, is still compared', async () => {
    const other = await pool.connect();
    try {
      await other.query('BEGIN');
      await other.query(`INSERT INTO inbox (wh, device, id, sku, content) SELECT 'R5', 'd1', 'e1', 'A', $1`, [
        // what a batch stores for received 5 of A (the digest is the batch's own, taken from a first batch elsewhere)
        await digestOf(
          pool,
          parsed({ wh: 'R5x', device: 'd1', id: 'e1', type: 'received', sku: 'A', qty: 5, ts: 1_000 }),
        ),
      ]);
      const pending = applyBatch(pool, [
        parsed({ wh: 'R5', device: 'd1', id: 'e1', type: 'received', sku: 'A', qty: 8, ts: 1_000 }),
      ]);
      // Waits for the batch to block on the uncommitted key (an event: the lock wait shows in pg_stat_activity).
      await until(
        async () =>
          (
            await pool.query(
              `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`,
            )
          ).rows[0].n > 0,
        'the batch to wait on the key',
      );
      await other.query('COMMIT');
      const r = await pending;
      assert.deepEqual(
        r.decisions.map((d) => d.status),
        ['duplicate'],
      );
      assert.deepEqual(
        r.deadLetters.map((d) => d.code),
        ['id_reused'],
      );
    } finally {
      other.release();
    }
  });
});

/** The content a batch stores for `p`'s event: applied under a key of its own, read back from the inbox. */
async function digestOf(pool: pg.Pool, p: Parsed): Promise<Buffer> {
  await applyBatch(pool, [p]);
  const e = (p as Parsed & { ok: true }).event;
  const { rows } = await pool.query<{ content: Buffer }>(
    `SELECT content FROM inbox WHERE wh = $1 AND device = $2 AND id = $3`,
    [e.wh, e.device, e.id],
  );
  return rows[0]?.content ?? assert.fail('no content stored');
}

describe('a reused event id through central', () => {
  let fixture: CentralFixture;
  const WH = 'RC1';
  before(async () => {
    fixture = await startCentralFixture({
      name: 'id_reused_central',
      wh: WH,
      gateway: { id: 'gw-r', password: 'pw-gateway-r' },
      devices: [{ id: 'disp-r', warehouse: WH, kind: 'display', password: 'pw-display-r' }],
    });
  });
  after(async () => {
    await fixture?.stop();
  });

  it('is acked duplicate, raises alerts/{wh}/id-reused and counts stockwire_dead_letters_total{code="id_reused"}', async () => {
    const { gateway, acks, ports } = fixture;
    const display = await connect(`mqtt://127.0.0.1:${ports.mqtt}`, 'disp-r', 'pw-display-r');
    try {
      const alerts = new Collector<{ kind: string; wh: string; sku?: string; message: string }>(display, 'alerts/#');
      await display.subscribeAsync('alerts/#', { qos: 1 });
      const topic = `wh/${WH}/dev/scan-1/event`;
      await gateway.publishAsync(topic, JSON.stringify({ v: 1, id: 'r-1', type: 'received', sku: 'SKU-R', qty: 4 }), {
        qos: 1,
      });
      await acks.waitFor(() => acks.messages.some((m) => m.payload.id === 'r-1' && m.payload.status === 'applied'));
      await gateway.publishAsync(topic, JSON.stringify({ v: 1, id: 'r-1', type: 'shipped', sku: 'SKU-R', qty: 1 }), {
        qos: 1,
      });
      await acks.waitFor(() => acks.messages.filter((m) => m.payload.id === 'r-1').length === 2);
      assert.deepEqual(
        acks.messages.filter((m) => m.payload.id === 'r-1').map((m) => m.payload),
        [
          { id: 'r-1', status: 'applied', stock: { onHand: 4, available: 4 } },
          { id: 'r-1', status: 'duplicate', stock: { onHand: 4, available: 4 } },
        ],
      );
      await alerts.waitFor(() => alerts.messages.some((m) => m.topic === `alerts/${WH}/id-reused`));
      const alert = alerts.last(`alerts/${WH}/id-reused`);
      assert.deepEqual([alert?.kind, alert?.wh, alert?.sku], ['id-reused', WH, 'SKU-R']);
      assert.ok(!alerts.messages.some((m) => m.topic === `alerts/${WH}/dead-letter`), 'not reported as bad input');
      const metrics = await (await fetch(`http://127.0.0.1:${ports.http}/metrics`)).text();
      assert.match(metrics, /^stockwire_dead_letters_total\{code="id_reused"\} 1$/m);
    } finally {
      await display.endAsync();
    }
  });
});
