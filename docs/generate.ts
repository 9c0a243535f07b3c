/**
 * Generates the API documents from the protocol/ schemas, so they cannot drift from the code:
 *   docs/asyncapi.yaml  AsyncAPI 3.0 of the MQTT interface (CONTRACT sections 2–5)
 *   docs/openapi.yaml   OpenAPI 3.1 of central's HTTP API (CONTRACT section 6), built by processors/openapi/ (central serves it)
 * `npm run docs` writes them; test/docs/api-docs.test.ts fails when the committed files differ.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TSchema } from '@sinclair/typebox';
import YAML from 'yaml';
import { openapiDocument } from '../processors/openapi/document.js';
import * as p from '../protocol/index.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const ASYNCAPI_FILE = path.join(ROOT, 'docs/asyncapi.yaml');
export const OPENAPI_FILE = path.join(ROOT, 'docs/openapi.yaml');

/** Plain JSON Schema of a TypeBox schema (its symbols dropped). */
const plain = (schema: TSchema): Record<string, unknown> =>
  JSON.parse(JSON.stringify(schema)) as Record<string, unknown>;
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
  GatewayBatchV1: p.GatewayBatchV1,
  BatchAckMessage: p.BatchAckMessage,
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
    address: p.topics.event('{wh}', '{device}'),
    message: 'event',
    schema: 'EventPayloadV1',
    title: 'Device event',
    action: 'receive',
    retain: false,
    params: ['wh', 'device'],
    description:
      'A scan or shelf reading, device → edge → central. Published by the device on its edge, forwarded by the edge (gateway credential) to central. At most 8 KiB. The warehouse and device come from the topic and the authenticated connection, never from the payload. Per-type quantity rules: received/shipped/returned 1…1,000,000; adjusted non-zero −1,000,000…1,000,000; counted/level 0…1,000,000,000; level needs location.',
    example: { v: 1, id: '01J9Z7X4Q2', type: 'received', sku: 'SKU-1', qty: 5, ts: AT },
  },
  ack: {
    address: p.topics.ack('{wh}', '{device}'),
    message: 'ack',
    schema: 'Ack',
    title: 'Commit ack',
    action: 'send',
    retain: false,
    params: ['wh', 'device'],
    description:
      'Published after the commit that decided the event: applied, duplicate (the original outcome of a repeat) or rejected with an error. An edge deletes an event from its outbox only on this ack. A payload over 8 KiB is answered by the edge itself (rejected, payload_too_large, id null) and never reaches central: one ack per payload either way.',
    example: { id: '01J9Z7X4Q2', status: 'applied', stock: { onHand: 12, available: 10 } },
  },
  gatewayBatch: {
    address: p.topics.batch('{wh}', '{gateway}'),
    message: 'gatewayBatch',
    schema: 'GatewayBatchV1',
    title: 'Gateway batch',
    action: 'receive',
    retain: false,
    params: ['wh', 'gateway'],
    description:
      "Many device events in one message, edge → central only, from the edge's own gateway credential (the ACL grants a gateway only the topic of its own id and warehouse). Sent only after central's hello on the batch-ack topic; to any other broker an edge sends single events. `events` are in outbox order (oldest first per device); each is the device's payload exactly, as UTF-8 text in `payload` or, when not UTF-8, in `payloadBase64`, and central decides it exactly as the same payload published alone on wh/{wh}/dev/{device}/event (validation, dead letters, dedupe by warehouse, device and id). At most `maxEvents` events and `maxBytes` bytes of central's hello (1,000 and its broker's 64 KiB publish limit). Central holds the PUBACK until the commit that decides every event of the batch, in one transaction. `batch` names the batch for its batch-ack; an edge uses a fresh name per send (resends included).",
    example: {
      v: 1,
      batch: '3f9a1c2b7d4e-17',
      events: [
        { device: 'scanner-1', payload: '{"v":1,"id":"01J9Z7X4Q2","type":"received","sku":"SKU-1","qty":5}' },
        { device: 'shelf-7', payload: '{"v":1,"id":"r-88","type":"level","sku":"SKU-1","qty":11,"location":"A-01-3"}' },
      ],
    },
  },
  batchAck: {
    address: p.topics.batchAck('{wh}', '{gateway}'),
    message: 'batchAck',
    schema: 'BatchAckMessage',
    title: 'Gateway batch-ack',
    action: 'send',
    retain: false,
    params: ['wh', 'gateway'],
    description:
      'Central → the edge\'s gateway. Three kinds: the hello, sent when the gateway subscribes (`{"v":1,"hello":{"versions","maxEvents","maxBytes"}}`: this central takes batches, and how large); one commit ack per batch after its commit (`acks[i]` is the ack of the batch\'s event i, exactly as its device gets it on wh/{wh}/dev/{device}/ack; central publishes no per-device acks for a batch\'s events, the edge fans these out on its own broker); or a refusal of a batch central could not read at all (`error`, with `batch` when its name was readable), kept as one dead letter. An edge deletes from its outbox exactly the events at the places whose ids match.',
    example: {
      v: 1,
      batch: '3f9a1c2b7d4e-17',
      acks: [
        { id: '01J9Z7X4Q2', status: 'applied', stock: { onHand: 12, available: 10 } },
        { id: 'r-88', status: 'duplicate' },
      ],
    },
  },
  warehouseStock: {
    address: p.topics.warehouseStock('{wh}', '{sku}'),
    message: 'warehouseStock',
    schema: 'WarehouseStock',
    title: 'Warehouse stock',
    action: 'send',
    retain: true,
    params: ['wh', 'sku'],
    description:
      'Retained book stock of one SKU in one warehouse, after every commit that changes it; version strictly increases. Edges mirror their own warehouse, retained, for displays while central is unreachable, and keep the last values across a restart (served while their status says central is offline); an edge never serves an older version after a newer one.',
    example: { sku: 'SKU-1', warehouse: 'WH1', onHand: 12, reserved: 2, available: 10, version: 7, asOf: AT },
  },
  globalStock: {
    address: p.topics.globalStock('{sku}'),
    message: 'globalStock',
    schema: 'GlobalStock',
    title: 'Global stock',
    action: 'send',
    retain: true,
    params: ['sku'],
    description:
      'Retained stock of one SKU over every warehouse, with the per-warehouse levels; version strictly increases.',
    example: {
      sku: 'SKU-1',
      onHand: 20,
      reserved: 2,
      available: 18,
      warehouses: { WH1: { onHand: 12, reserved: 2, available: 10 }, WH2: { onHand: 8, reserved: 0, available: 8 } },
      inTransit: 0,
      version: 9,
      asOf: AT,
    },
  },
  shelf: {
    address: p.topics.shelf('{wh}', '{location}', '{sku}'),
    message: 'shelfReading',
    schema: 'ShelfReading',
    title: 'Shelf reading',
    action: 'send',
    retain: true,
    params: ['wh', 'location', 'sku'],
    description: 'Retained latest level reading (by event time) of a shelf sensor. Readings do not change book stock.',
    example: { sku: 'SKU-1', warehouse: 'WH1', location: 'A-01-3', qty: 11, ts: AT, device: 'shelf-7' },
  },
  status: {
    address: p.topics.status('{wh}'),
    message: 'linkStatus',
    schema: 'LinkStatus',
    title: 'Edge link status',
    action: 'send',
    retain: true,
    params: ['wh'],
    description:
      "Retained on the edge broker and on central: whether the edge reaches central, since when, and how many events wait in its outbox. The edge's will message sets it offline at central.",
    example: { central: 'online', since: AT, backlog: 0 },
  },
  alert: {
    address: p.topics.alert('{wh}', '{kind}'),
    message: 'alert',
    schema: 'Alert',
    title: 'Alert',
    action: 'send',
    retain: false,
    params: ['wh', 'kind'],
    description:
      'From central: negative-stock, dead-letter, id-reused (an event id sent again with other content: acked duplicate, the copy dead-lettered), reservation-mismatch (a shipment naming a hold it cannot consume), transfer-mismatch and transfer-timeout. On the edge broker only: outbox-full, device-share (a device holds its share of the outbox) and dead-letter (a payload over 8 KiB refused at the edge).',
    example: { kind: 'negative-stock', wh: 'WH1', sku: 'SKU-1', message: 'onHand of SKU-1 at WH1 is -3', at: AT },
  },
  request: {
    address: p.topics.request('{client}'),
    message: 'commandRequest',
    schema: 'CommandRequest',
    title: 'Command request',
    action: 'receive',
    retain: false,
    params: ['client'],
    description:
      'A reservation or transfer command over MQTT (central only), published by a client to its own requests/{client} (the ACL binds the topic to the MQTT username). `data` is the HTTP body for reservations.create and transfers.create, `{"id"}` for the others; `idempotencyKey` is required for the creates. A processor credential may make every request, a gateway only for its own warehouse, devices none.',
    example: {
      requestId: '42',
      action: 'reservations.create',
      idempotencyKey: 'order-7781',
      responseTopic: 'responses/erp/orders',
      data: { sku: 'SKU-1', qty: 2 },
    },
  },
  response: {
    address: p.topics.response('{client}'),
    message: 'commandResponse',
    schema: 'CommandResponse',
    title: 'Command response',
    action: 'send',
    retain: false,
    params: ['client'],
    description:
      'The answer to a command, on responses/{client}, or on the topic below it that the request named as responseTopic (never one outside it): `{"requestId","status":"ok","data"}` with the HTTP body of the same command, or `{"requestId","status":"error","error"}`. A client may subscribe only to its own responses/{client}/#.',
    example: {
      requestId: '42',
      status: 'ok',
      data: { id: 'r-01J9Z7', sku: 'SKU-1', qty: 2, warehouse: 'WH1', expiresAt: AT },
    },
  },
  replay: {
    address: 'wh/{wh}/replay/{sku}',
    message: 'replayedEvent',
    schema: 'ReplayedEvent',
    title: 'Replayed event',
    action: 'send',
    retain: false,
    params: ['wh', 'sku'],
    description:
      "`stockwire replay --from --to --topic TEMPLATE` republishes a time range of the event log in ledger order (ts, id, device). The address is the operator's template ({wh} {device} {sku} {type} {id}); this one is an example. Templates that could match a live topic of this document are refused.",
    example: {
      wh: 'WH1',
      device: 'scanner-1',
      id: '01J9Z7X4Q2',
      type: 'received',
      sku: 'SKU-1',
      qty: 5,
      delta: 5,
      ts: AT,
      receivedAt: AT,
      committedAt: AT,
      payload: { v: 1, id: '01J9Z7X4Q2', type: 'received', sku: 'SKU-1', qty: 5, ts: AT },
    },
  },
};

