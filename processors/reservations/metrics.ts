import client, { type Registry } from 'prom-client';

/** Reservation and transfer metrics; names are the contract with dashboards and alert rules. */
export function createReservationMetrics(registry: Registry) {
  return {
    commands: new client.Counter({
      name: 'stockwire_commands_total',
      help: 'Reservation and transfer commands answered, by action, status and whether the answer was a stored one (Idempotency-Key)',
      labelNames: ['action', 'status', 'replayed', 'via'],
      registers: [registry],
    }),
    commandSeconds: new client.Histogram({
      name: 'stockwire_command_seconds',
      help: 'Command time from request to answer',
      labelNames: ['action'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
      registers: [registry],
    }),
    expired: new client.Counter({
      name: 'stockwire_reservations_expired_total',
      help: 'Reservations released by the sweeper after their ttl',
      registers: [registry],
    }),
    compensated: new client.Counter({
      name: 'stockwire_transfers_compensated_total',
      help: 'Transfers that timed out and were compensated',
      registers: [registry],
    }),
    retries: new client.Counter({
      name: 'stockwire_command_retries_total',
      help: 'Command transactions retried after a deadlock or serialization failure',
      registers: [registry],
    }),
    publishErrors: new client.Counter({
      name: 'stockwire_command_publish_errors_total',
      help: 'Stock topics or alerts that could not be published after a command',
      registers: [registry],
    }),
  };
}
export type ReservationMetrics = ReturnType<typeof createReservationMetrics>;
