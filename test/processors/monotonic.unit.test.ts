import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { monotonic } from '../../processors/publish/monotonic-publisher.js';
import type { Publisher } from '../../processors/publish/publisher.js';

const recorder = () => {
  const sent: [string, number | undefined][] = [];
  const inner: Publisher = {
    publish: async (topic, _payload, _retain, version) => {
      sent.push([topic, version]);
    },
  };
  return { sent, inner };
};

describe('monotonic: retained stock topics only move forward', () => {
  it('drops a stock value whose version is not above the last sent on its topic, per topic', async () => {
    const { sent, inner } = recorder();
    const p = monotonic(inner);
    await p.publish('wh/W1/stock/A', '{}', true, 5);
    await p.publish('wh/W1/stock/A', '{}', true, 4); // older: dropped
    await p.publish('wh/W1/stock/A', '{}', true, 5); // the same: dropped
    await p.publish('stock/A', '{}', true, 3); // another topic keeps its own count
    await p.publish('wh/W1/stock/A', '{}', true, 6);
    assert.deepEqual(sent, [
      ['wh/W1/stock/A', 5],
      ['stock/A', 3],
      ['wh/W1/stock/A', 6],
    ]);
  });

  it('passes everything else through: plain publishes, other retained topics, values without a version', async () => {
    const { sent, inner } = recorder();
    const p = monotonic(inner);
    await p.publish('stock/A', '{}', true, 9);
    await p.publish('stock/A', '{}', false, 1); // not retained
    await p.publish('wh/W1/shelf/L1/A', '{}', true, 1); // not a stock topic
    await p.publish('wh/W1/shelf/L1/A', '{}', true, 1);
    await p.publish('stock/A', '{"version":1}', true); // no structured version: nothing to compare
    assert.equal(sent.length, 5);
  });

  it('forgets the oldest topic beyond its bound, so a forgotten topic takes any version again', async () => {
    const { sent, inner } = recorder();
    const p = monotonic(inner, 2);
    await p.publish('stock/A', '{}', true, 5);
    await p.publish('stock/B', '{}', true, 5);
    await p.publish('stock/C', '{}', true, 5); // A forgotten
    await p.publish('stock/A', '{}', true, 1);
    await p.publish('stock/C', '{}', true, 1); // still known: dropped
    assert.deepEqual(
      sent.map(([t, v]) => `${t}@${v}`),
      ['stock/A@5', 'stock/B@5', 'stock/C@5', 'stock/A@1'],
    );
  });
});
