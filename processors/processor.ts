import type { FastifyInstance } from 'fastify';
import type { IClientOptions, MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { redactUrl } from '../runtime/logger.js';
import { centralClient } from '../runtime/central-client.js';
import { reconnectWithTls, type ClientTls } from '../runtime/tls.js';
import { EVENT_FILTER, parseEventTopic, topics } from '../protocol/index.js';
import { openDatabase, type Database, type StorageSettings } from './db/open.js';
import { resolveApiToken } from './api-token.js';
import { createApi } from './http.js';
import { Ingest } from './ingest/ingest.js';
import type { Publisher } from './publish/publisher.js';
import { createIngestMetrics } from './metrics.js';
import { PubackGate } from './puback-gate.js';
import { monotonic } from './publish/monotonic-publisher.js';
import type { ReadModel } from './publish/read-model.js';
import { createReadModel } from './readmodel/redis.js';
import { createReservationMetrics } from './reservations/metrics.js';
import { commandConfig, ReservationService, type CommandSettings } from './reservations/service.js';

export interface ProcessorOptions extends CommandSettings, StorageSettings {
  databaseUrl?: string;
  redisUrl?: string;
  redisPrefix: string;
  dataDir: string;
  centralUrl: string;
  username?: string;
  password?: string;
  /** mqtts/wss: the CA central's certificate must chain to, and the client certificate presented (mutual TLS) */
  centralTls?: Pick<IClientOptions, 'ca' | 'cert' | 'key'>;
  /** distinguishes several processors with one credential; part of the persistent session's client id */
  instance: string;
  /** only these warehouses' events (partitioning); empty: every warehouse */
  warehouses: string[];
  /** MQTT 5 shared subscription group (`$share/{group}/…`), for several processors on Mosquitto, EMQX, HiveMQ */
  sharedGroup?: string;
  host: string;
  httpPort: number;
  batchMax: number;
  batchWaitMs: number;
  /** bearer token of HTTP writes; unset: the one in DATA_DIR/api-token, generated there on first start */
  apiToken?: string;
  /** bearer token of HTTP reads under /v1/; unset: reads are open */
  apiReadToken?: string;
  /** ms an HTTP read may wait for the database before it answers 503; unset: 5 s */
  apiReadTimeoutMs?: number;
  log: Logger;
}

/**
 * `stockwire processor`: the stock processor as a plain MQTT client of any central broker.
 *
 * MQTT.js hands over one QoS-1 message at a time and sends its PUBACK when `handleMessage`
 * calls back, so waiting there for the commit would allow one message per commit. Instead
 * `handleMessage` returns at once and the PUBACK itself is held until the commit that decided
 * the message (sent in arrival order, MQTT-4.6.0-2): a processor killed before its commit leaves
 * the message unacknowledged at the broker, which sends it again.
 */
export class StandaloneProcessor {
  readonly registry = new Registry();
  private db: Database | null = null;
  private client: MqttClient | null = null;
  private ingest: Ingest | null = null;
  private readModel: ReadModel | null = null;
  private api: FastifyInstance | null = null;
  private commands: ReservationService | null = null;
  private connected = false;
  private closing = false;
  private token: string | null = null;

  constructor(private readonly o: ProcessorOptions) {
    collectDefaultMetrics({ register: this.registry });
  }

  /** The bearer token HTTP writes need (configured, or kept in DATA_DIR/api-token); known once started. */
  get apiToken(): string {
    if (this.token === null) throw new Error('the processor has not started: the API token is not known yet');
    return this.token;
  }

  private filters(): string[] {
    const base = this.o.warehouses.length === 0 ? [EVENT_FILTER] : this.o.warehouses.map((wh) => topics.event(wh, '+'));
    return this.o.sharedGroup ? base.map((f) => `$share/${this.o.sharedGroup}/${f}`) : base;
  }

  async start(): Promise<{ http: number }> {
    const { o } = this;
    const log = o.log;
    const token = await resolveApiToken(o.apiToken, o.dataDir, log);
    this.token = token;
    this.db = await openDatabase({
      ...o,
      log,
      applicationName: 'stockwire-processor',
      readTimeoutMs: o.apiReadTimeoutMs,
    });
    const pool = this.db.pool;
    const metrics = createIngestMetrics(this.registry, o.warehouses);
    this.readModel = await createReadModel(o, this.db, metrics, log);

    const clientId = `${o.username ?? 'processor'}-${o.instance}`;
    const client = centralClient({
      url: o.centralUrl,
      clientId,
      ...(o.username !== undefined && { username: o.username }),
      ...(o.password !== undefined && { password: o.password }),
      ...(o.centralTls && { tls: o.centralTls }),
      keepalive: 15, // s
      session: {
        clean: false, // a persistent session: the broker keeps our subscription and unacknowledged messages while we restart
        protocolVersion: o.sharedGroup ? 5 : 4,
        ...(o.sharedGroup && { properties: { sessionExpiryInterval: 3600 } }), // s
      },
    });
    this.client = client;
    const publisher: Publisher = monotonic({
      publish: (topic, payload, retain) =>
        client.publishAsync(topic, payload, { qos: 1, retain }).then(() => undefined),
    });
    this.ingest = new Ingest({
      pool,
      publisher,
      readModel: this.readModel,
      metrics,
      log,
      maxBatch: o.batchMax,
      maxWaitMs: o.batchWaitMs,
    });
    const gate = new PubackGate(client); // PUBACKs wait for their batch's commit

    const ingest = this.ingest;
    const highWater = o.batchMax * 4; // events queued before we stop reading from the broker
    client.handleMessage = (packet, callback) => {
      // Stopping: never call back, so nothing more is read and nothing unread is acknowledged.
      if (this.closing) return;
      const where = packet.cmd === 'publish' ? parseEventTopic(packet.topic) : null;
      if (packet.cmd !== 'publish' || !where) return callback();
      const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
      const decided = ingest.submit({
        topic: packet.topic,
        payload,
        wh: where.wh,
        device: where.device,
        source: clientId,
        receivedAt: Date.now(),
      });
      const committed = decided.then(
        () => true,
        () => false,
      );
      if (packet.qos > 0 && packet.messageId !== undefined) gate.hold(packet.messageId, committed);
      if (ingest.pending < highWater) callback();
      else void committed.then(() => callback()); // backpressure: stop reading until the queue drains
    };
    // Ready only once subscribed: the first time, a broker drops what is published before a subscription exists.
    let subscribed: () => void = () => {};
    let refusedAtStart: (err: Error) => void = () => {};
    const firstSubscription = new Promise<void>((resolve, reject) => {
      subscribed = resolve;
      refusedAtStart = reject;
    });
    client.on('connect', () => {
      this.connected = true;
      log.info({ url: redactUrl(o.centralUrl), clientId }, 'connected to central');
      client.subscribe(this.filters(), { qos: 1 }, (err, granted) => {
        const refused = (granted ?? []).filter((g) => g.qos === 128).map((g) => g.topic);
        if (err || refused.length > 0) {
          const reason = err ? err.message : `central refused ${refused.join(', ')}`;
          log.error({ reason }, 'subscribing at central failed');
          // At start this is a configuration problem (credential, ACL): fail instead of waiting forever.
          refusedAtStart(new Error(`subscribing at central failed: ${reason}`));
          return;
        }
        subscribed();
      });
    });
    client.on('close', () => {
      if (this.connected) log.warn('connection to central lost');
      this.connected = false;
      gate.connectionClosed();
    });
    client.on('error', (err) => log.warn({ err: err.message }, 'central connection error'));
    await firstSubscription;

    // Reservations and transfers over HTTP here too: every instance decides in the one database.
    this.commands = new ReservationService(
      { pool, publisher, readModel: this.readModel, log, metrics: createReservationMetrics(this.registry) },
      commandConfig(o),
    );
    this.commands.start();
    const tokens = { write: token, ...(o.apiReadToken !== undefined && { read: o.apiReadToken }) };
    this.api = createApi({
      pool: this.db.readPool,
      readModel: this.readModel,
      commands: this.commands,
      registry: this.registry,
      tokens,
      storage: this.db.schema.storage,
      log,
      ready: async () => this.connected && ingest.databaseHealthy,
    });
    await this.api.listen({ host: o.host, port: o.httpPort });
    const address = this.api.server.address();
    return { http: typeof address === 'object' && address ? address.port : o.httpPort };
  }

  /** A certificate rotation (SIGHUP): the credentials the next connection to central uses; the one that is up keeps its own. */
  reloadTls(tls: ClientTls): void {
    if (this.client === null) throw new Error('the processor is not running');
    reconnectWithTls(this.client, tls);
  }

  async stop(): Promise<void> {
    await this.api?.close();
    await this.commands?.stop();
    // Stop reading first, then commit what was read; its PUBACKs go out before the connection closes.
    this.closing = true;
    await this.ingest?.stop();
    await new Promise((r) => setTimeout(r, 50)); // ms: let the PUBACKs of the last batch reach the socket
    await this.client?.endAsync(true).catch(() => {}); // forced: a dead link never drains
    await this.readModel?.close();
    await this.db?.close();
  }
}
