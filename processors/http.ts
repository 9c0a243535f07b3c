import Fastify, { type FastifyInstance } from 'fastify';
import type pg from 'pg';
import type { Registry } from 'prom-client';
import { ErrorCode, httpStatusOf, ValidationError } from '../protocol/index.js';
import { registerApiAuth, type ApiTokens } from './api-auth.js';
import { isUnavailable } from './db/pool.js';
import type { Storage } from './db/migrate.js';
import { historyQuery, type HistoryRow } from './history.js';
import { registerMovementRoutes } from './movements.js';
import { ident, time } from './query-params.js';
import type { ReadModel } from './readmodel/readmodel.js';
import { registerCommandRoutes } from './reservations/routes.js';
import type { ReservationService } from './reservations/service.js';

export interface ApiOptions {
  pool: pg.Pool;
  readModel: ReadModel;
  registry: Registry;
  /** true when the database and the broker are ready */
  ready: () => Promise<boolean>;
  /** reservations and transfers (POST/DELETE); absent: read-only API */
  commands?: ReservationService;
  /** bearer tokens: writes under /v1/ always need one, reads when `read` is set */
  tokens: ApiTokens;
  /** the database's storage, named by /readyz */
  storage?: Storage;
}

// Fastify's own refusals of a body, answered in our error shape.
const FASTIFY_BODY_ERRORS: Record<string, { code: ErrorCode; message: string }> = {
  FST_ERR_CTP_INVALID_JSON_BODY: { code: ErrorCode.invalidJson, message: 'the body is not valid JSON' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { code: ErrorCode.invalidJson, message: 'the body is empty; send a JSON object' },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { code: ErrorCode.badRequest, message: 'the body must be application/json' },
  FST_ERR_CTP_BODY_TOO_LARGE: { code: ErrorCode.badRequest, message: 'the body is too large' },
};

const MAX_BUCKETS = 10_000; // a history answer holds at most this many buckets per warehouse
const DAY = 24 * 3600 * 1000; // ms
const UNITS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: DAY };

function bucket(value: string | undefined): number {
  const m = /^(\d{1,6})([smhd])$/.exec(value ?? '1h');
  const unit = m && UNITS[m[2] as string];
  if (!m || !unit || Number(m[1]) === 0) throw new ValidationError(ErrorCode.badRequest, 'bucket must look like 15m, 1h or 1d', 'bucket');
  return Number(m[1]) * unit;
}

/** The HTTP API of CONTRACT section 6 (stock reads, history, movements, health, metrics). */
export function createApi(o: ApiOptions): FastifyInstance {
  const app = Fastify({ logger: false, bodyLimit: 64 * 1024 });
  registerApiAuth(app, o.tokens);

  app.setErrorHandler((err, _req, reply) => {
    if (err instanceof ValidationError) return reply.status(httpStatusOf(err.code)).send({ error: err.toBody() });
    const known = FASTIFY_BODY_ERRORS[(err as { code?: string }).code ?? ''];
    if (known) return reply.status((err as { statusCode?: number }).statusCode ?? 400).send({ error: known });
    // No statusCode: thrown by our handlers, not by Fastify. A database that cannot answer is a 503 the client may retry.
    if ((err as { statusCode?: number }).statusCode === undefined && isUnavailable(err)) {
      return reply.status(503).send({ error: { code: ErrorCode.unavailable, message: 'the database did not answer in time; try again' } });
    }
    const status = (err as { statusCode?: number }).statusCode ?? 500;
    const code = status >= 500 ? ErrorCode.internal : ErrorCode.badRequest;
    return reply.status(status).send({ error: { code, message: status >= 500 ? 'internal error' : (err as Error).message } });
  });
  app.setNotFoundHandler((req, reply) => reply.status(404).send({ error: { code: ErrorCode.notFound, message: `no route ${req.method} ${req.url}` } }));

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => ((await o.ready()) ? { status: 'ready', ...(o.storage && { storage: o.storage }) } : reply.status(503).send({ status: 'not ready', ...(o.storage && { storage: o.storage }) })));
  app.get('/metrics', async (_req, reply) => reply.type(o.registry.contentType).send(await o.registry.metrics()));

  app.get<{ Params: { sku: string } }>('/v1/stock/:sku', async (req, reply) => {
    const sku = ident(req.params.sku, 'sku');
    const g = await o.readModel.global(sku);
    return g ?? reply.status(404).send({ error: { code: ErrorCode.notFound, message: `unknown sku ${sku}`, field: 'sku' } });
  });

  app.get<{ Params: { wh: string; sku: string } }>('/v1/warehouses/:wh/stock/:sku', async (req, reply) => {
    const wh = ident(req.params.wh, 'warehouse');
    const sku = ident(req.params.sku, 'sku');
    const s = await o.readModel.warehouse(wh, sku);
    return s ?? reply.status(404).send({ error: { code: ErrorCode.notFound, message: `no stock of ${sku} at ${wh}` } });
  });

  app.get<{ Params: { sku: string }; Querystring: { from?: string; to?: string; bucket?: string } }>('/v1/stock/:sku/history', async (req) => {
    const sku = ident(req.params.sku, 'sku');
    const to = time(req.query.to, 'to', Date.now());
    const from = time(req.query.from, 'from', to - DAY);
    const size = bucket(req.query.bucket);
    if (from >= to) throw new ValidationError(ErrorCode.badRequest, 'from must be before to', 'from');
    if ((to - from) / size > MAX_BUCKETS) throw new ValidationError(ErrorCode.badRequest, `more than ${MAX_BUCKETS} buckets; widen bucket`, 'bucket');
    const { rows } = await o.pool.query<HistoryRow>(historyQuery(sku, from, to, size));
    return {
      sku,
      from: new Date(from).toISOString(),
      to: new Date(to).toISOString(),
      bucketSeconds: size / 1000,
      movements: rows.map((r) => ({
        bucket: r.bucket.toISOString(),
        warehouse: r.wh,
        received: r.received ?? 0,
        shipped: r.shipped ?? 0,
        returned: r.returned ?? 0,
        adjusted: r.adjusted ?? 0,
        counts: r.counts,
        net: r.net,
        events: r.events,
      })),
    };
  });

  registerMovementRoutes(app, o.pool);
  if (o.commands) registerCommandRoutes(app, o.commands);
  return app;
}
