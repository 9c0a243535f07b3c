import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  BATCH_EVENTS_CEILING,
  encodeBatch,
  encodeBatchEvent,
  parseBatch,
  parseBatchAckMessage,
} from '../../protocol/index.js';
import { pinFastCheck } from '../helpers/seed.js';

pinFastCheck('protocol/batch');

const device = fc.stringMatching(/^[A-Za-z0-9._-]{1,64}$/);
// Any bytes: JSON text, UTF-8 with escapes to make, and sequences that are not UTF-8 at all.
const payload = fc.oneof(
  fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
  fc.string({ unit: 'binary', maxLength: 100 }).map((t) => Buffer.from(t, 'utf8')),
  fc.json().map((t) => Buffer.from(t)),
);

describe('batch format, version 1 (protocol/batch.ts)', () => {
  it('property: every payload arrives byte for byte, with its device, in order', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(device, payload), { minLength: 1, maxLength: 20 }), (events) => {
        const raw = encodeBatch(
          'b-1',
          events.map(([d, p]) => encodeBatchEvent(d, p)),
        );
        const r = parseBatch(raw, 1 << 20);
        assert.ok(r.ok, r.ok ? '' : r.error.message);
        assert.equal(r.batch.batch, 'b-1');
        assert.deepEqual(
          r.batch.events.map((e) => [e.device, e.payload.toString('hex')]),
          events.map(([d, p]) => [d, p.toString('hex')]),
        );
      }),
    );
  });

  it('a UTF-8 payload travels as text, anything else as base64', () => {
    assert.deepEqual(JSON.parse(encodeBatchEvent('d', Buffer.from('{"é":1}'))), { device: 'd', payload: '{"é":1}' });
    assert.deepEqual(JSON.parse(encodeBatchEvent('d', Buffer.from([0xc3]))), { device: 'd', payloadBase64: 'ww==' });
  });

  for (const [what, raw, max, code, batch] of [
    ['over the bound', '{"v":1,"batch":"b","events":[{"device":"d","payload":"x"}]}', 10, 'payload_too_large', null],
    ['not JSON', '{"v":1,', 1 << 20, 'invalid_json', null],
    ['of another version', '{"v":2,"batch":"b2","events":[]}', 1 << 20, 'unsupported_version', 'b2'],
    ['without v', '{"batch":"b3","events":[{"device":"d","payload":"x"}]}', 1 << 20, 'schema_violation', 'b3'],
    ['with no events', '{"v":1,"batch":"b4","events":[]}', 1 << 20, 'schema_violation', 'b4'],
    [
      'with an event holding both forms',
      '{"v":1,"batch":"b5","events":[{"device":"d","payload":"x","payloadBase64":"eA=="}]}',
      1 << 20,
      'schema_violation',
      'b5',
    ],
    [
      'with a bad batch name',
      '{"v":1,"batch":"a b","events":[{"device":"d","payload":"x"}]}',
      1 << 20,
      'schema_violation',
      null,
    ],
    [
      'with more events than the ceiling',
      `{"v":1,"batch":"b6","events":[${Array(BATCH_EVENTS_CEILING + 1)
        .fill('{"device":"d","payload":"x"}')
        .join(',')}]}`,
      1 << 20,
      'schema_violation',
      'b6',
    ],
  ] as const) {
    it(`a batch ${what} is refused with ${code}, naming the batch when it can`, () => {
      const r = parseBatch(Buffer.from(raw), max);
      assert.ok(!r.ok);
      assert.equal(r.error.code, code);
      assert.equal(r.batch, batch);
    });
  }

  it('the batch-ack topic carries a hello, a commit ack or a refusal, and nothing else', () => {
    const ok = (m: unknown) => parseBatchAckMessage(Buffer.from(JSON.stringify(m))) !== null;
    assert.ok(ok({ v: 1, hello: { versions: [1], maxEvents: 500, maxBytes: 65536 } }));
    assert.ok(ok({ v: 1, batch: 'b', acks: [{ id: 'e', status: 'applied', stock: { onHand: 1, available: 1 } }] }));
    assert.ok(ok({ v: 1, batch: null, error: { code: 'invalid_json', message: 'no' } }));
    assert.ok(!ok({ v: 2, batch: 'b', acks: [] }));
    assert.ok(!ok({ v: 1, batch: 'b', acks: [{ id: 'e', status: 'maybe' }] }));
    assert.ok(!ok({ v: 1, hello: { versions: [], maxEvents: 500, maxBytes: 1 } }));
    assert.equal(parseBatchAckMessage(Buffer.from('{')), null);
  });
});
