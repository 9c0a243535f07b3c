import type { Aedes } from 'aedes';

// Publishes handed to aedes at once, at most. mqemitter delivers a message with no remote subscriber
// synchronously and then releases the next queued one from inside that call: thousands queued at once
// (one batch's acks and stock topics) recurse until the stack overflows and the process dies.
const MAX_IN_AEDES = 64;

// Aedes drops a packet for a subscriber that already got one with a higher brokerCounter (its per-client
// `dedupe`, moscajs/aedes#955). A retained publish awaits storeRetained before it is emitted, so a publish
// started after it can overtake it, and the subscriber of both then never sees the retained one (a stock
// topic lost behind an ack or an alert). So a non-retained publish never starts while a retained one is in
// aedes; retained ones among themselves keep their order (the in-memory store resolves in call order).

/** Publishes on a broker; resolves once the broker has taken the message. */
export interface Publisher {
  publish(topic: string, payload: string | Buffer, retain: boolean): Promise<void>;
}

interface Queued {
  topic: string;
  payload: string | Buffer;
  retain: boolean;
  done: (err?: Error) => void;
}

/**
 * Publishes through an in-process broker (QoS 1; aedes stores retained messages itself), in order and without
 * the two aedes traps above. Central's processor and the edge (its mirror, alerts and status) publish only
 * through this.
 */
export function orderedPublisher(aedes: Aedes): Publisher {
  // A queue with a read index: Array#shift on one batch's thousands of publishes is O(n) each, and
  // made publishing quadratic (measured: 100 µs of CPU per retained publish with 100,000 queued, 13 µs now).
  let queue: (Queued | undefined)[] = [];
  let head = 0;
  let inAedes = 0;
  let retainedInAedes = 0;
  let scheduled = false;
  const drain = () => {
    scheduled = false;
    while (inAedes < MAX_IN_AEDES && head < queue.length) {
      const m = queue[head] as Queued;
      if (!m.retain && retainedInAedes > 0) break; // in order: wait for the retained ones
      queue[head++] = undefined; // let the message go once aedes is done with it
      if (head === queue.length) {
        queue = [];
        head = 0;
      }
      inAedes++;
      if (m.retain) retainedInAedes++;
      aedes.publish(
        {
          cmd: 'publish',
          topic: m.topic,
          payload: typeof m.payload === 'string' ? Buffer.from(m.payload) : m.payload,
          qos: 1,
          retain: m.retain,
          dup: false,
        },
        (err) => {
          inAedes--;
          if (m.retain) retainedInAedes--;
          m.done(err ?? undefined);
          // Continue on a fresh stack, never from inside aedes' callback.
          if (head < queue.length && !scheduled) {
            scheduled = true;
            setImmediate(drain);
          }
        },
      );
    }
  };
  return {
    publish: (topic, payload, retain) =>
      new Promise<void>((resolve, reject) => {
        queue.push({ topic, payload, retain, done: (err) => (err ? reject(err) : resolve()) });
        if (!scheduled) {
          scheduled = true;
          setImmediate(drain);
        }
      }),
  };
}
