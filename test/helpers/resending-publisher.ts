import mqtt, { type MqttClient } from 'mqtt';
import type { Ack } from '../../protocol/index.js';

export interface OutgoingEvent {
  device: string;
  id: string;
  payload: string;
}

export interface PublisherStats {
  acked: number;
  sends: number;
  statuses: Record<string, number>;
}

/**
 * A test sender with the edge's end-to-end rule in miniature: an event counts as delivered only
 * when central's commit ack arrives; anything unacknowledged is sent again after a timeout and
 * after every reconnect. A window bounds what is in flight.
 */
export class ResendingPublisher {
  private client: MqttClient | null = null;
  private next = 0;
  private readonly inflight = new Map<string, { e: OutgoingEvent; sentAt: number }>();
  private readonly stats: PublisherStats = { acked: 0, sends: 0, statuses: {} };
  private done: (() => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private open: boolean;

  constructor(
    private readonly url: string,
    private readonly wh: string,
    private readonly events: OutgoingEvent[],
    private readonly o: {
      username?: string;
      password?: string;
      clientId: string;
      window?: number;
      resendAfterMs?: number;
      onAck?: (acked: number) => void;
      /** more events may be appended with `append` until `end` is called; `run` resolves only after that */
      open?: boolean;
    },
  ) {
    this.open = o.open === true;
  }

  /** Adds events to send (only with `open`). */
  append(events: OutgoingEvent[]): void {
    if (!this.open) throw new Error('append needs a publisher created with open: true, before end()');
    this.events.push(...events);
    this.fill();
  }

  /** No more events: `run` resolves once every event is acknowledged. */
  end(): void {
    this.open = false;
    this.fill();
  }

  get acked(): number {
    return this.stats.acked;
  }

  run(): Promise<PublisherStats> {
    const client = mqtt.connect(this.url, {
      clientId: this.o.clientId,
      ...(this.o.username !== undefined && { username: this.o.username, password: this.o.password }),
      clean: true,
      reconnectPeriod: 300, // ms
      connectTimeout: 3_000, // ms
      keepalive: 5, // s
    });
    this.client = client;
    client.on('error', () => {});
    client.on('connect', () => {
      client.subscribe(`wh/${this.wh}/dev/+/ack`, { qos: 1 });
      for (const f of this.inflight.values()) this.send(f.e); // after a reconnect: everything unconfirmed again
      this.fill();
    });
    client.on('message', (topic, payload) => {
      const device = topic.split('/')[3] as string;
      const ack = JSON.parse(payload.toString()) as Ack;
      const key = `${device}/${ack.id}`;
      if (!this.inflight.delete(key)) return;
      this.stats.acked++;
      this.stats.statuses[ack.status] = (this.stats.statuses[ack.status] ?? 0) + 1;
      this.o.onAck?.(this.stats.acked);
      this.fill();
    });
    this.timer = setInterval(() => {
      const now = Date.now();
      if (!client.connected) return;
      for (const f of this.inflight.values()) if (now - f.sentAt > (this.o.resendAfterMs ?? 3_000)) this.send(f.e);
    }, 500);
    return new Promise((resolve) => {
      this.done = () => resolve(this.stats);
      this.fill();
    });
  }

  private send(e: OutgoingEvent): void {
    this.inflight.set(`${e.device}/${e.id}`, { e, sentAt: Date.now() });
    this.stats.sends++;
    this.client?.publish(`wh/${this.wh}/dev/${e.device}/event`, e.payload, { qos: 1 }, () => {});
  }

  private fill(): void {
    if (!this.client?.connected) return;
    while (this.inflight.size < (this.o.window ?? 500) && this.next < this.events.length)
      this.send(this.events[this.next++] as OutgoingEvent);
    if (!this.open && this.next >= this.events.length && this.inflight.size === 0 && this.done) {
      const d = this.done;
      this.done = null;
      d();
    }
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.client?.endAsync(true);
  }
}
