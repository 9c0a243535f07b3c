import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ErrorCode } from '../protocol/index.js';

/** The bearer tokens of the HTTP API: `write` for POST/DELETE under /v1/ (it reads too); `read`, when set, for GET. */
export interface ApiTokens {
  write: string;
  /** unset: reads under /v1/ are open */
  read?: string;
}

const REALM = 'Bearer realm="stockwire"';
// RFC 6750 section 2.1: `Bearer` (any case), one or more spaces, then the token.
const BEARER = /^Bearer +(\S+) *$/i;

/** sha256 both sides first: timingSafeEqual needs equal lengths, and the digest hides the token's length. */
function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

function sameToken(given: Buffer, expected: Buffer | undefined): boolean {
  return expected !== undefined && timingSafeEqual(given, expected);
}

function refuse(reply: FastifyReply, message: string, invalid: boolean): FastifyReply {
  // Absent credentials get the bare challenge; a wrong one says so (RFC 6750 section 3).
  return reply
    .status(401)
    .header('www-authenticate', invalid ? `${REALM}, error="invalid_token"` : REALM)
    .send({ error: { code: ErrorCode.unauthorized, message } });
}

/**
 * Requires `Authorization: Bearer <token>` on the API under /v1/: always for writes, for reads only when a read
 * token is set. /healthz, /readyz, /metrics and the display stay open. Decided on the route Fastify matched (not
 * the raw URL), so no spelling of a path (`%761`, `//`) reaches a /v1/ handler unchecked.
 */
export function registerApiAuth(app: FastifyInstance, tokens: ApiTokens): void {
  if (tokens.write === '') throw new Error('the API write token must not be empty');
  const write = digest(tokens.write);
  const read = tokens.read === undefined || tokens.read === '' ? undefined : digest(tokens.read);
  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    const route = req.routeOptions.url;
    if (route === undefined || !route.startsWith('/v1/')) return; // not a /v1/ route (or none: a 404 follows)
    const reading = req.method === 'GET' || req.method === 'HEAD';
    if (reading && read === undefined) return;
    const header = req.headers.authorization;
    if (header === undefined || header === '')
      return refuse(
        reply,
        `send Authorization: Bearer <token>; ${reading ? 'reads' : 'writes'} need the API token`,
        false,
      );
    const m = BEARER.exec(header);
    if (!m) return refuse(reply, 'the Authorization header must be "Bearer <token>"', true);
    const given = digest(m[1] as string);
    // Both comparisons always run, so the answer's timing does not tell which token was close.
    const isWrite = sameToken(given, write);
    const isRead = sameToken(given, read);
    if (isWrite || (reading && isRead)) return;
    return refuse(
      reply,
      reading || !isRead ? 'the API token is not valid' : 'this token may only read; writes need the write token',
      true,
    );
  });
}
