import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import pino from 'pino';
import { Registry } from 'prom-client';
import { createPool } from '../../processors/db/pool.js';
import { createApi } from '../../processors/http.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

const TOKEN = 'http-errors-token-0123';
type ErrorBody = { error: { code: string; message: string; field?: string } };

/**
 * The error paths of processors/http-errors.ts and query-params.ts, on a real database that has no schema:
 * anything that reaches SQL fails there for real (relation does not exist), the way an unexpected fault would.
 */
describe('HTTP API errors (processors/http-errors.ts)', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  let app: FastifyInstance;
  let base: string;
  const logged: Record<string, unknown>[] = [];

  before(async () => {
    db = await createTestDatabase('httperrors');
    pool = createPool({ url: db.url, max: 2, statementTimeoutMs: 5_000 });
    const log = pino(
      { level: 'info' },
      { write: (line: string) => void logged.push(JSON.parse(line) as Record<string, unknown>) },
    );
    // The command service is never reached: every request below is refused before its handler runs.
    app = createApi({
      pool,
      readModel: null as never,
      commands: {} as never,
      registry: new Registry(),
      log,
      tokens: { write: TOKEN },
      ready: async () => true,
      requestTimeoutMs: 300,
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const address = app.server.address();
    assert.ok(address && typeof address === 'object');
    base = `http://127.0.0.1:${address.port}`;
  });
  after(async () => {
    await app?.close();
    await pool?.end();
    await db?.drop();
  });

  const send = async (method: string, path: string, init: RequestInit = {}) => {
    const res = await fetch(`${base}${path}`, {
      method,
      ...init,
      headers: { authorization: `Bearer ${TOKEN}`, ...(init.headers as Record<string, string>) },
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: (text === '' ? null : JSON.parse(text)) as ErrorBody };
  };

  it('a method the path does not serve is a 405 listing the ones it does in Allow', async () => {
    for (const [method, path, allow] of [
      ['PUT', '/v1/stock/SKU-1', 'GET, HEAD'],
      ['POST', '/healthz', 'GET, HEAD'],
      ['OPTIONS', '/v1/reservations', 'GET, HEAD, POST'],
      ['PUT', '/v1/transfers', 'GET, HEAD, POST'],
      ['PATCH', '/v1/reservations/r-1', 'GET, HEAD, DELETE'],
    ] as const) {
      const res = await send(method, path);
      assert.equal(res.status, 405, `${method} ${path}`);
      assert.equal(res.headers.get('allow'), allow, `${method} ${path}`);
      assert.equal(res.body.error.code, 'method_not_allowed');
    }
    const unknown = await send('PUT', '/v2/nothing');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error.code, 'not_found');
  });

  it('a path parameter over 100 characters or with bad percent-encoding is a 400 naming it, in the API error shape', async () => {
    const long = await send('GET', `/v1/warehouses/${'W'.repeat(101)}/stock/SKU-1`);
    assert.equal(long.status, 400);
    assert.deepEqual([long.body.error.code, long.body.error.field], ['bad_request', 'warehouse']);
    const longSku = await send('GET', `/v1/stock/${'S'.repeat(300)}/history`);
    assert.deepEqual([longSku.status, longSku.body.error.field], [400, 'sku']);
    const encoding = await send('DELETE', '/v1/reservations/r-%ZZ');
    assert.deepEqual(
      [encoding.status, encoding.body.error.code, encoding.body.error.field],
      [400, 'bad_request', 'id'],
    );
    // 65 to 100 characters reach the handler, which says the same.
    const medium = await send('GET', `/v1/stock/${'S'.repeat(65)}`);
    assert.deepEqual([medium.status, medium.body.error.field], [400, 'sku']);
  });

  it('a body too large is a 413 payload_too_large, one not JSON a 415 unsupported_media_type, bad JSON a 400 invalid_json', async () => {
    const key = { 'idempotency-key': 'k-1' };
    const large = await send('POST', '/v1/reservations', {
      headers: { 'content-type': 'application/json', ...key },
      body: JSON.stringify({ sku: 'x'.repeat(70_000) }),
    });
    assert.deepEqual([large.status, large.body.error.code], [413, 'payload_too_large']);
    const xml = await send('POST', '/v1/transfers', {
      headers: { 'content-type': 'application/xml', ...key },
      body: '<transfer/>',
    });
    assert.deepEqual([xml.status, xml.body.error.code], [415, 'unsupported_media_type']);
    const broken = await send('POST', '/v1/reservations', {
      headers: { 'content-type': 'application/json', ...key },
      body: '{"sku":',
    });
    assert.deepEqual([broken.status, broken.body.error.code], [400, 'invalid_json']);
  });

  it('query parameters: given twice, unknown, or a time that is not RFC 3339 or epoch ms are 400s naming the parameter', async () => {
    const cases: [string, string][] = [
      ['/v1/stock/SKU-1/history?to=1&to=2', 'to'],
      ['/v1/stock/SKU-1/history?bucket=1h&form=2026-01-01T00:00:00Z', 'form'],
      ['/v1/stock/SKU-1/history?from=2026-1-5', 'from'], // Date.parse takes it, RFC 3339 does not
      ['/v1/stock/SKU-1/history?from=2026-02-30', 'from'], // a date that does not exist
      ['/v1/stock/SKU-1/history?from=2026-02-30T00:00:00Z', 'from'], // no such day (Date.parse rolls it over)
      ['/v1/stock/SKU-1/history?to=Tue%2C%2005%20Jan%202026%2010%3A00%3A00%20GMT', 'to'],
      ['/v1/stock/SKU-1/history?from=2026-01-01T00:00:00%2B0100', 'from'], // offset without its colon
      ['/v1/movements?warehouse=W1&warehouse=W2', 'warehouse'],
      ['/v1/movements?warehouse=W1&skus=a', 'skus'],
    ];
    for (const [path, field] of cases) {
      const res = await send('GET', path);
      assert.deepEqual([res.status, res.body.error?.code, res.body.error?.field], [400, 'bad_request', field], path);
    }
  });

  it('an unexpected fault is a 500 `internal` that says nothing of it, and the log has it with the route', async () => {
    // The database has no schema: the query fails with 42P01, a fault of the statement, not of availability.
    const res = await send('GET', '/v1/movements?warehouse=W1&from=2026-01-01T00:00:00%2B01:00');
    assert.equal(res.status, 500);
    assert.deepEqual(res.body, { error: { code: 'internal', message: 'internal error' } });
    const line = logged.find((l) => l.msg === 'HTTP request failed');
    assert.ok(line, `logged: ${JSON.stringify(logged)}`);
    assert.equal(line.level, 50);
    assert.equal(line.route, '/v1/movements');
    assert.equal(line.method, 'GET');
    // Either of the two queries the route runs at once may fail first.
    assert.match(
      String((line.err as { message?: string }).message),
      /^relation "(movements_hourly|events)" does not exist$/,
    );
    assert.equal((line.err as { code?: string }).code, '42P01', 'the SQLSTATE is kept');
  });

  it('a request whose body does not arrive within the request timeout is answered 408 and its connection closed', {
    timeout: 20_000,
  }, async () => {
    const { port } = app.server.address() as net.AddressInfo;
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    socket.on('data', (chunk) => (received += chunk.toString('latin1')));
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    socket.write(
      `POST /v1/reservations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nIdempotency-Key: slow\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"sku":`,
    );
    // The rest of the body never comes: without a timeout the connection would stay open for ever.
    await closed;
    assert.match(received, /^HTTP\/1\.1 408 /);
  });
});
