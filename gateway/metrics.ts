import client, { type Registry } from 'prom-client';

/** Edge metrics; names are the contract with dashboards and alert rules (dashboards/). */
export function createEdgeMetrics(registry: Registry) {
  const metrics = {
    accepted: new client.Counter({
      name: 'stockwire_edge_events_accepted_total',
      help: 'Device events written to the outbox (PUBACK sent after the fsync)',
      labelNames: ['valid'],
      registers: [registry],
    }),
    refused: new client.Counter({
      name: 'stockwire_edge_events_refused_total',
      help: 'Device events refused (the device keeps them), by reason',
      labelNames: ['reason'],
      registers: [registry],
    }),
    backlogEvents: new client.Gauge({
      name: 'stockwire_edge_backlog_events',
      help: 'Events in the outbox not yet confirmed by central',
      registers: [registry],
    }),
    backlogBytes: new client.Gauge({
      name: 'stockwire_edge_backlog_bytes',
      help: 'Bytes in the outbox not yet confirmed by central',
      registers: [registry],
    }),
    outboxMaxBytes: new client.Gauge({
      name: 'stockwire_edge_outbox_max_bytes',
      help: 'The outbox bound (OUTBOX_MAX_BYTES)',
      registers: [registry],
    }),
    deviceMaxBytes: new client.Gauge({
      name: 'stockwire_edge_outbox_device_max_bytes',
      help: 'What one device may hold of the outbox (OUTBOX_DEVICE_SHARE), bytes',
      registers: [registry],
    }),
    largestDeviceBytes: new client.Gauge({
      name: 'stockwire_edge_backlog_largest_device_bytes',
      help: 'Bytes in the outbox of the device that holds the most',
      registers: [registry],
    }),
    deadLetters: new client.Counter({
      name: 'stockwire_edge_dead_letters_total',
      help: 'Payloads the edge refused for good (over 8 KiB), kept as dead letters in its outbox file and answered rejected, by error code',
      labelNames: ['code'],
      registers: [registry],
    }),
    oldestAge: new client.Gauge({
      name: 'stockwire_edge_oldest_unconfirmed_seconds',
      help: 'Age of the oldest event central has not confirmed',
      registers: [registry],
    }),
    confirmed: new client.Counter({
      name: 'stockwire_edge_events_confirmed_total',
      help: "Events confirmed by central's commit ack and removed from the outbox (drain rate: rate() of this)",
      registers: [registry],
    }),
    sent: new client.Counter({
      name: 'stockwire_edge_events_sent_total',
      help: 'Event publishes to central, first sends and resends',
      labelNames: ['attempt'],
      registers: [registry],
    }),
    batchesSent: new client.Counter({
      name: 'stockwire_edge_batches_sent_total',
      help: 'Batches published to central (wh/{wh}/gw/{gateway}/batch), first sends and resends',
      labelNames: ['attempt'],
      registers: [registry],
    }),
    batchEvents: new client.Histogram({
      name: 'stockwire_edge_batch_events',
      help: 'Events per batch sent to central',
      buckets: [1, 5, 10, 50, 100, 250, 500, 1000],
      registers: [registry],
    }),
    batchAcks: new client.Counter({
      name: 'stockwire_edge_batch_acks_total',
      help: "Central's batch-acks: ok (events confirmed and acks fanned out), unknown (a batch sent again since, or before a reconnect), refused (central could not read it), invalid",
      labelNames: ['result'],
      registers: [registry],
    }),
    linkBatching: new client.Gauge({
      name: 'stockwire_edge_link_batching',
      help: '1 while the link to central sends batches (central said it takes them), 0 while it sends single events',
      registers: [registry],
    }),
    link: new client.Gauge({
      name: 'stockwire_edge_link_up',
      help: '1 while connected to central',
      registers: [registry],
    }),
    linkChanges: new client.Counter({
      name: 'stockwire_edge_link_changes_total',
      help: 'Connections to central made and lost',
      labelNames: ['state'],
      registers: [registry],
    }),
    mirrored: new client.Counter({
      name: 'stockwire_edge_mirrored_total',
      help: 'Messages from central republished on the edge broker',
      labelNames: ['kind'],
      registers: [registry],
    }),
    mirrorOlder: new client.Counter({
      name: 'stockwire_edge_mirror_older_dropped_total',
      help: 'Retained messages from central older (lower version, earlier reading) than the value the edge serves, not republished',
      registers: [registry],
    }),
    mirrorUnsaved: new client.Gauge({
      name: 'stockwire_edge_mirror_unsaved_topics',
      help: 'Mirrored topics changed since their last write to the outbox file (written every second)',
      registers: [registry],
    }),
    mirrorRestored: new client.Gauge({
      name: 'stockwire_edge_mirror_restored_topics',
      help: 'Retained topics served from the outbox file at start: the last known values, until central sends newer ones',
      registers: [registry],
    }),
    mirrorErrors: new client.Counter({
      name: 'stockwire_edge_mirror_errors_total',
      help: 'Failed writes (save) or reads (restore) of the mirrored topics in the outbox file',
      labelNames: ['op'],
      registers: [registry],
    }),
  };
  // Known reasons start at 0: a series born at 1 shows no increase() to Prometheus, so the first refusal would go unseen.
  for (const reason of ['outbox_full', 'device_share', 'outbox_error']) metrics.refused.labels({ reason }).inc(0);
  metrics.deadLetters.labels({ code: 'payload_too_large' }).inc(0);
  for (const op of ['save', 'restore']) metrics.mirrorErrors.labels({ op }).inc(0);
  for (const result of ['ok', 'unknown', 'refused', 'invalid']) metrics.batchAcks.labels({ result }).inc(0);
  for (const attempt of ['first', 'resend']) metrics.batchesSent.labels({ attempt }).inc(0);
  return metrics;
}
export type EdgeMetrics = ReturnType<typeof createEdgeMetrics>;
