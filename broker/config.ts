import { int, opt } from '../runtime/options.js';
import { DEFAULT_DEVICE_LIMITS, type DeviceLimits } from './limits.js';

// Keeps each spec's literal type, so `default` makes the parsed value non-optional.
const d = DEFAULT_DEVICE_LIMITS;

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/** A byte count such as 1048576, 512KiB or 64MiB, within [min, max]. */
const byteCount =
  (min: number, max: number) =>
  (raw: string): number => {
    const m = /^(\d+)\s*(?:([kmg])i?b?|(b))?$/i.exec(raw.trim());
    const n = m === null ? NaN : Number(m[1]) * (UNITS[(m[2] ?? m[3] ?? '').toLowerCase()] as number);
    if (!Number.isSafeInteger(n) || n < min || n > max)
      throw new Error(`must be a byte count such as 1048576 or 64MiB, from ${min} to ${max}`);
    return n;
  };

/** The per-device and per-broker limits as flags and environment variables: `stockwire edge` and `stockwire central` take them. */
export const deviceLimitSpecs = {
  devicePublishRate: opt({
    flag: 'device-publish-rate',
    env: 'DEVICE_PUBLISH_RATE',
    help: 'publishes/s a scanner or shelf sensor may sustain; above it its PUBACKs are held back',
    parse: int(1, 10_000_000),
    default: d.publishRate,
  }),
  devicePublishBurst: opt({
    flag: 'device-publish-burst',
    env: 'DEVICE_PUBLISH_BURST',
    help: 'publishes a device may send at once above its rate; after 10x this many held back it is disconnected',
    parse: int(1, 10_000_000),
    default: d.publishBurst,
  }),
  deviceMaxInflight: opt({
    flag: 'device-max-inflight',
    env: 'DEVICE_MAX_INFLIGHT',
    help: 'QoS 1 publishes of one device awaiting their PUBACK at once; more wait their turn',
    parse: int(1, 1_000_000),
    default: d.maxInflight,
  }),
  deviceConnectLimit: opt({
    flag: 'device-connect-limit',
    env: 'DEVICE_CONNECT_LIMIT',
    help: 'connection attempts per client id per minute; more are refused (CONNACK 3)',
    parse: int(1, 1_000_000),
    default: d.connectsPerClientId,
  }),
  addressConnectLimit: opt({
    flag: 'address-connect-limit',
    env: 'ADDRESS_CONNECT_LIMIT',
    help: 'connection attempts of known usernames per remote address per minute, but for devices logging in again from there; more are refused (CONNACK 3)',
    parse: int(1, 1_000_000),
    default: d.connectsPerAddress,
  }),
  loginConcurrency: opt({
    flag: 'login-concurrency',
    env: 'LOGIN_CONCURRENCY',
    help: 'password checks (scrypt, ~50 ms CPU each) running at once; more wait, known devices first',
    parse: int(1, 64),
    default: d.loginConcurrency,
  }),
  loginQueuePerAddress: opt({
    flag: 'login-queue-per-address',
    env: 'LOGIN_QUEUE_PER_ADDRESS',
    help: 'password checks of one remote address waiting their turn; one more is refused (CONNACK 3)',
    parse: int(1, 100_000),
    default: d.loginQueuePerAddress,
  }),
  deviceMaxSessions: opt({
    flag: 'device-max-sessions',
    env: 'DEVICE_MAX_SESSIONS',
    help: 'persistent sessions (clean=false client ids) one device may hold; a new one ends its session offline the longest',
    parse: int(1, 100_000),
    default: d.sessionsPerDevice,
  }),
  sessionExpiry: opt({
    flag: 'session-expiry',
    env: 'SESSION_EXPIRY',
    help: 's a persistent session is kept after its client has gone',
    parse: int(1, 365 * 86_400),
    default: d.sessionExpirySeconds,
  }),
  sessionMaxQueued: opt({
    flag: 'session-max-queued',
    env: 'SESSION_MAX_QUEUED',
    help: 'messages one persistent session keeps queued; the oldest are dropped beyond',
    parse: int(1, 10_000_000),
    default: d.queuedPerSession,
  }),
  sessionMaxQueuedBytes: opt({
    flag: 'session-max-queued-bytes',
    env: 'SESSION_MAX_QUEUED_BYTES',
    help: 'bytes one persistent session keeps queued; the oldest are dropped beyond',
    parse: byteCount(1024, 2 ** 40),
    default: d.queuedBytesPerSession,
  }),
  brokerMaxSessionBytes: opt({
    flag: 'broker-max-session-bytes',
    env: 'BROKER_MAX_SESSION_BYTES',
    help: 'bytes all sessions keep together (queued messages, QoS 2 awaiting PUBREL); beyond, messages are dropped and QoS 2 publishes refused',
    parse: byteCount(1024, 2 ** 40),
    default: d.sessionBytes,
  }),
  clientMaxSubscriptions: opt({
    flag: 'client-max-subscriptions',
    env: 'CLIENT_MAX_SUBSCRIPTIONS',
    help: 'subscriptions one client may hold; more are refused (SUBACK 0x80)',
    parse: int(1, 10_000_000),
    default: d.subscriptionsPerClient,
  }),
  deviceMaxQos2Inflight: opt({
    flag: 'device-max-qos2-inflight',
    env: 'DEVICE_MAX_QOS2_INFLIGHT',
    help: 'QoS 2 publishes of one device awaiting PUBREL; one more disconnects it',
    parse: int(1, 65_535),
    default: d.qos2PerDevice,
  }),
};

type LimitValues = { [K in keyof typeof deviceLimitSpecs]: number };

/** The broker's limits from parsed configuration values. */
export function deviceLimitsOf(c: LimitValues): DeviceLimits {
  return {
    publishRate: c.devicePublishRate,
    publishBurst: c.devicePublishBurst,
    maxInflight: c.deviceMaxInflight,
    connectsPerClientId: c.deviceConnectLimit,
    connectsPerAddress: c.addressConnectLimit,
    loginConcurrency: c.loginConcurrency,
    loginQueuePerAddress: c.loginQueuePerAddress,
    sessionsPerDevice: c.deviceMaxSessions,
    sessionExpirySeconds: c.sessionExpiry,
    queuedPerSession: c.sessionMaxQueued,
    queuedBytesPerSession: c.sessionMaxQueuedBytes,
    sessionBytes: c.brokerMaxSessionBytes,
    subscriptionsPerClient: c.clientMaxSubscriptions,
    qos2PerDevice: c.deviceMaxQos2Inflight,
  };
}

/** Problems of limits that are each valid alone but not together, named by their flags (the command exits 2). */
export function deviceLimitConfigProblems(c: LimitValues): string[] {
  if (c.brokerMaxSessionBytes >= c.sessionMaxQueuedBytes) return [];
  return [
    `--broker-max-session-bytes: must be at least --session-max-queued-bytes (${c.sessionMaxQueuedBytes}), or no session could queue its bound`,
  ];
}
