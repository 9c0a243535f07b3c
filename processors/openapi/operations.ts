import {
  CURSOR_PATTERN,
  DEFAULT_PAGE_LIMIT,
  IDENT_PATTERN,
  MAX_PAGE_LIMIT,
  RFC3339_PATTERN,
} from '../../protocol/index.js';
import { RESERVATION_STATES, TRANSFER_STATES } from '../lists.js';
import { BODY_LIMIT } from '../http-limits.js';
import { DATE_PATTERN, EARLIEST_MS, LATEST_MS } from '../query-params.js';

/** The operations of central's HTTP API (OpenAPI 3.1 path items), HEAD aside: document.ts derives those from the GETs. */

type Json = Record<string, unknown>;
const schemaRef = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: unknown) => ({ 'application/json': { schema } });
const error = (description: string) => ({ description, content: json(schemaRef('ErrorResponse')) });

// Writes need the API token; reads are open unless central sets API_READ_TOKEN (`{}`: no token is one option).
const WRITE = [{ apiToken: [] }];
const READ = [{}, { apiToken: [] }];
const OPEN: never[] = [];

/** Answers many operations share, as components/responses. */
export const RESPONSES: Json = {
  BadParameter: error(
    'bad parameter: `error.field` names it (a path parameter, a query parameter given twice or not taken by this operation, a bad value)',
  ),
  Unauthorized: {
    ...error('unauthorized: no valid `Authorization: Bearer <token>`'),
    headers: {
      'WWW-Authenticate': {
        description: '`Bearer realm="stockwire"`, with `error="invalid_token"` when a token was sent',
        required: true,
        schema: { type: 'string' },
      },
    },
  },
  Unavailable: error(
    'unavailable: the database did not answer within API_READ_TIMEOUT_MS (or too many commands are queued); retry',
  ),
  PayloadTooLarge: error(`payload_too_large: the body is over ${BODY_LIMIT / 1024} KiB`),
  UnsupportedMediaType: error('unsupported_media_type: a body that is not application/json'),
};
const response = (name: keyof typeof RESPONSES & string) => ({ $ref: `#/components/responses/${name}` });
const unauthorized = () => response('Unauthorized');
const unavailable = () => response('Unavailable');
const badParameter = () => response('BadParameter');
// Fastify refuses these before the handler; a DELETE's body is parsed (and ignored) like a POST's.
const bodyRefusals = () => ({ 413: response('PayloadTooLarge'), 415: response('UnsupportedMediaType') });

const ident = { type: 'string', pattern: IDENT_PATTERN };
const pathParam = (name: string, description: string) => ({
  name,
  in: 'path',
  required: true,
  description,
  schema: ident,
});
const queryIdent = (name: string, description: string, required = false) => ({
  name,
  in: 'query',
  ...(required && { required }),
  description,
  schema: ident,
});
const time = (name: string, description: string) => ({
  name,
  in: 'query',
  description: `${description}. An RFC 3339 date-time with its zone (2026-01-01T08:00:00Z, 2026-01-01T10:00:00+02:00), an RFC 3339 date (2026-01-01: its 00:00 UTC) or epoch milliseconds, from 1970-01-01 to 9999-12-31; a day that does not exist (02-30) or a leap second is refused`,
  schema: {
    anyOf: [
      { type: 'string', format: 'date-time', pattern: RFC3339_PATTERN },
      { type: 'string', format: 'date', pattern: DATE_PATTERN },
      { type: 'integer', minimum: EARLIEST_MS, maximum: LATEST_MS },
    ],
  },
});
const sort = (sorts: string[], description: string) => ({
  name: 'sort',
  in: 'query',
  description,
  schema: { type: 'string', enum: sorts, default: sorts[0] },
});
/** Parameters many operations share, as components/parameters. */
export const PARAMETERS: Json = {
  limit: {
    name: 'limit',
    in: 'query',
    description: `items per page, at most ${MAX_PAGE_LIMIT}`,
    schema: { type: 'integer', minimum: 1, maximum: MAX_PAGE_LIMIT, default: DEFAULT_PAGE_LIMIT },
  },
  cursor: {
    name: 'cursor',
    in: 'query',
    description: '`nextCursor` of the page before, with the same sort; absent: the first page',
    schema: { type: 'string', pattern: CURSOR_PATTERN },
  },
  idempotencyKey: {
    name: 'Idempotency-Key',
    in: 'header',
    required: true,
    description: 'a repeated key returns the first answer (1–255 visible ASCII characters)',
    schema: { type: 'string', pattern: '^[\\x21-\\x7E]{1,255}$' },
  },
};
const parameter = (name: keyof typeof PARAMETERS & string) => ({ $ref: `#/components/parameters/${name}` });
const pages = () => [parameter('limit'), parameter('cursor')];
const PAGING_NOTE =
  'Keyset paging: each page starts after the last item of the one before, so a page costs the same wherever it is and an item added or removed meanwhile neither shifts nor repeats the others. ';

