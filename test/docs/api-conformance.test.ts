import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import type { ValidateFunction } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { createConfig, lint as redoclyLint } from '@redocly/openapi-core';
import fc from 'fast-check';
import YAML from 'yaml';
import { OPENAPI_FILE } from '../../docs/generate.js';
import { startCentralWithData, type ApiData } from '../helpers/api-data.js';
import {
  bodyMutation,
  invalidText,
  valid,
  type Known,
  type Resolve,
  type Schema,
} from '../helpers/openapi-arbitraries.js';
import { lint } from '../helpers/openapi-lint.js';
import { pinFastCheck } from '../helpers/seed.js';

/**
 * Central's HTTP API against docs/openapi.yaml: requests generated from the document (fast-check: valid values
 * with their boundaries, and values each schema refuses) go to a running central holding data of every kind,
 * and every answer must be one the document lists for the operation, its body fitting the schema. In CI the
 * seed is fixed (and printed); elsewhere it is new each run and printed, so a failure can be replayed.
 */
pinFastCheck('docs/api-conformance');
const SEED = fc.readConfigureGlobal().seed as number;
// Requests per operation (HEAD: a third), about 900 in all; CONFORMANCE_RUNS=200 searches longer.
const RUNS = Number(process.env.CONFORMANCE_RUNS ?? 25);
const addFormats = (addFormatsModule as unknown as { default: (ajv: Ajv2020) => Ajv2020 }).default;

type Json = Record<string, unknown>;
interface Operation {
  method: string;
  path: string;
  op: Json;
  params: Json[];
  body: Schema | undefined;
  /** the GET this HEAD mirrors */
  head: boolean;
}
interface Request {
  what: string;
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string;
  /** statuses the document's refusal of this request allows; absent: the request is valid */
  refused?: number[];
  /** the field a 400 must name (null: none required) */
  field?: string | null;
}

/**
 * Valid requests that the schemas alone cannot tell from refused ones: a 400 naming one of these fields is a
 * rule between parameters, said in the operation's description (from before to, bucket count, to ≠ from).
 */
const CROSS_FIELD: Record<string, string[]> = {
  getStockHistory: ['from', 'bucket'],
  getStockHistoryHead: ['from', 'bucket'],
  getMovements: ['from'],
  getMovementsHead: ['from'],
  createTransfer: ['to'],
};

/** Redocly rules that do not fit an operation, each with its reason. */
const EXEMPT = {
  'operation-2xx-response': {
    'GET /': 'a redirect to /display/: 302 is its only answer',
    'HEAD /': 'a redirect to /display/: 302 is its only answer',
    'GET /display': 'a redirect to /display/: 302 is its only answer',
    'HEAD /display': 'a redirect to /display/: 302 is its only answer',
  },
  'no-path-trailing-slash': {
    '/display/': 'the live display is a directory: its page loads app.js and style.css relative to /display/',
  },
  'operation-4xx-response': Object.fromEntries(
    [
      '/',
      '/healthz',
      '/readyz',
      '/metrics',
      '/openapi.json',
      '/docs',
      '/display',
      '/display/',
      '/display/app.js',
      '/display/style.css',
      '/display/mqtt.min.js',
      '/display/config.json',
    ].flatMap((p) =>
      ['GET', 'HEAD'].map((m) => [
        `${m} ${p}`,
        'no parameters, no body, open: nothing a client sends can be refused (other methods are 405s, which no operation lists)',
      ]),
    ),
  ),
};

