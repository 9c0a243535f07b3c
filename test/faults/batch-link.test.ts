import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import type pg from 'pg';
import { topics } from '../../protocol/index.js';
import { connect } from '../helpers/mqtt.js';
import { MOSQUITTO, metric, Proc, scenarioDatabase, until, warehouse, type Warehouse } from './cluster.js';

/**
 * The batched link under kill -9, with real processes. Each kill lands mid-batch for certain: a row lock of the test's
 * holds central's commit of the batch, so the batch is at central, uncommitted and un-PUBACKed, when the edge or
 * central dies. And the fallback: an edge with a gateway credential against the machine's Mosquitto and `stockwire
 * processor` hears no hello and delivers every event exactly once as single events.
 */
const N = 40; // events per scenario, on top of the one that makes the stock row

describe('the batched link under kill -9, and its fallback', () => {
  const s = scenarioDatabase('faults_batch');

  const onHand = async (wh: string, sku: string): Promise<number | null> => {
    const { rows } = await s.pool.query<{ on_hand: string }>('SELECT on_hand FROM stock WHERE wh = $1 AND sku = $2', [
      wh,
      sku,
    ]);
    return rows[0] ? Number(rows[0].on_hand) : null;
  };
  const scanner = (w: Warehouse, i = 0): Promise<MqttClient> => {
    const d = w.scanners[i];
    if (!d) throw new Error('no such scanner');
    return connect(`mqtt://127.0.0.1:${w.edgePort}`, d.id, d.password);
  };
  const ev = (id: string, qty: number, sku: string) => JSON.stringify({ v: 1, id, type: 'received', sku, qty });
  /** N events from one device, each PUBACKed by the edge (on its disk) before this returns. */
  const publishAll = async (w: Warehouse, prefix: string, sku: string): Promise<number> => {
    const device = await scanner(w);
    let sum = 0;
    try {
      await Promise.all(
        Array.from({ length: N }, (_, i) => {
          sum += i + 1;
          return device.publishAsync(topics.event(w.wh, w.scanners[0]?.id ?? ''), ev(`${prefix}-${i}`, i + 1, sku), {
            qos: 1,
          });
        }),
      );
    } finally {
      await device.endAsync(true);
    }
    return sum;
  };
  /** Holds the lock of a stock row until `release`; central's batches touching it wait, their PUBACKs with them. */
  const holdRow = async (wh: string, sku: string) => {
    const client: pg.PoolClient = await s.pool.connect();
    await client.query('BEGIN');
    await client.query('SELECT 1 FROM stock WHERE wh = $1 AND sku = $2 FOR UPDATE', [wh, sku]);
    let held = true;
    return {
      release: async () => {
        if (held) await client.query('COMMIT');
        held = false;
        client.release();
      },
    };
  };
  const batchWaiting = async () =>
    (
      await s.pool.query(
        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%stockwire_apply_batch%'",
      )
    ).rows.length > 0;
  const seedRow = async (w: Warehouse, sku: string) => {
    const device = await scanner(w);
    await device.publishAsync(topics.event(w.wh, w.scanners[0]?.id ?? ''), ev(`${sku}-seed`, 1, sku), { qos: 1 });
    await device.endAsync(true);
    await until(async () => (await onHand(w.wh, sku)) === 1, 20_000, 'the stock row');
  };

  for (const victim of ['edge', 'central'] as const) {
    it(`kill -9 of the ${victim} while central holds a batch: after the restart every event counts once`, {
      timeout: 120_000,
    }, async () => {
      const w = await warehouse(victim === 'edge' ? 'BE' : 'BC', 1);
      const sku = 'SKU-KILL';
      const env = { DATABASE_URL: s.db.url };
      const central = new Proc('central', () => w.centralArgs(), env);
      await central.start();
      const edge = new Proc('edge', () => w.edgeArgs(`mqtt://127.0.0.1:${w.centralPort}`), env);
      await edge.start();
      let lock: { release: () => Promise<void> } | null = null;
      try {
        await until(
          async () => (await metric(edge.current, 'stockwire_edge_link_batching')) === 1,
          20_000,
          'the edge in batch mode',
        );
        await seedRow(w, sku);
        lock = await holdRow(w.wh, sku);
        const sum = await publishAll(w, victim, sku);
        await until(batchWaiting, 20_000, "a batch of the edge's waiting at central for the row");
        assert.equal(await onHand(w.wh, sku), 1, 'nothing of it committed yet');
        if (victim === 'edge') await edge.kill9();
        else await central.kill9();
        await lock.release();
        lock = null;
        if (victim === 'edge') {
          // Central commits the batch it held; its batch-ack finds no edge. The restarted edge sends it all again.
          await until(async () => (await s.inbox(w.wh)) > 1, 20_000, 'the held batch committed');
          await edge.start();
        } else await central.start();
        await until(
          async () => (await metric(edge.current, 'stockwire_edge_backlog_events')) === 0,
          60_000,
          'an empty outbox: central confirmed every event, in batches (or as duplicates of what it had)',
        );
        assert.equal(await s.inbox(w.wh), N + 1);
        assert.equal(await onHand(w.wh, sku), 1 + sum, 'every event once');
        if (victim === 'edge')
          assert.ok(
            (await metric(central.current, 'stockwire_events_total', { outcome: 'duplicate' })) > 0,
            'the events of the held batch came again and were answered duplicate',
          );
        assert.ok((await metric(edge.current, 'stockwire_edge_batches_sent_total')) > 0, 'the restarted link batches');
        assert.ok(
          (await metric(central.current, 'stockwire_gateway_batches_total', { outcome: 'committed' })) > 0,
          'central decided batches',
        );
      } finally {
        await lock?.release().catch(() => {});
        await edge.stop();
        await central.stop();
      }
    });
  }

  it("an edge with a gateway credential against the machine's Mosquitto and stockwire processor falls back to single events, exactly once", {
    timeout: 120_000,
  }, async () => {
    const w = await warehouse('BM', 1);
    const sku = 'SKU-FALLBACK';
    const env = { DATABASE_URL: s.db.url };
    const processor = new Proc('processor', () => w.processorArgs(MOSQUITTO), env);
    await processor.start();
    // The credential is what makes the edge ask for batches; Mosquitto here takes any.
    const edge = new Proc('edge', () => w.edgeArgs(MOSQUITTO), env);
    await edge.start();
    try {
      await until(async () => (await metric(edge.current, 'stockwire_edge_link_up')) === 1, 20_000, 'the link');
      const sum = await publishAll(w, 'fb', sku);
      // Twice: the second time every event is a duplicate.
      await publishAll(w, 'fb', sku);
      await until(
        async () => (await metric(edge.current, 'stockwire_edge_backlog_events')) === 0,
        60_000,
        'an empty outbox',
      );
      assert.equal(await s.inbox(w.wh), N);
      assert.equal(await onHand(w.wh, sku), sum);
      assert.equal(await metric(edge.current, 'stockwire_edge_link_batching'), 0, 'no hello from Mosquitto');
      assert.equal(await metric(edge.current, 'stockwire_edge_batches_sent_total'), 0, 'no batch sent');
      assert.ok((await metric(edge.current, 'stockwire_edge_events_sent_total', { attempt: 'first' })) >= 2 * N);
    } finally {
      await edge.stop();
      await processor.stop();
    }
  });
});
