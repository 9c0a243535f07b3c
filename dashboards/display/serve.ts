import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { DisplayConfig } from '../../protocol/index.js';

/** The live display (dashboards/display), served by central's and each edge's HTTP server. */
export interface DisplayOptions {
  /** central shows every warehouse; an edge only its own */
  scope: { role: 'central' } | { role: 'edge'; warehouse: string };
  /** the MQTT-over-WebSocket port the page connects to, on the host it was loaded from */
  wsPort: number;
  /** warehouses shown before their first message arrives */
  warehouses?: string[];
  /**
   * Demo only: a display credential handed to pages loaded from this machine, so the page needs no
   * login. Never set outside the demo: anyone who can load the page could read it.
   */
  credential?: { username: string; password: string };
  /** where index.html, app.js and style.css are; default: found next to this module or in the source tree */
  assetsDir?: string;
}

const HERE = path.dirname(fileURLToPath(import.meta.url));
// Run from source the files sit next to this module; compiled (tsc copies no .html/.js/.css) it runs from
// dist/dashboards/display, and the files stay in the source tree three levels up.
const CANDIDATES = [HERE, path.resolve(HERE, '../../../dashboards/display')];

interface Asset {
  type: string;
  body: Buffer;
}

function loadAssets(dir: string | undefined): Record<string, Asset> | Error {
  const found = dir ?? CANDIDATES.find((d) => existsSync(path.join(d, 'index.html')));
  if (found === undefined) return new Error(`live display files not found in ${CANDIDATES.join(' or ')}`);
  try {
    // MQTT.js ships a browser bundle that defines the global `mqtt`; served as is, no build step.
    const mqttDir = path.dirname(createRequire(import.meta.url).resolve('mqtt/package.json'));
    const file = (p: string, type: string): Asset => ({ type, body: readFileSync(p) });
    return {
      '/display/': file(path.join(found, 'index.html'), 'text/html; charset=utf-8'),
      '/display/app.js': file(path.join(found, 'app.js'), 'text/javascript; charset=utf-8'),
      '/display/style.css': file(path.join(found, 'style.css'), 'text/css; charset=utf-8'),
      '/display/mqtt.min.js': file(path.join(mqttDir, 'dist', 'mqtt.min.js'), 'text/javascript; charset=utf-8'),
    };
  } catch (err) {
    return new Error(`live display files cannot be read: ${(err as Error).message}`);
  }
}

const cache = new Map<string, Record<string, Asset> | Error>();

// Scripts and styles from this server only; the page talks to the broker's WebSocket port, which is another
// origin. MQTT.js runs its keep-alive timer in a worker made from a blob (timers in a background tab are throttled).
const CSP =
  "default-src 'none'; script-src 'self'; worker-src blob:; style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

function secure(reply: FastifyReply): FastifyReply {
  return reply
    .header('content-security-policy', CSP)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer');
}

const LOOPBACK_ADDRESS = /^(127\.\d+\.\d+\.\d+|::1|::ffff:127\.\d+\.\d+\.\d+)$/;
const LOOPBACK_HOST = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$/i;

/**
 * The demo credential goes only to a page on this machine: a loopback peer, and a loopback Host header
 * (so a web page elsewhere cannot read it through DNS rebinding). Browsers block cross-origin reads
 * of config.json anyway: no CORS header is ever sent.
 */
export function fromThisMachine(req: FastifyRequest): boolean {
  return LOOPBACK_ADDRESS.test(req.socket.remoteAddress ?? '') && LOOPBACK_HOST.test(req.headers.host ?? '');
}

/**
 * Adds the display's routes: `/` and `/display/` (page), its scripts, and `/display/config.json`.
 * Missing page files do not stop the server that serves it: the page answers 503 and says why.
 */
export function registerDisplay(app: FastifyInstance, o: DisplayOptions): void {
  const key = o.assetsDir ?? '';
  const files = cache.get(key) ?? loadAssets(o.assetsDir);
  cache.set(key, files);
  app.get('/', async (_req, reply) => reply.redirect('/display/'));
  app.get('/display', async (_req, reply) => reply.redirect('/display/'));
  if (files instanceof Error) {
    app.get('/display/*', async (_req, reply) =>
      reply.status(503).send({ error: { code: 'unavailable', message: files.message } }),
    );
  } else {
    for (const [route, asset] of Object.entries(files)) {
      app.get(route, async (_req, reply) =>
        secure(reply).type(asset.type).header('cache-control', 'no-cache').send(asset.body),
      );
    }
  }
  app.get('/display/config.json', async (req, reply) => {
    const config: DisplayConfig = {
      role: o.scope.role,
      ...(o.scope.role === 'edge' && { warehouse: o.scope.warehouse }),
      wsPort: o.wsPort,
      warehouses: o.scope.role === 'edge' ? [o.scope.warehouse] : (o.warehouses ?? []),
      ...(o.credential && fromThisMachine(req) && { credential: o.credential }),
    };
    return secure(reply).header('cache-control', 'no-store').send(config);
  });
}
