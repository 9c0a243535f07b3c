import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { registerApiAuth, type ApiTokens } from '../../processors/api-auth.js';

const WRITE = 'write-token-0123456789abcdef';
const READ = 'read-token-0123456789abcdef';

/** The auth hook on routes shaped like the real API's, answered without a network. */
async function app(tokens: ApiTokens): Promise<FastifyInstance> {
  const a = Fastify();
  registerApiAuth(a, tokens);
  for (const route of [
    '/healthz',
    '/readyz',
    '/metrics',
    '/display/config.json',
    '/v1/stock/:sku',
    '/v1/reservations/:id',
  ])
    a.get(route, async () => ({ ok: true }));
  a.post('/v1/reservations', async () => ({ ok: true }));
  a.delete('/v1/reservations/:id', async () => ({ ok: true }));
  await a.ready();
  return a;
}

const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

describe('HTTP API tokens (processors/api-auth.ts)', () => {
  it('writes need the write token: missing, malformed and wrong ones get 401 with a Bearer challenge', async () => {
    const a = await app({ write: WRITE });
    const post = (headers: Record<string, string>) =>
      a.inject({ method: 'POST', url: '/v1/reservations', headers, payload: {} });
    const missing = await post({});
    assert.equal(missing.statusCode, 401);
    assert.equal(missing.headers['www-authenticate'], 'Bearer realm="stockwire"');
    assert.deepEqual(missing.json().error.code, 'unauthorized');
    assert.match(missing.json().error.message, /Authorization: Bearer <token>/);
    for (const headers of [
      bearer('wrong-token-0123456789abcdef'),
      bearer(`${WRITE}x`),
      bearer(WRITE.slice(0, -1)),
      { authorization: `Basic ${Buffer.from(`u:${WRITE}`).toString('base64')}` },
      { authorization: WRITE },
      { authorization: 'Bearer' },
    ]) {
      const r = await post(headers);
      assert.equal(r.statusCode, 401, JSON.stringify(headers));
      assert.equal(r.headers['www-authenticate'], 'Bearer realm="stockwire", error="invalid_token"');
      assert.equal(r.json().error.code, 'unauthorized');
    }
    assert.equal((await post(bearer(WRITE))).statusCode, 200);
    assert.equal(
      (await post({ authorization: `bearer  ${WRITE}` })).statusCode,
      200,
      'the scheme is case-insensitive (RFC 7235)',
    );
    assert.equal((await a.inject({ method: 'DELETE', url: '/v1/reservations/r-1' })).statusCode, 401);
    assert.equal(
      (await a.inject({ method: 'DELETE', url: '/v1/reservations/r-1', headers: bearer(WRITE) })).statusCode,
      200,
    );
  });

  it('reads are open without a read token; health, readiness, metrics and the display are always open', async () => {
    const a = await app({ write: WRITE });
    for (const url of [
      '/v1/stock/SKU-1',
      '/v1/reservations/r-1',
      '/healthz',
      '/readyz',
      '/metrics',
      '/display/config.json',
    ]) {
      assert.equal((await a.inject({ method: 'GET', url })).statusCode, 200, url);
    }
    assert.equal((await a.inject({ method: 'HEAD', url: '/v1/stock/SKU-1' })).statusCode, 200);
  });

  it('with a read token, reads need it or the write token; the read token cannot write', async () => {
    const a = await app({ write: WRITE, read: READ });
    const get = (headers: Record<string, string> = {}) => a.inject({ method: 'GET', url: '/v1/stock/SKU-1', headers });
    const missing = await get();
    assert.equal(missing.statusCode, 401);
    assert.match(missing.json().error.message, /reads need the API token/);
    assert.equal((await get(bearer('nope-nope-nope-nope-nope'))).statusCode, 401);
    assert.equal((await a.inject({ method: 'HEAD', url: '/v1/stock/SKU-1' })).statusCode, 401);
    assert.equal((await get(bearer(READ))).statusCode, 200);
    assert.equal((await get(bearer(WRITE))).statusCode, 200, 'the write token also reads');
    const write = await a.inject({ method: 'POST', url: '/v1/reservations', headers: bearer(READ), payload: {} });
    assert.equal(write.statusCode, 401);
    assert.match(write.json().error.message, /may only read/);
    for (const url of ['/healthz', '/readyz', '/metrics', '/display/config.json'])
      assert.equal((await a.inject({ method: 'GET', url })).statusCode, 200, url);
  });

  it('no other spelling of a /v1/ path reaches a handler without the token', async () => {
    const a = await app({ write: WRITE });
    for (const url of [
      '/%76%31/reservations',
      '/v1/%72eservations',
      '//v1/reservations',
      '/v1/reservations/',
      '/v1/reservations?x=1',
      '/V1/reservations',
      '/v1/./reservations',
      '/x/../v1/reservations',
    ]) {
      const r = await a.inject({ method: 'POST', url, payload: {} });
      assert.ok(r.statusCode === 401 || r.statusCode === 404, `${url}: ${r.statusCode}`);
    }
  });

  it('an empty write token is refused at start', () => {
    assert.throws(() => registerApiAuth(Fastify(), { write: '' }), /must not be empty/);
  });
});
