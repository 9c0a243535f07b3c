import fs from 'node:fs/promises';
import path from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { Registry, collectDefaultMetrics } from 'prom-client';
import {
  createBroker,
  loadDevices,
  type AuthedClient,
  type DeviceLimits,
  type DevicePublish,
  type StockwireBroker,
  type TlsListenerOptions,
  orderedPublisher,
  type BrokerPublisher,
} from '../broker/index.js';
import {
  ErrorCode,
  forwardedPayload,
  parseEvent,
  parseEventTopic,
  topics,
  type Ack,
  type Alert,
  type LinkStatus,
  type ValidationError,
} from '../protocol/index.js';
import type { ClientTls } from '../runtime/tls.js';
import {
  DEFAULT_DEVICE_SHARE,
  DEFAULT_LINK_BATCH_MAX_BYTES,
  DEFAULT_LINK_BATCH_MAX_EVENTS,
  deviceShareBytes,
  type DeviceShare,
} from './config.js';
import { Forwarder } from './forwarder.js';
import { DownlinkMirror } from './mirror.js';
import { createEdgeMetrics, type EdgeMetrics } from './metrics.js';
import { OutboxDeviceShareError, OutboxFullError, type Outbox, type OutboxEntry } from './outbox/outbox.js';
import { SqliteOutbox } from './outbox/sqlite.js';

export interface EdgeOptions {
  wh: string;
  devicesFile: string;
  dataDir: string;
  host: string;
  mqttPort: number;
  wsPort: number;
  httpPort: number;
  tls?: TlsListenerOptions;
  centralUrl: string;
  centralUsername?: string;
  centralPassword?: string;
  centralTls?: ClientTls;
  outboxMaxBytes: number;
  /** what one device may hold of the outbox; default DEFAULT_DEVICE_SHARE */
  outboxDeviceShare?: DeviceShare;
  forwardWindow: number;
  resendAfterMs: number;
  /** events per batch on the link, once central says it takes batches; 0: single events only. Default 500 */
  linkBatchMaxEvents?: number;
  /** bytes of a batch payload at most (central's bound applies too). Default 64 KiB */
  linkBatchMaxBytes?: number;
  keepalive: number;
  /** per-device limits of the edge's broker; each one absent takes its default */
  limits?: Partial<DeviceLimits>;
  log: Logger;
  /** The edge cannot go on (its outbox is unusable): main exits so a supervisor restarts it. Default: log only. */
  onFatal?: (err: Error) => void;
  /** more routes on the HTTP server (the live display), added once the broker's ports are known */
  httpRoutes?: (app: FastifyInstance, ports: { mqtt: number; ws: number }) => void;
}

const alertOf = (kind: string, wh: string, message: string): Alert => ({
  kind,
  wh,
  message,
  at: new Date().toISOString(),
});

const STATUS_EVERY_MS = 5_000; // the local status topic carries the backlog; refreshed this often
const ALERT_EVERY_MS = 60_000; // an outbox-full (or device-share) alert at most this often

/**
 * `stockwire edge`: one warehouse's Aedes broker for devices, the durable outbox and the bridge to
 * central. A device's PUBACK goes out only after its event is fsynced in the outbox (CONTRACT 7).
 */
export class Edge {
  readonly registry = new Registry();
  private readonly metrics: EdgeMetrics;
  private broker: StockwireBroker | null = null;
  private local: BrokerPublisher | null = null; // the edge's own publishes on its broker, in order
  private outbox: SqliteOutbox | null = null;
  private mirror: DownlinkMirror | null = null;
  private forwarder: Forwarder | null = null;
  private http: FastifyInstance | null = null;
  private statusTimer: NodeJS.Timeout | null = null;
  private linkSince = new Date().toISOString();
  private readonly lastAlert = new Map<string, number>(); // alert kind → epoch ms it was last raised
  private readonly deviceMaxBytes: number;
  private ready = false;

