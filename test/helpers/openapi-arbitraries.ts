import fc from 'fast-check';

/**
 * fast-check arbitraries from the JSON Schemas of an OpenAPI document: values a schema accepts (boundaries
 * included) and values it refuses, for parameters (sent as text) and bodies (sent as JSON). The document is
 * the only source: whether a value is valid is decided by `conforms`, which runs Ajv on the document itself.
 */

export type Schema = Record<string, unknown>;
export type Resolve = (schema: Schema) => Schema;
/** Values of the test's data to prefer for a parameter or property of this name (existing skus, ids…). */
export type Known = Record<string, readonly (string | number)[]>;

const DAY = 86_400_000; // ms
const NOW = Date.now();
const IDENT_PATTERN = '^[A-Za-z0-9._-]{1,64}$';

/** RFC 3339 as a client writes it: UTC with or without milliseconds, or with an offset. */
const dateTime = (min: number, max: number) =>
  fc
    .tuple(fc.integer({ min, max }), fc.constantFrom(0, 60, -330, 840, -720), fc.boolean())
    .map(([ms, offsetMin, millis]) => {
      const shifted = new Date(ms + offsetMin * 60_000).toISOString();
      const base = millis ? shifted.slice(0, 23) : shifted.slice(0, 19);
      if (offsetMin === 0) return `${base}Z`;
      const sign = offsetMin > 0 ? '+' : '-';
      const abs = Math.abs(offsetMin);
      return `${base}${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
    });

/** Values `schema` accepts; `name` picks known values of the data now and then. */
export function valid(schema: Schema, resolve: Resolve, known: Known = {}, name?: string): fc.Arbitrary<unknown> {
  const s = resolve(schema);
  const own =
    name !== undefined && known[name] !== undefined && known[name].length > 0
      ? fc.constantFrom(...(known[name] as (string | number)[]))
      : undefined;
  const generated = generate(s, resolve, known);
  return own ? fc.oneof({ arbitrary: own, weight: 3 }, { arbitrary: generated, weight: 1 }) : generated;
}

function generate(s: Schema, resolve: Resolve, known: Known): fc.Arbitrary<unknown> {
  const any = (s.anyOf ?? s.oneOf) as Schema[] | undefined;
  if (any) return fc.oneof(...any.map((sub) => valid(sub, resolve, known)));
  if (s.const !== undefined) return fc.constant(s.const);
  if (Array.isArray(s.enum)) return fc.constantFrom(...(s.enum as unknown[]));
  switch (s.type) {
    case 'string': {
      // Mostly near now (ranges that make sense), sometimes anywhere in the years the API takes.
      if (s.format === 'date-time')
        return fc.oneof(dateTime(NOW - 3 * DAY, NOW + DAY), dateTime(0, Date.UTC(9999, 11, 30)));
      if (s.format === 'date')
        return fc
          .oneof(
            fc.integer({ min: NOW - 3 * DAY, max: NOW + DAY }),
            fc.integer({ min: 0, max: Date.UTC(9999, 11, 30) }),
          )
          .map((ms) => new Date(ms).toISOString().slice(0, 10));
      if (typeof s.pattern !== 'string') return fc.string({ maxLength: 20 });
      const matching = fc.stringMatching(new RegExp(s.pattern));
      // Both ends of the identifier rule, which a regex generator rarely reaches.
      return s.pattern === IDENT_PATTERN ? fc.oneof(matching, fc.constantFrom('A', 'z'.repeat(64), '_.-9')) : matching;
    }
    case 'integer': {
      const min = typeof s.minimum === 'number' ? s.minimum : -1_000_000;
      const max = typeof s.maximum === 'number' ? s.maximum : 1_000_000;
      return fc.oneof(
        fc.constantFrom(min, max, Math.min(min + 1, max), Math.max(max - 1, min)),
        fc.integer({ min, max }),
      );
    }
    case 'number':
      return fc.double({ noNaN: true, noDefaultInfinity: true });
    case 'boolean':
      return fc.boolean();
    case 'null':
      return fc.constant(null);
    case 'array':
      return fc.array(valid((s.items as Schema) ?? {}, resolve, known), {
        minLength: (s.minItems as number) ?? 0,
        maxLength: Math.min((s.maxItems as number) ?? 3, 3),
      });
    case 'object': {
      const props = (s.properties as Record<string, Schema>) ?? {};
      const record = Object.fromEntries(Object.entries(props).map(([k, sub]) => [k, valid(sub, resolve, known, k)]));
      return fc.record(record, { requiredKeys: ((s.required as string[]) ?? []).filter((k) => k in props) });
    }
    default:
      return fc.jsonValue();
  }
}

/** Text refused by the identifier rule and others: too long, characters outside the rule, a separator. */
const NOT_IDENT = [
  'A'.repeat(65),
  'A'.repeat(101),
  'A'.repeat(300),
  'a b',
  'a/b',
  'a:b',
  'é',
  'a?b',
  'a#b',
  'SKU%',
  '<sku>',
  'a\tb',
];

/** Parameter text `schema` refuses (a query or path parameter, a header), boundary cases first. */
export function invalidText(schema: Schema, resolve: Resolve): fc.Arbitrary<string> {
  const s = resolve(schema);
  const any = (s.anyOf ?? s.oneOf) as Schema[] | undefined;
  const candidates: string[] = ['x', 'null', 'true', '-1', '1.5', '1e3', ' 1', '[]', 'a'.repeat(600)];
  if (any?.some((sub) => resolve(sub).format === 'date-time' || resolve(sub).format === 'date')) {
    candidates.push(
      'yesterday',
      '2026-1-5',
      '2026-02-30',
      '20260101',
      '2026-02-30T00:00:00Z',
      '2026-13-01T00:00:00Z',
      '2026-01-01T24:00:00Z',
      '2026-01-01T00:00:00+0100',
      '2026-01-01T00:00:00',
      'Tue, 05 Jan 2026 10:00:00 GMT',
      '253402300800000',
      '99999999999999999999',
    );
  }
  if (s.type === 'integer')
    candidates.push(String((s.minimum as number) - 1), String((s.maximum as number) + 1), 'ten', '+5', '0x10');
  if (s.type === 'string' && typeof s.pattern === 'string')
    candidates.push(...NOT_IDENT, '0h', '01h', '1w', '1000000s', '!!', 'A'.repeat(513));
  if (Array.isArray(s.enum))
    candidates.push(...(s.enum as string[]).map((v) => `${v}x`), ...(s.enum as string[]).map((v) => v.toUpperCase()));
  return fc.oneof(
    fc.constantFrom(...candidates),
    fc.string({ minLength: 1, maxLength: 80 }),
    fc.string({ unit: 'binary', minLength: 1, maxLength: 10 }),
  );
}

/** One change that makes a valid JSON body invalid, and the field the answer must name (undefined: the body as a whole). */
export type BodyMutation = {
  apply: (body: Record<string, unknown>) => unknown;
  field: string | undefined;
  what: string;
};

export function bodyMutation(schema: Schema, resolve: Resolve): fc.Arbitrary<BodyMutation> {
  const s = resolve(schema);
  const props = Object.entries((s.properties as Record<string, Schema>) ?? {});
  const required = (s.required as string[]) ?? [];
  const set = (k: string, v: unknown, what: string): BodyMutation => ({
    apply: (b) => ({ ...b, [k]: v }),
    field: k,
    what,
  });
  const options: fc.Arbitrary<BodyMutation>[] = [
    fc.constantFrom(...required).map(
      (k): BodyMutation => ({
        apply: (b) => Object.fromEntries(Object.entries(b).filter(([key]) => key !== k)),
        field: k,
        what: `without ${k}`,
      }),
    ),
    fc.constantFrom('unknownField', 'Sku', '__proto__x').map((k) => set(k, 1, `with an unknown field ${k}`)),
    fc
      .constantFrom<[unknown, string]>([[], 'an array'], [7, 'a number'], ['x', 'a string'], [null, 'null'])
      .map(([v, what]): BodyMutation => ({ apply: () => v, field: undefined, what: `${what}, not an object` })),
  ];
  for (const [k, raw] of props) {
    const p = resolve(raw);
    if (p.type === 'integer') {
      const out = [
        ...(typeof p.minimum === 'number' ? [p.minimum - 1] : []),
        ...(typeof p.maximum === 'number' ? [p.maximum + 1] : []),
        1.5,
        '5',
        true,
      ];
      options.push(fc.constantFrom(...out).map((v) => set(k, v, `${k} = ${JSON.stringify(v)}`)));
    } else if (p.type === 'string') {
      options.push(
        fc.constantFrom<unknown>(...NOT_IDENT, 5, false, ['a']).map((v) => set(k, v, `${k} = ${JSON.stringify(v)}`)),
      );
    } else if (p.type === 'boolean') {
      options.push(fc.constantFrom<unknown>('true', 1, null).map((v) => set(k, v, `${k} = ${JSON.stringify(v)}`)));
    }
  }
  return fc.oneof(...options);
}
