import type { TSchema } from '@sinclair/typebox';
import * as p from '../../protocol/index.js';
import { DEFAULT_REQUEST_TIMEOUT_MS } from '../http-limits.js';
import { operations, PARAMETERS, RESPONSES } from './operations.js';

/**
 * The OpenAPI 3.1 document of central's HTTP API, built from the protocol/ schemas. Central serves it
 * (/openapi.json, /docs); `npm run docs` writes it to docs/openapi.yaml, and a test fails when the two differ.
 */

type Json = Record<string, unknown>;

const SCHEMAS: Record<string, TSchema> = {
  GlobalStock: p.GlobalStock,
  WarehouseStock: p.WarehouseStock,
  StockPage: p.StockPage,
  WarehouseStockPage: p.WarehouseStockPage,
  Warehouse: p.Warehouse,
  WarehousePage: p.WarehousePage,
  LinkStatus: p.LinkStatus,
  StockHistory: p.StockHistory,
  Movements: p.Movements,
  ReservationRequest: p.ReservationRequest,
  ReservationGranted: p.ReservationGranted,
  ReservationView: p.ReservationView,
  ReservationGroupView: p.ReservationGroupView,
  ReservationPage: p.ReservationPage,
  TransferRequest: p.TransferRequest,
  TransferView: p.TransferView,
  TransferPage: p.TransferPage,
  ErrorResponse: p.ErrorResponse,
  Health: p.Health,
  DisplayConfig: p.DisplayConfig,
};

/** Plain JSON Schema of a TypeBox schema (its symbols dropped). */
const plain = (schema: TSchema): Json => JSON.parse(JSON.stringify(schema)) as Json;

/** Components with every nested copy of another component replaced by a $ref to it (TypeBox inlines them). */
function components(): Record<string, Json> {
  const all = Object.entries(SCHEMAS).map(([name, s]) => [name, plain(s)] as const);
  const byText = new Map(all.map(([name, s]) => [JSON.stringify(s), name]));
  const refs = (node: unknown, root: boolean): unknown => {
    if (Array.isArray(node)) return node.map((n) => refs(n, false));
    if (node === null || typeof node !== 'object') return node;
    const named = root ? undefined : byText.get(JSON.stringify(node));
    if (named !== undefined) return { $ref: `#/components/schemas/${named}` };
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, refs(v, false)]));
  };
  return Object.fromEntries(all.map(([name, s]) => [name, refs(s, true) as Json]));
}

/** HEAD of every GET (Fastify serves them): the same parameters and statuses, headers only. */
function withHead(paths: Json): Json {
  return Object.fromEntries(
    Object.entries(paths).map(([path, item]) => {
      const get = (item as { get?: Json }).get;
      if (get === undefined) return [path, item];
      const responses = Object.fromEntries(
        Object.entries(get.responses as Record<string, Json>).map(([status, r]) => {
          const shared = typeof r.$ref === 'string' ? (RESPONSES[r.$ref.split('/').at(-1) as string] as Json) : r;
          return [
            status,
            { description: shared.description, ...(shared.headers !== undefined && { headers: shared.headers }) },
          ];
        }),
      );
      const head = {
        ...get,
        operationId: `${String(get.operationId)}Head`,
        summary: `headers of GET ${path} (no body)`,
        responses,
      };
      delete (head as Json).description;
      return [path, { ...(item as Json), head }];
    }),
  );
}

export function openapiDocument(version: string): Json {
  return {
    openapi: '3.1.0',
    info: {
      title: 'stockwire central HTTP API',
      version,
      description: [
        'Health, metrics, stock reads and lists, history, movements, reservations and transfers (CONTRACT section 6; the lists, movements, transfers and GET of a reservation extend it), and the live display. `stockwire processor` serves the same API without the display; its warehouses answer `link: null`.',
        'Writes need `Authorization: Bearer <API token>`; reads under /v1/ too when API_READ_TOKEN is set.',
        'Every error is `{"error":{"code","message","field"?}}`; a 400 names the offending parameter or body field in `field`. An unknown path is a 404 `not_found`; a method a path does not serve is a 405 `method_not_allowed` whose `Allow` header lists the ones it does. Every GET answers HEAD too.',
        'Lists answer at most `limit` items (1,000) and a `nextCursor`; their order is total (ties broken by id), so paging with the cursor neither repeats nor skips an item that does not change meanwhile. An operation that takes query parameters refuses one it does not take, or one given twice (400 naming it), so a misspelt filter never widens an answer; an empty one (`?sku=`) counts as absent.',
        `A request whose headers and body have not arrived within ${DEFAULT_REQUEST_TIMEOUT_MS / 1000} s is answered 408 (no body) and its connection closed.`,
        'Edges serve /healthz, /readyz (`{"status","central":"online"|"offline"}`), /metrics and their own live display on their HTTP port (9101); this document is central\'s.',
      ].join('\n\n'),
      license: { name: 'MIT', identifier: 'MIT' },
    },
    servers: [{ url: '/', description: 'the central that serves this document (HTTP_PORT, 8080 by default)' }],
    tags: [
      { name: 'health', description: 'liveness, readiness and Prometheus metrics; open' },
      { name: 'stock', description: 'stock of one SKU or lists of them, warehouses, history and movements' },
      {
        name: 'commands',
        description: 'reservations and transfers: decided in the database, atomically, idempotent by key',
      },
      { name: 'display', description: 'the live display page (MQTT over WebSocket in the browser); open' },
      { name: 'docs', description: 'this document; open' },
    ],
    paths: withHead(operations()),
    components: {
      securitySchemes: {
        apiToken: {
          type: 'http',
          scheme: 'bearer',
          description:
            'API_TOKEN of central (and of each processor); unset, a random one is generated into DATA_DIR/api-token. Writes (POST, DELETE) always need it; GET /v1/… only when API_READ_TOKEN is set (which the write token also satisfies). Health, metrics, the display and this document are open.',
        },
      },
      schemas: components(),
      parameters: PARAMETERS,
      responses: RESPONSES,
    },
  };
}
