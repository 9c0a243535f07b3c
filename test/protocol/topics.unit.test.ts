import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseAckTopic, parseEventTopic, parseStockTopic, topics } from '../../protocol/index.js';

describe('protocol owns the topic shapes', () => {
  it('parses what topics builds: event, ack, both stock topics', () => {
    assert.deepEqual(parseEventTopic(topics.event('W1', 'scan-1')), { wh: 'W1', device: 'scan-1' });
    assert.deepEqual(parseAckTopic(topics.ack('W1', 'scan-1')), { wh: 'W1', device: 'scan-1' });
    assert.deepEqual(parseStockTopic(topics.warehouseStock('W1', 'SKU-1')), { wh: 'W1', sku: 'SKU-1' });
    assert.deepEqual(parseStockTopic(topics.globalStock('SKU-1')), { wh: null, sku: 'SKU-1' });
  });

  it('refuses near misses', () => {
    for (const t of [
      'wh/W1/dev/scan-1/event',
      'wh/W1/dev/scan-1/ack/x',
      'wh/W1/dev/+/ack',
      'wh//dev/d/ack',
      'x/W1/dev/d/ack',
    ])
      assert.equal(parseAckTopic(t), null, t);
    for (const t of ['stock', 'stock/', 'stock/A/B', 'wh/W1/stock', 'wh/W1/stock/', 'wh/W1/shelf/L/A', 'wh//stock/A'])
      assert.equal(parseStockTopic(t), null, t);
  });
});
