import { parseStockTopic } from '../../protocol/index.js';
import type { Publisher } from './publisher.js';

/**
 * Keeps this process's retained stock topics moving forward: event batches and commands commit on
 * different connections and publish on different paths, so a commit's publish can reach the broker
 * after a later commit's. A retained stock publish (protocol's parseStockTopic) whose `version` is not
 * above the last one this process sent on that topic is dropped (the newer one already carries later
 * numbers). Other topics, and publishes without a version, pass through untouched. Bounded: beyond
 * `maxTopics` the oldest topics are forgotten.
 */
export function monotonic(inner: Publisher, maxTopics = 200_000): Publisher {
  const last = new Map<string, number>();
  return {
    publish(topic, payload, retain, version) {
      if (retain && version !== undefined && parseStockTopic(topic) !== null) {
        const prev = last.get(topic);
        if (prev !== undefined && prev >= version) return Promise.resolve();
        if (prev === undefined && last.size >= maxTopics) {
          const oldest = last.keys().next().value;
          if (oldest !== undefined) last.delete(oldest);
        }
        last.set(topic, version);
      }
      return inner.publish(topic, payload, retain, version);
    },
  };
}