const idempotencyKey = parameter('idempotencyKey');
const replayed = {
  'idempotent-replayed': {
    description: '`true` on the answer to a repeated Idempotency-Key',
    schema: { type: 'string', enum: ['true'] },
  },
};

const stockOperations = (): Json => ({
  '/v1/stock': {
    get: {
      operationId: 'listStock',
      tags: ['stock'],
      summary: 'every SKU with its stock over all warehouses, a page at a time',
      description: `${PAGING_NOTE}With sort=available or -available (ties by sku), a SKU whose available changes between two pages may appear on both or on neither; sort=sku is a stable position. The items are the objects of GET /v1/stock/{sku}. For the SKUs of one warehouse, GET /v1/warehouses/{warehouse}/stock.`,
      parameters: [
        sort(
          ['sku', 'available', '-available'],
          'sku: by id; available: least available first; -available: most available first',
        ),
        ...pages(),
      ],
      security: READ,
      responses: {
        200: { description: 'one page', content: json(schemaRef('StockPage')) },
        400: badParameter(),
        401: unauthorized(),
        503: unavailable(),
      },
    },
  },
  '/v1/stock/{sku}': {
    get: {
      operationId: 'getGlobalStock',
      tags: ['stock'],
      summary: 'stock of a SKU over every warehouse (the retained stock/{sku} object)',
      parameters: [pathParam('sku', 'stock keeping unit')],
      security: READ,
      responses: {
        200: { description: 'global stock', content: json(schemaRef('GlobalStock')) },
        400: badParameter(),
        401: unauthorized(),
        404: error('unknown sku'),
        503: unavailable(),
      },
    },
  },
  '/v1/stock/{sku}/history': {
    get: {
      operationId: 'getStockHistory',
      tags: ['stock'],
      summary: 'movements of a SKU per time bucket and warehouse',
      description:
        'Buckets without events are left out; an unknown sku has none. At most 10,000 buckets between from and to.',
      parameters: [
        pathParam('sku', 'stock keeping unit'),
        time('from', 'start (inclusive); default: to − 24 h'),
        time('to', 'end (exclusive); default: now'),
        {
          name: 'bucket',
          in: 'query',
          description: 'bucket size: 1 to 999999 seconds, minutes, hours or days (15m, 1h, 1d)',
          schema: { type: 'string', pattern: '^[1-9][0-9]{0,5}[smhd]$', default: '1h' },
        },
      ],
      security: READ,
      responses: {
        200: { description: 'movements, oldest bucket first', content: json(schemaRef('StockHistory')) },
        400: badParameter(),
        401: unauthorized(),
        503: unavailable(),
      },
    },
  },
  '/v1/warehouses': {
    get: {
      operationId: 'listWarehouses',
      tags: ['stock'],
      summary: "every warehouse with its stock totals and its edge's link to central (online, since, backlog)",
      description: `${PAGING_NOTE}By warehouse id. A warehouse is listed once a stock row names it or its edge has reported its link status to central.`,
      parameters: pages(),
      security: READ,
      responses: {
        200: { description: 'one page', content: json(schemaRef('WarehousePage')) },
        400: badParameter(),
        401: unauthorized(),
        503: unavailable(),
      },
    },
  },
  '/v1/warehouses/{warehouse}/stock': {
    get: {
      operationId: 'listWarehouseStock',
      tags: ['stock'],
      summary: 'the stock of every SKU in one warehouse, a page at a time',
      description: `${PAGING_NOTE}With sort=available or -available (ties by sku), a SKU whose available changes between two pages may appear on both or on neither; sort=sku is a stable position.`,
      parameters: [
        pathParam('warehouse', 'warehouse id'),
        sort(
          ['sku', 'available', '-available'],
          'sku: by id; available: least available first; -available: most available first',
        ),
        ...pages(),
      ],
      security: READ,
      responses: {
        200: { description: 'one page', content: json(schemaRef('WarehouseStockPage')) },
        400: badParameter(),
        401: unauthorized(),
        404: error('unknown warehouse: no stock row and no link status names it'),
        503: unavailable(),
      },
    },
  },
  '/v1/warehouses/{warehouse}/stock/{sku}': {
    get: {
      operationId: 'getWarehouseStock',
      tags: ['stock'],
      summary: 'stock of a SKU in one warehouse (the retained wh/{wh}/stock/{sku} object)',
      parameters: [pathParam('warehouse', 'warehouse id'), pathParam('sku', 'stock keeping unit')],
      security: READ,
      responses: {
        200: { description: 'warehouse stock', content: json(schemaRef('WarehouseStock')) },
        400: badParameter(),
        401: unauthorized(),
        404: error('no stock of this sku in this warehouse'),
        503: unavailable(),
      },
    },
  },
  '/v1/movements': {
    get: {
      operationId: 'getMovements',
      tags: ['stock'],
      summary: 'movements of a warehouse (one sku, or all its skus summed) per UTC hour or day, from movements_hourly',
      description:
        'Sums per bucket from movements_hourly (on TimescaleDB a continuous aggregate: rows it has not materialised yet appear once it is refreshed, or at once when it is real-time); day buckets roll up the hourly rows. ' +
        "`counts` and `countCorrection` come from the event log: a correction is a count's qty minus the book onHand just before it in ledger order (ts, id, device). Buckets without events are left out. At most 10,000 buckets.",
      parameters: [
        queryIdent('warehouse', 'warehouse id', true),
        queryIdent('sku', 'stock keeping unit; absent: every sku of the warehouse, summed'),
        {
          name: 'bucket',
          in: 'query',
          description: 'UTC hour or UTC day',
          schema: { type: 'string', enum: ['hour', 'day'], default: 'hour' },
        },
        time('from', 'start, widened down to a whole bucket; default: to − 24 h (hour) or to − 30 days (day)'),
        time('to', 'end (exclusive), widened up to a whole bucket; default: now'),
      ],
      security: READ,
      responses: {
        200: { description: 'movements per bucket, oldest first', content: json(schemaRef('Movements')) },
        400: badParameter(),
        401: unauthorized(),
        503: unavailable(),
      },
    },
  },
});

