import type { Aedes } from 'aedes';
import type { Publisher } from './ingest/publisher.js';

// Publishes handed to aedes at once, at most. mqemitter delivers a message with no remote subscriber
// synchronously and then releases the next queued one from inside that call: thousands queued at once
// (one batch's acks and stock topics) recurse until the stack overflows and the process dies.
const MAX_IN_AEDES = 64;

/** Publishes through the in-process central broker (QoS 1; aedes stores retained messages itself). */
export function aedesPublisher(aedes: Aedes): Publisher {
  const queue: { topic: string; payload: string; retain: boolean; done: (err?: Error) => void }[] = [];
  let inAedes = 0;
  let scheduled = false;
  const drain = () => {
    scheduled = false;
    while (inAedes < MAX_IN_AEDES && queue.length > 0) {
      const m = queue.shift() as (typeof queue)[number];
      inAedes++;
      aedes.publish({ cmd: 'publish', topic: m.topic, payload: Buffer.from(m.payload), qos: 1, retain: m.retain, dup: false }, (err) => {
        inAedes--;
        m.done(err ?? undefined);
        // Continue on a fresh stack, never from inside aedes' callback.
        if (queue.length > 0 && !scheduled) (scheduled = true), setImmediate(drain);
      });
    }
  };
  return {
    publish: (topic, payload, retain) =>
      new Promise<void>((resolve, reject) => {
        queue.push({ topic, payload, retain, done: (err) => (err ? reject(err) : resolve()) });
        if (!scheduled) (scheduled = true), setImmediate(drain);
      }),
  };
}
