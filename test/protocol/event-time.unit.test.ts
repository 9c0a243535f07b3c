import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  EDGE_CLOCK_TOLERANCE_MS,
  forwardedPayload,
  MAX_CLOCK_AHEAD_MS,
  MAX_EVENT_BYTES,
  parseEvent,
  STAMPED_EVENT_MAX_BYTES,
} from '../../protocol/index.js';
import { validEvent } from '../helpers/fuzz.js';
import { pinFastCheck } from '../helpers/seed.js';

// The 5-minute rule of CONTRACT 3 must hold for every event whatever its size or shape (issue 15): an edge
// stamps its receipt time into every valid event whose ts it does not trust, and central never trusts a ts far
// ahead of its own clock, so no single event can anchor stock for good. In CI the seed is fixed (and printed).
pinFastCheck('protocol/event-time');
const SEED = fc.readConfigureGlobal().seed as number;
const EDGE_AT = Date.parse('2026-03-01T12:00:00Z'); // the edge's receipt time, epoch ms
const MIN = 60_000;

const edgeSource = { wh: 'W1', device: 'd1', receivedAt: EDGE_AT };
const centralSource = (receivedAt: number) => ({
  wh: 'W1',
  device: 'd1',
  receivedAt,
  maxBytes: STAMPED_EVENT_MAX_BYTES,
  tsDecidedByEdge: true,
});

/** The issue's example: a count of nearly 8 KiB, year 9999, full of numbers that grow when written out. */
function attackShape(): Buffer {
  const head = '{"v":1,"id":"phantom-1","type":"counted","sku":"SKU-F","qty":1000000,"ts":"9999-12-31T23:59:59Z","n":[';
  const numbers = Array(Math.floor((MAX_EVENT_BYTES - head.length - 2) / 5))
    .fill('1e20')
    .join(',');
  return Buffer.from(`${head}${numbers}]}`);
}

const ws = fc.constantFrom('', ' ', '\n', ' \t', '\r\n  ');
/** Spellings of the key `ts`: JSON.parse reads all three as `ts`. */
const tsKey = fc.constantFrom('"ts"', '"t\\u0073"', '"\\u0074s"');
/** A ts the edge trusts (at most 5 min ahead of its receipt), as text, and its epoch ms. */
const trustedTs = fc
  .integer({ min: EDGE_AT - 400 * 24 * 60 * MIN, max: EDGE_AT + MAX_CLOCK_AHEAD_MS })
  .chain((ms) => fc.constantFrom(String(ms), JSON.stringify(new Date(ms).toISOString())).map((text) => ({ text, ms })));
/** A ts too far ahead, up to the largest the contract's formats allow. */
const farTs = fc.oneof(
  fc.constantFrom(
    '"9999-12-31T23:59:59Z"',
    '"9999-12-31t23:59:59.999999999z"',
    '"9999-12-31 23:59:59-14:00"',
    '8640000000000000',
    '"2100-01-01T00:00:00+00:00"',
  ),
  fc.integer({ min: EDGE_AT + MAX_CLOCK_AHEAD_MS + 1, max: 8.64e15 }).map(String),
  // RFC 3339 has four-digit years: up to 9999-12-31T23:59:59.999Z.
  fc
    .integer({ min: EDGE_AT + MAX_CLOCK_AHEAD_MS + 1, max: Date.UTC(9999, 11, 31, 23, 59, 59, 999) })
    .map((ms) => JSON.stringify(new Date(ms).toISOString())),
);
// Values of unknown fields: numbers that grow when re-serialised, escapes that shrink, multi-byte text, nested ts.
const growing = fc.constantFrom(
  '1e20',
  '1E20',
  '-1e20',
  '1e+20',
  '0.1e21',
  '1e-7',
  '5e-324',
  '1e308',
  '123456789e12',
  '1.0',
  '-0',
);
const extraValue = fc.oneof(
  growing,
  fc.string({ unit: 'grapheme', maxLength: 30 }).map((s) => JSON.stringify(s)),
  fc.constantFrom(
    '"\\u00e9\\ud83d\\ude00"',
    '"a\\"b\\\\c,}{"',
    '"\\/"',
    '{"ts":"9999-12-31T23:59:59Z"}',
    '[{"ts":8640000000000000}]',
    'null',
    'true',
    '{}',
    '[]',
  ),
  fc.json({ maxDepth: 2 }),
  fc.array(growing, { maxLength: 20 }).map((a) => `[${a.join(',')}]`),
);
const extraKey = fc.constantFrom(
  '"n"',
  '"note"',
  '"TS"',
  '"ts "',
  '"t\\u0073x"',
  '"é"',
  '"__proto__"',
  '"{\\"ts\\":1}"',
);