const commandOperations = (): Json => ({
  '/v1/reservations': {
    get: {
      operationId: 'listReservations',
      tags: ['commands'],
      summary: 'holds by sku, warehouse and state, a page at a time',
      description: `${PAGING_NOTE}Each part of a split reservation is a hold of its own (its \`group\` names the split's id), and a transfer's hold is listed too (\`transfer\`). A hold past its expiry stays active until a sweep or a decision on its stock row ends it (within SWEEP_INTERVAL_MS).`,
      parameters: [
        queryIdent('sku', 'only this sku'),
        queryIdent('warehouse', 'only holds in this warehouse'),
        {
          name: 'state',
          in: 'query',
          description: 'only holds in this state',
          schema: { type: 'string', enum: [...RESERVATION_STATES] },
        },
        sort(
          ['createdAt', '-createdAt'],
          'createdAt: oldest first (new holds come last: a cursor resumes where it stopped); -createdAt: newest first (the exact reverse)',
        ),
        ...pages(),
      ],
      security: READ,
      responses: {
        200: { description: 'one page', content: json(schemaRef('ReservationPage')) },
        400: badParameter(),
        401: unauthorized(),
        503: unavailable(),
      },
    },
    post: {
      operationId: 'reserve',
      tags: ['commands'],
      summary: 'reserve stock: granted only while available ≥ qty in the chosen warehouse, atomically',
      parameters: [idempotencyKey],
      requestBody: { required: true, content: json(schemaRef('ReservationRequest')) },
      security: WRITE,
      responses: {
        201: {
          description: 'granted (`parts` with `split`); a repeated key answers the first answer again',
          headers: replayed,
          content: json(schemaRef('ReservationGranted')),
        },
        400: error('bad body or missing Idempotency-Key (named in error.field), or invalid_json'),
        401: unauthorized(),
        404: error('unknown warehouse or sku'),
        409: {
          ...error('insufficient_stock: not enough available (a repeated key answers it again)'),
          headers: replayed,
        },
        ...bodyRefusals(),
        422: error('idempotency_key_reused: the key was used for a different request'),
        503: unavailable(),
      },
    },
  },
  '/v1/reservations/{id}': {
    get: {
      operationId: 'getReservation',
      tags: ['commands'],
      summary:
        "one hold: its state, what it still holds and what shipments consumed; a split reservation's id: its parts",
      parameters: [pathParam('id', "reservation id (a split reservation's id, or one of its parts)")],
      security: READ,
      responses: {
        200: {
          description: 'the hold, or the parts of a split reservation',
          content: json({ oneOf: [schemaRef('ReservationView'), schemaRef('ReservationGroupView')] }),
        },
        400: badParameter(),
        401: unauthorized(),
        404: error('no such reservation'),
        503: unavailable(),
      },
    },
    delete: {
      operationId: 'release',
      tags: ['commands'],
      summary: 'release what the hold (or every part of a split reservation) still holds (again: 204)',
      parameters: [pathParam('id', 'reservation id')],
      security: WRITE,
      responses: {
        204: { description: 'released' },
        400: badParameter(),
        401: unauthorized(),
        404: error('no such reservation'),
        409: error("invalid_state: a transfer's hold (cancel the transfer)"),
        ...bodyRefusals(),
        503: unavailable(),
      },
    },
  },
  '/v1/transfers': {
    get: {
      operationId: 'listTransfers',
      tags: ['commands'],
      summary: 'transfers by sku, source, destination and state, a page at a time',
      description: PAGING_NOTE,
      parameters: [
        queryIdent('sku', 'only this sku'),
        queryIdent('from', 'only transfers out of this warehouse'),
        queryIdent('to', 'only transfers into this warehouse'),
        {
          name: 'state',
          in: 'query',
          description: 'only transfers in this state',
          schema: { type: 'string', enum: [...TRANSFER_STATES] },
        },
        sort(
          ['createdAt', '-createdAt'],
          'createdAt: oldest first (new transfers come last: a cursor resumes where it stopped); -createdAt: newest first (the exact reverse)',
        ),
        ...pages(),
      ],
      security: READ,
      responses: {
        200: { description: 'one page', content: json(schemaRef('TransferPage')) },
        400: badParameter(),
        401: unauthorized(),
        503: unavailable(),
      },
    },
    post: {
      operationId: 'createTransfer',
      tags: ['commands'],
      summary: 'move stock between warehouses as a saga: hold at from, ship naming it, receive at to naming it',
      parameters: [idempotencyKey],
      requestBody: { required: true, content: json(schemaRef('TransferRequest')) },
      security: WRITE,
      responses: {
        201: {
          description: 'the transfer, holding qty at from',
          headers: replayed,
          content: json(schemaRef('TransferView')),
        },
        400: error('bad body or missing Idempotency-Key (named in error.field), or invalid_json'),
        401: unauthorized(),
        404: error('unknown warehouse (from, to) or sku'),
        409: { ...error('insufficient_stock at from'), headers: replayed },
        ...bodyRefusals(),
        422: error('idempotency_key_reused'),
        503: unavailable(),
      },
    },
  },
  '/v1/transfers/{id}': {
    get: {
      operationId: 'getTransfer',
      tags: ['commands'],
      summary: 'a transfer: state, shipped, received, in transit, deadline',
      parameters: [pathParam('id', 'transfer id')],
      security: READ,
      responses: {
        200: { description: 'the transfer', content: json(schemaRef('TransferView')) },
        400: badParameter(),
        401: unauthorized(),
        404: error('no such transfer'),
        503: unavailable(),
      },
    },
    delete: {
      operationId: 'cancelTransfer',
      tags: ['commands'],
      summary: 'cancel a transfer nothing was shipped or received for (again: 204)',
      parameters: [pathParam('id', 'transfer id')],
      security: WRITE,
      responses: {
        204: { description: 'cancelled' },
        400: badParameter(),
        401: unauthorized(),
        404: error('no such transfer'),
        409: error('invalid_state: goods already moved'),
        ...bodyRefusals(),
        503: unavailable(),
      },
    },
  },
});