describe('HTTP API conformance: central against docs/openapi.yaml', () => {
  let d: ApiData;
  let doc: Json;
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  const validators = new Map<string, ValidateFunction>();
  /** A validator of a schema of the document; its $refs resolve within the document. */
  const validator = (schema: unknown): ValidateFunction => {
    const text = JSON.stringify(schema).replaceAll('"#/components/', '"openapi.json#/components/');
    const v = validators.get(text) ?? ajv.compile(JSON.parse(text) as object);
    validators.set(text, v);
    return v;
  };
  const resolve: Resolve = (schema) => {
    let s = schema;
    while (typeof s.$ref === 'string')
      s = s.$ref
        .slice(2)
        .split('/')
        .reduce<Json>((n, k) => n[k] as Json, doc) as Schema;
    return s;
  };
  /** Whether parameter text fits its schema: as a string, or read as an integer where it looks like one. */
  const conforms = (schema: unknown, raw: string) =>
    [raw, ...(/^-?\d+$/.test(raw) ? [Number(raw)] : [])].some((v) => validator(schema)(v));

  before(async () => {
    d = await startCentralWithData('conform');
    doc = YAML.parse(await fs.readFile(OPENAPI_FILE, 'utf8')) as Json;
    ajv.addSchema({ $id: 'openapi.json', components: doc.components });
  });
  after(async () => {
    await d?.stop();
  });

  const operations = (): Operation[] =>
    Object.entries(doc.paths as Record<string, Record<string, Json>>).flatMap(([path, item]) =>
      Object.entries(item).map(([method, op]) => {
        const content = (
          (op.requestBody as Json | undefined)?.content as Record<string, { schema: Schema }> | undefined
        )?.['application/json'];
        return {
          method: method.toUpperCase(),
          path,
          op,
          params: ((op.parameters as Json[]) ?? []).map((p) => resolve(p)),
          body: content?.schema,
          head: method === 'head',
        };
      }),
    );

  it('central serves the document it is tested against: /openapi.json is docs/openapi.yaml, /docs shows every operation', async () => {
    const res = await fetch(`${d.base}/openapi.json`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), doc);
    const page = await fetch(`${d.base}/docs`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
    const csp = page.headers.get('content-security-policy') ?? '';
    assert.match(csp, /default-src 'none'/);
    assert.doesNotMatch(csp, /script-src|unsafe/, 'no script may run');
    const html = await page.text();
    assert.doesNotMatch(html, /<script|https?:\/\/|src=/i, 'nothing is loaded from anywhere');
    for (const o of operations())
      assert.ok(html.includes(`id="op-${String(o.op.operationId)}"`), `the page shows ${String(o.op.operationId)}`);
  });

  it("the document passes the rules of Redocly's recommended set (test/helpers/openapi-lint.ts)", () => {
    assert.deepEqual(lint(doc, EXEMPT), []);
    // The checks themselves: a document breaking each rule is caught.
    const broken = structuredClone(doc) as { paths: Record<string, Record<string, Json>> };
    const get = broken.paths['/v1/stock/{sku}']?.get as Json;
    delete get.security;
    delete get.summary;
    get.responses = { 200: (get.responses as Json)['200'] };
    get.parameters = [];
    const found = lint(broken as Json, EXEMPT).map((p) => p.split(':')[0]);
    for (const rule of ['security-defined', 'operation-summary', 'operation-4xx-response', 'path-parameters-defined'])
      assert.ok(found.includes(rule), `${rule} is checked: ${found.join(', ')}`);
  });

  it("Redocly's own linter (@redocly/openapi-core, ruleset `recommended`) finds nothing but the exemptions above", async () => {
    const config = await createConfig({ extends: ['recommended'] });
    const problems = await redoclyLint({ ref: OPENAPI_FILE, config });
    const where = (pointer: string) => {
      const [, , path, method] = pointer.split('/');
      const p = (path ?? '').replaceAll('~1', '/').replaceAll('~0', '~');
      return method && method !== 'responses' ? `${method.toUpperCase()} ${p}` : p;
    };
    const unexpected = problems
      .map((x) => ({ rule: x.ruleId, at: where(x.location[0]?.pointer ?? ''), message: x.message }))
      .filter((x) => !((EXEMPT as Record<string, Record<string, string>>)[x.rule]?.[x.at] !== undefined));
    assert.deepEqual(unexpected, []);
    assert.ok(
      problems.length > 0 && problems.every((x) => x.ruleId in EXEMPT),
      'the exemptions are what Redocly reports, so the table is not stale',
    );
  });

  it('a method a documented path does not list is a 405 whose Allow names exactly the ones it does', async () => {
    const paths = doc.paths as Record<string, Json>;
    for (const [path, item] of Object.entries(paths)) {
      const url = path.replaceAll(/\{[^}]+\}/g, 'SKU-1');
      const listed = Object.keys(item).map((m) => m.toUpperCase());
      for (const method of ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'].filter(
        (m) => !listed.includes(m),
      )) {
        const res = await fetch(`${d.base}${url}`, { method, headers: { authorization: `Bearer ${d.token}` } });
        assert.equal(res.status, 405, `${method} ${url}`);
        assert.deepEqual((res.headers.get('allow') ?? '').split(', ').sort(), [...listed].sort(), `${method} ${url}`);
        const body = (await res.json()) as unknown;
        assert.ok(validator({ $ref: '#/components/schemas/ErrorResponse' })(body), JSON.stringify(body));
      }
    }
  });

  /** The data's values for a parameter or property name, where they make a request hit something that exists. */
  const knownFor = (path: string): Known => ({
    sku: d.skus,
    warehouse: d.warehouses,
    // from and to are warehouses of a transfer, times elsewhere
    ...(path.startsWith('/v1/transfers') && { from: d.warehouses, to: d.warehouses }),
    id: path.startsWith('/v1/transfers')
      ? Object.values(d.transfers)
      : [...Object.values(d.reservations), ...Object.values(d.transfers)],
  });

  /** Requests for one operation: valid ones, and ones with exactly one thing the document refuses. */
  function requests(o: Operation): fc.Arbitrary<Request> {
    const known = knownFor(o.path);
    const pathParams = o.params.filter((p) => p.in === 'path');
    const queryParams = o.params.filter((p) => p.in === 'query' && p.name !== 'cursor');
    const cursor = o.params.find((p) => p.name === 'cursor');
    const header = o.params.find((p) => p.in === 'header');
    // '.' and '..' are identifiers, but a URL resolves them away before it is sent.
    const sendable = (v: unknown) => v !== '.' && v !== '..';
    const validPath = fc.record(
      Object.fromEntries(
        pathParams.map((p) => [
          p.name as string,
          valid(p.schema as Schema, resolve, known, p.name as string).filter(sendable),
        ]),
      ),
    );
    const validQuery = fc.record(
      Object.fromEntries(
        queryParams.map((p) => [
          p.name as string,
          p.required
            ? valid(p.schema as Schema, resolve, known, p.name as string)
            : fc.option(valid(p.schema as Schema, resolve, known, p.name as string), { nil: undefined }),
        ]),
      ),
    );
    const validKey = header
      ? fc.stringMatching(new RegExp((header.schema as Json).pattern as string))
      : fc.constant(undefined);
    const validBody = o.body
      ? valid(o.body, resolve, known).map((b) => b as Record<string, unknown>)
      : fc.constant(undefined);
    const write =
      (o.op.security as Json[]).some((s) => 'apiToken' in s) &&
      !(o.op.security as Json[]).some((s) => Object.keys(s).length === 0);

    type Parts = {
      path: Record<string, unknown>;
      query: [string, string][];
      key: string | undefined;
      body: string | undefined;
      type: string;
      token: boolean;
    };
    const build = (parts: Parts, what: string, refused?: number[], field?: string | null): Request => {
      const path = o.path.replaceAll(/\{([^}]+)\}/g, (_m, name: string) =>
        encodeURIComponent(String(parts.path[name])),
      );
      const query = new URLSearchParams(parts.query).toString();
      const headers: Record<string, string> = {
        ...(parts.token && { authorization: `Bearer ${d.token}` }),
        ...(parts.key !== undefined && { 'idempotency-key': parts.key }),
        ...(parts.body !== undefined && { 'content-type': parts.type }),
      };
      return {
        what,
        method: o.method,
        url: `${path}${query ? `?${query}` : ''}`,
        headers,
        ...(parts.body !== undefined && { body: parts.body }),
        ...(refused && { refused }),
        ...(field !== undefined && { field }),
      };
    };
    const base = fc
      .record({ path: validPath, query: validQuery, key: validKey, body: validBody })
      .map(({ path, query, key, body }) => ({
        path,
        query: Object.entries(query)
          .filter((e): e is [string, unknown] => e[1] !== undefined)
          .map(([k, v]) => [k, String(v)] as [string, string]),
        key,
        body: body === undefined ? undefined : JSON.stringify(body),
        rawBody: body,
        type: 'application/json',
        token: true,
      }));

    const options: fc.Arbitrary<Request>[] = [];
    const fitsText = (schema: Schema) => (raw: string) =>
      !conforms(schema, raw) && raw !== '' && !raw.includes('\u0000');
    for (const p of pathParams) {
      const name = p.name as string;
      const bad = invalidText(p.schema as Schema, resolve)
        .filter(fitsText(p.schema as Schema))
        .filter(sendable)
        .filter((s) => {
          try {
            return encodeURIComponent(s) !== '';
          } catch {
            return false; // a lone surrogate: no URL can carry it
          }
        });
      options.push(
        fc
          .tuple(base, bad)
          .map(([b, v]) =>
            build({ ...b, path: { ...b.path, [name]: v } }, `path ${name}=${JSON.stringify(v)}`, [400], name),
          ),
      );
    }
    for (const p of [...queryParams, ...(cursor ? [cursor] : [])]) {
      const name = p.name as string;
      // A cursor the server did not give out is refused even when it fits the pattern (nextCursor is followed below).
      const bad =
        name === 'cursor'
          ? fc.oneof(
              invalidText(p.schema as Schema, resolve),
              fc.stringMatching(new RegExp((p.schema as Json).pattern as string)),
            )
          : invalidText(p.schema as Schema, resolve).filter(fitsText(p.schema as Schema));
      const drop = (q: [string, string][]) => q.filter(([k]) => k !== name);
      options.push(
        fc
          .tuple(base, bad)
          .map(([b, v]) =>
            build({ ...b, query: [...drop(b.query), [name, v]] }, `query ${name}=${JSON.stringify(v)}`, [400], name),
          ),
      );
      if (name !== 'cursor') {
        const twice = fc.tuple(
          valid(p.schema as Schema, resolve, known, name),
          valid(p.schema as Schema, resolve, known, name),
        );
        options.push(
          fc
            .tuple(base, twice)
            .map(([b, [x, y]]) =>
              build(
                { ...b, query: [...drop(b.query), [name, String(x)], [name, String(y)]] },
                `query ${name} twice`,
                [400],
                name,
              ),
            ),
        );
      }
      if (p.required)
        options.push(base.map((b) => build({ ...b, query: drop(b.query) }, `without ${name}`, [400], name)));
    }
    if (queryParams.length > 0) {
      const unknown = fc
        .constantFrom('q', 'skus', 'Sort', 'limit ', 'warehouse_id', 'page')
        .filter((n) => !o.params.some((p) => p.name === n));
      options.push(
        fc
          .tuple(base, unknown)
          .map(([b, n]) =>
            build({ ...b, query: [...b.query, [n, '1']] }, `unknown parameter ${JSON.stringify(n)}`, [400], n),
          ),
      );
    }
    if (header) {
      const name = header.name as string;
      const bad = fc.constantFrom(undefined, '', 'a b', 'x'.repeat(256), 'é', 'key\t1');
      options.push(
        fc.tuple(base, bad).map(([b, v]) => build({ ...b, key: v }, `${name}: ${JSON.stringify(v)}`, [400], name)),
      );
    }
    if (o.body) {
      const schema = o.body;
      options.push(
        fc
          .tuple(base, bodyMutation(schema, resolve))
          .map(([b, m]) => ({ b, m, mutated: m.apply(b.rawBody as Record<string, unknown>) }))
          .filter(({ mutated }) => !validator(schema)(mutated))
          .map(({ b, m, mutated }) =>
            build({ ...b, body: JSON.stringify(mutated) }, `body ${m.what}`, [400], m.field ?? null),
          ),
      );
      options.push(
        fc
          .tuple(base, fc.constantFrom('{"sku":', '', '{sku: 1}', '{"a":1}{', '\u0000'))
          .map(([b, raw]) => build({ ...b, body: raw }, `body ${JSON.stringify(raw)}`, [400], null)),
      );
    }
    if (o.body || o.method === 'DELETE') {
      const xml = fc.constantFrom(
        'text/xml',
        'text/plain',
        'application/x-www-form-urlencoded',
        'multipart/form-data; boundary=x',
      );
      options.push(
        fc.tuple(base, xml).map(([b, type]) => build({ ...b, body: 'sku=SKU-1', type }, `a ${type} body`, [415], null)),
      );
      options.push(
        base.map((b) =>
          build({ ...b, body: JSON.stringify({ sku: 'S'.repeat(70_000) }) }, 'a 70 kB body', [413], null),
        ),
      );
    }
    if (write) options.push(base.map((b) => build({ ...b, token: false }, 'no API token', [401], null)));
    // As many valid requests as refused ones, whatever the number of ways to refuse one.
    return fc.oneof(
      { arbitrary: base.map((p) => build(p, 'valid')), weight: Math.max(1, options.length) },
      ...options.map((arbitrary) => ({ arbitrary, weight: 1 })),
    );
  }

  /** Sends a request and checks the answer against the operation's responses; returns the parsed body, if any. */
  async function check(o: Operation, r: Request): Promise<unknown> {
    const res = await fetch(`${d.base}${r.url}`, {
      method: r.method,
      headers: r.headers,
      ...(r.body !== undefined && { body: r.body }),
      redirect: 'manual',
    });
    const text = await res.text();
    const where = `${r.method} ${r.url} (${r.what}) → ${res.status} ${text.slice(0, 300)}`;
    const responses = o.op.responses as Record<string, Json>;
    const documented = responses[String(res.status)];
    assert.ok(
      documented,
      `${where}: ${res.status} is not an answer of ${String(o.op.operationId)} (${Object.keys(responses).join(', ')})`,
    );
    const response = resolve(documented);
    for (const [name, h] of Object.entries((response.headers as Record<string, Json>) ?? {}))
      if (h.required === true) assert.ok(res.headers.has(name), `${where}: no ${name} header`);
    if (r.refused)
      assert.ok(
        r.refused.includes(res.status),
        `${where}: a request the document refuses must get ${r.refused.join(' or ')}`,
      );
    if (o.head) {
      assert.equal(text, '', `${where}: HEAD has no body`);
      return undefined;
    }
    const content = response.content as Record<string, { schema: unknown }> | undefined;
    if (!content) {
      assert.equal(text, '', `${where}: the document gives ${res.status} no body`);
      return undefined;
    }
    const type = (res.headers.get('content-type') ?? '').split(';')[0]?.trim() ?? '';
    assert.ok(type in content, `${where}: content-type ${type} is not one of ${Object.keys(content).join(', ')}`);
    if (type !== 'application/json') {
      assert.ok(text.length > 0, `${where}: an empty ${type}`);
      return text;
    }
    const body = JSON.parse(text) as { error?: { field?: string } };
    const validate = validator(content[type]?.schema);
    assert.ok(validate(body), `${where}: does not fit its schema: ${ajv.errorsText(validate.errors)}`);
    if (res.status === 400) {
      if (r.refused && r.field !== undefined && r.field !== null)
        assert.equal(body.error?.field, r.field, `${where}: the 400 must name ${r.field}`);
      if (!r.refused)
        assert.ok(
          (CROSS_FIELD[String(o.op.operationId)] ?? []).includes(body.error?.field ?? ''),
          `${where}: a valid request was refused`,
        );
    }
    return body;
  }

  it('requests generated from the document get answers the document lists, with bodies that fit its schemas', {
    timeout: 600_000,
  }, async (t) => {
    t.diagnostic(`seed ${SEED}`);
    console.log(`api conformance: seed ${SEED}`);
    const counts = new Map<string, number>();
    for (const o of operations()) {
      await fc.assert(
        fc.asyncProperty(requests(o), async (r) => {
          const body = (await check(o, r)) as { nextCursor?: string | null } | undefined;
          counts.set(
            `${r.refused ? 'refused' : 'valid'} ${o.method}`,
            (counts.get(`${r.refused ? 'refused' : 'valid'} ${o.method}`) ?? 0) + 1,
          );
          // A page's cursor is valid input only the server can make: follow it, with the same query.
          if (body && typeof body.nextCursor === 'string' && !r.refused) {
            const next = `${r.url}${r.url.includes('?') ? '&' : '?'}cursor=${body.nextCursor}`;
            await check(o, { ...r, what: 'the next page', url: next });
          }
        }),
        { numRuns: o.head ? Math.ceil(RUNS / 3) : RUNS, includeErrorInReport: true },
      );
    }
    t.diagnostic(JSON.stringify(Object.fromEntries(counts)));
  });
});
