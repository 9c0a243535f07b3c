import { Counter, Gauge, type Registry } from 'prom-client';

export type ConnectionRefusal = 'anonymous' | 'unknown_user' | 'bad_password' | 'kind_not_allowed' | 'client_id' | 'tls' | 'certificate_identity' | 'attempts_client_id' | 'attempts_address' | 'error';
export type PublishRefusal = 'acl' | 'sys' | 'too_large' | 'hook_failed' | 'unknown_client' | 'stopping' | 'rate_limited' | 'closed';

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
  return {
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
}