const file = (operationId: string, summary: string, type: string, tag = 'display') => ({
  get: {
    operationId,
    tags: [tag],
    summary,
    security: OPEN,
    responses: {
      200: { description: summary, content: { [type]: { schema: { type: 'string' } } } },
      ...(tag === 'display' && { 503: error("unavailable: the page's files are missing from this installation") }),
    },
  },
});
const redirect = (operationId: string) => ({
  get: {
    operationId,
    tags: ['display'],
    summary: 'redirects to the live display',
    security: OPEN,
    responses: {
      302: {
        description: 'to /display/',
        headers: {
          Location: { description: '/display/', required: true, schema: { type: 'string', const: '/display/' } },
        },
      },
    },
  },
});

const openOperations = (): Json => ({
  '/healthz': {
    get: {
      operationId: 'health',
      tags: ['health'],
      summary: '200 while the process runs',
      security: OPEN,
      responses: { 200: { description: 'alive', content: json(schemaRef('Health')) } },
    },
  },
  '/readyz': {
    get: {
      operationId: 'ready',
      tags: ['health'],
      summary: 'ready when the database and the broker are',
      security: OPEN,
      responses: {
        200: { description: 'ready', content: json(schemaRef('Health')) },
        503: { description: 'not ready', content: json(schemaRef('Health')) },
      },
    },
  },
  '/metrics': {
    get: {
      operationId: 'metrics',
      tags: ['health'],
      summary: 'Prometheus text format',
      security: OPEN,
      responses: { 200: { description: 'metrics', content: { 'text/plain': { schema: { type: 'string' } } } } },
    },
  },
  '/openapi.json': {
    get: {
      operationId: 'openapi',
      tags: ['docs'],
      summary: 'this document, as JSON',
      security: OPEN,
      responses: {
        200: { description: 'OpenAPI 3.1 (docs/openapi.yaml is the same document)', content: json({ type: 'object' }) },
      },
    },
  },
  '/docs': file(
    'docs',
    'this document as a page to read (no scripts, nothing loaded from elsewhere)',
    'text/html',
    'docs',
  ),
  '/': redirect('root'),
  '/display': redirect('displayRedirect'),
  '/display/': file('display', 'the live display page', 'text/html'),
  '/display/app.js': file('displayScript', "the live display's script", 'text/javascript'),
  '/display/style.css': file('displayStyle', "the live display's style sheet", 'text/css'),
  '/display/mqtt.min.js': file(
    'displayMqtt',
    "MQTT.js's browser bundle, which the page connects with",
    'text/javascript',
  ),
  '/display/config.json': {
    get: {
      operationId: 'displayConfig',
      tags: ['display'],
      summary:
        'what the live display connects with: the WebSocket port, the warehouses and, in the demo only, a display credential',
      description:
        'The credential is sent only by `stockwire demo`, and only to a request from this machine by a loopback name (peer address 127.0.0.1 or ::1 and a Host of localhost, 127.x or [::1]), so a page elsewhere (DNS rebinding included) never gets it; no CORS header lets another origin read this. `Cache-Control: no-store`.',
      security: OPEN,
      responses: { 200: { description: 'the configuration', content: json(schemaRef('DisplayConfig')) } },
    },
  },
});

/** Every path item of central's HTTP API. */
export function operations(): Json {
  return { ...openOperations(), ...stockOperations(), ...commandOperations() };
}