const PARAMETERS: Record<string, string> = {
  wh: 'warehouse id',
  device: 'device id (the MQTT username of a scanner or shelf sensor)',
  sku: 'stock keeping unit',
  location: 'bin or shelf',
  kind: 'alert kind: negative-stock, dead-letter, id-reused, outbox-full, device-share, reservation-mismatch, transfer-mismatch, transfer-timeout',
  client: 'MQTT username of the client making commands (a processor or gateway credential)',
  gateway: "gateway id: the MQTT username of the edge's gateway credential, of warehouse {wh}",
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
    messages[c.message] = {
      name: c.message,
      title: c.title,
      contentType: 'application/json',
      payload: ref('schemas', c.schema),
      examples: [{ payload: c.example }],
    };
  }
  return {
    asyncapi: '3.0.0',
    info: {
      title: 'stockwire MQTT interface',
      version: await version(),
      description:
        'Topics, payloads and access rules of stockwire (CONTRACT sections 2–5). The same topic names are used on an edge broker and on the central broker. ' +
        "Operations are described from stockwire's side: it receives device events (one by one, or in an edge's batches) and sends acks (per device, or one batch-ack per batch), stock, shelf, status, alert and replayed messages. " +
        'Identifiers match ^[A-Za-z0-9._-]{1,64}$. Anonymous connections are refused; the MQTT username is the device id and access follows its kind ' +
        '(scanner, shelf, display, gateway, processor).',
      license: { name: 'MIT' },
    },
    defaultContentType: 'application/json',
    servers: {
      edge: {
        host: 'localhost:1883',
        protocol: 'mqtt',
        protocolVersion: '3.1.1',
        description: 'A warehouse edge: devices connect here (WebSocket on 8083, optional TLS).',
        security: [ref('securitySchemes', 'device')],
      },
      central: {
        host: 'localhost:1884',
        protocol: 'mqtt',
        protocolVersion: '3.1.1',
        description: 'Central: edges (gateway credential), displays and processors connect here (WebSocket on 8084).',
        security: [ref('securitySchemes', 'device')],
      },
    },
    channels,
    operations,
    components: {
      schemas: Object.fromEntries(Object.entries(MQTT_SCHEMAS).map(([n, s]) => [n, plain(s)])),
      messages,
      parameters: Object.fromEntries(Object.entries(PARAMETERS).map(([n, d]) => [n, { description: d }])),
      securitySchemes: {
        device: {
          type: 'userPassword',
          description: 'MQTT username = device id, password checked against the scrypt hash in DEVICES_FILE.',
        },
      },
    },
  };
}

/** The OpenAPI document central serves at /openapi.json (processors/openapi/document.ts). */
export async function openapi(): Promise<Record<string, unknown>> {
  return openapiDocument(await version());
}

const HEADER =
  '# Generated by `npm run docs` from protocol/ (docs/generate.ts). Do not edit: change the schemas and regenerate.\n';

export async function render(): Promise<{ asyncapi: string; openapi: string }> {
  const options = { lineWidth: 0, aliasDuplicateObjects: false } as const;
  return {
    asyncapi: HEADER + YAML.stringify(await asyncapi(), options),
    openapi: HEADER + YAML.stringify(await openapi(), options),
  };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const docs = await render();
  await fs.writeFile(ASYNCAPI_FILE, docs.asyncapi);
  await fs.writeFile(OPENAPI_FILE, docs.openapi);
  process.stdout.write(`wrote ${path.relative(ROOT, ASYNCAPI_FILE)} and ${path.relative(ROOT, OPENAPI_FILE)}\n`);
}
