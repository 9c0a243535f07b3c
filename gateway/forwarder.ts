import type { Logger } from 'pino';
import type { IClientOptions, MqttClient } from 'mqtt';
import { coalesceWrites } from '../runtime/coalesce.js';
import { redactUrl } from '../runtime/logger.js';
import { centralClient } from '../runtime/central-client.js';
import { reconnectWithTls, type ClientTls } from '../runtime/tls.js';
import { parseAckTopic, topics, type Ack, type LinkStatus } from '../protocol/index.js';
import type { EdgeMetrics } from './metrics.js';
import { NoReplayStore } from './no-replay-store.js';
import type { Outbox, OutboxEntry } from './outbox/outbox.js';
import { waitAtMost } from '../runtime/wait.js';

export interface ForwarderOptions {
  outbox: Outbox;
  wh: string;
  centralUrl: string;
  username?: string;
  password?: string;
  /** extra MQTT.js options (TLS: ca, cert, key, rejectUnauthorized) */
  tls?: Pick<IClientOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized'>;
  /** events in flight to central at most, waiting for their commit ack */
  window: number;
  /** ms without a commit ack before an event is sent again (doubles per attempt, up to 16×) */
  resendAfterMs: number;
  /** s between keep-alive pings: a silently dead link is noticed after 1.5× this */
  keepalive: number;
  metrics: EdgeMetrics;
  log: Logger;
  /** a message from central on a mirrored topic (stock, shelf, acks) */
  onMessage: (topic: string, payload: Buffer) => void;
  onLink: (up: boolean) => void;
}

interface InFlight {
  entry: OutboxEntry;
  sentAt: number;
  attempts: number;
}

const CONFIRM_DELAY_MS = 5; // confirmations within this window share one outbox transaction
const RESEND_CHECK_MS = 1_000;
const READ_RETRY_MS = 1_000; // after a failed outbox read
const STOP_STATUS_WAIT_MS = 1_000; // how long a clean stop waits for central to take the `offline` status

/**
 * Store-and-forward to central (DESIGN "Edge → central"): reads the outbox oldest first, keeps a
 * bounded window of events in flight, and deletes an event only on central's commit ack — never
 * on the central broker's PUBACK. Resends on reconnect and on silence.
 */
export class Forwarder {
  private client: MqttClient | null = null;
  private coalesced: unknown = null; // the connection whose writes are already coalesced
  private cursor = 0; // highest seq sent on this connection
  private readonly inflight = new Map<number, InFlight>(); // by seq
  private readonly byKey = new Map<string, Set<number>>(); // device/eventId → seqs (a device may resend one event)
  private confirmQueue: number[] = [];
  private confirmTimer: NodeJS.Timeout | null = null;
  private resendTimer: NodeJS.Timeout | null = null;
  private pumping = false;
  private pumpAgain = false;
  /** counts connections: rows read for an older one belong to a pass that a reconnect started over */
  private epoch = 0;
  private connected = false;
  private stopped = false;

  constructor(private readonly o: ForwarderOptions) {}

  /** TLS credentials for the next connection to central (a rotation); the link that is up keeps its own. */
  setTls(tls: ClientTls): void {
    if (this.client) reconnectWithTls(this.client, tls);
  }

  get linkUp(): boolean {
    return this.connected;
  }

