import mqtt, { type MqttClient } from 'mqtt';
import { topicMatches } from '../../protocol/index.js';

/** Connects an MQTT.js client and waits for CONNACK. */
export async function connect(
  url: string,
  username: string,
  password: string,
  extra: mqtt.IClientOptions = {},
): Promise<MqttClient> {
  return mqtt.connectAsync(url, {
    username,
    password,
    clientId: `${username}-${Math.random().toString(16).slice(2, 8)}`,
    reconnectPeriod: 0,
    connectTimeout: 5_000,
    ...extra,
  });
}

/** Collects messages of a subscription; `waitFor` resolves when the predicate holds. */
export class Collector<T = unknown> {
  readonly messages: { topic: string; payload: T; retain: boolean }[] = [];
  private waiters: { pred: () => boolean; resolve: () => void }[] = [];

  constructor(client: MqttClient, filter: string | string[]) {
    const filters = Array.isArray(filter) ? filter : [filter];
    client.on('message', (topic, payload, packet) => {
      if (!filters.some((f) => topicMatches(f, topic))) return;
      this.messages.push({ topic, payload: JSON.parse(payload.toString()) as T, retain: packet.retain });
      this.waiters = this.waiters.filter((w) => {
        if (w.pred()) {
          w.resolve();
          return false;
        }
        return true;
      });
    });
  }

  waitFor(pred: () => boolean, timeoutMs = 10_000, what = 'messages'): Promise<void> {
    if (pred()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; got ${this.messages.length}`)),
        timeoutMs,
      );
      this.waiters.push({
        pred,
        resolve: () => {
          clearTimeout(t);
          resolve();
        },
      });
    });
  }

  last(topic: string): T | undefined {
    for (let i = this.messages.length - 1; i >= 0; i--)
      if (this.messages[i]?.topic === topic) return this.messages[i]?.payload;
    return undefined;
  }
}
