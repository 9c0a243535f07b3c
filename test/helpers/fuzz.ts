import fc from 'fast-check';

/**
 * Payload arbitraries for fuzzing, and a reference of what CONTRACT section 3 accepts, written out
 * here (not calling protocol/) so the parser is checked against the contract, not against itself.
 */

const TYPES = ['received', 'shipped', 'returned', 'adjusted', 'counted', 'level'] as const;
const QTY: Record<(typeof TYPES)[number], [number, number]> = {
  received: [1, 1_000_000],
  shipped: [1, 1_000_000],
  returned: [1, 1_000_000],
  adjusted: [-1_000_000, 1_000_000],
  counted: [0, 1_000_000_000],
  level: [0, 1_000_000_000],
};
const IDENT = /^[A-Za-z0-9._-]{1,64}$/;
const EVENT_ID = /^[A-Za-z0-9._:-]{1,64}$/;
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
// PostgreSQL stores neither U+0000 nor an unpaired surrogate: the implementation refuses them (a rule beyond the contract's).
// biome-ignore lint/suspicious/noControlCharactersInRegex: U+0000 is what PostgreSQL cannot store (as protocol/event.ts)
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
export const MAX_EVENT_BYTES = 8 * 1024;

export type Expected =
  | { ok: true }
  | { ok: false; code: 'invalid_json' | 'payload_too_large' | 'unsupported_version' | 'schema_violation' };

function storable(root: unknown): boolean {
  // A walk with its own stack: 8 KiB of JSON nests 4,000 deep, too deep for a recursive walk.
  for (const stack: unknown[] = [root]; stack.length > 0; ) {
    const value = stack.pop();
    if (typeof value === 'string' && UNSTORABLE.test(value)) return false;
    if (typeof value === 'object' && value !== null) for (const [k, v] of Object.entries(value)) stack.push(k, v);
  }
  return true;
}

/** A real calendar date and time of day (RFC 3339 5.7): 2026-02-30, 24:00 or a zone of +24:00 are not. */
function realDateTime(ts: string): boolean {
  const [date = '', rest = ''] = ts.split(/[Tt ]/);
  const [y = 0, mo = 0, d = 0] = date.split('-').map(Number);
  const [h = 0, mi = 0, s = 0] = rest.slice(0, 8).split(':').map(Number);
  const zone = /([+-])(\d{2}):(\d{2})$/.exec(rest);
  const monthDays = [
    31,
    y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0) ? 29 : 28,
    31,
    30,
    31,
    30,
    31,
    31,
    30,
    31,
    30,
    31,
  ];
  return (
    mo >= 1 &&
    mo <= 12 &&
    d >= 1 &&
    d <= (monthDays[mo - 1] ?? 0) &&
    h <= 23 &&
    mi <= 59 &&
    s <= 59 &&
    (zone === null || (Number(zone[2]) <= 23 && Number(zone[3]) <= 59))
  );
}

function validTs(ts: unknown): boolean {
  if (ts === undefined) return true;
  if (typeof ts === 'number') return Number.isSafeInteger(ts) && ts >= 0 && ts <= 8.64e15;
  return (
    typeof ts === 'string' && ts.length <= 64 && RFC3339.test(ts) && realDateTime(ts) && Number.isFinite(Date.parse(ts))
  );
}

/** What the contract says of these raw bytes. */
/** `maxBytes`: 8 KiB where devices publish (CONTRACT 3); behind an edge, 32 bytes more for the edge's `ts` stamp. */
export function expectedOutcome(raw: Uint8Array, maxBytes = MAX_EVENT_BYTES): Expected {
  if (raw.byteLength > maxBytes) return { ok: false, code: 'payload_too_large' };
  let p: unknown;
  try {
    p = JSON.parse(Buffer.from(raw).toString('utf8'));
  } catch {
    return { ok: false, code: 'invalid_json' };
  }
  if (typeof p !== 'object' || p === null || Array.isArray(p)) return { ok: false, code: 'schema_violation' };
  if (!storable(p)) return { ok: false, code: 'schema_violation' };
  const e = p as Record<string, unknown>;
  if (e.v !== undefined && e.v !== 1) return { ok: false, code: 'unsupported_version' };
  // Only a known type may index QTY: an object as key would be converted with its own (possibly broken) toString.
  if (typeof e.type !== 'string' || !(TYPES as readonly string[]).includes(e.type))
    return { ok: false, code: 'schema_violation' };
  const type = e.type as (typeof TYPES)[number];
  const range = QTY[type];
  const ok =
    e.v === 1 &&
    typeof e.id === 'string' &&
    EVENT_ID.test(e.id) &&
    typeof e.sku === 'string' &&
    IDENT.test(e.sku) &&
    typeof e.qty === 'number' &&
    Number.isInteger(e.qty) &&
    e.qty >= range[0] &&
    e.qty <= range[1] &&
    !(type === 'adjusted' && e.qty === 0) &&
    validTs(e.ts) &&
    (e.location === undefined ? type !== 'level' : typeof e.location === 'string' && IDENT.test(e.location)) &&
    (e.reservation === undefined ||
      (type === 'shipped' && typeof e.reservation === 'string' && EVENT_ID.test(e.reservation))) &&
    (e.reason === undefined || (typeof e.reason === 'string' && [...e.reason].length <= 200)); // characters: code points
  return ok ? { ok: true } : { ok: false, code: 'schema_violation' };
}