interface Shape {
  raw: Buffer;
  /** the ts JSON.parse reads (the last `ts` member), epoch ms; null without one */
  deviceTs: number | null;
}

/** A valid event as raw text: its members in any order, any whitespace, 0–3 `ts` members, extra fields, padded to any size up to 8 KiB. */
const shape: fc.Arbitrary<Shape> = fc
  .record({
    event: validEvent.map(({ ts: _ts, ...rest }) => rest),
    tsMembers: fc.array(
      fc.tuple(
        tsKey,
        fc.oneof(
          trustedTs.map((t) => t.text),
          farTs,
        ),
      ),
      { maxLength: 3 },
    ),
    extras: fc.array(fc.tuple(extraKey, extraValue), { maxLength: 12 }),
    order: fc.array(fc.nat(), { minLength: 20, maxLength: 20 }),
    space: fc.array(ws, { minLength: 4, maxLength: 4 }),
    size: fc.oneof(
      fc.integer({ min: 0, max: MAX_EVENT_BYTES }),
      fc.integer({ min: MAX_EVENT_BYTES - 40, max: MAX_EVENT_BYTES }),
    ),
  })
  .map(({ event, tsMembers, extras, order, space, size }) => {
    const [a = '', b = '', c = '', d = ''] = space;
    const members = [
      ...Object.entries(event).map(([k, v]) => `${JSON.stringify(k)}${a}:${b}${JSON.stringify(v)}`),
      ...extras.map(([k, v]) => `${k}:${a}${v}`),
      ...tsMembers.map(([k, v]) => `${k}${b}:${v}`),
    ];
    // Shuffle by the drawn keys; the ts members keep their order among themselves (the last one is the one read).
    const keys = members.map((_m, i) => (order[i % order.length] ?? 0) + i / 100);
    const tsFrom = members.length - tsMembers.length;
    const tsKeys = keys.slice(tsFrom).sort((x, y) => x - y);
    tsKeys.forEach((k, j) => {
      keys[tsFrom + j] = k;
    });
    const interleaved = members
      .map((m, i) => ({ m, k: keys[i] as number }))
      .sort((x, y) => x.k - y.k)
      .map((x) => x.m);
    let text = `${c}{${d}${interleaved.join(`${a},${b}`)}`;
    const room = size - Buffer.byteLength(text) - 1;
    if (room > 12)
      text += `,"pad":[${Array(Math.floor((room - 8) / 5))
        .fill('1e20')
        .join(',')}]`;
    text += `${' '.repeat(Math.max(0, size - Buffer.byteLength(text) - 1))}}`;
    const last = JSON.parse(text) as { ts?: unknown };
    const deviceTs =
      last.ts === undefined ? null : typeof last.ts === 'number' ? last.ts : Date.parse(last.ts as string);
    return { raw: Buffer.from(text), deviceTs };
  })
  .filter((s) => s.raw.length <= MAX_EVENT_BYTES);

function withoutTs(payload: Record<string, unknown>): Record<string, unknown> {
  const { ts: _ts, ...rest } = payload;
  return rest;
}

