import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  filterWithin,
  isOwnResponseTopic,
  MAX_EVENT_BYTES,
  parseEvent,
  parseEventTopic,
  parseRequestTopic,
  stampReceiptTime,
  STAMPED_EVENT_MAX_BYTES,
  topicMatches,
  topics,
  TS_STAMP_BYTES,
  type ParseResult,
} from '../../protocol/index.js';
import { anyPayload, deeplyNested, expectedOutcome, mutatedEvent, validEvent } from '../helpers/fuzz.js';
import { pinFastCheck } from '../helpers/seed.js';

pinFastCheck('protocol/event-fuzz');

// Property-based fuzzing of payload parsing and of the topic parsers. Run counts keep the file well under a minute.
const SOURCE = { wh: 'W1', device: 'd1', receivedAt: Date.parse('2026-01-01T00:00:00Z') };
const CODES = new Set(['invalid_json', 'payload_too_large', 'unsupported_version', 'schema_violation']);

function check(raw: Buffer): ParseResult {
  const result = parseEvent(raw, SOURCE); // must not throw
  const expected = expectedOutcome(raw);
  if (expected.ok) {
    assert.ok(result.ok, `refused a valid event: ${result.ok ? '' : result.error.message}`);
  } else {
    assert.ok(!result.ok, `accepted an invalid event (${expected.code})`);
    assert.equal(result.error.code, expected.code, result.error.message);
    assert.ok(CODES.has(result.error.code));
    assert.ok(result.error.message.length > 0, 'a refusal carries a reason');
  }
  if (result.ok) {
    const e = result.event;
    assert.equal(e.wh, SOURCE.wh, 'warehouse from the connection, never the payload');
    assert.equal(e.device, SOURCE.device, 'device from the connection, never the payload');
    assert.ok(Number.isSafeInteger(e.qty) && Number.isSafeInteger(e.ts));
    assert.match(e.sku, /^[A-Za-z0-9._-]{1,64}$/);
  }
  return result;
}

