import mqtt, { type MqttClient } from 'mqtt';
import type { OutgoingEvent } from './resending-publisher.js';

export interface PubackDeviceOptions {
  /** events in flight per device */
  window?: number;
  onProgress?: (handedOver: number) => void;
  /** each device drops its connection (no DISCONNECT) on average every this many ms */
  disconnectEveryMs?: number;
  random?: () => number;
}

/**
 * Devices that behave like real scanners: an event is handed over when the edge's PUBACK arrives
 * and is then forgotten; one without a PUBACK is sent again after a reconnect. If the edge lost an
 * event it had acknowledged, nothing here would send it again — which is what the tests check.
 * The same event may appear several times in the list (a duplicate storm): each copy is a publish.
 */
export class PubackDevices {
  private readonly clients: MqttClient[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly states = new Map<
    string,
    {
      client: MqttClient;
      queued: number;
      next: () => number;
      pending: () => number;
      connects: number;
      errors: string[];
    }
  >();
  private handedOver = 0;
  /** publishes, first sends and sends again after a reconnect */
  publishes = 0;
  /** connections dropped by `disconnectEveryMs` */
  drops = 0;

  constructor(
    private readonly url: string,
    private readonly wh: string,
    private readonly devices: { id: string; password: string }[],
    private readonly o: PubackDeviceOptions = {},
  ) {}

  get count(): number {
    return this.handedOver;
  }

  /** Sends each device's events (grouped by `device`); resolves when every one got a PUBACK. */
  run(events: OutgoingEvent[]): Promise<void> {
    const byDevice = new Map<string, OutgoingEvent[]>();
    for (const e of events) {
      const list = byDevice.get(e.device);
      if (list) list.push(e);
      else byDevice.set(e.device, [e]);
    }
    return Promise.all(
      this.devices.map(
        (d) =>
          new Promise<void>((resolve) => {
            const queue = byDevice.get(d.id) ?? [];
            let next = 0;
            let pending = new Set<{ e: OutgoingEvent }>(); // sent, no PUBACK yet (one entry per copy)
            const client = mqtt.connect(this.url, {
              username: d.id,
              password: d.password,
              clientId: d.id,
              clean: true,
              reconnectPeriod: 200,
              connectTimeout: 3_000,
              keepalive: 5,
              // Like a real scanner, it retries after the edge's "server unavailable" (its limit on connection attempts, hit
              // while a full outbox refuses events and so closes the connection): MQTT.js alone would stop for good.
              reconnectOnConnackError: true,
            });
            this.clients.push(client);
            const state = {
              client,
              queued: queue.length,
              next: () => next,
              pending: () => pending.size,
              connects: 0,
              errors: [] as string[],
            };
            this.states.set(d.id, state);
            client.on('error', (err) => {
              if (state.errors.length < 5) state.errors.push(err.message);
            });
            const send = (e: OutgoingEvent) => {
              const copy = { e };
              pending.add(copy);
              this.publishes++;
              client.publish(`wh/${this.wh}/dev/${d.id}/event`, e.payload, { qos: 1 }, (err) => {
                if (err || !pending.delete(copy)) return;
                this.handedOver++;
                this.o.onProgress?.(this.handedOver);
                fill();
              });
            };
            const fill = () => {
              if (!client.connected) return;
              while (pending.size < (this.o.window ?? 50) && next < queue.length) send(queue[next++] as OutgoingEvent);
              if (next >= queue.length && pending.size === 0) resolve();
            };
            client.on('connect', () => {
              state.connects++;
              // After a reconnect, everything without a PUBACK goes again (MQTT.js may also replay it: duplicates are fine).
              const again = [...pending];
              pending = new Set();
              for (const c of again) send(c.e);
              fill();
            });
            if (this.o.disconnectEveryMs) this.dropNow(client, this.o.disconnectEveryMs);
          }),
      ),
    ).then(() => {
      for (const t of this.timers.splice(0)) clearTimeout(t);
    });
  }

  /** Where each unfinished device stands, for a failure message. */
  describe(): string {
    const lines = [`${this.handedOver} handed over, ${this.publishes} publishes`];
    for (const [id, s] of this.states) {
      if (s.next() >= s.queued && s.pending() === 0) continue;
      lines.push(
        `${id}: ${s.client.connected ? 'connected' : 'not connected'}, sent ${s.next()}/${s.queued}, ${s.pending()} without PUBACK, ${s.connects} connects, MQTT.js store ${Object.keys((s.client as unknown as { outgoing: object }).outgoing ?? {}).length}, errors: ${s.errors.join('; ') || 'none'}`,
      );
    }
    return lines.join('\n');
  }

  /** Drops every connection now (no DISCONNECT): a drop a test can count on, whatever the machine's speed. */
  dropAll(): void {
    for (const client of this.clients)
      if (client.connected) {
        this.drops++;
        client.stream.destroy();
      }
  }

  /** Drops the connection at random moments (exponential gaps of mean `mean` ms), like a scanner leaving Wi-Fi. */
  private dropNow(client: MqttClient, mean: number): void {
    // The test's seeded generator (rng(testSeed(…))): when a device drops must replay with the seed.
    const random = this.o.random;
    if (random === undefined) throw new Error('disconnectEveryMs needs `random`, a generator seeded by testSeed');
    const t = setTimeout(
      () => {
        if (client.connected) {
          this.drops++;
          client.stream.destroy();
        }
        this.dropNow(client, mean);
      },
      -Math.log(1 - random()) * mean,
    );
    this.timers.push(t);
  }

  async close(): Promise<void> {
    for (const t of this.timers.splice(0)) clearTimeout(t);
    await Promise.all(this.clients.map((c) => c.endAsync(true)));
  }
}