  constructor(private readonly o: EdgeOptions) {
    const share = deviceShareBytes(o.outboxDeviceShare ?? DEFAULT_DEVICE_SHARE, o.outboxMaxBytes);
    if (share.problem !== null) throw new RangeError(share.problem);
    this.deviceMaxBytes = share.bytes;
    // Every series of this edge carries its warehouse, so dashboards and alerts group by `wh`.
    this.registry.setDefaultLabels({ wh: o.wh });
    collectDefaultMetrics({ register: this.registry });
    this.metrics = createEdgeMetrics(this.registry);
  }

  async start(): Promise<{ mqtt: number; ws: number; http: number; mqtts?: number }> {
    const { o } = this;
    const log = o.log;
    const devices = await loadDevices(o.devicesFile);
    await fs.mkdir(o.dataDir, { recursive: true });
    this.outbox = await SqliteOutbox.open({
      path: path.join(o.dataDir, `outbox-${o.wh}.db`),
      maxBytes: o.outboxMaxBytes,
      maxDeviceBytes: this.deviceMaxBytes,
      // Every event would be refused from now on; a restart reopens the file, which holds every event acknowledged.
      onFailure: (err) => {
        log.fatal({ err: err.message }, 'outbox failed: the edge cannot accept events until it restarts');
        o.onFatal?.(err);
      },
    });
    this.metrics.outboxMaxBytes.set(o.outboxMaxBytes);
    this.metrics.deviceMaxBytes.set(this.deviceMaxBytes);
    const backlog = this.outbox.stats();
    if (backlog.events > 0)
      log.info(
        { events: backlog.events, bytes: backlog.bytes },
        'outbox holds unconfirmed events; they are sent first',
      );

    this.broker = createBroker({
      role: 'edge',
      edgeWarehouse: o.wh,
      devices,
      host: o.host,
      mqttPort: o.mqttPort,
      wsPort: o.wsPort,
      ...(o.tls && { tls: o.tls }),
      ...(o.limits && { limits: o.limits }),
      registry: this.registry,
      log,
      beforePuback: (client, packet) => this.storeBeforePuback(client, packet),
    });
    // Every publish of the edge's own (mirror, alerts, status) goes through one ordered publisher, so that aedes
    // cannot drop a retained one behind a plain one (moscajs/aedes#955; broker/ordered-publisher.ts).
    const local = orderedPublisher(this.broker.aedes);
    this.local = local;
    const mirror = new DownlinkMirror({
      store: this.outbox,
      publish: (topic, payload, retain) => local.publish(topic, payload, retain).catch(() => {}),
      metrics: this.metrics,
      log,
    });
    this.mirror = mirror;

    this.forwarder = new Forwarder({
      outbox: this.outbox,
      wh: o.wh,
      centralUrl: o.centralUrl,
      ...(o.centralUsername !== undefined && { username: o.centralUsername, password: o.centralPassword }),
      ...(o.centralTls && { tls: o.centralTls }),
      window: o.forwardWindow,
      resendAfterMs: o.resendAfterMs,
      keepalive: o.keepalive,
      batchMaxEvents: o.linkBatchMaxEvents ?? DEFAULT_LINK_BATCH_MAX_EVENTS,
      batchMaxBytes: o.linkBatchMaxBytes ?? DEFAULT_LINK_BATCH_MAX_BYTES,
      metrics: this.metrics,
      log,
      // Downlink mirror: stock and shelf topics stay retained here (and on disk), so displays keep the last known values offline.
      onMessage: (topic, payload) => mirror.offer(topic, payload),
      onLink: () => {
        this.linkSince = new Date().toISOString();
        this.publishStatus();
      },
    });
    const ports = await this.broker.start();
    // `offline` first, then the values kept from before a restart: a display never sees them without knowing they are stale.
    this.publishStatus();
    await mirror.restore();
    this.forwarder.start();
    this.statusTimer = setInterval(() => this.publishStatus(), STATUS_EVERY_MS);

    this.http = Fastify({ logger: false });
    this.http.get('/healthz', async () => ({ status: 'ok' }));
    this.http.get('/readyz', async (_req, reply) =>
      this.ready
        ? { status: 'ready', central: this.forwarder?.linkUp ? 'online' : 'offline' }
        : reply.status(503).send({ status: 'not ready' }),
    );
    this.http.get('/metrics', async (_req, reply) => {
      this.refreshBacklog();
      return reply.type(this.registry.contentType).send(await this.registry.metrics());
    });
    o.httpRoutes?.(this.http, { mqtt: ports.mqtt, ws: ports.ws ?? 0 });
    await this.http.listen({ host: o.host, port: o.httpPort });
    const address = this.http.server.address();
    this.ready = true;
    return {
      mqtt: ports.mqtt,
      ws: ports.ws ?? 0,
      http: typeof address === 'object' && address ? address.port : o.httpPort,
      ...(ports.mqtts !== undefined && { mqtts: ports.mqtts }),
    };
  }

