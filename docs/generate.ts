/**
 * Generates the API documents from the protocol/ schemas, so they cannot drift from the code:
 *   docs/asyncapi.yaml  AsyncAPI 3.0 of the MQTT interface (CONTRACT sections 2–5)
 *   docs/openapi.yaml   OpenAPI 3.1 of central's HTTP API (CONTRACT section 6)
 * `npm run docs` writes them; test/docs/api-docs.test.ts fails when the committed files differ.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TSchema } from '@sinclair/typebox';
import YAML from 'yaml';
import * as p from '../protocol/index.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const ASYNCAPI_FILE = path.join(ROOT, 'docs/asyncapi.yaml');
export const OPENAPI_FILE = path.join(ROOT, 'docs/openapi.yaml');

/** Plain JSON Schema of a TypeBox schema (its symbols dropped). */
const plain = (schema: TSchema): Record<string, unknown> => JSON.parse(JSON.stringify(schema)) as Record<string, unknown>;
const ref = (kind: string, name: string) => ({ $ref: `#/components/${kind}/${name}` });

async function version(): Promise<string> {
  return (JSON.parse(await fs.readFile(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
}

const MQTT_SCHEMAS: Record<string, TSchema> = {
  EventPayloadV1: p.EventPayloadV1,
  Ack: p.Ack,
  WarehouseStock: p.WarehouseStock,
  GlobalStock: p.GlobalStock,
  ShelfReading: p.ShelfReading,
  LinkStatus: p.LinkStatus,
  Alert: p.Alert,
  ReplayedEvent: p.ReplayedEvent,
  CommandRequest: p.CommandRequest,
  CommandResponse: p.CommandResponse,
};

interface Channel {
  address: string;
  message: string;
  schema: keyof typeof MQTT_SCHEMAS;
  title: string;
  description: string;
  params: string[];
  /** what stockwire does on this channel */
  action: 'send' | 'receive';
  retain: boolean;
  example: unknown;
}

const AT = '2026-01-01T08:00:00.000Z';
const CHANNELS: Record<string, Channel> = {
  deviceEvent: {
    address: p.topics.event('{wh}', '{device}'), message: 'event', schema: 'EventPayloadV1', title: 'Device event', action: 'receive', retain: false, params: ['wh', 'device'],
    description: 'A scan or shelf reading, device → edge → central. Published by the device on its edge, forwarded by the edge (gateway credential) to central. At most 8 KiB. The warehouse and device come from the topic and the authenticated connection, never from the payload. Per-type quantity rules: received/shipped/returned 1…1,000,000; adjusted non-zero −1,000,000…1,000,000; counted/level 0…1,000,000,000; level needs location.',
    example: { v: 1, id: '01J9Z7X4Q2', type: 'received', sku: 'SKU-1', qty: 5, ts: AT },
  },
  ack: {
    address: p.topics.ack('{wh}', '{device}'), message: 'ack', schema: 'Ack', title: 'Commit ack', action: 'send', retain: false, params: ['wh', 'device'],
    description: 'Published after the commit that decided the event: applied, duplicate (the original outcome of a repeat) or rejected with an error. An edge deletes an event from its outbox only on this ack. A payload over 8 KiB is answered by the edge itself (rejected, payload_too_large, id null) and never reaches central: one ack per payload either way.',
    example: { id: '01J9Z7X4Q2', status: 'applied', stock: { onHand: 12, available: 10 } },
  },
  warehouseStock: {
    address: p.topics.warehouseStock('{wh}', '{sku}'), message: 'warehouseStock', schema: 'WarehouseStock', title: 'Warehouse stock', action: 'send', retain: true, params: ['wh', 'sku'],
    description: 'Retained book stock of one SKU in one warehouse, after every commit that changes it; version strictly increases. Edges mirror their own warehouse, retained, for displays while central is unreachable, and keep the last values across a restart (served while their status says central is offline); an edge never serves an older version after a newer one.',
    example: { sku: 'SKU-1', warehouse: 'WH1', onHand: 12, reserved: 2, available: 10, version: 7, asOf: AT },
  },
  globalStock: {
    address: p.topics.globalStock('{sku}'), message: 'globalStock', schema: 'GlobalStock', title: 'Global stock', action: 'send', retain: true, params: ['sku'],
    description: 'Retained stock of one SKU over every warehouse, with the per-warehouse levels; version strictly increases.',
    example: { sku: 'SKU-1', onHand: 20, reserved: 2, available: 18, warehouses: { WH1: { onHand: 12, reserved: 2, available: 10 }, WH2: { onHand: 8, reserved: 0, available: 8 } }, inTransit: 0, version: 9, asOf: AT },
  },
  shelf: {
    address: p.topics.shelf('{wh}', '{location}', '{sku}'), message: 'shelfReading', schema: 'ShelfReading', title: 'Shelf reading', action: 'send', retain: true, params: ['wh', 'location', 'sku'],
    description: 'Retained latest level reading (by event time) of a shelf sensor. Readings do not change book stock.',
    example: { sku: 'SKU-1', warehouse: 'WH1', location: 'A-01-3', qty: 11, ts: AT, device: 'shelf-7' },
  },
  status: {
    address: p.topics.status('{wh}'), message: 'linkStatus', schema: 'LinkStatus', title: 'Edge link status', action: 'send', retain: true, params: ['wh'],
    description: 'Retained on the edge broker and on central: whether the edge reaches central, since when, and how many events wait in its outbox. The edge\'s will message sets it offline at central.',
    example: { central: 'online', since: AT, backlog: 0 },
  },
  alert: {
    address: p.topics.alert('{wh}', '{kind}'), message: 'alert', schema: 'Alert', title: 'Alert', action: 'send', retain: false, params: ['wh', 'kind'],
    description: 'From central: negative-stock, dead-letter, reservation-mismatch (a shipment naming a hold it cannot consume), transfer-mismatch and transfer-timeout. On the edge broker only: outbox-full, device-share (a device holds its share of the outbox) and dead-letter (a payload over 8 KiB refused at the edge).',
    example: { kind: 'negative-stock', wh: 'WH1', sku: 'SKU-1', message: 'onHand of SKU-1 at WH1 is -3', at: AT },
  },
  request: {
    address: p.topics.request('{client}'), message: 'commandRequest', schema: 'CommandRequest', title: 'Command request', action: 'receive', retain: false, params: ['client'],
    description: 'A reservation or transfer command over MQTT (central only), published by a client to its own requests/{client} (the ACL binds the topic to the MQTT username). `data` is the HTTP body for reservations.create and transfers.create, `{"id"}` for the others; `idempotencyKey` is required for the creates. A processor credential may make every request, a gateway only for its own warehouse, devices none.',
    example: { requestId: '42', action: 'reservations.create', idempotencyKey: 'order-7781', responseTopic: 'responses/erp/orders', data: { sku: 'SKU-1', qty: 2 } },
  },
  response: {
    address: p.topics.response('{client}'), message: 'commandResponse', schema: 'CommandResponse', title: 'Command response', action: 'send', retain: false, params: ['client'],
    description: 'The answer to a command, on responses/{client}, or on the topic below it that the request named as responseTopic (never one outside it): `{"requestId","status":"ok","data"}` with the HTTP body of the same command, or `{"requestId","status":"error","error"}`. A client may subscribe only to its own responses/{client}/#.',
    example: { requestId: '42', status: 'ok', data: { id: 'r-01J9Z7', sku: 'SKU-1', qty: 2, warehouse: 'WH1', expiresAt: AT } },
  },
  replay: {
    address: 'wh/{wh}/replay/{sku}', message: 'replayedEvent', schema: 'ReplayedEvent', title: 'Replayed event', action: 'send', retain: false, params: ['wh', 'sku'],
    description: '`stockwire replay --from --to --topic TEMPLATE` republishes a time range of the event log in ledger order (ts, id, device). The address is the operator\'s template ({wh} {device} {sku} {type} {id}); this one is an example. Templates that could match a live topic of this document are refused.',
    example: { wh: 'WH1', device: 'scanner-1', id: '01J9Z7X4Q2', type: 'received', sku: 'SKU-1', qty: 5, delta: 5, ts: AT, receivedAt: AT, committedAt: AT, payload: { v: 1, id: '01J9Z7X4Q2', type: 'received', sku: 'SKU-1', qty: 5, ts: AT } },
  },
};

const PARAMETERS: Record<string, string> = {
  wh: 'warehouse id',
  device: 'device id (the MQTT username of a scanner or shelf sensor)',
  sku: 'stock keeping unit',
  location: 'bin or shelf',
  kind: 'alert kind: negative-stock, dead-letter, outbox-full, device-share, reservation-mismatch, transfer-mismatch, transfer-timeout',
  client: 'MQTT username of the client making commands (a processor or gateway credential)',
};

export async function asyncapi(): Promise<Record<string, unknown>> {
  const channels: Record<string, unknown> = {};
  const operations: Record<string, unknown> = {};
  const messages: Record<string, unknown> = {};
  for (const [name, c] of Object.entries(CHANNELS)) {
    channels[name] = {
      address: c.address,
      title: c.title,
      description: c.description,
      parameters: Object.fromEntries(c.params.map((param) => [param, ref('parameters', param)])),
      messages: { [c.message]: ref('messages', c.message) },
    };
    operations[`${c.action}${name[0]?.toUpperCase()}${name.slice(1)}`] = {
      action: c.action,
      channel: { $ref: `#/channels/${name}` },
      messages: [{ $ref: `#/channels/${name}/messages/${c.message}` }],
      bindings: { mqtt: { qos: 1, retain: c.retain, bindingVersion: '0.2.0' } },
    };
    messages[c.message] = { name: c.message, title: c.title, contentType: 'application/json', payload: ref('schemas', c.schema), examples: [{ payload: c.example }] };
  }
  return {
    asyncapi: '3.0.0',
    info: {
      title: 'stockwire MQTT interface',
      version: await version(),
      description:
        'Topics, payloads and access rules of stockwire (CONTRACT sections 2–5). The same topic names are used on an edge broker and on the central broker. ' +
        'Operations are described from stockwire\'s side: it receives device events and sends acks, stock, shelf, status, alert and replayed messages. ' +
        'Identifiers match ^[A-Za-z0-9._-]{1,64}$. Anonymous connections are refused; the MQTT username is the device id and access follows its kind ' +
        '(scanner, shelf, display, gateway, processor).',
      license: { name: 'MIT' },
    },
    defaultContentType: 'application/json',
    servers: {
      edge: { host: 'localhost:1883', protocol: 'mqtt', protocolVersion: '3.1.1', description: 'A warehouse edge: devices connect here (WebSocket on 8083, optional TLS).', security: [ref('securitySchemes', 'device')] },
      central: { host: 'localhost:1884', protocol: 'mqtt', protocolVersion: '3.1.1', description: 'Central: edges (gateway credential), displays and processors connect here (WebSocket on 8084).', security: [ref('securitySchemes', 'device')] },
    },
    channels,
    operations,
    components: {
      schemas: Object.fromEntries(Object.entries(MQTT_SCHEMAS).map(([n, s]) => [n, plain(s)])),
      messages,
      parameters: Object.fromEntries(Object.entries(PARAMETERS).map(([n, d]) => [n, { description: d }])),
      securitySchemes: { device: { type: 'userPassword', description: 'MQTT username = device id, password checked against the scrypt hash in DEVICES_FILE.' } },
    },
  };
}

const json = (schema: unknown) => ({ 'application/json': { schema } });
const error = (description: string) => ({ description, content: json(ref('schemas', 'ErrorResponse')) });
const idempotencyKey = { name: 'Idempotency-Key', in: 'header', required: true, description: 'a repeated key returns the first answer (1–255 visible ASCII characters)', schema: { type: 'string', pattern: '^[\\x21-\\x7E]{1,255}$' } };
const commandId = (description: string) => ({ name: 'id', in: 'path', required: true, description, schema: { type: 'string', pattern: p.EVENT_ID_PATTERN } });
// Writes need the API token; reads are open unless central sets API_READ_TOKEN (`{}`: no token is one option).
const WRITE = [{ apiToken: [] }];
const READ = [{}, { apiToken: [] }];
const unauthorized = () => error('unauthorized: no valid `Authorization: Bearer <token>` (the answer carries `WWW-Authenticate: Bearer`)');
const pathParam = (name: string, description: string) => ({ name, in: 'path', required: true, description, schema: { type: 'string', pattern: p.IDENT_PATTERN } });

export async function openapi(): Promise<Record<string, unknown>> {
  return {
    openapi: '3.1.0',
    info: {
      title: 'stockwire central HTTP API',
      version: await version(),
      description: 'Health, metrics, stock reads, history, movements, reservations and transfers (CONTRACT section 6; movements, transfers and GET of a reservation extend it). Writes need `Authorization: Bearer <API token>`; reads too when API_READ_TOKEN is set. Errors are `{"error":{"code","message"}}`; a 400 names the offending field. Edges serve /healthz, /readyz and /metrics only (port 9101).',
      license: { name: 'MIT', identifier: 'MIT' },
    },
    servers: [{ url: 'http://localhost:8080', description: 'central (HTTP_PORT)' }],
    paths: {
      '/healthz': { get: { operationId: 'health', summary: '200 while the process runs', responses: { 200: { description: 'alive', content: json(ref('schemas', 'Health')) } } } },
      '/readyz': {
        get: {
          operationId: 'ready', summary: 'ready when the database and the broker are',
          responses: { 200: { description: 'ready', content: json(ref('schemas', 'Health')) }, 503: { description: 'not ready', content: json(ref('schemas', 'Health')) } },
        },
      },
      '/metrics': { get: { operationId: 'metrics', summary: 'Prometheus text format', responses: { 200: { description: 'metrics', content: { 'text/plain': { schema: { type: 'string' } } } } } } },
      '/v1/stock/{sku}': {
        get: {
          operationId: 'getGlobalStock', summary: 'stock of a SKU over every warehouse (the retained stock/{sku} object)',
          parameters: [pathParam('sku', 'stock keeping unit')],
          security: READ,
          responses: { 200: { description: 'global stock', content: json(ref('schemas', 'GlobalStock')) }, 400: error('bad sku'), 401: unauthorized(), 404: error('unknown sku'), 503: error('unavailable: the database did not answer in time; retry') },
        },
      },
      '/v1/warehouses/{wh}/stock/{sku}': {
        get: {
          operationId: 'getWarehouseStock', summary: 'stock of a SKU in one warehouse (the retained wh/{wh}/stock/{sku} object)',
          parameters: [pathParam('wh', 'warehouse id'), pathParam('sku', 'stock keeping unit')],
          security: READ,
          responses: { 200: { description: 'warehouse stock', content: json(ref('schemas', 'WarehouseStock')) }, 400: error('bad warehouse or sku'), 401: unauthorized(), 404: error('no stock of this sku in this warehouse'), 503: error('unavailable: the database did not answer in time; retry') },
        },
      },
      '/v1/stock/{sku}/history': {
        get: {
          operationId: 'getStockHistory', summary: 'movements per time bucket and warehouse',
          parameters: [
            pathParam('sku', 'stock keeping unit'),
            { name: 'from', in: 'query', description: 'RFC 3339 or epoch ms, 1970-01-01…9999-12-31; default: to − 24 h', schema: { type: 'string' } },
            { name: 'to', in: 'query', description: 'RFC 3339 or epoch ms, 1970-01-01…9999-12-31; default: now', schema: { type: 'string' } },
            { name: 'bucket', in: 'query', description: 'bucket size such as 15m, 1h, 1d (at most 10,000 buckets)', schema: { type: 'string', pattern: '^\\d{1,6}[smhd]$', default: '1h' } },
          ],
          security: READ,
          responses: { 200: { description: 'movements', content: json(ref('schemas', 'StockHistory')) }, 400: error('bad parameter (named in error.field)'), 401: unauthorized(), 503: error('unavailable: the database did not answer within API_READ_TIMEOUT_MS; retry') },
        },
      },
      '/v1/movements': {
        get: {
          operationId: 'getMovements',
          summary: 'movements of a warehouse (one sku, or all its skus summed) per UTC hour or day, from movements_hourly',
          description:
            'Sums per bucket from movements_hourly (on TimescaleDB a continuous aggregate: rows it has not materialised yet appear once it is refreshed, or at once when it is real-time); day buckets roll up the hourly rows. ' +
            '`counts` and `countCorrection` come from the event log: a correction is a count\'s qty minus the book onHand just before it in ledger order (ts, id, device). Buckets without events are left out.',
          parameters: [
            { name: 'warehouse', in: 'query', required: true, description: 'warehouse id', schema: { type: 'string', pattern: p.IDENT_PATTERN } },
            { name: 'sku', in: 'query', description: 'stock keeping unit; absent: every sku of the warehouse, summed', schema: { type: 'string', pattern: p.IDENT_PATTERN } },
            { name: 'bucket', in: 'query', description: 'UTC hour or UTC day', schema: { type: 'string', enum: ['hour', 'day'], default: 'hour' } },
            { name: 'from', in: 'query', description: 'RFC 3339 or epoch ms, 1970-01-01…9999-12-31, widened down to a whole bucket; default: to − 24 h (hour) or to − 30 days (day)', schema: { type: 'string' } },
            { name: 'to', in: 'query', description: 'RFC 3339 or epoch ms (exclusive), widened up to a whole bucket; default: now. At most 10,000 buckets from from', schema: { type: 'string' } },
          ],
          security: READ,
          responses: { 200: { description: 'movements per bucket, oldest first', content: json(ref('schemas', 'Movements')) }, 400: error('bad parameter (named in error.field)'), 401: unauthorized(), 503: error('unavailable: the database did not answer within API_READ_TIMEOUT_MS; retry') },
        },
      },
      '/v1/reservations': {
        post: {
          operationId: 'reserve', summary: 'reserve stock: granted only while available ≥ qty in the chosen warehouse, atomically',
          parameters: [idempotencyKey],
          requestBody: { required: true, content: json(ref('schemas', 'ReservationRequest')) },
          security: WRITE,
          responses: {
            201: { description: 'granted (`parts` with `split`); a repeated key answers the first answer again, with the header idempotent-replayed: true', content: json(ref('schemas', 'ReservationGranted')) },
            400: error('bad body or missing Idempotency-Key (named in error.field)'),
            401: unauthorized(),
            404: error('unknown warehouse or sku'),
            409: error('insufficient_stock: not enough available'),
            422: error('idempotency_key_reused: the key was used for a different request'),
            503: error('unavailable: too many commands queued, or a row locked too long; retry'),
          },
        },
      },
      '/v1/reservations/{id}': {
        get: {
          operationId: 'getReservation', summary: 'one hold: its state, what it still holds and what shipments consumed',
          parameters: [commandId('reservation id')],
          security: READ,
          responses: { 200: { description: 'the hold', content: json(ref('schemas', 'ReservationView')) }, 400: error('bad id'), 401: unauthorized(), 404: error('no such reservation') },
        },
        delete: {
          operationId: 'release', summary: 'release what the hold still holds (again: 204)',
          parameters: [commandId('reservation id')],
          security: WRITE,
          responses: { 204: { description: 'released' }, 400: error('bad id'), 401: unauthorized(), 404: error('no such reservation'), 409: error("invalid_state: a transfer's hold (cancel the transfer)"), 503: error('unavailable; retry') },
        },
      },
      '/v1/transfers': {
        post: {
          operationId: 'createTransfer', summary: 'move stock between warehouses as a saga: hold at from, ship naming it, receive at to naming it',
          parameters: [idempotencyKey],
          requestBody: { required: true, content: json(ref('schemas', 'TransferRequest')) },
          security: WRITE,
          responses: {
            201: { description: 'the transfer, holding qty at from', content: json(ref('schemas', 'TransferView')) },
            400: error('bad body or missing Idempotency-Key (named in error.field)'),
            401: unauthorized(),
            404: error('unknown warehouse (from, to) or sku'),
            409: error('insufficient_stock at from'),
            422: error('idempotency_key_reused'),
            503: error('unavailable; retry'),
          },
        },
      },
      '/v1/transfers/{id}': {
        get: {
          operationId: 'getTransfer', summary: 'a transfer: state, shipped, received, in transit, deadline',
          parameters: [commandId('transfer id')],
          security: READ,
          responses: { 200: { description: 'the transfer', content: json(ref('schemas', 'TransferView')) }, 400: error('bad id'), 401: unauthorized(), 404: error('no such transfer') },
        },
        delete: {
          operationId: 'cancelTransfer', summary: 'cancel a transfer nothing was shipped or received for (again: 204)',
          parameters: [commandId('transfer id')],
          security: WRITE,
          responses: { 204: { description: 'cancelled' }, 400: error('bad id'), 401: unauthorized(), 404: error('no such transfer'), 409: error('invalid_state: goods already moved'), 503: error('unavailable; retry') },
        },
      },
    },
    components: {
      securitySchemes: {
        apiToken: {
          type: 'http',
          scheme: 'bearer',
          description: 'API_TOKEN of central (and of each processor); unset, a random one is generated into DATA_DIR/api-token. Writes (POST, DELETE) always need it; GET /v1/… only when API_READ_TOKEN is set (which the write token also satisfies). /healthz, /readyz and /metrics are open.',
        },
      },
      schemas: Object.fromEntries(
        Object.entries({ GlobalStock: p.GlobalStock, WarehouseStock: p.WarehouseStock, StockHistory: p.StockHistory, Movements: p.Movements, ReservationRequest: p.ReservationRequest, ReservationGranted: p.ReservationGranted, ReservationView: p.ReservationView, TransferRequest: p.TransferRequest, TransferView: p.TransferView, ErrorResponse: p.ErrorResponse, Health: p.Health }).map(([n, s]) => [n, plain(s)]),
      ),
    },
  };
}

const HEADER = '# Generated by `npm run docs` from protocol/ (docs/generate.ts). Do not edit: change the schemas and regenerate.\n';

export async function render(): Promise<{ asyncapi: string; openapi: string }> {
  const options = { lineWidth: 0, aliasDuplicateObjects: false } as const;
  return { asyncapi: HEADER + YAML.stringify(await asyncapi(), options), openapi: HEADER + YAML.stringify(await openapi(), options) };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const docs = await render();
  await fs.writeFile(ASYNCAPI_FILE, docs.asyncapi);
  await fs.writeFile(OPENAPI_FILE, docs.openapi);
  process.stdout.write(`wrote ${path.relative(ROOT, ASYNCAPI_FILE)} and ${path.relative(ROOT, OPENAPI_FILE)}\n`);
}
