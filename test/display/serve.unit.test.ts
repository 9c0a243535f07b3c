import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Fastify from 'fastify';
import { registerDisplay, type DisplayOptions } from '../../dashboards/display/serve.js';

function app(o: DisplayOptions) {
  const a = Fastify({ logger: false });
  registerDisplay(a, o);
  return a;
}

const credential = { username: 'display', password: 'demo-secret' };

describe('live display routes', () => {
  it('serves the page, its script, style and the MQTT.js browser bundle, with a strict CSP', async () => {
    const a = app({ scope: { role: 'central' }, wsPort: 8084 });
    const root = await a.inject({ url: '/' });
    assert.equal(root.statusCode, 302);
    assert.equal(root.headers.location, '/display/');
    const page = await a.inject({ url: '/display/' });
    assert.equal(page.statusCode, 200);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    assert.match(String(page.headers['content-security-policy']), /script-src 'self'/);
    assert.equal(page.headers['x-content-type-options'], 'nosniff');
    for (const [file, type] of [
      ['app.js', /^text\/javascript/],
      ['style.css', /^text\/css/],
      ['mqtt.min.js', /^text\/javascript/],
    ] as const) {
      const r = await a.inject({ url: `/display/${file}` });
      assert.equal(r.statusCode, 200, file);
      assert.match(String(r.headers['content-type']), type, file);
    }
    // the bundle defines the global the page uses
    assert.match((await a.inject({ url: '/display/mqtt.min.js' })).body.slice(0, 200), /var mqtt=/);
    await a.close();
  });

  it('config.json says what to show and where the WebSocket is; an edge shows its warehouse only', async () => {
    const c = app({ scope: { role: 'central' }, wsPort: 8084, warehouses: ['WH1', 'WH2'] });
    assert.deepEqual((await c.inject({ url: '/display/config.json' })).json(), {
      role: 'central',
      wsPort: 8084,
      warehouses: ['WH1', 'WH2'],
    });
    const e = app({ scope: { role: 'edge', warehouse: 'WH2' }, wsPort: 8086 });
    assert.deepEqual((await e.inject({ url: '/display/config.json' })).json(), {
      role: 'edge',
      warehouse: 'WH2',
      wsPort: 8086,
      warehouses: ['WH2'],
    });
    await c.close();
    await e.close();
  });

  it('hands the demo credential only to a page loaded from this machine, by a loopback name', async () => {
    const a = app({ scope: { role: 'central' }, wsPort: 8084, credential });
    const get = (remoteAddress: string, host: string) =>
      a
        .inject({ url: '/display/config.json', remoteAddress, headers: { host } })
        .then((r) => r.json() as { credential?: unknown });
    assert.deepEqual((await get('127.0.0.1', '127.0.0.1:8080')).credential, credential);
    assert.deepEqual((await get('::1', 'localhost:8080')).credential, credential);
    assert.equal((await get('10.1.2.3', '10.1.2.4:8080')).credential, undefined, 'another machine');
    assert.equal(
      (await get('127.0.0.1', 'rebound.example:8080')).credential,
      undefined,
      'a page of another site through DNS rebinding',
    );
    const res = await a.inject({
      url: '/display/config.json',
      remoteAddress: '127.0.0.1',
      headers: { host: '127.0.0.1' },
    });
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.equal(res.headers['access-control-allow-origin'], undefined, 'no other origin may read it');
    await a.close();
  });

  it('without its files the page answers 503 and says why; config.json and the server itself keep working', async () => {
    const a = app({ scope: { role: 'central' }, wsPort: 8084, assetsDir: '/nonexistent/display' });
    const page = await a.inject({ url: '/display/' });
    assert.equal(page.statusCode, 503);
    assert.match(
      page.json<{ error: { message: string } }>().error.message,
      /cannot be read: .*\/nonexistent\/display\/index\.html/,
    );
    assert.equal((await a.inject({ url: '/display/config.json' })).statusCode, 200);
    await a.close();
  });
});
