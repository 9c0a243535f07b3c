import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { IClientOptions, MqttClient } from 'mqtt';
import { coalesceWrites } from '../runtime/coalesce.js';
import { redactUrl } from '../runtime/logger.js';
import { centralClient } from '../runtime/central-client.js';
import { reconnectWithTls, type ClientTls } from '../runtime/tls.js';
import {
  BATCH_VERSION,
  encodeBatch,
  parseAckTopic,
  parseBatchAckMessage,
  topics,
  type Ack,
  type BatchAckV1,
  type LinkStatus,
} from '../protocol/index.js';
import { confirmedBy, pack, type BatchLimits, type Outgoing } from './batches.js';
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
  /** events per batch at most once central has said it takes batches; 0 or absent: single events only */
  batchMaxEvents?: number;
  /** bytes of a batch payload at most (central's own bound applies too); required with batchMaxEvents */
  batchMaxBytes?: number;
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
  /** the batch it was last sent in; absent: sent alone */
  batch?: string;
}

const CONFIRM_DELAY_MS = 5; // confirmations within this window share one outbox transaction
const RESEND_CHECK_MS = 1_000;
const READ_RETRY_MS = 1_000; // after a failed outbox read
const STOP_STATUS_WAIT_MS = 1_000; // how long a clean stop waits for central to take the `offline` status
// After the SUBACK of the batch-ack topic, how long the edge waits for central's hello before it sends single events:
// stockwire central sends it right behind the SUBACK; a broker without one (Mosquitto and `stockwire processor`)
// never does, and costs this once per connection. A late hello still switches the link to batches.
const HELLO_WAIT_MS = 1_000;

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
  /**
   * The outbox may hold events after the cursor that nothing is about to send: a backlog at (re)connect, an event
   * offer() could not send from memory, a pass that stopped at a full window. False only after a read found
   * nothing and no offer fell back since that read began: an ack then needs no read, the next event is offered.
   */
  private unread = true;
  /** counts connections: rows read for an older one belong to a pass that a reconnect started over */
  private epoch = 0;
  private connected = false;
  private stopped = false;
  /** null until central's hello on this connection: single events, as to any third-party broker */
  private batching: BatchLimits | null = null;
  private readonly batches = new Map<string, OutboxEntry[]>(); // batch name → its events, in order, until its batch-ack
  // Batch names are unique per process, so a batch-ack for a batch of a killed predecessor can never match one of ours.
  private readonly batchPrefix = randomBytes(6).toString('hex');
  private batchCount = 0;
  private offered: OutboxEntry[] = []; // taken by offer() in batch mode, sent together at the end of this turn
  private offerFlush: NodeJS.Immediate | null = null;
  /** from connect until central's hello or HELLO_WAIT_MS after the SUBACK: a backlog then leaves in batches */
  private awaitingHello = false;
  private helloTimer: NodeJS.Timeout | null = null;

  constructor(private readonly o: ForwarderOptions) {}

  /** TLS credentials for the next connection to central (a rotation); the link that is up keeps its own. */
  setTls(tls: ClientTls): void {
    if (this.client) reconnectWithTls(this.client, tls);
  }

  get linkUp(): boolean {
    return this.connected;
  }

  /** The batch-ack topic of this edge's gateway credential; null when it cannot batch (no credential, or turned off). */
  private get batchAckTopic(): string | null {
    return (this.o.batchMaxEvents ?? 0) > 0 && this.o.username !== undefined
      ? topics.batchAck(this.o.wh, this.o.username)
      : null;
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
      // MQTT.js writes the PUBACK of every QoS 1 message (acks, batch-acks, alerts) in a tick of its own: one writev per
      // turn instead.
      if (this.coalesced !== client.stream) {
        this.coalesced = client.stream;
        coalesceWrites(client.stream);
      }
      this.connected = true;
      this.epoch++;
      this.inflight.clear();
      this.byKey.clear();
      this.cursor = 0;
      this.unread = true; // every unconfirmed event is read again, oldest first
      // Each connection learns again whether central takes batches: it may be another central, or a broker without one.
      this.batching = null;
      this.batches.clear();
      this.offered = [];
      o.metrics.linkBatching.set(0);
      this.awaitingHello = this.batchAckTopic !== null;
      if (this.helloTimer) clearTimeout(this.helloTimer);
      this.helloTimer = null;
      const epoch = this.epoch;
      o.metrics.link.set(1);
      o.metrics.linkChanges.inc({ state: 'up' });
      o.log.info({ url: redactUrl(o.centralUrl) }, 'connected to central');
      const batchAck = this.batchAckTopic;
      // Stock and shelf at QoS 0: each value is superseded by the next, TCP loses nothing within a connection, and
      // this clean session subscribes again on every reconnect, when central sends every retained value anew. QoS 1
      // cost a PUBACK here and an in-flight record at central per value, about one per event. (CONTRACT §2 lists them
      // at QoS 1, as central publishes them; the edge taking them at 0 is proposed there.)
      client.subscribe(
        {
          [topics.ack(o.wh, '+')]: { qos: 1 },
          [`wh/${o.wh}/stock/#`]: { qos: 0 },
          [`wh/${o.wh}/shelf/#`]: { qos: 0 },
          'stock/#': { qos: 0 },
          [topics.alert(o.wh, '+')]: { qos: 1 },
          // central answers this subscription with its hello; a broker without stockwire central says nothing
          ...(batchAck === null ? {} : { [batchAck]: { qos: 1 as const } }),
        },
        (err, granted) => {
          if (err) o.log.error({ err: err.message }, 'subscribing at central failed');
          if (!this.awaitingHello || epoch !== this.epoch) return;
          // Refused (a central that predates batches): single events at once. Granted: the hello is on its way, or
          // this broker has none to send. Not in `granted` on a reconnect: MQTT.js subscribed again by itself.
          const batchGrant = granted?.find((g) => g.topic === batchAck);
          if (err || batchGrant?.qos === 128) return this.helloOver();
          this.helloTimer = setTimeout(() => this.helloOver(), HELLO_WAIT_MS);
        },
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
    this.resendTimer = setInterval(() => this.resendSilent(), RESEND_CHECK_MS);
  }

  /**
   * An event just appended to the outbox: sent from memory when it is the next in line (nothing older
   * waits to be read, and the window has room), so the steady state reads nothing back from the outbox.
   * Otherwise it waits there: the pump reads the outbox from the cursor, oldest first, as after an outage,
   * now or when an ack makes room.
   */
  offer(entry: OutboxEntry): void {
    if (
      !this.pumping &&
      !this.awaitingHello &&
      this.connected &&
      !this.stopped &&
      entry.seq === this.cursor + 1 &&
      this.inflight.size + this.offered.length < this.o.window
    ) {
      this.cursor = entry.seq;
      if (this.batching === null) {
        this.send(entry, 0);
        return;
      }
      // The outbox releases a group commit's events in one turn: they leave together, in one batch.
      this.offered.push(entry);
      this.offerFlush ??= setImmediate(() => {
        this.offerFlush = null;
        const offered = this.offered;
        this.offered = [];
        if (this.connected) this.dispatch(offered.map((entry) => ({ entry, attempts: 0 })));
      });
      return;
    }
    this.unread = true;
    this.pump();
  }

  /** No hello (yet): send what waits, in batches if the hello came, else one by one. */
  private helloOver(): void {
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.helloTimer = null;
    if (!this.awaitingHello) return;
    this.awaitingHello = false;
    this.pump();
  }

  private pump(): void {
    if (this.awaitingHello) return; // helloOver() pumps
    if (this.pumping) {
      this.pumpAgain = true; // new events may have been committed after this pass read the outbox
      return;
    }
    if (!this.connected || this.stopped) return;
    this.pumping = true;
    void this.fill()
      .catch((err: Error) => {
        // The outbox is durable: nothing is lost, try again shortly.
        this.unread = true;
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
    while (this.connected && !this.stopped && this.inflight.size + this.offered.length < this.o.window) {
      const room = this.o.window - this.inflight.size - this.offered.length;
      // Cleared before the read, not after: an offer that falls back while the read waits sets it again.
      this.unread = false;
      const read = this.o.outbox.read(this.cursor, Math.min(500, room));
      const entries = read instanceof Promise ? await read : read;
      // The link dropped and came back while the read waited (the outbox thread behind slow fsyncs): the reconnect
      // started over from the oldest unconfirmed event (cursor 0), and its pump runs when this pass ends. Sending
      // these rows and moving the cursor past them would leave the older unconfirmed events unsent on this link.
      if (epoch !== this.epoch || !this.connected) {
        this.unread = true; // as a connect sets it: its pass reads again from the oldest unconfirmed event
        return;
      }
      if (entries.length === 0) return;
      this.unread = true; // more may follow these rows: read again, now if the window has room, else on an ack
      this.dispatch(entries.map((entry) => ({ entry, attempts: 0 })));
      this.cursor = (entries[entries.length - 1] as OutboxEntry).seq;
    }
  }

  /** Sends events in this order: in batches once central has said it takes them, else one by one. */
  private dispatch(items: Outgoing[]): void {
    const limits = this.batching;
    if (limits === null) {
      for (const { entry, attempts } of items) this.send(entry, attempts);
      return;
    }
    for (const send of pack(items, limits))
      if ('alone' in send) this.send(send.alone.entry, send.alone.attempts);
      else this.sendBatch(this.nextBatchName(), send.batch);
  }

  private nextBatchName(): string {
    return `${this.batchPrefix}-${++this.batchCount}`;
  }

  private sendBatch(name: string, batch: (Outgoing & { text: string })[]): void {
    const client = this.client;
    const gateway = this.o.username;
    if (!client || gateway === undefined) return;
    const now = Date.now();
    for (const { entry, attempts } of batch) this.track(entry, { entry, sentAt: now, attempts, batch: name });
    this.batches.set(
      name,
      batch.map((b) => b.entry),
    );
    const resends = batch.filter((b) => b.attempts > 0).length;
    if (resends < batch.length) this.o.metrics.sent.inc({ attempt: 'first' }, batch.length - resends);
    if (resends > 0) this.o.metrics.sent.inc({ attempt: 'resend' }, resends);
    this.o.metrics.batchesSent.inc({ attempt: resends === 0 ? 'first' : 'resend' });
    this.o.metrics.batchEvents.observe(batch.length);
    // Its PUBACK proves nothing (CONTRACT 7): only the batch-ack, after the commit, releases the events.
    client.publish(
      topics.batch(this.o.wh, gateway),
      encodeBatch(
        name,
        batch.map((b) => b.text),
      ),
      { qos: 1 },
    );
  }

  /** Records an event as in flight, and under its key for the ack that confirms it. */
  private track(entry: OutboxEntry, flight: InFlight): void {
    this.inflight.set(entry.seq, flight);
    if (entry.eventId !== null) {
      const key = `${entry.device}/${entry.eventId}`;
      const seqs = this.byKey.get(key) ?? new Set<number>();
      seqs.add(entry.seq);
      this.byKey.set(key, seqs);
    }
  }

  private send(entry: OutboxEntry, attempts: number): void {
    const client = this.client;
    if (!client) return;
    this.track(entry, { entry, sentAt: Date.now(), attempts });
    this.o.metrics.sent.inc({ attempt: attempts === 0 ? 'first' : 'resend' });
    client.publish(entry.topic, entry.payload, { qos: 1 }, (err) => {
      // A payload with no readable event id can never be matched to an ack: the broker's PUBACK
      // is all the confirmation there is (central's Aedes sends it only after the commit).
      if (!err && entry.eventId === null && this.inflight.has(entry.seq)) this.confirm([entry.seq]);
    });
  }

  private onMessage(topic: string, payload: Buffer): void {
    if (topic === this.batchAckTopic) {
      this.onBatchAck(payload);
      return;
    }
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

  /** Central's hello, a batch's commit ack (fanned out as per-device acks on this edge's broker) or a refusal. */
  private onBatchAck(payload: Buffer): void {
    const { o } = this;
    const message = parseBatchAckMessage(payload);
    if (message === null) {
      o.metrics.batchAcks.inc({ result: 'invalid' });
      o.log.warn({ bytes: payload.length }, 'unreadable message on the batch-ack topic; ignored');
      return;
    }
    if ('hello' in message) {
      const { hello } = message;
      // A central that takes only other versions: single events at once, rather than after HELLO_WAIT_MS.
      if (!hello.versions.includes(BATCH_VERSION) || !o.batchMaxEvents) {
        this.helloOver();
        return;
      }
      this.batching = {
        maxEvents: Math.min(o.batchMaxEvents, hello.maxEvents),
        maxBytes: Math.min(o.batchMaxBytes ?? hello.maxBytes, hello.maxBytes),
      };
      o.metrics.linkBatching.set(1);
      o.log.info(this.batching, 'central takes batches: events now go in batches');
      this.helloOver();
      return;
    }
    if ('error' in message) {
      // Central could not read a batch of ours (it kept it as a dead letter). Its events are sent again one by one,
      // which any central reads, and this connection sends no more batches.
      o.metrics.batchAcks.inc({ result: 'refused' });
      o.log.error(
        { batch: message.batch, error: message.error },
        'central refused a batch: single events on this link',
      );
      this.batching = null;
      o.metrics.linkBatching.set(0);
      for (const f of [...this.inflight.values()].sort((a, b) => a.entry.seq - b.entry.seq))
        if (f.batch !== undefined) this.send(f.entry, f.attempts + 1);
      this.batches.clear();
      return;
    }
    this.onBatchCommitted(message);
  }

  private onBatchCommitted(ack: BatchAckV1): void {
    const { o } = this;
    const entries = this.batches.get(ack.batch);
    // Sent on an earlier connection, or resent since under another name: the later send is answered too.
    if (entries === undefined) return void o.metrics.batchAcks.inc({ result: 'unknown' });
    this.batches.delete(ack.batch);
    const matched = confirmedBy(entries, ack.acks);
    if (matched === null) {
      o.metrics.batchAcks.inc({ result: 'invalid' });
      o.log.error(
        { batch: ack.batch, events: entries.length, acks: ack.acks.length },
        'a batch-ack that does not match its batch; its events are sent again',
      );
      return;
    }
    o.metrics.batchAcks.inc({ result: 'ok' });
    for (const { entry, ack: a } of matched.outOfStep)
      o.log.error({ batch: ack.batch, device: entry.device, id: entry.eventId, acked: a.id }, 'batch-ack out of step');
    const seqs: number[] = [];
    for (const { entry, ack: a } of matched.confirmed) {
      seqs.push(entry.seq);
      if (entry.eventId !== null) {
        const key = `${entry.device}/${entry.eventId}`;
        for (const s of this.byKey.get(key) ?? []) if (s !== entry.seq) seqs.push(s);
        this.byKey.delete(key);
      }
      o.onMessage(topics.ack(o.wh, entry.device), Buffer.from(JSON.stringify(a)));
    }
    if (seqs.length > 0) this.confirm(seqs);
  }

  private confirm(seqs: number[]): void {
    for (const s of seqs) this.inflight.delete(s);
    this.confirmQueue.push(...seqs);
    if (!this.confirmTimer) {
      this.confirmTimer = setTimeout(() => void this.flushConfirms(), CONFIRM_DELAY_MS);
    }
    // The room this makes is for events waiting in the outbox, if any; otherwise the next one is offered from memory,
    // and a read here would queue behind the outbox's fsync and make that offer fall back to reading it too.
    if (this.unread) this.pump();
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
    const due: Outgoing[] = [];
    for (const f of this.inflight.values()) {
      const wait = this.o.resendAfterMs * 2 ** Math.min(f.attempts, 4);
      if (now - f.sentAt <= wait) continue;
      // A batch's events were sent together, so they are due together: the batch is sent again under a new name,
      // and a late ack of the old one is ignored (the new one's confirms them).
      if (f.batch !== undefined) this.batches.delete(f.batch);
      due.push({ entry: f.entry, attempts: f.attempts + 1 });
    }
    // Oldest first, as they were sent: a device's events keep their order.
    this.dispatch(due.sort((a, b) => a.entry.seq - b.entry.seq));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.resendTimer) clearInterval(this.resendTimer);
    if (this.offerFlush) clearImmediate(this.offerFlush);
    if (this.helloTimer) clearTimeout(this.helloTimer);
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
