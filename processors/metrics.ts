import client, { type Registry } from 'prom-client';

/** Processor metrics; names are the contract with dashboards and alert rules (dashboards/). */
export function createIngestMetrics(registry: Registry) {
  return {
    events: new client.Counter({ name: 'stockwire_events_total', help: 'Events decided, by type, warehouse and outcome', labelNames: ['type', 'wh', 'outcome'], registers: [registry] }),
    batchSize: new client.Histogram({ name: 'stockwire_batch_size', help: 'Events per committed batch', buckets: [1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000], registers: [registry] }),
    commitSeconds: new client.Histogram({ name: 'stockwire_commit_seconds', help: 'Batch transaction time, BEGIN to COMMIT', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers: [registry] }),
    lagSeconds: new client.Histogram({ name: 'stockwire_ingest_lag_seconds', help: 'Commit time minus event time, by warehouse', labelNames: ['wh'], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300, 3600], registers: [registry] }),
    deadLetters: new client.Counter({ name: 'stockwire_dead_letters_total', help: 'Invalid inputs kept in the dead-letter store, by error code', labelNames: ['code'], registers: [registry] }),
    negativeStock: new client.Counter({ name: 'stockwire_negative_stock_total', help: 'Stock rows that went below zero (negative-stock alerts), by warehouse', labelNames: ['wh'], registers: [registry] }),
    pending: new client.Gauge({ name: 'stockwire_ingest_pending', help: 'Events received and not yet committed', registers: [registry] }),
    dbErrors: new client.Counter({ name: 'stockwire_db_errors_total', help: 'Batches that failed on a database error and were retried', registers: [registry] }),
    publishErrors: new client.Counter({ name: 'stockwire_publish_errors_total', help: 'Acks or stock topics that could not be published', registers: [registry] }),
    readModelErrors: new client.Counter({ name: 'stockwire_read_model_errors_total', help: 'Read-model (Redis) writes or reads that failed', labelNames: ['op'], registers: [registry] }),
  };
}
export type IngestMetrics = ReturnType<typeof createIngestMetrics>;