  /** The PUBACK gate (broker/puback-gate.ts) at the edge: validate, stamp, append durably; the PUBACK follows when this resolves. */
  private async storeBeforePuback(client: AuthedClient, packet: DevicePublish): Promise<void> {
    const outbox = this.outbox as Outbox;
    const where = parseEventTopic(packet.topic);
    if (!where) throw new Error('not an event topic');
    const receivedAt = Date.now();
    const parsed = parseEvent(packet.payload, { wh: where.wh, device: where.device, receivedAt });
    // Over 8 KiB no payload can ever become valid: kept as a dead letter (its first 8 KiB) and answered here, instead
    // of taking up to 64 KiB of the outbox for central to refuse hours later, after an outage it helped fill.
    if (!parsed.ok && parsed.error.code === ErrorCode.payloadTooLarge)
      return this.refuseForGood(client, where.device, packet, parsed.error, receivedAt);
    // No trustworthy event time (none, or too far ahead): the edge's receipt time is the event time (CONTRACT 3),
    // fixed now so a replay hours later still carries it. Central trusts the time an edge forwards.
    const payload = forwardedPayload(packet.payload, parsed);
    let stored: OutboxEntry;
    try {
      stored = await outbox.append({
        device: where.device,
        eventId: parsed.ok ? parsed.event.id : parsed.id,
        topic: packet.topic,
        payload,
        receivedAt,
      });
    } catch (err) {
      if (err instanceof OutboxFullError) {
        this.metrics.refused.inc({ reason: 'outbox_full' });
        this.alert(
          'outbox-full',
          `${err.message}; devices keep their events until there is room`,
          { maxBytes: this.o.outboxMaxBytes },
          'outbox full: refusing new events',
        );
      } else if (err instanceof OutboxDeviceShareError) {
        this.metrics.refused.inc({ reason: 'device_share' });
        this.alert(
          'device-share',
          `${err.message}; it keeps its events until central confirms some, other devices go on`,
          { device: err.device, maxDeviceBytes: err.maxDeviceBytes },
          'a device holds its share of the outbox: refusing its new events',
        );
      } else this.metrics.refused.inc({ reason: 'outbox_error' });
      throw err; // no PUBACK: the device keeps the event and sends it again
    }
    this.metrics.accepted.inc({ valid: parsed.ok ? 'yes' : 'no' });
    // Any other invalid payload (at most 8 KiB, like a valid one) is stored and forwarded for central's dead-letter
    // store. Its `rejected` ack is central's, mirrored here like every other ack: one answer per payload.
    this.forwarder?.offer(stored);
  }

