import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import type { MqttClient } from 'mqtt';
import type pg from 'pg';
import type { Ack } from '../../protocol/index.js';
import { startCentralFixture, type CentralFixture } from '../helpers/central.js';
import { anyPayload, expectedOutcome, MAX_EVENT_BYTES } from '../helpers/fuzz.js';
import type { Collector } from '../helpers/mqtt.js';
import { pinFastCheck } from '../helpers/seed.js';

pinFastCheck('processors/central-fuzz');

/**
 * Central end to end under fuzzed payloads: an authorised gateway publishes random bytes, random JSON,
 * deeply nested and huge JSON, and valid events with one field out of its rule, each from a device of
 * its own, with a valid event between every two. Every input must end with an `applied` or `rejected`
 * ack (as the contract says of its bytes), every rejection with a dead letter and its reason; the
 * valid events in between are all applied, and central stays healthy.
 */
const WH = 'WZ';
const RUNS = 120;
let fixture: CentralFixture;
let ports: { mqtt: number; ws: number; http: number };
let gateway: MqttClient;
let acks: Collector<Ack>;
let pool: pg.Pool;

describe('stockwire central under fuzzed payloads', () => {
  before(async () => {
    fixture = await startCentralFixture({
      name: 'central_fuzz',
      wh: WH,
      gateway: { id: 'gwz', password: 'gw-secret' },
      options: { batchWaitMs: 2 },
    });
    ({ ports, gateway, acks, pool } = fixture);
  });
  after(async () => {
    await fixture?.stop();
  });

  const ackOf = async (device: string, id?: string): Promise<Ack> => {
    const topic = `wh/${WH}/dev/${device}/ack`;
    const found = () =>
      acks.messages.find((m) => m.topic === topic && (id === undefined || m.payload.id === id))?.payload;
    await acks.waitFor(() => found() !== undefined, 15_000, `the ack of ${device}`);
    return found() as Ack;
  };

  it('every input ends applied or rejected, as the contract says; rejections are dead letters with a reason; valid events in between are applied', {
    timeout: 120_000,
  }, async () => {
    let n = 0;
    const outcomes = { applied: 0, rejected: 0 };
    await fc.assert(
      fc.asyncProperty(anyPayload, async (payload) => {
        const i = ++n;
        const device = `fz-${i}`;
        await gateway.publishAsync(`wh/${WH}/dev/${device}/event`, payload, { qos: 1 });
        await gateway.publishAsync(
          `wh/${WH}/dev/ok-dev/event`,
          JSON.stringify({ v: 1, id: `ok-${i}`, type: 'received', sku: 'FZ-OK', qty: 1 }),
          { qos: 1 },
        );
        const expected = expectedOutcome(payload, MAX_EVENT_BYTES + 32); // central takes an edge's ts stamp on top of 8 KiB
        const ack = await ackOf(device);
        assert.equal(
          ack.status,
          expected.ok ? 'applied' : 'rejected',
          `ack ${JSON.stringify(ack)} for ${payload.subarray(0, 200).toString()}`,
        );
        outcomes[expected.ok ? 'applied' : 'rejected']++;
        if (!expected.ok) {
          assert.equal(ack.error?.code, expected.code, ack.error?.message);
          const { rows } = await pool.query<{ code: string; reason: string; raw: Buffer; source: string }>(
            'SELECT code, reason, raw, source FROM dead_letters WHERE wh = $1 AND device = $2',
            [WH, device],
          );
          assert.equal(rows.length, 1, 'one dead letter');
          const [dead] = rows as [{ code: string; reason: string; raw: Buffer; source: string }];
          assert.equal(dead.code, expected.code);
          assert.ok(dead.reason.length > 0, 'with a reason');
          assert.ok(dead.raw.equals(payload.subarray(0, 8 * 1024)), 'with the raw payload, truncated to 8 KiB');
          assert.equal(dead.source, 'gwz');
        }
        assert.equal((await ackOf('ok-dev', `ok-${i}`)).status, 'applied');
      }),
      { numRuns: RUNS },
    );
    assert.ok(
      outcomes.applied > 0 && outcomes.rejected > 0,
      `both outcomes were exercised: ${JSON.stringify(outcomes)}`,
    );
    const stock = (await (await fetch(`http://127.0.0.1:${ports.http}/v1/warehouses/${WH}/stock/FZ-OK`)).json()) as {
      onHand: number;
    };
    assert.equal(stock.onHand, n);
    for (const path of ['/healthz', '/readyz'])
      assert.equal((await fetch(`http://127.0.0.1:${ports.http}${path}`)).status, 200, path);
  });
});
