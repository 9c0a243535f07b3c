import { isIdent } from '../protocol/index.js';
import { logLevel, type LogLevel } from '../runtime/logger.js';
import { int, port, str, url, opt } from '../runtime/options.js';
import { deviceLimitSpecs } from '../broker/index.js';
import { centralTlsSpecs, tlsListenerSpecs } from '../runtime/tls.js';

// Keeps each spec's literal type, so `default` and `required: true` make the parsed value non-optional.
const ident = (raw: string): string => {
  if (!isIdent(raw)) throw new Error('must match ^[A-Za-z0-9._-]{1,64}$');
  return raw;
};
const byteCount = (raw: string): number | null => {
  const m = /^(\d+)\s*([kmg]i?b?|b)?$/i.exec(raw.trim());
  if (!m) return null;
  const unit = (m[2] ?? 'b').toLowerCase()[0] as string;
  return Number(m[1]) * (({ b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 } as Record<string, number>)[unit] as number);
};
const bytes = (raw: string): number => {
  const n = byteCount(raw);
  if (n === null) throw new Error('must be a byte count such as 1073741824, 512MiB or 1GiB');
  if (n < 64 * 1024) throw new Error('must be at least 64 KiB');
  return n;
};

/** What one device may hold of the outbox: a fraction of OUTBOX_MAX_BYTES, or bytes. */
export type DeviceShare = { fraction: number } | { bytes: number };
/** At least two of the largest events (8 KiB, the edge's 32-byte stamp, the topic): a device can always store one. */
export const MIN_DEVICE_SHARE_BYTES = 16 * 1024;
export const DEFAULT_DEVICE_SHARE: DeviceShare = { fraction: 0.25 };

const deviceShare = (raw: string): DeviceShare => {
  const text = raw.trim();
  const percent = /^(\d+(?:\.\d+)?)\s*%$/.exec(text);
  // A plain number up to 1 is a fraction ("1": the whole outbox); anything else a byte count.
  const fraction = percent
    ? Number(percent[1]) / 100
    : /^(?:0|1)?(?:\.\d+)?$/.test(text) && text !== '' && Number(text) <= 1
      ? Number(text)
      : null;
  if (fraction !== null) {
    if (!(fraction > 0 && fraction <= 1))
      throw new Error('must be a fraction above 0 and at most 1 (0.25, 25%), or a byte count (64MiB)');
    return { fraction };
  }
  const n = byteCount(text);
  if (n === null) throw new Error('must be a fraction of OUTBOX_MAX_BYTES (0.25, 25%) or a byte count (64MiB)');
  if (n < MIN_DEVICE_SHARE_BYTES) throw new Error(`must be at least ${MIN_DEVICE_SHARE_BYTES / 1024} KiB`);
  return { bytes: n };
};

/** The share of one device in bytes, and what is wrong with it for this bound (null: nothing). */
export function deviceShareBytes(
  share: DeviceShare,
  outboxMaxBytes: number,
): { bytes: number; problem: string | null } {
  const bytes = 'fraction' in share ? Math.floor(share.fraction * outboxMaxBytes) : share.bytes;
  const named =
    'fraction' in share
      ? `${share.fraction} of OUTBOX_MAX_BYTES (${outboxMaxBytes} bytes) is ${bytes} bytes`
      : `${bytes} bytes`;
  if (bytes < MIN_DEVICE_SHARE_BYTES)
    return {
      bytes,
      problem: `--outbox-device-share (OUTBOX_DEVICE_SHARE): ${named}, less than one device needs (${MIN_DEVICE_SHARE_BYTES / 1024} KiB)`,
    };
  if (bytes > outboxMaxBytes)
    return {
      bytes,
      problem: `--outbox-device-share (OUTBOX_DEVICE_SHARE): ${named}, more than OUTBOX_MAX_BYTES (${outboxMaxBytes} bytes)`,
    };
  return { bytes, problem: null };
}

// 500 events, 64 KiB: a batch under central's broker's publish limit (64 KiB, which central also announces); at about
// 150 bytes an event, 64 KiB holds some 400, so both bounds matter.
export const DEFAULT_LINK_BATCH_MAX_EVENTS = 500;
export const DEFAULT_LINK_BATCH_MAX_BYTES = 64 * 1024;
const batchBytes = (raw: string): number => {
  const n = byteCount(raw);
  if (n === null) throw new Error('must be a byte count such as 65536 or 64KiB');
  if (n < 16 * 1024) throw new Error('must be at least 16 KiB (an event of 8 KiB with its stamp fits)');
  return n;
};

