import Fastify, { type FastifyInstance } from 'fastify';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { ErrorCode, ValidationError } from '../protocol/index.js';
import { registerApiAuth, type ApiTokens } from './api-auth.js';
import type { Storage } from './db/migrate.js';
import { historyQuery, type HistoryRow } from './history.js';
import { frameworkErrors, registerErrorHandling } from './http-errors.js';
import { BODY_LIMIT, DEFAULT_REQUEST_TIMEOUT_MS, MAX_PARAM_LENGTH } from './http-limits.js';
import { registerListRoutes, type LinkLookup } from './lists.js';
import { registerMovementRoutes } from './movements.js';
import { registerApiDocs } from './openapi/serve.js';
import { ident, onlyKnown, single, time, type Query } from './query-params.js';
import type { ReadModel } from './publish/read-model.js';
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
  /** each warehouse's retained link status (central's broker); absent: none known (a standalone processor) */
  links?: LinkLookup;
  /** 500s and 503s are logged here */
  log: Logger;
  /** ms a request may take to arrive, headers and body; unset: 30 s */
  requestTimeoutMs?: number;
}

/** The parameters of `GET /v1/stock/{sku}/history`. */
export const HISTORY_PARAMS = ['from', 'to', 'bucket'] as const;

const MAX_BUCKETS = 10_000; // a history answer holds at most this many buckets per warehouse
const DAY = 24 * 3600 * 1000; // ms
const UNITS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: DAY };

function bucket(value: string | undefined): number {
  const m = /^([1-9]\d{0,5})([smhd])$/.exec(value ?? '1h');
  const unit = m && UNITS[m[2] as string];
  if (!m || !unit)
    throw new ValidationError(
      ErrorCode.badRequest,
      'bucket must be 1 to 999999 s, m, h or d, such as 15m, 1h or 1d',
      'bucket',
    );
  return Number(m[1]) * unit;
}

/** The HTTP API of CONTRACT section 6 (stock reads, history, movements, health, metrics). */
export function createApi(o: ApiOptions): FastifyInstance {
  const routes: string[] = [];
  const requestTimeout = o.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const app = Fastify({
    logger: false,
    bodyLimit: BODY_LIMIT,
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    frameworkErrors: frameworkErrors(routes),
    // Fastify's default 0 lets a request whose body trickles in hold its connection for ever. Node answers 408
    // and closes; it looks for such requests every connectionsCheckingInterval.
    requestTimeout,
    http: { headersTimeout: requestTimeout, connectionsCheckingInterval: Math.min(1_000, requestTimeout) },
  });
  registerErrorHandling(app, routes, o.log);
  // Bodies are JSON or refused (415): Fastify would also take text/plain, as a string no route wants.
  app.removeContentTypeParser('text/plain');
  registerApiAuth(app, o.tokens);

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) =>
    (await o.ready())
      ? { status: 'ready', ...(o.storage && { storage: o.storage }) }
      : reply.status(503).send({ status: 'not ready', ...(o.storage && { storage: o.storage }) }),
  );
  registerApiDocs(app);
  app.get('/metrics', async (_req, reply) => reply.type(o.registry.contentType).send(await o.registry.metrics()));

  app.get<{ Params: { sku: string } }>('/v1/stock/:sku', async (req, reply) => {
    const sku = ident(req.params.sku, 'sku');
    const g = await o.readModel.global(sku);
    return (
      g ?? reply.status(404).send({ error: { code: ErrorCode.notFound, message: `unknown sku ${sku}`, field: 'sku' } })
    );
  });

  app.get<{ Params: { warehouse: string; sku: string } }>(
    '/v1/warehouses/:warehouse/stock/:sku',
    async (req, reply) => {
      const wh = ident(req.params.warehouse, 'warehouse');
      const sku = ident(req.params.sku, 'sku');
      const s = await o.readModel.warehouse(wh, sku);
      return (
        s ?? reply.status(404).send({ error: { code: ErrorCode.notFound, message: `no stock of ${sku} at ${wh}` } })
      );
    },
  );

  app.get<{ Params: { sku: string }; Querystring: Query }>('/v1/stock/:sku/history', async (req) => {
    const sku = ident(req.params.sku, 'sku');
    onlyKnown(req.query, HISTORY_PARAMS);
    const to = time(single(req.query, 'to'), 'to', Date.now());
    const from = time(single(req.query, 'from'), 'from', to - DAY);
    const size = bucket(single(req.query, 'bucket'));
    if (from >= to) throw new ValidationError(ErrorCode.badRequest, 'from must be before to', 'from');
    if ((to - from) / size > MAX_BUCKETS)
      throw new ValidationError(ErrorCode.badRequest, `more than ${MAX_BUCKETS} buckets; widen bucket`, 'bucket');
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
  registerListRoutes(app, o.pool, o.links ?? (async () => new Map()));
  if (o.commands) registerCommandRoutes(app, o.commands);
  return app;
}
