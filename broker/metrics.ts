import { Counter, Gauge, type Registry } from 'prom-client';
import { DEVICE_KINDS } from './devices.js';

export type ConnectionRefusal = 'anonymous' | 'unknown_user' | 'bad_password' | 'kind_not_allowed' | 'client_id' | 'tls' | 'certificate_identity' | 'attempts_client_id' | 'attempts_address' | 'error';
export type PublishRefusal = 'acl' | 'sys' | 'too_large' | 'hook_failed' | 'unknown_client' | 'stopping' | 'rate_limited' | 'closed';

// Every reason, so each can start at 0; a Record makes the compiler insist on a new reason here.
const CONNECTION_REFUSALS: Record<ConnectionRefusal, true> = {
  anonymous: true, unknown_user: true, bad_password: true, kind_not_allowed: true, client_id: true, tls: true,
  certificate_identity: true, attempts_client_id: true, attempts_address: true, error: true,
};
const PUBLISH_REFUSALS: Record<PublishRefusal, true> = { acl: true, sys: true, too_large: true, hook_failed: true, unknown_client: true, stopping: true, rate_limited: true, closed: true };

/** Broker metrics. Labels are bounded: kinds and reasons only, never device ids or topics. */
export interface BrokerMetrics {
  connectedClients: Gauge<'kind'>;
  connectionRefusals: Counter<'reason'>;
  publishRefusals: Counter<'reason' | 'kind'>;
  subscribeRefusals: Counter<'kind'>;
  messagesReceived: Counter<'kind'>;
  publishesDelayed: Counter<'kind' | 'limit'>;
  retainDropped: Counter<'kind'>;
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
  const metrics: BrokerMetrics = {
    connectedClients: reuse(
      'stockwire_broker_connected_clients',
      () => new Gauge({ name: 'stockwire_broker_connected_clients', help: 'Authenticated MQTT clients connected, by device kind', labelNames: ['kind'], registers }),
    ),
    connectionRefusals: reuse(
      'stockwire_broker_connection_refusals_total',
      () => new Counter({ name: 'stockwire_broker_connection_refusals_total', help: 'MQTT connections refused, by reason', labelNames: ['reason'], registers }),
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
      () => new Counter({ name: 'stockwire_broker_subscribe_refusals_total', help: 'MQTT subscriptions refused (granted QoS 128), by device kind', labelNames: ['kind'], registers }),
    ),
    messagesReceived: reuse(
      'stockwire_broker_messages_received_total',
      () => new Counter({ name: 'stockwire_broker_messages_received_total', help: 'MQTT publishes accepted from clients, by device kind', labelNames: ['kind'], registers }),
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
  };
  // Known reasons and kinds start at 0: a series born at 1 shows no increase() to Prometheus, and a refusals
  // panel would say "No data" on a healthy system.
  const kinds = [...DEVICE_KINDS, 'unknown'];
  for (const reason of Object.keys(CONNECTION_REFUSALS)) metrics.connectionRefusals.inc({ reason }, 0);
  for (const reason of Object.keys(PUBLISH_REFUSALS)) for (const kind of kinds) metrics.publishRefusals.inc({ reason, kind }, 0);
  for (const kind of kinds) metrics.subscribeRefusals.inc({ kind }, 0);
  return metrics;
}