  start(): void {
    const { o } = this;
    const status = (central: 'online' | 'offline'): string =>
      JSON.stringify({
        central,
        since: new Date().toISOString(),
        backlog: o.outbox.stats().events,
      } satisfies LinkStatus);
    const client = centralClient({
      url: o.centralUrl,
      clientId: o.username ?? `edge-${o.wh}`,
      ...(o.username !== undefined && { username: o.username, password: o.password }),
      ...(o.tls && { tls: o.tls }),
      keepalive: o.keepalive,
      session: {
        clean: true, // the outbox is the queue; every reconnect starts again from the oldest unconfirmed event
        // Displays at central learn of a lost link from this will (CONTRACT section 2).
        will: { topic: topics.status(o.wh), payload: Buffer.from(status('offline')), qos: 1, retain: true },
        queueQoSZero: false,
        outgoingStore: new NoReplayStore(), // a reconnect resends from the outbox, not from MQTT.js's store
      },
    });
    this.client = client;
    client.on('connect', () => {
      // MQTT.js writes the PUBACK of every ack and stock message in a tick of its own: one writev per turn instead.
      if (this.coalesced !== client.stream) {
        this.coalesced = client.stream;
        coalesceWrites(client.stream);
      }
      this.connected = true;
      this.epoch++;
      this.inflight.clear();
      this.byKey.clear();
      this.cursor = 0;
      o.metrics.link.set(1);
      o.metrics.linkChanges.inc({ state: 'up' });
      o.log.info({ url: redactUrl(o.centralUrl) }, 'connected to central');
      client.subscribe(
        [topics.ack(o.wh, '+'), `wh/${o.wh}/stock/#`, `wh/${o.wh}/shelf/#`, 'stock/#', topics.alert(o.wh, '+')],
        { qos: 1 },
        (err) => err && o.log.error({ err: err.message }, 'subscribing at central failed'),
      );
      client.publish(topics.status(o.wh), status('online'), { qos: 1, retain: true });
      o.onLink(true);
      this.pump();
    });
    client.on('close', () => {
      if (!this.connected) return;
      this.connected = false;
      o.metrics.link.set(0);
      o.metrics.linkChanges.inc({ state: 'down' });
      if (this.stopped) o.log.info('link to central closed: the edge is stopping');
      else o.log.warn('link to central lost; events stay in the outbox');
      o.onLink(false);
    });
    client.on('error', (err) => o.log.warn({ err: err.message }, 'central connection error'));
    client.on('message', (topic, payload) => this.onMessage(topic, payload));
    client.connect();
    this.resendTimer = setInterval(() => this.resendSilent(), RESEND_CHECK_MS);
  }

  /**
   * An event just appended to the outbox: sent from memory when it is the next in line (nothing older
   * waits to be read, and the window has room), so the steady state reads nothing back from the outbox.
   * Otherwise the pump reads the outbox from the cursor, oldest first, as after an outage.
   */
  offer(entry: OutboxEntry): void {
    if (
      !this.pumping &&
      this.connected &&
      !this.stopped &&
      entry.seq === this.cursor + 1 &&
      this.inflight.size < this.o.window
    ) {
      this.send(entry, 0);
      this.cursor = entry.seq;
      return;
    }
    this.pump();
  }

  private pump(): void {
    if (this.pumping) {
      this.pumpAgain = true; // new events may have been committed after this pass read the outbox
      return;
    }
    if (!this.connected || this.stopped) return;
    this.pumping = true;
    void this.fill()
      .catch((err: Error) => {
        // The outbox is durable: nothing is lost, try again shortly.
        this.o.log.error({ err: err.message }, 'reading the outbox failed; retrying');
        setTimeout(() => this.pump(), READ_RETRY_MS).unref();
      })
      .finally(() => {
        this.pumping = false;
        if (this.pumpAgain) {
          this.pumpAgain = false;
          this.pump();
        }
      });
  }

  private async fill(): Promise<void> {
    const epoch = this.epoch;
    while (this.connected && !this.stopped && this.inflight.size < this.o.window) {
      const read = this.o.outbox.read(this.cursor, Math.min(500, this.o.window - this.inflight.size));
      const entries = read instanceof Promise ? await read : read;
      // The link dropped and came back while the read waited (the outbox thread behind slow fsyncs): the reconnect
      // started over from the oldest unconfirmed event (cursor 0), and its pump runs when this pass ends. Sending
      // these rows and moving the cursor past them would leave the older unconfirmed events unsent on this link.
      if (epoch !== this.epoch || !this.connected) return;
      if (entries.length === 0) return;
      for (const e of entries) this.send(e, 0);
      this.cursor = (entries[entries.length - 1] as OutboxEntry).seq;
    }
  }