  /**
   * A payload refused for good at the edge: a dead letter in the outbox file (fsynced like an event, so the PUBACK
   * that follows never answers a payload the edge could forget), then the one `rejected` ack it gets, since central
   * never sees it. The id is not read: nothing beyond 8 KiB is parsed, as at central.
   */
  private async refuseForGood(
    client: AuthedClient,
    device: string,
    packet: DevicePublish,
    error: ValidationError,
    receivedAt: number,
  ): Promise<void> {
    try {
      await (this.outbox as Outbox).deadLetter({
        device,
        topic: packet.topic,
        payload: packet.payload,
        code: error.code,
        reason: error.message,
        source: client.device.id,
        receivedAt,
      });
    } catch (err) {
      this.metrics.refused.inc({ reason: 'outbox_error' });
      throw err; // no PUBACK: the device sends it again, and it is refused again once the outbox works
    }
    this.metrics.deadLetters.inc({ code: error.code });
    const ack: Ack = { id: null, status: 'rejected', error: { code: error.code, message: error.message } };
    this.publishLocal(topics.ack(this.o.wh, device), JSON.stringify(ack));
    this.publishLocal(
      topics.alert(this.o.wh, 'dead-letter'),
      JSON.stringify(
        alertOf('dead-letter', this.o.wh, `event from ${device} rejected: ${error.code}: ${error.message}`),
      ),
    );
  }

  /** A plain (not retained) publish on the edge broker. */
  private publishLocal(topic: string, payload: string): void {
    void this.local?.publish(topic, payload, false).catch(() => {});
  }

  /** An alert of this kind, at most once per ALERT_EVERY_MS, logged as an error. */
  private alert(kind: string, message: string, details: Record<string, unknown>, logLine: string): void {
    const now = Date.now();
    if (now - (this.lastAlert.get(kind) ?? 0) < ALERT_EVERY_MS) return;
    this.lastAlert.set(kind, now);
    this.o.log.error(details, logLine);
    // On the edge broker only: a gateway may not publish alerts at central (CONTRACT 5). Central and
    // Prometheus see the backlog in wh/{wh}/status and in stockwire_edge_events_refused_total.
    this.publishLocal(topics.alert(this.o.wh, kind), JSON.stringify(alertOf(kind, this.o.wh, message)));
  }

  private refreshBacklog(): void {
    const s = this.outbox?.stats();
    if (!s) return;
    this.metrics.largestDeviceBytes.set(this.outbox?.largestDevice()?.bytes ?? 0);
    this.metrics.backlogEvents.set(s.events);
    this.metrics.backlogBytes.set(s.bytes);
    this.metrics.oldestAge.set(s.oldestReceivedAt === null ? 0 : (Date.now() - s.oldestReceivedAt) / 1000);
  }

  private publishStatus(): void {
    this.refreshBacklog();
    const status: LinkStatus = {
      central: this.forwarder?.linkUp ? 'online' : 'offline',
      since: this.linkSince,
      backlog: this.outbox?.stats().events ?? 0,
    };
    void this.local?.publish(topics.status(this.o.wh), JSON.stringify(status), true).catch(() => {});
  }

  /**
   * A certificate rotation (SIGHUP): the device listener's certificate, key and client CA for new
   * connections, and the credentials the next connection to central uses. Throws, changing nothing, when
   * the listener's files are refused or the part they replace is not configured.
   */
  reloadTls(tls: { listener?: Pick<TlsListenerOptions, 'cert' | 'key' | 'ca'>; central?: ClientTls }): void {
    if (this.broker === null || this.forwarder === null) throw new Error('the edge is not running');
    if (tls.listener !== undefined) this.broker.reloadTls(tls.listener);
    if (tls.central !== undefined) this.forwarder.setTls(tls.central);
  }

  /** Stops accepting (devices keep what they have not had a PUBACK for), flushes, closes. */
  async stop(): Promise<void> {
    this.ready = false;
    if (this.statusTimer) clearInterval(this.statusTimer);
    await this.http?.close();
    await this.broker?.stop();
    await this.forwarder?.stop();
    await this.mirror?.stop(); // the values central sent until the link closed, before the file closes
    await this.outbox?.close();
  }
}
