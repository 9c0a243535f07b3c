import { Counter, Gauge, type Registry } from 'prom-client';
import { DEVICE_KINDS } from './devices.js';

export type ConnectionRefusal =
  | 'anonymous'
  | 'unknown_user'
  | 'bad_password'
  | 'kind_not_allowed'
  | 'client_id'
  | 'tls'
  | 'certificate_identity'
  | 'attempts_client_id'
  | 'attempts_address'
  | 'login_busy'
  | 'gone'
  | 'sessions_device'
  | 'error';
export type PublishRefusal =
  | 'acl'
  | 'sys'
  | 'too_large'
  | 'hook_failed'
  | 'unknown_client'
  | 'stopping'
  | 'rate_limited'
  | 'closed'
  | 'qos2_inflight'
  | 'session_bytes';

// Every reason, so each can start at 0; a Record makes the compiler insist on a new reason here.
const CONNECTION_REFUSALS: Record<ConnectionRefusal, true> = {
  anonymous: true,
  unknown_user: true,
  bad_password: true,
  kind_not_allowed: true,
  client_id: true,
  tls: true,
  certificate_identity: true,
  attempts_client_id: true,
  attempts_address: true,
  login_busy: true,
  gone: true,
  sessions_device: true,
  error: true,
};
const PUBLISH_REFUSALS: Record<PublishRefusal, true> = {
  acl: true,
  sys: true,
  too_large: true,
  hook_failed: true,
  unknown_client: true,
  stopping: true,
  rate_limited: true,
  closed: true,
  qos2_inflight: true,
  session_bytes: true,
};

/** Broker metrics. Labels are bounded: kinds and reasons only, never device ids or topics. */
export interface BrokerMetrics {
  connectedClients: Gauge<'kind'>;
  connectionRefusals: Counter<'reason'>;
  publishRefusals: Counter<'reason' | 'kind'>;
  subscribeRefusals: Counter<'kind'>;
  messagesReceived: Counter<'kind'>;
  publishesDelayed: Counter<'kind' | 'limit'>;
  retainDropped: Counter<'kind'>;
  subscriptionsLimited: Counter<'kind'>;
  sessionsEnded: Counter<'kind' | 'reason'>;
  queuedDropped: Counter<'kind' | 'reason'>;
  loginChecks: Counter<'lane' | 'result'>;
  /** Adds this broker's sessions and login queue to the gauges, summed over the brokers sharing the registry at each scrape. */
  addStateSource(source: () => BrokerState): () => void;
}

/** What the gauges show of one broker. */
export interface BrokerState {
  persistentSessions: number;
  queuedMessages: number;
  sessionBytes: number;
  loginWaiting: number;
}

// Gauges are read at scrape time from every broker of a registry (a demo runs several in one process).
const stateSources = new WeakMap<Registry, Set<() => BrokerState>>();

function stateGauge(registry: Registry, name: string, help: string, pick: (s: BrokerState) => number): void {
  if (registry.getSingleMetric(name) !== undefined) return;
  new Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      let sum = 0;
      for (const source of stateSources.get(registry) ?? []) sum += pick(source());
      this.set(sum);
    },
  });
}

/**
 * Registers the broker metrics on `registry`. A metric already registered there (a second broker
 * sharing the registry in one process) is reused, so their counts add up instead of throwing.
 */