  private send(entry: OutboxEntry, attempts: number): void {
    const client = this.client;
    if (!client) return;
    this.inflight.set(entry.seq, { entry, sentAt: Date.now(), attempts });
    if (entry.eventId !== null) {
      const key = `${entry.device}/${entry.eventId}`;
      const seqs = this.byKey.get(key) ?? new Set<number>();
      seqs.add(entry.seq);
      this.byKey.set(key, seqs);
    }
    this.o.metrics.sent.inc({ attempt: attempts === 0 ? 'first' : 'resend' });
    client.publish(entry.topic, entry.payload, { qos: 1 }, (err) => {
      // A payload with no readable event id can never be matched to an ack: the broker's PUBACK
      // is all the confirmation there is (central's Aedes sends it only after the commit).
      if (!err && entry.eventId === null && this.inflight.has(entry.seq)) this.confirm([entry.seq]);
    });
  }

  private onMessage(topic: string, payload: Buffer): void {
    const acked = parseAckTopic(topic);
    if (acked !== null) {
      let ack: Ack | null = null;
      try {
        ack = JSON.parse(payload.toString()) as Ack;
      } catch {
        ack = null;
      }
      const seqs = ack?.id ? this.byKey.get(`${acked.device}/${ack.id}`) : undefined;
      if (seqs) {
        this.byKey.delete(`${acked.device}/${ack?.id}`);
        this.confirm([...seqs]);
      }
    }
    this.o.onMessage(topic, payload);
  }

  private confirm(seqs: number[]): void {
    for (const s of seqs) this.inflight.delete(s);
    this.confirmQueue.push(...seqs);
    if (!this.confirmTimer) {
      this.confirmTimer = setTimeout(() => void this.flushConfirms(), CONFIRM_DELAY_MS);
    }
    this.pump();
  }

  private async flushConfirms(): Promise<void> {
    this.confirmTimer = null;
    const seqs = this.confirmQueue;
    this.confirmQueue = [];
    if (seqs.length === 0) return;
    try {
      await this.o.outbox.confirm(seqs);
      this.o.metrics.confirmed.inc(seqs.length);
    } catch (err) {
      // Not deleted: they are sent again after a restart and central answers `duplicate`.
      this.o.log.error(
        { err: (err as Error).message, events: seqs.length },
        'removing confirmed events from the outbox failed',
      );
    }
  }

  private resendSilent(): void {
    if (!this.connected) return;
    const now = Date.now();
    for (const f of this.inflight.values()) {
      const wait = this.o.resendAfterMs * 2 ** Math.min(f.attempts, 4);
      if (now - f.sentAt > wait) this.send(f.entry, f.attempts + 1);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.resendTimer) clearInterval(this.resendTimer);
    // A clean DISCONNECT suppresses the will: say `offline` ourselves first.
    if (this.connected && this.client) {
      const offline: LinkStatus = {
        central: 'offline',
        since: new Date().toISOString(),
        backlog: this.o.outbox.stats().events,
      };
      const sent = this.client
        .publishAsync(topics.status(this.o.wh), JSON.stringify(offline), { qos: 1, retain: true })
        .catch(() => {});
      await waitAtMost(sent, STOP_STATUS_WAIT_MS); // a dead link never answers
    }
    await this.client?.endAsync(true).catch(() => {});
    // Acks keep arriving until the link is closed: confirm them all now, while the outbox is still open (the
    // edge closes it next), rather than on a timer that would fire after it and have them resent on restart.
    if (this.confirmTimer) clearTimeout(this.confirmTimer);
    this.confirmTimer = null;
    await this.flushConfirms();
  }
}
