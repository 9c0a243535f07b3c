import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest, FastifyServerOptions } from 'fastify';
import type { Logger } from 'pino';
import { ErrorCode, httpStatusOf, ValidationError, type ErrorBody } from '../protocol/index.js';
import { isUnavailable } from './db/pool.js';
import { MAX_PARAM_LENGTH } from './http-limits.js';

// Fastify's own refusals of a request, answered in our error shape with Fastify's status.
const FASTIFY_ERRORS: Record<string, ErrorBody> = {
  FST_ERR_CTP_INVALID_JSON_BODY: { code: ErrorCode.invalidJson, message: 'the body is not valid JSON' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { code: ErrorCode.invalidJson, message: 'the body is empty; send a JSON object' },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: {
    code: ErrorCode.unsupportedMediaType,
    message: 'the body must be application/json',
  },
  FST_ERR_CTP_BODY_TOO_LARGE: { code: ErrorCode.payloadTooLarge, message: 'the body is too large' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: {
    code: ErrorCode.badRequest,
    message: 'the Content-Length does not match the body',
  },
};

/** Methods a 405 is worked out for: every one Fastify can route. */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

const pathOf = (url: string) => url.split('?')[0] ?? url;

/**
 * The path parameter of a registered route that `path` fails on: too long, or not valid percent-encoding.
 * Fastify refuses those before any route runs, knowing only the path.
 */
function offendingParam(
  routes: readonly string[],
  path: string,
  bad: (segment: string) => boolean,
): string | undefined {
  const segments = path.split('/');
  for (const route of routes) {
    const parts = route.split('/');
    if (parts.length !== segments.length) continue;
    let param: string | undefined;
    const fits = parts.every((part, i) => {
      const segment = segments[i] as string;
      if (!part.startsWith(':')) return part === segment;
      if (param === undefined && bad(segment)) param = part.slice(1);
      return true;
    });
    if (fits && param !== undefined) return param; // path parameters are named as the fields of their 400s
  }
  return undefined;
}

const undecodable = (segment: string) => {
  try {
    decodeURIComponent(segment);
    return false;
  } catch {
    return true;
  }
};

/**
 * Fastify's `frameworkErrors`: a path parameter over 100 characters (Fastify would answer its own 414) or
 * bad percent-encoding (its own 400) gets the API's 400, naming the parameter, like any other bad identifier.
 * `routes` fills as routes are registered (see registerErrorHandling).
 */
export function frameworkErrors(routes: readonly string[]): NonNullable<FastifyServerOptions['frameworkErrors']> {
  return (err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
    const path = pathOf(req.raw.url ?? '');
    if (err.code === 'FST_ERR_MAX_PARAM_LENGTH') {
      const field = offendingParam(routes, path, (s) => s.length > MAX_PARAM_LENGTH);
      const message = `${field ?? 'a path parameter'} is longer than ${MAX_PARAM_LENGTH} characters; identifiers have at most 64`;
      return reply
        .status(400)
        .send({ error: { code: ErrorCode.badRequest, message, ...(field !== undefined && { field }) } });
    }
    if (err.code === 'FST_ERR_BAD_URL') {
      const field = offendingParam(routes, path, undecodable);
      return reply.status(400).send({
        error: {
          code: ErrorCode.badRequest,
          message: `${field ?? 'the path'} is not valid percent-encoding`,
          ...(field !== undefined && { field }),
        },
      });
    }
    return reply.status(500).send({ error: { code: ErrorCode.internal, message: 'internal error' } });
  };
}

/**
 * One error shape for every answer, `{"error":{"code","message","field"?}}`: refusals of input, Fastify's own
 * refusals, 404 for unknown paths and 405 (with `Allow`) for a known path with another method. A 500 is
 * logged with its error (the client sees only "internal error"); a database that cannot answer is a 503.
 */
export function registerErrorHandling(app: FastifyInstance, routes: string[], log: Logger): void {
  app.addHook('onRoute', (route) => {
    if (!routes.includes(route.url)) routes.push(route.url);
  });

  app.setErrorHandler((err: FastifyError, req, reply) => {
    if (err instanceof ValidationError) return reply.status(httpStatusOf(err.code)).send({ error: err.toBody() });
    const known = FASTIFY_ERRORS[err.code ?? ''];
    if (known) return reply.status(err.statusCode ?? 400).send({ error: known });
    const where = { method: req.method, route: req.routeOptions.url ?? pathOf(req.url).slice(0, 200) };
    // No statusCode: thrown by our handlers, not by Fastify. A database that cannot answer is a 503 the client may retry.
    if (err.statusCode === undefined && isUnavailable(err)) {
      log.warn(
        { ...where, err: err.message, sqlstate: err.code },
        'HTTP read unavailable: the database did not answer in time',
      );
      return reply
        .status(503)
        .send({ error: { code: ErrorCode.unavailable, message: 'the database did not answer in time; try again' } });
    }
    const status = err.statusCode ?? 500;
    if (status >= 500) {
      log.error({ ...where, err }, 'HTTP request failed');
      return reply.status(status).send({ error: { code: ErrorCode.internal, message: 'internal error' } });
    }
    return reply.status(status).send({ error: { code: ErrorCode.badRequest, message: err.message } });
  });

  app.setNotFoundHandler((req, reply) => {
    const url = pathOf(req.url);
    const allowed = METHODS.filter((method) => app.findRoute({ method, url }) !== null);
    if (allowed.length === 0)
      return reply
        .status(404)
        .send({ error: { code: ErrorCode.notFound, message: `no route ${req.method} ${url.slice(0, 200)}` } });
    // RFC 9110 15.5.6: a 405 names the methods the resource does support.
    return reply
      .status(405)
      .header('allow', allowed.join(', '))
      .send({
        error: {
          code: ErrorCode.methodNotAllowed,
          message: `${req.method} is not allowed here; use ${allowed.join(', ')}`,
        },
      });
  });
}
