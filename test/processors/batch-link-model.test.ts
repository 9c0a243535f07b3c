import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import type pg from 'pg';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { AuthedClient } from '../../broker/index.js';
import { createPool } from '../../processors/db/pool.js';
import { migrate } from '../../processors/db/migrate.js';
import { ingestGatewayBatch } from '../../processors/ingest/gateway-batch.js';
import { Ingest } from '../../processors/ingest/ingest.js';
import { applyToBook, emptyBook, eventKey, stockKey } from '../../processors/ledger/ledger.js';
import { createIngestMetrics } from '../../processors/metrics.js';
import { MemoryReadModel } from '../../processors/readmodel/readmodel.js';
import {
  encodeBatch,
  encodeBatchEvent,
  parseBatchAckMessage,
  topics,
  type BatchAckV1,
  type StockEvent,
} from '../../protocol/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { pinFastCheck } from '../helpers/seed.js';
import { pauseJobs } from '../helpers/timescale.js';
import { arbitraryEvents, numbers } from './arbitraries.js';

pinFastCheck('processors/batch-link-model');

/**
 * The law of test/processors/ledger.test.ts and batch.test.ts (the stock of a set of events is the pure model's,
 * whatever the order and the duplicates), through the batched link: each warehouse's edge splits its outbox into
 * batches anywhere, loses some batch-acks and sends those events again in other splits, has some batches delivered
 * twice, and the batches of both edges reach central in any interleaving, several at a time. Central's real batch
 * path decides them (ingestGatewayBatch → Ingest → stockwire_apply_batch); the pure model says what the stock is.
 */
let db: TestDatabase;
let pool: pg.Pool;

const gateway = (wh: string): AuthedClient => ({
  clientId: `gw-${wh}`,
  device: { id: `gw-${wh}`, warehouse: wh, kind: 'gateway', passwordHash: 'unused' },
});
/** The device's payload as an edge forwards it: its event time in it. */
const payloadOf = (e: StockEvent) => Buffer.from(JSON.stringify({ ...e.payload, ts: e.ts }));

interface Sent {
  wh: string;
  name: string;
  events: StockEvent[];
}

/** An edge's sends of its outbox: split anywhere; a lost batch-ack makes its events go again, split otherwise. */
function edgeSends(wh: string, outbox: StockEvent[], next: () => number): Sent[] {
  const sent: Sent[] = [];
  let queue = outbox;
  let n = 0;
  while (queue.length > 0) {
    const again: StockEvent[] = [];
    for (let i = 0; i < queue.length; ) {
      const size = 1 + (next() % 6);
      const events = queue.slice(i, i + size);
      i += size;
      const batch = { wh, name: `${wh}-${++n}`, events };
      sent.push(batch);
      if (next() % 4 === 0) sent.push(batch); // delivered twice (a QoS 1 redelivery)
      if (next() % 3 === 0 && n < 40) again.push(...events); // its batch-ack is lost: the events go again
    }
    queue = again;
  }
  return sent;
}

describe('the batched link against the pure model', () => {
  before(async () => {
    db = await createTestDatabase('batchlinkmodel');
    pool = createPool({ url: db.url, max: 4 });
    // As in batch.test: on TimescaleDB the archive job would fold these 2023 events into its baseline.
    if ((await migrate(pool)).timescale) await pauseJobs(pool);
  });
  after(async () => {
    await pool.end();
    await db.drop();
  });

  it('property: any batch splits, resends and duplicate batches, in any interleaving, give the pure model stock', async () => {
    await fc.assert(
      fc.asyncProperty(arbitraryEvents(30), fc.infiniteStream(fc.nat()), async (events, noise) => {
        await pool.query('TRUNCATE inbox, events, stock, sku_versions');
        const next = numbers(noise);
        const expected = events.reduce((b, e) => applyToBook(b, e).book, emptyBook);
        const answers: BatchAckV1[] = [];
        const ingest = new Ingest({
          pool,
          publisher: {
            publish: async (topic, payload) => {
              const m = parseBatchAckMessage(Buffer.from(payload));
              if (topic.endsWith('/batch-ack') && m !== null && 'acks' in m) answers.push(m);
            },
          },
          readModel: new MemoryReadModel(pool),
          metrics: createIngestMetrics(new Registry()),
          log: pino({ level: 'silent' }),
          maxBatch: 1 + (next() % 20),
          maxWaitMs: 1,
        });
        // Each edge's outbox holds its warehouse's events in arrival order.
        const sends = ['W1', 'W2'].flatMap((wh) =>
          edgeSends(
            wh,
            events.filter((e) => e.wh === wh),
            next,
          ),
        );
        for (let i = sends.length - 1; i > 0; i--) {
          const j = next() % (i + 1);
          [sends[i], sends[j]] = [sends[j] as Sent, sends[i] as Sent];
        }
        // Central takes them a few at a time, as several connections' publishes arrive together.
        for (let i = 0; i < sends.length; ) {
          const together = sends.slice(i, i + 1 + (next() % 4));
          i += together.length;
          await Promise.all(
            together.map((b) =>
              ingestGatewayBatch(
                ingest,
                gateway(b.wh),
                {
                  topic: topics.batch(b.wh, `gw-${b.wh}`),
                  payload: encodeBatch(
                    b.name,
                    b.events.map((e) => encodeBatchEvent(e.device, payloadOf(e))),
                  ),
                },
                { maxBytes: 1 << 20, metrics: createIngestMetrics(new Registry()), log: pino({ level: 'silent' }) },
              ),
            ),
          );
        }
        await ingest.stop();

        assert.equal(answers.length, sends.length, 'one batch-ack per batch sent');
        const applied = new Map<string, number>();
        for (const b of sends) {
          const ack = answers.find((a) => a.batch === b.name);
          assert.ok(ack, `a batch-ack for ${b.name}`);
          assert.deepEqual(
            ack.acks.map((a) => a.id),
            b.events.map((e) => e.id),
            `${b.name}: its events' outcomes in order`,
          );
        }
        for (const a of answers) {
          const b = sends.find((s) => s.name === a.batch) as Sent;
          a.acks.forEach((ack, i) => {
            const key = eventKey(b.events[i] as StockEvent);
            assert.notEqual(ack.status, 'rejected', key);
            if (ack.status === 'applied') applied.set(key, (applied.get(key) ?? 0) + 1);
          });
        }
        // Every answer counts: a batch delivered twice is answered twice, the second time all duplicate.
        assert.equal(applied.size, events.length, 'every event applied');
        assert.ok(
          [...applied.values()].every((n) => n === 1),
          'and applied once',
        );
        const { rows } = await pool.query<{ wh: string; sku: string; on_hand: number }>(
          'SELECT wh, sku, on_hand FROM stock',
        );
        const actual = new Map(rows.map((r) => [stockKey(r.wh, r.sku), Number(r.on_hand)]));
        for (const [key, s] of expected.stock) assert.equal(actual.get(key), s.onHand, key);
      }),
      { numRuns: 30 },
    );
  });
});
