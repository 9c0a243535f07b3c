import client, { type Registry } from 'prom-client';
import { ErrorCode, EVENT_TYPES } from '../protocol/index.js';

/** The codes `parseEvent` gives an invalid event: each one's dead-letter count starts at 0. */
const DEAD_LETTER_CODES = [
  ErrorCode.invalidJson,
  ErrorCode.payloadTooLarge,
  ErrorCode.unsupportedVersion,
  ErrorCode.schemaViolation,
];
const OUTCOMES = ['applied', 'duplicate', 'rejected'] as const;

/**
 * Processor metrics; names are the contract with dashboards and alert rules (dashboards/).
 * `warehouses` (those central knows from its devices file, or a processor's partition) get their labelled
 * series at 0 from the start: a series born at 1 shows no increase() to Prometheus, and a panel over a
 * series that does not exist yet says "No data" on a healthy system.
 */
export function createIngestMetrics(registry: Registry, warehouses: Iterable<string> = []) {
  const m = {
    events: new client.Counter({
      name: 'stockwire_events_total',
      help: 'Events decided, by type, warehouse and outcome',
      labelNames: ['type', 'wh', 'outcome'],
      registers: [registry],
    }),
    batchSize: new client.Histogram({
      name: 'stockwire_batch_size',
      help: 'Events per committed batch',
      buckets: [1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000],
      registers: [registry],
    }),
    commitSeconds: new client.Histogram({
      name: 'stockwire_commit_seconds',
      help: 'Batch transaction time, BEGIN to COMMIT',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    lagSeconds: new client.Histogram({
      name: 'stockwire_ingest_lag_seconds',
      help: 'Commit time minus event time, by warehouse',
      labelNames: ['wh'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300, 3600],
      registers: [registry],
    }),
    deadLetters: new client.Counter({
      name: 'stockwire_dead_letters_total',
      help: 'Invalid inputs kept in the dead-letter store, by error code',
      labelNames: ['code'],
      registers: [registry],
    }),
    negativeStock: new client.Counter({
      name: 'stockwire_negative_stock_total',
      help: 'Stock rows that went below zero (negative-stock alerts), by warehouse',
      labelNames: ['wh'],
      registers: [registry],
    }),
    pending: new client.Gauge({
      name: 'stockwire_ingest_pending',
      help: 'Events received and not yet committed',
      registers: [registry],
    }),
    dbErrors: new client.Counter({
      name: 'stockwire_db_errors_total',
      help: 'Batches that failed on a database error and were retried',
      registers: [registry],
    }),
    publishErrors: new client.Counter({
      name: 'stockwire_publish_errors_total',
      help: 'Acks or stock topics that could not be published',
      registers: [registry],
    }),
    gatewayBatches: new client.Counter({
      name: 'stockwire_gateway_batches_total',
      help: 'Batches from edges on wh/{wh}/gw/{gateway}/batch: committed (one batch-ack each), or refused as unreadable',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    gatewayBatchEvents: new client.Histogram({
      name: 'stockwire_gateway_batch_events',
      help: 'Events per batch received from an edge',
      buckets: [1, 5, 10, 50, 100, 250, 500, 1000],
      registers: [registry],
    }),
    readModelErrors: new client.Counter({
      name: 'stockwire_read_model_errors_total',
      help: 'Read-model (Redis) writes or reads that failed',
      labelNames: ['op'],
      registers: [registry],
    }),
  };
  for (const code of DEAD_LETTER_CODES) m.deadLetters.inc({ code }, 0);
  for (const op of ['read', 'write']) m.readModelErrors.inc({ op }, 0);
  for (const outcome of ['committed', 'refused']) m.gatewayBatches.inc({ outcome }, 0);
  for (const wh of new Set(warehouses)) {
    m.negativeStock.inc({ wh }, 0);
    for (const type of EVENT_TYPES) for (const outcome of OUTCOMES) m.events.inc({ type, wh, outcome }, 0);
    m.events.inc({ type: 'invalid', wh, outcome: 'rejected' }, 0); // an unparseable event has no type
  }
  return m;
}
export type IngestMetrics = ReturnType<typeof createIngestMetrics>;
