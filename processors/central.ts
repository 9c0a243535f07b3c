import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { Registry, collectDefaultMetrics } from 'prom-client';
import {
  createBroker,
  loadDevices,
  type AuthedClient,
  type DevicePublish,
  type DeviceLimits,
  type DeviceRegistry,
  type StockwireBroker,
  type TlsListenerOptions,
  orderedPublisher,
} from '../broker/index.js';
import { parseBatchAckTopic, parseBatchTopic, parseEventTopic, parseRequestTopic } from '../protocol/index.js';
import { openDatabase, type Database, type StorageSettings } from './db/open.js';
import { resolveApiToken } from './api-token.js';
import { createApi } from './http.js';
import { batchHello, ingestGatewayBatch } from './ingest/gateway-batch.js';
import { Ingest } from './ingest/ingest.js';
import { LinkStatuses, type RetainedStore } from './links.js';
import { createIngestMetrics, type IngestMetrics } from './metrics.js';
import type { ReadModel } from './publish/read-model.js';
import { createReadModel } from './readmodel/redis.js';
import { monotonic } from './publish/monotonic-publisher.js';
import { republishAll } from './readmodel/republish.js';
import { createReservationMetrics } from './reservations/metrics.js';
import { CommandRequests } from './reservations/mqtt.js';
import { commandConfig, ReservationService, type CommandSettings } from './reservations/service.js';

/** The warehouses whose events central may receive: those of its gateways, scanners and shelf sensors. */
const warehousesOf = (devices: DeviceRegistry): string[] =>
  devices
    .all()
    .filter((d) => d.kind === 'gateway' || d.kind === 'scanner' || d.kind === 'shelf')
    .map((d) => d.warehouse);

export interface CentralOptions extends CommandSettings, StorageSettings {
  databaseUrl?: string;
  redisUrl?: string;
  redisPrefix: string;
  dataDir: string;
  devicesFile: string;
  host: string;
  mqttPort: number;
  wsPort: number;
  httpPort: number;
  /** MQTT over TLS listener (with `ca` and `requestCert`: mutual TLS); absent: none */
  tls?: TlsListenerOptions;
  batchMax: number;
  batchWaitMs: number;
  /** per-device limits of the central broker; each one absent takes its default */
  limits?: Partial<DeviceLimits>;
  /** bearer token of HTTP writes; unset: the one in DATA_DIR/api-token, generated there on first start */
  apiToken?: string;
  /** bearer token of HTTP reads under /v1/; unset: reads are open */
  apiReadToken?: string;
  /** ms an HTTP read may wait for the database before it answers 503; unset: 5 s */
  apiReadTimeoutMs?: number;
  log: Logger;
  /** more routes on the HTTP server (the live display), added once the broker's ports are known */
  httpRoutes?: (app: FastifyInstance, ports: { mqtt: number; ws: number }) => void;
}

export interface CentralPorts {
  mqtt: number;
  ws: number;
  http: number;
  /** the TLS listener's, when there is one */
  mqtts?: number;
}

/**
 * `stockwire central`: the central broker, the in-process stock processor and the HTTP API.
 * A device event's PUBACK is held until the batch that decided it has committed (DESIGN "When to PUBACK at central").
 */
export class Central {
  readonly registry = new Registry();
  private db: Database | null = null;
  private broker: StockwireBroker | null = null;
  private ingest: Ingest | null = null;
  private readModel: ReadModel | null = null;
  private api: FastifyInstance | null = null;
  private commands: ReservationService | null = null;
  private requests: CommandRequests | null = null;
  private republished: Promise<unknown> = new Promise(() => {});
  private ready = false;
  private token: string | null = null;

  constructor(private readonly o: CentralOptions) {
    collectDefaultMetrics({ register: this.registry });
  }

  /** The bearer token HTTP writes need (configured, or kept in DATA_DIR/api-token); known once started. */
  get apiToken(): string {
    if (this.token === null) throw new Error('central has not started: the API token is not known yet');
    return this.token;
  }

