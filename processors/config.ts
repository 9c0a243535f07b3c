import { isIdent } from '../protocol/index.js';
import { int, list, oneOf, port, str, url, type OptionSpec } from '../cli/options.js';
import { logLevel, type LogLevel } from '../cli/logger.js';

// Keeps each spec's literal type, so `default` and `required: true` make the parsed value non-optional.
const opt = <S extends OptionSpec<unknown>>(spec: S): S => spec;

const common = {
  databaseUrl: opt({ flag: 'database-url', env: 'DATABASE_URL', help: 'PostgreSQL/TimescaleDB connection; unset: embedded PostgreSQL under DATA_DIR', parse: url('postgres:', 'postgresql:'), secret: true }),
  dataDir: opt({ flag: 'data-dir', env: 'DATA_DIR', help: 'durable local state (embedded database)', parse: str, default: './data' }),
  logLevel: opt({ flag: 'log-level', env: 'LOG_LEVEL', help: 'pino level', parse: logLevel, default: 'info' as LogLevel }),
};

const ingest = {
  redisUrl: opt({ flag: 'redis-url', env: 'REDIS_URL', help: 'Redis for the shared read model; unset: in-process', parse: url('redis:', 'rediss:'), secret: true }),
  redisPrefix: opt({ flag: 'redis-prefix', env: 'REDIS_PREFIX', help: 'key prefix in Redis', parse: str, default: 'stockwire:' }),
  batchMax: opt({ flag: 'batch-max', env: 'BATCH_MAX', help: 'events per batch at most', parse: int(1, 50_000), default: 1000 }),
  batchWaitMs: opt({ flag: 'batch-wait-ms', env: 'BATCH_WAIT_MS', help: 'ms a batch waits for more events', parse: int(0, 10_000), default: 5 }),
  host: opt({ flag: 'host', env: 'HOST', help: 'interface to listen on', parse: str, default: '0.0.0.0' }),
};

export const centralSpecs = {
  ...common,
  ...ingest,
  devicesFile: opt({ flag: 'devices-file', env: 'DEVICES_FILE', help: 'credentials and roles (JSON)', parse: str, required: true }),
  mqttPort: opt({ flag: 'mqtt-port', env: 'MQTT_PORT', help: 'MQTT (TCP) listener; 0 picks a free port', parse: port, default: 1884 }),
  wsPort: opt({ flag: 'ws-port', env: 'WS_PORT', help: 'MQTT over WebSocket listener; 0 picks a free port', parse: port, default: 8084 }),
  httpPort: opt({ flag: 'http-port', env: 'HTTP_PORT', help: 'health, metrics and API; 0 picks a free port', parse: port, default: 8080 }),
};

export const processorSpecs = {
  ...common,
  ...ingest,
  centralUrl: opt({ flag: 'central-url', env: 'CENTRAL_URL', help: 'the central broker', parse: url('mqtt:', 'mqtts:', 'ws:', 'wss:'), default: 'mqtt://127.0.0.1:1884' }),
  centralUsername: opt({ flag: 'central-username', env: 'CENTRAL_USERNAME', help: 'credential presented to central', parse: str }),
  centralPassword: opt({ flag: 'central-password', env: 'CENTRAL_PASSWORD', help: 'password presented to central', parse: str, secret: true }),
  instance: opt({ flag: 'instance', env: 'PROCESSOR_INSTANCE', help: 'instance name, part of the persistent session id', parse: (raw: string) => {
    if (!/^[A-Za-z0-9._-]{1,32}$/.test(raw)) throw new Error('must match ^[A-Za-z0-9._-]{1,32}$');
    return raw;
  }, default: 'p1' }),
  warehouses: opt({ flag: 'warehouses', env: 'PROCESSOR_WAREHOUSES', help: 'comma-separated warehouses to consume; unset: all', parse: (raw: string) => {
    const whs = list(raw);
    const bad = whs.filter((w) => !isIdent(w));
    if (bad.length > 0) throw new Error(`has invalid warehouse ids: ${bad.join(', ')}`);
    return whs;
  }, default: [] as string[] }),
  sharedGroup: opt({ flag: 'shared-group', env: 'SHARED_GROUP', help: 'MQTT 5 shared subscription group for scale-out', parse: str }),
  httpPort: opt({ flag: 'http-port', env: 'HTTP_PORT', help: 'health and metrics; 0 picks a free port', parse: port, default: 9102 }),
};

export const migrateSpecs = { ...common };
export const rebuildSpecs = { ...common, format: opt({ flag: 'format', help: 'report format', parse: oneOf('text', 'json'), default: 'text' as 'text' | 'json' }) };