const ident = fc.stringMatching(/^[A-Za-z0-9._-]{1,64}$/);
const eventId = fc.stringMatching(/^[A-Za-z0-9._:-]{1,64}$/);

/** A valid event of CONTRACT section 3. */
export const validEvent: fc.Arbitrary<Record<string, unknown>> = fc.constantFrom(...TYPES).chain((type) =>
  fc
    .record(
      {
        v: fc.constant(1),
        id: eventId,
        type: fc.constant(type),
        sku: ident,
        qty: fc.integer({ min: QTY[type][0], max: QTY[type][1] }).filter((q) => type !== 'adjusted' || q !== 0),
        ts: fc.oneof(
          fc.integer({ min: 0, max: 4_102_444_800_000 }),
          fc.date({ min: new Date(0), max: new Date('2100-01-01'), noInvalidDate: true }).map((d) => d.toISOString()),
        ),
        location: ident,
        reservation: eventId,
        reason: fc.string({ maxLength: 200 }),
      },
      {
        requiredKeys:
          type === 'level' ? ['v', 'id', 'type', 'sku', 'qty', 'location'] : ['v', 'id', 'type', 'sku', 'qty'],
      },
    )
    .map((e) => (type === 'shipped' ? e : (({ reservation: _r, ...rest }) => rest)(e))),
);

// Raw JSON texts that break, or sit on the edge of, a field's rule; numbers as text so 1e400 and -0 survive.
const EVIL_JSON = [
  '1e400',
  '-1e400',
  '-0',
  '0',
  '-1',
  '1.5',
  '0.1',
  '9007199254740993',
  '1e9',
  '1000000001',
  '1e3',
  '8.64e15',
  '8640000000000001',
  '"5"',
  '"1"',
  'null',
  'true',
  'false',
  '[]',
  '{}',
  '[1]',
  '{"$gt":0}',
  '{"toString":false}',
  '{"valueOf":null,"toString":null}',
  '""',
  ...[
    '+',
    '#',
    '/',
    'a/b',
    'sku+',
    'sku#',
    '#/+',
    'a\u0000b',
    '\u0000',
    '\ud800',
    'x\udc00',
    '\udbff\udfff',
    'x'.repeat(64),
    'x'.repeat(65),
    ' ',
    'é',
    '\u202e',
    '\ufeff',
    'a b',
    '../x',
    '$SYS',
    'wh/W1/dev/x/event',
    '2024-01-01T00:00:00Z',
    '2024-02-30T00:00:00Z',
    '2026-02-29T00:00:00Z',
    '2024-02-29T00:00:00Z',
    '2026-04-31T00:00:00Z',
    '2026-01-01T24:00:00Z',
    '2026-01-01T23:59:60Z',
    '2026-01-01T12:00:00+24:00',
    '2024-01-01',
    'ü'.repeat(200),
    'y'.repeat(201),
  ].map((s) => JSON.stringify(s)),
];

/** A valid event with one field (or an extra one) replaced by raw JSON text from EVIL_JSON or a random JSON value. */
export const mutatedEvent: fc.Arbitrary<string> = fc
  .tuple(
    validEvent,
    fc.constantFrom(
      'v',
      'id',
      'type',
      'sku',
      'qty',
      'ts',
      'location',
      'reservation',
      'reason',
      'extra',
      '__proto__',
      'constructor',
    ),
    fc.oneof(fc.constantFrom(...EVIL_JSON), fc.json({ maxDepth: 3 })),
  )
  .map(([event, field, raw]) =>
    JSON.stringify({ ...event, [field]: '\u0001EVIL\u0001' }).replace('"\\u0001EVIL\\u0001"', raw),
  );

/** JSON nested `depth` deep, as arrays, objects, or inside an unknown field of a valid event. */
export const deeplyNested: fc.Arbitrary<string> = fc
  .tuple(fc.integer({ min: 1, max: 6_000 }), fc.constantFrom('array', 'object', 'field'), validEvent)
  .map(([depth, shape, event]) => {
    const deep =
      shape === 'array' ? `${'['.repeat(depth)}${']'.repeat(depth)}` : `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
    return shape === 'field' ? JSON.stringify({ ...event, extra: 0 }).replace('"extra":0', `"extra":${deep}`) : deep;
  });

/** A payload of any kind, as bytes: random bytes, random JSON, valid, mutated, nested, huge. */
export const anyPayload: fc.Arbitrary<Buffer> = fc.oneof(
  fc.uint8Array({ maxLength: 512 }).map((b) => Buffer.from(b)),
  fc.json({ maxDepth: 4 }).map((t) => Buffer.from(t)),
  fc
    .string({ unit: 'binary', maxLength: 200 })
    .map((s) => Buffer.from(JSON.stringify({ v: 1, id: 'u', type: 'received', sku: s, qty: 1 }))),
  validEvent.map((e) => Buffer.from(JSON.stringify(e))),
  mutatedEvent.map((t) => Buffer.from(t)),
  deeplyNested.map((t) => Buffer.from(t)),
  fc
    .tuple(validEvent, fc.integer({ min: 8_000, max: 60_000 }))
    .map(([e, n]) => Buffer.from(JSON.stringify({ ...e, pad: 'p'.repeat(n) }))),
);