export function createBrokerMetrics(registry: Registry): BrokerMetrics {
  function reuse<T>(name: string, make: () => T): T {
    return (registry.getSingleMetric(name) as T | undefined) ?? make();
  }
  const registers = [registry];
  stateGauge(
    registry,
    'stockwire_broker_persistent_sessions',
    'Persistent sessions (clean=false) the broker keeps, online or offline',
    (s) => s.persistentSessions,
  );
  stateGauge(
    registry,
    'stockwire_broker_session_queued_messages',
    'Messages queued for persistent sessions',
    (s) => s.queuedMessages,
  );
  stateGauge(
    registry,
    'stockwire_broker_session_bytes',
    'Bytes the sessions keep: queued messages and QoS 2 publishes awaiting PUBREL (bounded by BROKER_MAX_SESSION_BYTES)',
    (s) => s.sessionBytes,
  );
  stateGauge(
    registry,
    'stockwire_broker_login_waiting',
    'Password checks waiting for their turn',
    (s) => s.loginWaiting,
  );
  const metrics: BrokerMetrics = {
    connectedClients: reuse(
      'stockwire_broker_connected_clients',
      () =>
        new Gauge({
          name: 'stockwire_broker_connected_clients',
          help: 'Authenticated MQTT clients connected, by device kind',
          labelNames: ['kind'],
          registers,
        }),
    ),
    connectionRefusals: reuse(
      'stockwire_broker_connection_refusals_total',
      () =>
        new Counter({
          name: 'stockwire_broker_connection_refusals_total',
          help: 'MQTT connections refused, by reason',
          labelNames: ['reason'],
          registers,
        }),
    ),
    publishRefusals: reuse(
      'stockwire_broker_publish_refusals_total',
      () =>
        new Counter({
          name: 'stockwire_broker_publish_refusals_total',
          help: 'MQTT publishes refused (the client is disconnected), by reason and device kind',
          labelNames: ['reason', 'kind'],
          registers,
        }),
    ),
    subscribeRefusals: reuse(
      'stockwire_broker_subscribe_refusals_total',
      () =>
        new Counter({
          name: 'stockwire_broker_subscribe_refusals_total',
          help: 'MQTT subscriptions refused (granted QoS 128), by device kind',
          labelNames: ['kind'],
          registers,
        }),
    ),
    messagesReceived: reuse(
      'stockwire_broker_messages_received_total',
      () =>
        new Counter({
          name: 'stockwire_broker_messages_received_total',
          help: 'MQTT publishes accepted from clients, by device kind',
          labelNames: ['kind'],
          registers,
        }),
    ),
    publishesDelayed: reuse(
      'stockwire_broker_publishes_delayed_total',
      () =>
        new Counter({
          name: 'stockwire_broker_publishes_delayed_total',
          help: 'MQTT publishes held back (PUBACK delayed) by a device limit: its publish rate or its publishes in flight',
          labelNames: ['kind', 'limit'],
          registers,
        }),
    ),
    retainDropped: reuse(
      'stockwire_broker_retain_dropped_total',
      () =>
        new Counter({
          name: 'stockwire_broker_retain_dropped_total',
          help: 'MQTT publishes whose retain flag was dropped: only the stock, shelf and status topics are retained',
          labelNames: ['kind'],
          registers,
        }),
    ),
    subscriptionsLimited: reuse(
      'stockwire_broker_subscriptions_limited_total',
      () =>
        new Counter({
          name: 'stockwire_broker_subscriptions_limited_total',
          help: 'MQTT subscriptions refused (granted QoS 128) because the client holds CLIENT_MAX_SUBSCRIPTIONS already, by device kind; also in stockwire_broker_subscribe_refusals_total',
          labelNames: ['kind'],
          registers,
        }),
    ),
    sessionsEnded: reuse(
      'stockwire_broker_sessions_ended_total',
      () =>
        new Counter({
          name: 'stockwire_broker_sessions_ended_total',
          help: 'Persistent sessions ended by the broker: expired (offline past SESSION_EXPIRY) or evicted (a new session of a device at DEVICE_MAX_SESSIONS)',
          labelNames: ['kind', 'reason'],
          registers,
        }),
    ),
    queuedDropped: reuse(
      'stockwire_broker_session_dropped_total',
      () =>
        new Counter({
          name: 'stockwire_broker_session_dropped_total',
          help: "Messages dropped from persistent sessions' queues, by device kind and the bound that dropped them",
          labelNames: ['kind', 'reason'],
          registers,
        }),
    ),
    loginChecks: reuse(
      'stockwire_broker_login_checks_total',
      () =>
        new Counter({
          name: 'stockwire_broker_login_checks_total',
          help: 'Password checks (scrypt) run, by lane (priority: a device logging in again from an address it authenticated from) and result',
          labelNames: ['lane', 'result'],
          registers,
        }),
    ),
    addStateSource(source) {
      const sources = stateSources.get(registry) ?? new Set();
      stateSources.set(registry, sources.add(source));
      return () => sources.delete(source);
    },
  };
  // Known reasons and kinds start at 0: a series born at 1 shows no increase() to Prometheus, and a refusals
  // panel would say "No data" on a healthy system.
  const kinds = [...DEVICE_KINDS, 'unknown'];
  for (const reason of Object.keys(CONNECTION_REFUSALS)) metrics.connectionRefusals.inc({ reason }, 0);
  for (const reason of Object.keys(PUBLISH_REFUSALS))
    for (const kind of kinds) metrics.publishRefusals.inc({ reason, kind }, 0);
  for (const kind of kinds) metrics.subscribeRefusals.inc({ kind }, 0);
  return metrics;
}
