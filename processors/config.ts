import { isIdent, MAX_RESERVATION_TTL_S, MAX_TRANSFER_TIMEOUT_S } from '../protocol/index.js';
import { int, oneOf, opt, port, str, url, warehouseList } from '../runtime/options.js';
import { logLevel, type LogLevel } from '../runtime/logger.js';
import { centralTlsSpecs, tlsListenerSpecs } from '../runtime/tls.js';
import { apiToken } from './api-token.js';
import {
  DEFAULT_EVENT_RETENTION_DAYS,
  DEFAULT_SHELF_RETENTION_DAYS,
  TIMESCALE_MODES,
  type TimescaleMode,
} from './db/migrate.js';
import { parseTopicTemplate } from './replay.js';
import { deviceLimitSpecs } from '../broker/index.js';

// Keeps each spec's literal type, so `default` and `required: true` make the parsed value non-optional.

const common = {
  databaseUrl: opt({
    flag: 'database-url',
    env: 'DATABASE_URL',
    help: 'PostgreSQL/TimescaleDB connection; unset: embedded PostgreSQL under DATA_DIR',
    parse: url('postgres:', 'postgresql:'),
    secret: true,
  }),
  dataDir: opt({
    flag: 'data-dir',
    env: 'DATA_DIR',
    help: 'durable local state (embedded database)',
    parse: str,
    default: './data',
  }),
  logLevel: opt({
    flag: 'log-level',
    env: 'LOG_LEVEL',
    help: 'pino level',
    parse: logLevel,
    default: 'info' as LogLevel,
  }),
  timescaledb: opt({
    flag: 'timescaledb',
    env: 'TIMESCALEDB',
    help: 'auto: TimescaleDB when the server can load it, else plain PostgreSQL with a warning; on: refuse to start without it; off: plain PostgreSQL',
    parse: oneOf(...TIMESCALE_MODES),
    default: 'auto' as TimescaleMode,
  }),
  eventRetentionDays: opt({
    flag: 'event-retention-days',
    env: 'EVENT_RETENTION_DAYS',
    help: 'TimescaleDB: days of book events kept in the log; older ones are folded into the stock baseline, then dropped',
    parse: int(1, 100_000),
    default: DEFAULT_EVENT_RETENTION_DAYS,
  }),
  shelfRetentionDays: opt({
    flag: 'shelf-retention-days',
    env: 'SHELF_RETENTION_DAYS',
    help: 'TimescaleDB: days of shelf readings kept',
    parse: int(1, 100_000),
    default: DEFAULT_SHELF_RETENTION_DAYS,
  }),
};

const ingest = {
  redisUrl: opt({
    flag: 'redis-url',
    env: 'REDIS_URL',
    help: 'Redis for the shared read model; unset: in-process',
    parse: url('redis:', 'rediss:'),
    secret: true,
  }),
  redisPrefix: opt({
    flag: 'redis-prefix',
    env: 'REDIS_PREFIX',
    help: 'key prefix in Redis',
    parse: str,
    default: 'stockwire:',
  }),
  // 2,000: a drain of 100,000 backlogged events ran at 9,783-9,884/s with 1,000 and 11,115 with 2,000 (fewer
  // retained publishes per event: a batch coalesces a sku's changes); larger batches hold row locks longer.
  batchMax: opt({
    flag: 'batch-max',
    env: 'BATCH_MAX',
    help: 'events per batch at most',
    parse: int(1, 50_000),
    default: 2000,
  }),
  batchWaitMs: opt({
    flag: 'batch-wait-ms',
    env: 'BATCH_WAIT_MS',
    help: 'ms a batch waits for more events',
    parse: int(0, 10_000),
    default: 5,
  }),
  host: opt({ flag: 'host', env: 'HOST', help: 'interface to listen on', parse: str, default: '0.0.0.0' }),
};

const warehousesOf = warehouseList();