describe('parseEvent under fuzzing', () => {
  test('random bytes: never throws, and agrees with the contract', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1024 }), (b) => void check(Buffer.from(b))),
      { numRuns: 500 },
    );
  });

  test('random JSON values and text: agree with the contract', () => {
    fc.assert(
      fc.property(fc.json({ maxDepth: 5 }), (t) => void check(Buffer.from(t))),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (s) => void check(Buffer.from(s))),
      { numRuns: 300 },
    );
  });

  test('valid events are accepted with their fields intact', () => {
    fc.assert(
      fc.property(validEvent, (e) => {
        const r = check(Buffer.from(JSON.stringify(e)));
        assert.ok(r.ok);
        assert.equal(r.event.id, e.id);
        assert.equal(r.event.sku, e.sku);
        assert.equal(r.event.qty, e.qty);
        assert.equal(r.event.type, e.type);
      }),
      { numRuns: 400 },
    );
  });

  test('one field out of its rule (numbers out of range, strings for numbers, topic injection, NUL, lone surrogates, over-long ids)', () => {
    fc.assert(
      fc.property(mutatedEvent, (t) => void check(Buffer.from(t))),
      { numRuns: 2_000 },
    );
  });

  test('deeply nested and huge JSON', () => {
    fc.assert(
      fc.property(deeplyNested, (t) => void check(Buffer.from(t))),
      { numRuns: 200 },
    );
    fc.assert(
      fc.property(anyPayload, (b) => void check(b)),
      { numRuns: 500 },
    );
  });

  test('nesting as deep as 8 KiB allows (4,000 arrays) is checked without recursion: accepted in an extra field, refused with its reason when it hides U+0000', () => {
    const base = '{"v":1,"id":"deep-1","type":"received","sku":"SKU-1","qty":1,"x":';
    const depth = 4_000;
    const deep = check(Buffer.from(`${base}${'['.repeat(depth)}${']'.repeat(depth)}}`));
    assert.ok(deep.ok, 'a valid event; the contract allows extra fields');
    const hidden = check(Buffer.from(`${base}${'['.repeat(depth)}"a\\u0000b"${']'.repeat(depth)}}`));
    assert.ok(!hidden.ok);
    assert.equal(hidden.error.code, 'schema_violation');
    assert.match(hidden.error.message, /U\+0000/);
  });

  test("stampReceiptTime: an event without ts grows by exactly TS_STAMP_BYTES, the device's bytes kept; one whose ts is replaced has its ts members cut out, never re-serialised", () => {
    const at = Date.UTC(2026, 10, 26, 8, 45);
    const iso = new Date(at).toISOString();
    const raw = Buffer.from(' {"v":1, "id":"s-1","type":"received","sku":"SKU-1","qty":1}');
    const stamped = stampReceiptTime(raw, JSON.parse(raw.toString()), at);
    assert.equal(stamped.length, raw.length + TS_STAMP_BYTES);
    assert.equal(stamped.toString(), ` {"ts":"${iso}","v":1, "id":"s-1","type":"received","sku":"SKU-1","qty":1}`);
    const ahead = Buffer.from('{"v":1,"id":"s-2","type":"received","sku":"SKU-1","qty":1,"ts":"2099-01-01T00:00:00Z"}');
    assert.equal(
      stampReceiptTime(ahead, JSON.parse(ahead.toString()), at).toString(),
      `{"ts":"${iso}","v":1,"id":"s-2","type":"received","sku":"SKU-1","qty":1}`,
    );
    // 1e20 is written out as 21 digits: re-serialised, this payload would pass STAMPED_EVENT_MAX_BYTES; cut, it fits
    const growing = Buffer.from(
      JSON.stringify({ v: 1, id: 's-3', type: 'received', sku: 'SKU-1', qty: 1, ts: '2099-01-01T00:00:00Z' }).replace(
        '}',
        `,"n":[${Array(1_500).fill('1e20').join(',')}]}`,
      ),
    );
    assert.ok(growing.length <= MAX_EVENT_BYTES);
    const cut = stampReceiptTime(growing, JSON.parse(growing.toString()), at);
    assert.ok(cut.length <= STAMPED_EVENT_MAX_BYTES);
    assert.equal(JSON.parse(cut.toString()).ts, iso);
    assert.ok(cut.toString().endsWith(',1e20]}'), 'the numbers as the device wrote them');
    assert.equal(STAMPED_EVENT_MAX_BYTES, MAX_EVENT_BYTES + TS_STAMP_BYTES);
    assert.equal(`"ts":"${iso}",`.length, TS_STAMP_BYTES);
  });

  test('examples the contract names, each with its reason', () => {
    const base = { v: 1, id: 'e1', type: 'received', sku: 'SKU-1', qty: 1 };
    const refused = (text: string, field?: string) => {
      const r = check(Buffer.from(text));
      assert.ok(!r.ok);
      if (field !== undefined) assert.equal(r.error.field, field, r.error.message);
    };
    refused(JSON.stringify(base).replace('"qty":1', '"qty":1e400'), 'qty');
    refused(JSON.stringify(base).replace('"qty":1', '"qty":9007199254740993'), 'qty');
    refused(JSON.stringify(base).replace('"qty":1', '"qty":1.5'), 'qty');
    refused(JSON.stringify({ ...base, qty: '5' }), 'qty');
    refused(JSON.stringify({ ...base, sku: 'a/b' }), 'sku');
    refused(JSON.stringify({ ...base, sku: 'a+' }), 'sku');
    refused(JSON.stringify({ ...base, sku: '#' }), 'sku');
    refused(JSON.stringify({ ...base, id: 'x'.repeat(65) }), 'id');
    refused(JSON.stringify({ ...base, reason: 'a\u0000b' }));
    refused(JSON.stringify({ ...base, reason: '\ud800' }));
    refused(JSON.stringify({ ...base, ts: 8.64e15 + 1 }), 'ts');
    // Date.parse rolls these over to another day; RFC 3339 (5.7) calls them invalid.
    for (const ts of [
      '2026-02-30T00:00:00Z',
      '2026-02-29T12:00:00Z',
      '2026-04-31T00:00:00Z',
      '2026-01-01T24:00:00Z',
      '2026-01-01T12:00:00+24:00',
    ])
      refused(JSON.stringify({ ...base, ts }), 'ts');
    assert.ok(check(Buffer.from(JSON.stringify({ ...base, ts: '2024-02-29T12:00:00Z' }))).ok, 'a leap day');
    assert.ok(check(Buffer.from(JSON.stringify({ ...base, reason: '\ud83d\ude00 paired is fine' }))).ok);
  });
});

