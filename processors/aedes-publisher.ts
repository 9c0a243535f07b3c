import type { Aedes } from 'aedes';
import type { Publisher } from './ingest/publisher.js';

/** Publishes through the in-process central broker (QoS 1; aedes stores retained messages itself). */
export function aedesPublisher(aedes: Aedes): Publisher {
  return {
    publish: (topic, payload, retain) =>
      new Promise<void>((resolve, reject) => {
        aedes.publish({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, retain, dup: false }, (err) => (err ? reject(err) : resolve()));
      }),
  };
}