/** `web=WH1,WH2;store=WH2`: each sales channel's warehouses in priority order. */
export const channelLists = (raw: string): Record<string, string[]> => {
  const out: Record<string, string[]> = {};
  for (const entry of raw
    .split(';')
    .map((e) => e.trim())
    .filter((e) => e !== '')) {
    const eq = entry.indexOf('=');
    const channel = eq > 0 ? entry.slice(0, eq).trim() : '';
    if (!isIdent(channel)) throw new Error(`must look like web=WH1,WH2;store=WH2 (bad entry ${JSON.stringify(entry)})`);
    const whs = warehousesOf(entry.slice(eq + 1));
    if (whs.length === 0) throw new Error(`lists no warehouse for channel ${channel}`);
    out[channel] = whs;
  }
  return out;
};

/** Reservations and transfers (README "Reservations"): served by central and by every processor. */
const commands = {
  reservationTtl: opt({
    flag: 'reservation-ttl',
    env: 'RESERVATION_TTL',
    help: 's a reservation holds when the request names no ttlSeconds',
    parse: int(1, MAX_RESERVATION_TTL_S),
    default: 900,
  }),
  transferTimeout: opt({
    flag: 'transfer-timeout',
    env: 'TRANSFER_TIMEOUT',
    help: 's a transfer may take before it is compensated, when the request names no timeoutSeconds',
    parse: int(1, MAX_TRANSFER_TIMEOUT_S),
    default: 86_400,
  }),
  allocation: opt({
    flag: 'allocation',
    env: 'ALLOCATION_STRATEGY',
    help: 'how a reservation without warehouse picks one: most-available or priority',
    parse: oneOf('most-available', 'priority'),
    default: 'most-available' as 'most-available' | 'priority',
  }),
  allocationPriority: opt({
    flag: 'allocation-priority',
    env: 'ALLOCATION_PRIORITY',
    help: 'priority: warehouses in order, comma-separated (unlisted ones follow, most available first)',
    parse: warehousesOf,
    default: [] as string[],
  }),
  allocationChannels: opt({
    flag: 'allocation-channels',
    env: 'ALLOCATION_CHANNELS',
    help: 'priority: lists per sales channel, e.g. web=WH1,WH2;store=WH2',
    parse: channelLists,
    default: {} as Record<string, string[]>,
  }),
  sweepIntervalMs: opt({
    flag: 'sweep-interval-ms',
    env: 'SWEEP_INTERVAL_MS',
    help: 'ms between sweeps of expired reservations and timed-out transfers; 0: no sweeper here',
    parse: int(0, 3_600_000),
    default: 1_000,
  }),
  idempotencyRetentionHours: opt({
    flag: 'idempotency-retention-hours',
    env: 'IDEMPOTENCY_RETENTION_HOURS',
    help: 'h the first answer to an Idempotency-Key is kept',
    parse: int(1, 24 * 366),
    default: 24,
  }),
};

/** Bearer tokens of the HTTP API (README "HTTP API tokens"): central and every processor serve it. */
const api = {
  apiToken: opt({
    flag: 'api-token',
    env: 'API_TOKEN',
    help: 'bearer token HTTP writes (POST/DELETE under /v1/) need; unset: generated once into DATA_DIR/api-token',
    parse: apiToken,
    secret: true,
  }),
  apiReadTimeoutMs: opt({
    flag: 'api-read-timeout-ms',
    env: 'API_READ_TIMEOUT_MS',
    help: 'ms an HTTP read may wait for the database before it answers 503',
    parse: int(100, 600_000),
    default: 5_000,
  }),
  apiReadToken: opt({
    flag: 'api-read-token',
    env: 'API_READ_TOKEN',
    help: 'bearer token GET /v1/… then needs (the write token reads too); unset: reads are open',
    parse: apiToken,
    secret: true,
  }),
};

export const centralSpecs = {
  ...common,
  ...ingest,
  ...commands,
  ...deviceLimitSpecs,
  ...api,
  devicesFile: opt({
    flag: 'devices-file',
    env: 'DEVICES_FILE',
    help: 'credentials and roles (JSON)',
    parse: str,
    required: true,
  }),
  mqttPort: opt({
    flag: 'mqtt-port',
    env: 'MQTT_PORT',
    help: 'MQTT (TCP) listener; 0 picks a free port',
    parse: port,
    default: 1884,
  }),
  wsPort: opt({
    flag: 'ws-port',
    env: 'WS_PORT',
    help: 'MQTT over WebSocket listener; 0 picks a free port',
    parse: port,
    default: 8084,
  }),
  httpPort: opt({
    flag: 'http-port',
    env: 'HTTP_PORT',
    help: 'health, metrics and API; 0 picks a free port',
    parse: port,
    default: 8080,
  }),
  ...tlsListenerSpecs,
};