const level = fc.constantFrom(
  'wh',
  'W1',
  'dev',
  'd1',
  'event',
  'ack',
  'stock',
  'requests',
  'responses',
  '+',
  '#',
  '',
  '$SYS',
  'a\u0000',
  'é',
  'x'.repeat(65),
);
const topicOf = (levels: string[]) => levels.join('/');

describe('topic parsers under fuzzing', () => {
  test('parseEventTopic: never throws; accepts exactly wh/{ident}/dev/{ident}/event and round-trips', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ unit: 'binary', maxLength: 100 }), fc.array(level, { maxLength: 7 }).map(topicOf)),
        (t) => {
          const p = parseEventTopic(t);
          const m = /^wh\/([A-Za-z0-9._-]{1,64})\/dev\/([A-Za-z0-9._-]{1,64})\/event$/.exec(t);
          assert.deepEqual(p, m ? { wh: m[1], device: m[2] } : null);
          if (p) assert.equal(topics.event(p.wh, p.device), t);
        },
      ),
      { numRuns: 1_000 },
    );
  });

  test("parseRequestTopic and isOwnResponseTopic: only a requester's own topics, never a wildcard or NUL", () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ unit: 'binary', maxLength: 80 }), fc.array(level, { maxLength: 4 }).map(topicOf)),
        (t) => {
          const r = parseRequestTopic(t);
          if (r) assert.equal(topics.request(r.device), t);
          if (isOwnResponseTopic(t, 'd1')) {
            assert.ok(t === 'responses/d1' || t.startsWith('responses/d1/'), t);
            // biome-ignore lint/suspicious/noControlCharactersInRegex: a topic name must not hold U+0000 (MQTT)
            assert.ok(!/[+#\u0000]/.test(t), t);
          }
        },
      ),
      { numRuns: 1_000 },
    );
  });

  test('filterWithin is sound: a filter within a grant never matches a topic outside it (the ACL relies on it)', () => {
    const name = fc
      .array(fc.constantFrom('wh', 'W1', 'W2', 'dev', 'd1', 'stock', 'x', ''), { minLength: 1, maxLength: 5 })
      .map(topicOf);
    // well-formed filters (MQTT-4.7.1): `#` only as the whole last level; the ACL refuses any other before this check
    const filter = fc
      .tuple(
        fc.array(fc.constantFrom('wh', 'W1', 'W2', 'dev', 'd1', 'stock', 'x', '', '+'), { maxLength: 5 }),
        fc.boolean(),
      )
      .map(([levels, hash]) => topicOf(hash || levels.length === 0 ? [...levels, '#'] : levels));
    fc.assert(
      fc.property(filter, filter, fc.array(name, { minLength: 1, maxLength: 30 }), (f, grant, names) => {
        if (!filterWithin(f, grant)) return;
        for (const t of names)
          if (topicMatches(f, t)) assert.ok(topicMatches(grant, t), `${f} within ${grant}, but ${t} escapes`);
      }),
      { numRuns: 3_000 },
    );
  });
});
