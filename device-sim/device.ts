import mqtt, { type MqttClient } from 'mqtt';
import { topics } from '../protocol/index.js';
import type { SimDeviceRef } from './plan.js';

export interface DeviceConnection {
  ref: SimDeviceRef;
  password: string;
  /** the edge of the device's warehouse */
  url: string;
  /** `<device id>-<run id>`: a device's client id must start with its id (CONTRACT 5), and two runs must not share one */
  clientId: string;
  /** also follow `wh/{wh}/status` (the edge's backlog), for --verify */
  watchStatus: boolean;
  onMessage: (device: SimDevice, topic: string, payload: Buffer) => void;
}

const RECONNECT_MS = 500; // after a drop, the device tries again this often
const REPUBLISH_MS = 200; // after MQTT.js gave a publish up, the device sends it again this much later
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * One simulated scanner or shelf sensor: an MQTT.js client of its edge. QoS 1 publishes stay in
 * MQTT.js's store until the edge's PUBACK, across reconnects, so an event is never given up.
 */
export class SimDevice {
  private client: MqttClient | null = null;
  private inFlight = 0;
  private readonly waiting = new Set<(err: Error | null) => void>(); // publishes without a PUBACK yet
  private wasConnected = false;
  private lastError = '';
  reconnects = 0;
  drops = 0;
  /** publishes MQTT.js gave up (the connection closed while they were queued) and the device sent again */
  republished = 0;

  constructor(readonly o: DeviceConnection) {}

  get ref(): SimDeviceRef {
    return this.o.ref;
  }

  /** Publishes sent and not yet acknowledged by the edge. */
  get pending(): number {
    return this.inFlight;
  }

  /** Connects; rejects with the edge's answer when the first connection fails. */
  async start(): Promise<void> {
    const { o } = this;
    const client = mqtt.connect(o.url, {
      clientId: o.clientId,
      username: o.ref.id,
      password: o.password,
      clean: true,
      reconnectPeriod: RECONNECT_MS,
      connectTimeout: CONNECT_TIMEOUT_MS,
      keepalive: 15, // s
      // After the first connection, a refused CONNACK (the edge's limit on connection attempts) is retried, as a
      // real device would; MQTT.js alone stops for good. A refusal of the first connection is final (start()).
      reconnectOnConnackError: true,
    });
    this.client = client;
    client.on('error', (err) => (this.lastError = err.message));
    client.on('message', (topic, payload) => o.onMessage(this, topic, payload));
    client.on('connect', () => {
      if (this.wasConnected) this.reconnects++;
      this.wasConnected = true;
    });
    const filters = [topics.ack(o.ref.wh, o.ref.id), ...(o.watchStatus ? [topics.status(o.ref.wh)] : [])];
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          fail(
            new Error(`no connection within ${CONNECT_TIMEOUT_MS} ms${this.lastError ? `: ${this.lastError}` : ''}`),
          ),
        CONNECT_TIMEOUT_MS,
      );
      const fail = (err: Error) => {
        clearTimeout(timer);
        client.end(true);
        reject(new Error(`${o.ref.id} could not connect to the ${o.ref.wh} edge at ${o.url}: ${err.message}`));
      };
      client.once('connect', () => {
        clearTimeout(timer);
        client.removeListener('error', onFirstError);
        // MQTT.js subscribes again after every reconnect (resubscribe), so the acks keep coming.
        client.subscribe(filters, { qos: 1 }, (err, granted) => {
          const refused = granted?.find((g) => g.qos === 128);
          if (err || refused) fail(new Error(err?.message ?? `subscription to ${refused?.topic} refused`));
          else resolve();
        });
      });
      // A refused credential is final; a refused TCP connection is worth the retries until the timeout.
      const onFirstError = (err: Error & { code?: unknown }) => {
        if (typeof err.code === 'number') fail(err);
      };
      client.on('error', onFirstError);
    });
  }

  /**
   * Resolves at the edge's PUBACK, the moment the event is on the edge's disk (CONTRACT 7); rejects
   * only when the device stops first. A real device keeps an event until its PUBACK: MQTT.js fails a
   * publish that was still queued when the connection closed, so it is sent again (same id: central
   * dedupes it).
   */
  publish(payload: string): Promise<void> {
    if (!this.client) return Promise.reject(new Error(`${this.o.ref.id} is not started`));
    this.inFlight++;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const settle = (err: Error | null) => {
        if (settled) return;
        settled = true;
        this.inFlight--;
        this.waiting.delete(settle);
        if (err) reject(err);
        else resolve();
      };
      this.waiting.add(settle);
      const attempt = () => {
        const client = this.client;
        if (!client || settled) return;
        client.publish(topics.event(this.o.ref.wh, this.o.ref.id), payload, { qos: 1 }, (err) => {
          if (!err) return settle(null);
          if (settled || !this.client) return;
          this.republished++;
          setTimeout(attempt, REPUBLISH_MS);
        });
      };
      attempt();
    });
  }

  /** Cuts the connection without DISCONNECT, as a device walking out of Wi-Fi range; MQTT.js reconnects. */
  drop(): void {
    if (!this.client?.connected) return;
    this.drops++;
    this.client.stream.destroy();
  }

  /** Disconnects; publishes still without a PUBACK are rejected (MQTT.js, reconnecting, would never answer them). */
  async stop(): Promise<void> {
    const client = this.client;
    this.client = null;
    for (const settle of [...this.waiting])
      settle(new Error(`${this.o.ref.id} stopped before the edge acknowledged the event`));
    if (client) await client.endAsync(true);
  }
}