export const processorSpecs = {
  ...common,
  ...ingest,
  ...commands,
  ...api,
  centralUrl: opt({
    flag: 'central-url',
    env: 'CENTRAL_URL',
    help: 'the central broker',
    parse: url('mqtt:', 'mqtts:', 'ws:', 'wss:'),
    default: 'mqtt://127.0.0.1:1884',
  }),
  centralUsername: opt({
    flag: 'central-username',
    env: 'CENTRAL_USERNAME',
    help: 'credential presented to central',
    parse: str,
  }),
  centralPassword: opt({
    flag: 'central-password',
    env: 'CENTRAL_PASSWORD',
    help: 'password presented to central',
    parse: str,
    secret: true,
  }),
  ...centralTlsSpecs,
  instance: opt({
    flag: 'instance',
    env: 'PROCESSOR_INSTANCE',
    help: 'instance name, part of the persistent session id',
    parse: (raw: string) => {
      if (!/^[A-Za-z0-9._-]{1,32}$/.test(raw)) throw new Error('must match ^[A-Za-z0-9._-]{1,32}$');
      return raw;
    },
    default: 'p1',
  }),
  warehouses: opt({
    flag: 'warehouses',
    env: 'PROCESSOR_WAREHOUSES',
    help: 'comma-separated warehouses to consume; unset: all',
    parse: warehousesOf,
    default: [] as string[],
  }),
  sharedGroup: opt({
    flag: 'shared-group',
    env: 'SHARED_GROUP',
    help: 'MQTT 5 shared subscription group for scale-out',
    parse: str,
  }),
  httpPort: opt({
    flag: 'http-port',
    env: 'HTTP_PORT',
    help: 'health and metrics; 0 picks a free port',
    parse: port,
    default: 9102,
  }),
};

export const migrateSpecs = { ...common };
export const rebuildSpecs = {
  ...common,
  format: opt({
    flag: 'format',
    help: 'report format',
    parse: oneOf('text', 'json'),
    default: 'text' as 'text' | 'json',
  }),
};

const instant = (raw: string): number => {
  const ms = /^\d+$/.test(raw) ? Number(raw) : Date.parse(raw);
  if (!Number.isFinite(ms)) throw new Error('must be RFC 3339 or epoch milliseconds');
  return ms;
};

export const replaySpecs = {
  ...common,
  from: opt({
    flag: 'from',
    help: 'first event time to replay, inclusive (RFC 3339 or epoch ms)',
    parse: instant,
    required: true as const,
  }),
  to: opt({
    flag: 'to',
    help: 'event time to stop at, exclusive (RFC 3339 or epoch ms)',
    parse: instant,
    required: true as const,
  }),
  topic: opt({
    flag: 'topic',
    help: 'topic template with {wh} {device} {sku} {type} {id}, such as wh/{wh}/replay/{sku}',
    parse: parseTopicTemplate,
    required: true as const,
  }),
  warehouses: opt({
    ...processorSpecs.warehouses,
    env: undefined,
    help: 'comma-separated warehouses to replay; unset: all',
  }),
  centralUrl: opt({ ...processorSpecs.centralUrl, help: 'the broker to publish to' }),
  centralUsername: processorSpecs.centralUsername,
  centralPassword: processorSpecs.centralPassword,
  qos: opt({
    flag: 'qos',
    help: 'MQTT QoS of the replayed messages',
    parse: (raw: string) => Number(oneOf('0', '1')(raw)) as 0 | 1,
    default: 1 as 0 | 1,
  }),
  rate: opt({
    flag: 'rate',
    help: 'events per second at most; 0: as fast as the broker acknowledges',
    parse: int(0, 1_000_000),
    default: 0,
  }),
};