  async start(): Promise<CentralPorts> {
    const { o } = this;
    const log = o.log;
    const devices = await loadDevices(o.devicesFile);
    const token = await resolveApiToken(o.apiToken, o.dataDir, log);
    this.token = token;
    this.db = await openDatabase({
      ...o,
      log,
      applicationName: 'stockwire-central',
      readTimeoutMs: o.apiReadTimeoutMs,
    });
    const pool = this.db.pool;
    const metrics = createIngestMetrics(this.registry, warehousesOf(devices));
    this.readModel = await createReadModel(o, this.db, metrics, log);
    const readModel = this.readModel;

    let release: () => void = () => {};
    let abandon: (err: Error) => void = () => {};
    this.republished = new Promise<void>((resolve, reject) => {
      release = resolve;
      abandon = reject;
    });
    this.republished.catch(() => {}); // its waiters hear of a failed start; no unhandled rejection meanwhile
    this.broker = createBroker({
      role: 'central',
      devices,
      host: o.host,
      mqttPort: o.mqttPort,
      wsPort: o.wsPort,
      ...(o.limits && { limits: o.limits }),
      ...(o.tls && { tls: o.tls }),
      registry: this.registry,
      log,
      beforePuback: (client, packet) => this.commitBeforePuback(client, packet, { metrics, log }),
    });
    const publisher = monotonic(orderedPublisher(this.broker.aedes));
    this.ingest = new Ingest({
      pool,
      publisher,
      readModel,
      metrics,
      log,
      maxBatch: o.batchMax,
      maxWaitMs: o.batchWaitMs,
    });
    this.commands = new ReservationService(
      { pool, publisher, readModel, log, metrics: createReservationMetrics(this.registry) },
      commandConfig(o),
    );
    const requests = new CommandRequests(this.commands, publisher, devices, log);
    this.requests = requests;
    // Commands over MQTT: the ACL lets a client publish only to requests/{its own id}.
    // The edges' link statuses for GET /v1/warehouses: their own publishes and, when a link drops, their wills.
    const links = new LinkStatuses();
    this.broker.aedes.on('publish', (packet) => links.onPublish(packet));
    this.broker.aedes.on('publish', (packet, client) => {
      if (client === null || parseRequestTopic(packet.topic) === null) return;
      const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
      void this.republished.then(
        () => requests.handle(packet.topic, payload),
        () => {},
      );
    });
    // A gateway subscribing to its batch-ack topic learns that this central takes batches, and how large: an edge
    // that hears nothing (a third-party broker with `stockwire processor`) keeps publishing single events.
    const hello = JSON.stringify(batchHello(this.broker.maxPayloadBytes));
    this.broker.aedes.on('subscribe', (subs, client) => {
      if (client === null) return;
      // aedes reports refused filters too, with qos 128 (MQTT-3.9.3)
      for (const s of subs)
        if ((s.qos as number) !== 128 && parseBatchAckTopic(s.topic))
          publisher
            .publish(s.topic, hello, false)
            .catch((err: Error) => log.warn({ err: err.message }, 'batch hello not sent'));
    });
    const ports = await this.broker.start();
    // Aedes's types do not declare its persistence; every persistence (memory, Redis) has this stream.
    await links.load((this.broker.aedes as unknown as { persistence: RetainedStore }).persistence);
    const started = Date.now();
    // Publishes that arrived meanwhile wait for this; if it fails, the start fails and they are refused (no
    // PUBACK: their edges resend them to the next start), or stop() would wait on them for ever.
    const count = await republishAll(pool, publisher, readModel).catch((err: Error) => {
      abandon(new Error(`central did not start: ${err.message}`));
      throw err;
    });
    log.info({ ...count, ms: Date.now() - started }, 'stock topics republished from the database');
    release();

    this.commands.start();
    const readPool = this.db.readPool;
    this.api = createApi({
      pool: readPool,
      readModel,
      commands: this.commands,
      registry: this.registry,
      storage: this.db.schema.storage,
      log,
      links: async () => links.snapshot(),
      tokens: { write: token, ...(o.apiReadToken !== undefined && { read: o.apiReadToken }) },
      ready: async () =>
        this.ready &&
        (this.ingest?.databaseHealthy ?? false) &&
        (await readPool.query('SELECT 1').then(
          () => true,
          () => false,
        )),
    });
    o.httpRoutes?.(this.api, { mqtt: ports.mqtt, ws: ports.ws ?? 0 });
    await this.api.listen({ host: o.host, port: o.httpPort });
    const address = this.api.server.address();
    this.ready = true;
    return {
      mqtt: ports.mqtt,
      ws: ports.ws ?? 0,
      http: typeof address === 'object' && address ? address.port : o.httpPort,
      ...(ports.mqtts !== undefined && { mqtts: ports.mqtts }),
    };
  }

  /** A certificate rotation (SIGHUP): new connections get these; open ones keep theirs. Throws, changing nothing, on refused files. */
  reloadTls(tls: Pick<TlsListenerOptions, 'cert' | 'key' | 'ca'>): void {
    if (this.broker === null) throw new Error('central is not running');
    this.broker.reloadTls(tls);
  }

  /** Stops accepting, commits what is in flight, publishes its acks, then closes. */

  /** The PUBACK gate (broker/puback-gate.ts) at central: resolves once the event's batch has committed. */
  private async commitBeforePuback(
    client: AuthedClient,
    packet: DevicePublish,
    o: { metrics: IngestMetrics; log: Logger },
  ): Promise<void> {
    const where = parseEventTopic(packet.topic);
    if (!this.ingest) throw new Error('central is not started');
    if (!where) {
      // A gateway's batch: every event decided in one commit, one batch-ack after it (gateway-batch.ts).
      if (!parseBatchTopic(packet.topic)) throw new Error('not an event topic');
      await this.republished;
      const broker = this.broker as StockwireBroker;
      return ingestGatewayBatch(this.ingest, client, packet, { maxBytes: broker.maxPayloadBytes, ...o });
    }
    await this.republished; // no stock change may overtake the start-up republish
    const viaEdge = client.device.kind === 'gateway';
    await this.ingest.submit({
      topic: packet.topic,
      payload: packet.payload,
      wh: where.wh,
      device: where.device,
      source: client.device.id,
      receivedAt: Date.now(),
      viaEdge,
    });
  }

  async stop(): Promise<void> {
    this.ready = false;
    await this.api?.close();
    await this.commands?.stop();
    await this.requests?.drain();
    await this.ingest?.stop();
    await this.broker?.stop();
    await this.readModel?.close();
    await this.db?.close();
  }
}