describe(`event time: the 5-minute rule holds for every size and shape (fast-check seed ${SEED})`, () => {
  test('edge then central: a valid event reaches the ledger with a ts at most 5 min ahead of the edge receipt, its other fields as sent', () => {
    fc.assert(
      fc.property(shape, fc.integer({ min: 0, max: 48 * 60 * MIN }), ({ raw, deviceTs }, delay) => {
        const atEdge = parseEvent(raw, edgeSource);
        assert.ok(atEdge.ok, `a valid event (${raw.length} bytes): ${atEdge.ok ? '' : atEdge.error.message}`);
        const forwarded = forwardedPayload(raw, atEdge);
        assert.ok(forwarded.length <= STAMPED_EVENT_MAX_BYTES, `forwarded ${forwarded.length} bytes`);
        // Central takes it now or after an outage of up to two days.
        const atCentral = parseEvent(forwarded, centralSource(EDGE_AT + delay));
        assert.ok(atCentral.ok, atCentral.ok ? '' : atCentral.error.message);
        const trusted = deviceTs !== null && deviceTs <= EDGE_AT + MAX_CLOCK_AHEAD_MS;
        assert.equal(
          atCentral.event.ts,
          trusted ? deviceTs : EDGE_AT,
          'the device time when trusted, else the edge receipt time',
        );
        assert.deepEqual(
          withoutTs(atCentral.event.payload),
          withoutTs(atEdge.event.payload),
          'every other field as the device sent it',
        );
      }),
      { numRuns: 1_500, examples: [[{ raw: attackShape(), deviceTs: Date.parse('9999-12-31T23:59:59Z') }, 0]] },
    );
  });

  test('central alone: a ts forwarded by a gateway is trusted up to 10 min ahead of its clock, never further', () => {
    fc.assert(
      fc.property(
        shape,
        fc.integer({ min: EDGE_AT - 400 * 24 * 60 * MIN, max: EDGE_AT + 400 * 24 * 60 * MIN }),
        ({ raw, deviceTs }, centralAt) => {
          const r = parseEvent(raw, centralSource(centralAt));
          assert.ok(r.ok, r.ok ? '' : r.error.message);
          const bound = centralAt + MAX_CLOCK_AHEAD_MS + EDGE_CLOCK_TOLERANCE_MS;
          assert.equal(r.event.ts, deviceTs !== null && deviceTs <= bound ? deviceTs : centralAt);
          assert.ok(r.event.ts <= bound);
        },
      ),
      { numRuns: 1_000 },
    );
  });

  test('regression, the attack shape of issue 15: the edge stamps its receipt time within the size limit; central, handed it raw, does not trust its year 9999', () => {
    const raw = attackShape();
    assert.ok(raw.length > MAX_EVENT_BYTES - 8 && raw.length <= MAX_EVENT_BYTES, `${raw.length} bytes`);
    assert.ok(
      Buffer.byteLength(JSON.stringify(JSON.parse(raw.toString()))) > STAMPED_EVENT_MAX_BYTES,
      're-serialised, it would not fit',
    );
    const atEdge = parseEvent(raw, edgeSource);
    assert.ok(atEdge.ok);
    assert.equal(atEdge.event.ts, EDGE_AT);
    const forwarded = forwardedPayload(raw, atEdge);
    assert.ok(
      forwarded.length <= STAMPED_EVENT_MAX_BYTES && forwarded.length - raw.length < 32,
      'the ts member replaced, nothing written out again',
    );
    assert.equal((JSON.parse(forwarded.toString()) as { ts: string }).ts, new Date(EDGE_AT).toISOString());
    const later = EDGE_AT + 60 * MIN;
    const direct = parseEvent(raw, centralSource(later)); // an old edge, or a hostile gateway, forwards it as it came
    assert.ok(direct.ok);
    assert.equal(direct.event.ts, later, "central's receipt time, not year 9999");
  });
});
