import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { openapiDocument } from './document.js';
import { renderDocsPage } from './html.js';

/** stockwire's version from its package.json, found upwards from this module (source tree or dist/). */
export function packageVersion(): string {
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); ; dir = path.dirname(dir)) {
    const file = path.join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'stockwire' && pkg.version) return pkg.version;
    }
    if (path.dirname(dir) === dir) return '0.0.0';
  }
}

/** `GET /openapi.json` (the document docs/openapi.yaml holds) and `GET /docs` (a page to read it by); both open. */
export function registerApiDocs(app: FastifyInstance): void {
  const doc = openapiDocument(packageVersion());
  const json = JSON.stringify(doc);
  const page = renderDocsPage(doc);
  app.get('/openapi.json', async (_req, reply) => reply.type('application/json; charset=utf-8').send(json));
  app.get('/docs', async (_req, reply) =>
    reply
      .type('text/html; charset=utf-8')
      .header('content-security-policy', page.csp)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .send(page.html),
  );
}
