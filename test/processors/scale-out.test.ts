import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import { createPool } from '../../processors/db/pool.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { assertExact } from '../helpers/exactly-once.js';
import { startStockwire, type Running } from '../helpers/process.js';
import { ResendingPublisher } from '../helpers/resending-publisher.js';
import { workload } from '../helpers/workload.js';

const TOTAL = 3_000;
const MOSQUITTO = process.env.MOSQUITTO_URL ?? 'mqtt://127.0.0.1:1883';

/** Events a processor applied, from its own /metrics (stockwire_events_total{outcome="applied"}, all types). */
async function applied(r: Running): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${r.ports.http}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith('stockwire_events_total{') && l.includes('outcome="applied"'))
    .reduce((sum, l) => sum + Number(l.split(' ')[1]), 0);
}

describe('processor scale-out: two stockwire processor instances share the events through MQTT 5 $share on Mosquitto', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  before(async () => {
    db = await createTestDatabase('scaleout');
    pool = createPool({ url: db.url, max: 2 });
  });
  after(async () => {
    await pool.end();
    await db.drop();
  });

  it('events are split across both instances and every one is applied exactly once', {
    timeout: 120_000,
  }, async (t) => {
    const wh = `WS${randomBytes(3).toString('hex')}`;
    const group = `g${randomBytes(3).toString('hex')}`;
    const { events, expected } = workload(wh, TOTAL, 31);
    const env = { DATABASE_URL: db.url };
    // --warehouses keeps this test's group to its own warehouse on the shared Mosquitto: $share/{group}/wh/{wh}/dev/+/event
    const args = (instance: string) => [
      'processor',
      '--central-url',
      MOSQUITTO,
      '--warehouses',
      wh,
      '--shared-group',
      group,
      '--instance',
      `${wh}-${instance}`,
      '--http-port',
      '0',
      '--host',
      '127.0.0.1',
    ];
    const processors = await Promise.all([startStockwire(args('a'), env), startStockwire(args('b'), env)]);
    const publisher = new ResendingPublisher(MOSQUITTO, wh, events, { clientId: `edge-${wh}` });
    try {
      const stats = await publisher.run();
      assert.equal(stats.acked, TOTAL, 'every event got its commit ack');
      await assertExact(pool, wh, TOTAL, expected);
      const [a, b] = await Promise.all(processors.map(applied));
      assert.ok((a as number) > TOTAL / 10 && (b as number) > TOTAL / 10, `both instances took a share: ${a} and ${b}`);
      assert.equal((a as number) + (b as number), TOTAL, 'no event applied by both');
      t.diagnostic(`applied by instance a: ${a}, by b: ${b}; sends ${stats.sends} for ${TOTAL} events`);
    } finally {
      await publisher.close();
      for (const p of processors) p.child.kill('SIGTERM');
      assert.deepEqual(await Promise.all(processors.map((p) => p.exited)), [0, 0], 'clean exits on SIGTERM');
    }
  });
});