export const edgeSpecs = {
  wh: opt({
    flag: 'warehouse',
    env: 'WAREHOUSE_ID',
    help: 'the warehouse this edge serves',
    parse: ident,
    required: true as const,
  }),
  devicesFile: opt({
    flag: 'devices-file',
    env: 'DEVICES_FILE',
    help: 'credentials and roles (JSON)',
    parse: str,
    required: true as const,
  }),
  dataDir: opt({
    flag: 'data-dir',
    env: 'DATA_DIR',
    help: 'durable local state (the outbox)',
    parse: str,
    default: './data',
  }),
  host: opt({ flag: 'host', env: 'HOST', help: 'interface to listen on', parse: str, default: '0.0.0.0' }),
  mqttPort: opt({
    flag: 'mqtt-port',
    env: 'MQTT_PORT',
    help: 'device MQTT (TCP) listener; 0 picks a free port',
    parse: port,
    default: 1883,
  }),
  wsPort: opt({
    flag: 'ws-port',
    env: 'WS_PORT',
    help: 'device MQTT over WebSocket listener; 0 picks a free port',
    parse: port,
    default: 8083,
  }),
  httpPort: opt({
    flag: 'http-port',
    env: 'HTTP_PORT',
    help: 'health and metrics; 0 picks a free port',
    parse: port,
    default: 9101,
  }),
  ...tlsListenerSpecs,
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
    help: 'gateway credential presented to central',
    parse: str,
  }),
  centralPassword: opt({
    flag: 'central-password',
    env: 'CENTRAL_PASSWORD',
    help: 'its password',
    parse: str,
    secret: true,
  }),
  ...centralTlsSpecs,
  outboxMaxBytes: opt({
    flag: 'outbox-max-bytes',
    env: 'OUTBOX_MAX_BYTES',
    help: 'outbox bound; when full, new events are refused',
    parse: bytes,
    default: 1024 ** 3,
  }),
  outboxDeviceShare: opt({
    flag: 'outbox-device-share',
    env: 'OUTBOX_DEVICE_SHARE',
    // No `default` here: help prints a default with String(), and this one is an object. Unset means DEFAULT_DEVICE_SHARE.
    help: 'what one device may hold of the outbox: a fraction of OUTBOX_MAX_BYTES (0.25, 25%) or bytes (64MiB); beyond, its events are refused [default: 0.25]',
    parse: deviceShare,
  }),
  forwardWindow: opt({
    flag: 'forward-window',
    env: 'FORWARD_WINDOW',
    help: 'events in flight to central at most',
    parse: int(1, 60_000),
    default: 10_000,
  }),
  resendAfterMs: opt({
    flag: 'resend-after-ms',
    env: 'RESEND_AFTER_MS',
    help: 'ms without a commit ack before an event is sent again',
    parse: int(100, 3_600_000),
    default: 10_000,
  }),
  linkBatchMaxEvents: opt({
    flag: 'link-batch-max-events',
    env: 'LINK_BATCH_MAX_EVENTS',
    help: 'events per batch to central, once central says it takes batches; 0 sends single events only',
    parse: int(0, 1_000),
    default: DEFAULT_LINK_BATCH_MAX_EVENTS,
  }),
  linkBatchMaxBytes: opt({
    flag: 'link-batch-max-bytes',
    env: 'LINK_BATCH_MAX_BYTES',
    help: "bytes of a batch to central at most (central's own bound applies too)",
    parse: batchBytes,
    default: DEFAULT_LINK_BATCH_MAX_BYTES,
  }),
  keepalive: opt({
    flag: 'keepalive',
    env: 'CENTRAL_KEEPALIVE',
    help: 's between pings to central (dead link noticed after 1.5×)',
    parse: int(1, 3600),
    default: 10,
  }),
  ...deviceLimitSpecs,
  logLevel: opt({
    flag: 'log-level',
    env: 'LOG_LEVEL',
    help: 'pino level',
    parse: logLevel,
    default: 'info' as LogLevel,
  }),
};
