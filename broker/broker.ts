import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';
import { Aedes, type AuthenticateError, type Client, type PublishPacket, type Subscription } from 'aedes';
import type { Logger } from 'pino';
import {
  BATCH_FILTER,
  EVENT_FILTER,
  MAX_EVENT_BYTES,
  MAX_TOPIC_LEVELS,
  isIdent,
  isRetainedTopic,
  topicMatches,
} from '../protocol/index.js';
import { mayConnect, mayPublish, maySubscribe, type BrokerRole } from './acl.js';
import { conformAedes } from './aedes-conformance.js';
import { hashPassword, verifyPassword, type Device, type DeviceKind, type DeviceRegistry } from './devices.js';
import { guardFrameSize, PUBLISH_PACKET_TYPE } from './frame-guard.js';
import { ConnectLimiter, DEFAULT_DEVICE_LIMITS, limitProblems, type DeviceLimits } from './limits.js';
import {
  listenTcp,
  listenTls,
  listenWebSocket,
  type Listener,
  type TlsListener,
  type TlsListenerOptions,
} from './listeners.js';
import { LoginQueue } from './login-queue.js';
import { createBrokerMetrics, type BrokerMetrics, type ConnectionRefusal, type PublishRefusal } from './metrics.js';
import { Connection, PublishLimiter } from './publish-limiter.js';
import { SessionLimits } from './session-limits.js';
import type { BrokerOptions, BrokerPorts } from './options.js';

export type { BrokerOptions, BrokerPorts } from './options.js';
export type { AuthedClient, BeforePuback, DevicePublish } from './puback-gate.js';

const DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024;
// Most the broker will ever buffer for one packet, in bytes; above it the connection is cut at the header.
const MAX_PAYLOAD_CEILING_BYTES = 16 * 1024 * 1024;
// Room for the topic and properties of a publish on top of its payload, in bytes. Stockwire topics are < 300 bytes.
const FRAME_OVERHEAD_BYTES = 8 * 1024;
// A client whose socket does not drain within this many ms is disconnected, so it cannot stall delivery to others.
const DRAIN_TIMEOUT_MS = 30_000;
// Longest username or topic copied into a log line, in characters.
const LOG_TEXT_CHARS = 128;

// CONNACK return codes (MQTT 3.1.1, 3.2.2.3).
const RC_IDENTIFIER_REJECTED = 2;
const RC_SERVER_UNAVAILABLE = 3;
const RC_BAD_CREDENTIALS = 4;
const RC_NOT_AUTHORIZED = 5;

class PublishRefused extends Error {
  constructor(readonly reason: PublishRefusal) {
    super(`publish refused: ${reason}`);
    this.name = 'PublishRefused';
  }
}

function clip(text: string): string {
  return text.length > LOG_TEXT_CHARS ? `${text.slice(0, LOG_TEXT_CHARS)}…` : text;
}

function payloadBytes(payload: PublishPacket['payload']): number {
  return typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
}

/** The aedes broker of an edge or of central: listeners, authentication, ACL, the device-event hook and metrics. */
export class StockwireBroker {
  readonly aedes: Aedes;
  readonly role: BrokerRole;
  readonly edgeWarehouse: string | undefined;
  readonly maxPayloadBytes: number;

  private readonly options: BrokerOptions;
  private readonly log: Logger;
  private readonly metrics: BrokerMetrics;
  private readonly devices: DeviceRegistry;
  private readonly authed = new WeakMap<Client, Device>();
  private readonly ready = new Set<Client>();
  private readonly decisionsInFlight = new Set<Promise<void>>();
  private readonly links = new WeakMap<
    Client,
    { connection: Connection; address: string | undefined; certificate: string | null }
  >();
  private readonly connections = new Set<Connection>();
  private readonly attempts: ConnectLimiter;
  private readonly limiter: PublishLimiter;
  private readonly limits: DeviceLimits;
  private readonly logins: LoginQueue;
  private readonly sessions: SessionLimits;
  private removeStateSource: () => void = () => undefined;
  private listeners: Listener[] = [];
  private tlsListener: TlsListener | undefined;
  /** ms one password check took at start: the time an answer without a check is held back */
  private checkMs = 0;
  private state: 'new' | 'starting' | 'running' | 'stopping' | 'stopped' = 'new';

  constructor(options: BrokerOptions) {
    const problems: string[] = [];
    if (options.role !== 'edge' && options.role !== 'central')
      problems.push(`role: must be edge or central (got ${String(options.role)})`);
    if (options.role === 'edge' && !isIdent(options.edgeWarehouse))
      problems.push('edgeWarehouse: an edge broker needs the identifier of its warehouse');
    const maxPayloadBytes = options.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
    if (
      !Number.isInteger(maxPayloadBytes) ||
      maxPayloadBytes <= MAX_EVENT_BYTES ||
      maxPayloadBytes > MAX_PAYLOAD_CEILING_BYTES
    ) {
      problems.push(
        `maxPayloadBytes: must be an integer above the ${MAX_EVENT_BYTES}-byte event limit and at most ${MAX_PAYLOAD_CEILING_BYTES}`,
      );
    }
    // a limit given as undefined takes its default, like one not given
    const limits: DeviceLimits = {
      ...DEFAULT_DEVICE_LIMITS,
      ...Object.fromEntries(Object.entries(options.limits ?? {}).filter(([, v]) => v !== undefined)),
    };
    problems.push(...limitProblems(limits));
    if (problems.length > 0) throw new Error(`invalid broker options:\n${problems.map((p) => `  - ${p}`).join('\n')}`);

    this.options = options;
    this.role = options.role;
    this.edgeWarehouse = options.role === 'edge' ? options.edgeWarehouse : undefined;
    this.maxPayloadBytes = maxPayloadBytes;
    this.devices = options.devices;
    this.log = options.log.child({
      component: 'broker',
      role: options.role,
      ...(this.edgeWarehouse ? { wh: this.edgeWarehouse } : {}),
    });
    this.metrics = createBrokerMetrics(options.registry);
    this.limits = limits;
    this.attempts = new ConnectLimiter(limits);
    this.limiter = new PublishLimiter(limits, (kind, limit) => this.metrics.publishesDelayed.inc({ kind, limit }));
    this.logins = new LoginQueue(limits.loginConcurrency, limits.loginQueuePerAddress);
    this.sessions = new SessionLimits(limits, options.devices, this.metrics, this.log);
    // No fixed `id`: aedes uses a fresh uuid per instance, which clustering needs.
    this.aedes = new Aedes({
      drainTimeout: DRAIN_TIMEOUT_MS,
      maxTopicLevels: MAX_TOPIC_LEVELS,
      // aedes's own bound per connection; the session store bounds a device across its connections and client ids
      maxInflightInbound: limits.qos2PerDevice,
      persistence: options.persistence,
      mq: options.mq,
      authenticate: (client, username, password, done) => {
        void this.authenticate(client, username, password).then((refusal) =>
          refusal === null ? done(null, true) : done(refusal, false),
        );
      },
      authorizePublish: (client, packet, done) => {
        // Tracked until aedes has the decision, so stop() lets the PUBACK of a hook in flight go out.
        const decided = this.authorizePublish(client, packet).then((refusal) => done(refusal));
        this.decisionsInFlight.add(decided);
        void decided.finally(() => this.decisionsInFlight.delete(decided));
      },
      authorizeSubscribe: (client, sub, done) => done(null, this.authorizeSubscribe(client, sub)),
    });
    this.aedes.on('clientReady', (client) => {
      const device = this.authed.get(client);
      if (device === undefined) return;
      this.ready.add(client);
      this.metrics.connectedClients.inc({ kind: device.kind });
      this.log.info({ clientId: client.id, device: device.id, kind: device.kind }, 'client connected');
    });
    this.aedes.on('clientDisconnect', (client) => {
      const device = this.authed.get(client);
      if (device === undefined || !this.ready.delete(client)) return;
      this.metrics.connectedClients.dec({ kind: device.kind });
      this.log.info({ clientId: client.id, device: device.id, kind: device.kind }, 'client disconnected');
    });
    this.aedes.on('unsubscribe', (filters, client) => this.sessions.unsubscribed(client, filters));
    this.aedes.on('clientError', (client, err) => {
      // aedes's own bound on one connection's QoS 2 publishes awaiting PUBREL (set to DEVICE_MAX_QOS2_INFLIGHT)
      if (err.message.startsWith('maxInflightInbound exceeded'))
        return this.sessions.qos2Refused(client.id ?? '', 'qos2_inflight', this.authed.get(client)?.kind);
      this.log.debug({ clientId: client.id, err: err.message }, 'client error');
    });
    this.aedes.on('connectionError', (_client, err) => this.log.debug({ err: err.message }, 'connection error'));
  }

  /**
   * Replaces the TLS listener's certificate, key and client CA (a certificate rotation, on SIGHUP): new
   * connections get them, open ones keep theirs. Throws, changing nothing, without a TLS listener or when
   * OpenSSL refuses the files.
   */
  reloadTls(credentials: Pick<TlsListenerOptions, 'cert' | 'key' | 'ca'>): void {
    if (this.tlsListener === undefined) throw new Error('this broker has no TLS listener');
    this.tlsListener.setCredentials(credentials);
  }

  /** Starts aedes and the listeners; resolves with the ports actually bound. */
  async start(): Promise<BrokerPorts> {
    if (this.state !== 'new') throw new Error(`broker cannot start: it is ${this.state}`);
    this.state = 'starting';
    const host = this.options.host ?? '0.0.0.0';
    const edge = this.role === 'edge';
    // Unknown users get no check, but their refusal is held back as long as one takes, so it does not tell them apart.
    const began = performance.now();
    await hashPassword(randomUUID());
    this.checkMs = Math.round(performance.now() - began);
    await this.aedes.listen();
    // aedes made its persistence in listen(): its sessions bounded, then what the bounded store hands aedes made
    // conformant (DUP and RETAIN of resends, retained order), before any client can connect.
    this.sessions.attach(this.aedes);
    conformAedes(this.aedes); // DUP and RETAIN of resends, retained values after newer live ones (aedes-conformance.ts)
    this.removeStateSource = this.metrics.addStateSource(() => {
      const { sessions, messages, bytes } = this.sessions.state;
      return {
        persistentSessions: sessions,
        queuedMessages: messages,
        sessionBytes: bytes,
        loginWaiting: this.logins.waiting,
      };
    });
    const frameLimit = this.maxPayloadBytes + FRAME_OVERHEAD_BYTES;
    const accept = (stream: Duplex, req?: IncomingMessage): void => {
      const client = this.aedes.handle(stream, req);
      // Whatever of this connection still waits for a limit is let go (and refused) when it closes.
      const connection = new Connection();
      this.connections.add(connection);
      stream.once('close', () => {
        connection.close();
        this.connections.delete(connection);
        this.sessions.offline(client);
      });
      this.links.set(client, {
        connection,
        address: (stream as { remoteAddress?: string }).remoteAddress ?? req?.socket.remoteAddress,
        certificate: certificateName(stream),
      });
      guardFrameSize(stream, frameLimit, (packetType, lengthBytes) =>
        this.onOversizeFrame(client, packetType, lengthBytes),
      );
    };
    try {
      const ports: BrokerPorts = { mqtt: 0 };
      const mqtt = await listenTcp(this.options.mqttPort ?? (edge ? 1883 : 1884), host, accept);
      this.listeners.push(mqtt);
      ports.mqtt = mqtt.port;
      const wsPort = this.options.wsPort === undefined ? (edge ? 8083 : 8084) : this.options.wsPort;
      if (wsPort !== null) {
        const ws = await listenWebSocket(wsPort, host, frameLimit, accept);
        this.listeners.push(ws);
        ports.ws = ws.port;
      }
      if (this.options.tls !== undefined) {
        const tls = await listenTls(this.options.tls, host, accept, (r) => {
          this.metrics.connectionRefusals.inc({ reason: 'tls' });
          this.log.warn(
            {
              remote: r.remote,
              stage: r.stage,
              code: r.code,
              ...(r.subject !== undefined && { subject: clip(r.subject) }),
              reason: r.message,
            },
            'TLS client refused',
          );
        });
        this.listeners.push(tls);
        this.tlsListener = tls;
        ports.mqtts = tls.port;
      }
      this.state = 'running';
      this.log.info(ports, 'broker listening');
      return ports;
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /**
   * Stops accepting, lets publishes in flight finish (so the PUBACKs of running hooks go out), disconnects
   * every client and closes the listeners. Resolves once nothing the broker started is still running.
   */
  async stop(): Promise<void> {
    if (this.state === 'stopped' || this.state === 'stopping') return;
    this.state = 'stopping';
    this.sessions.stop();
    this.removeStateSource();
    for (const listener of this.listeners) listener.stopAccepting();
    // Publishes held back by a limit could wait for minutes: refuse them now (their devices keep them).
    for (const connection of this.connections) connection.close();
    await this.settlePublishes();
    await new Promise<void>((resolve) => this.aedes.close(() => resolve()));
    await Promise.all(this.listeners.map((l) => l.close()));
    this.listeners = [];
    await this.settlePublishes(); // any that began between the first wait and the disconnect
    this.state = 'stopped';
    this.log.info('broker stopped');
  }

  private async settlePublishes(): Promise<void> {
    while (this.decisionsInFlight.size > 0) await Promise.allSettled([...this.decisionsInFlight]);
    // one more turn of the event loop: aedes writes the PUBACK from the callback
    await new Promise((resolve) => setImmediate(resolve));
  }

  private refuseConnection(
    reason: ConnectionRefusal,
    returnCode: number,
    fields: Record<string, unknown>,
  ): AuthenticateError {
    this.metrics.connectionRefusals.inc({ reason });
    this.log.warn({ ...fields, reason }, 'connection refused');
    return Object.assign(new Error(`connection refused: ${reason}`), { returnCode }) as AuthenticateError;
  }

  /** Resolves null when the client may connect, else the refusal to hand to aedes. Never rejects. */
  private async authenticate(
    client: Client,
    username: string | undefined,
    password: Buffer | undefined,
  ): Promise<AuthenticateError | null> {
    const clientId = clip(client.id ?? '');
    try {
      const link = this.links.get(client);
      const address = link?.address;
      if (username === undefined || username === '')
        return this.refuseConnection('anonymous', RC_NOT_AUTHORIZED, { clientId });
      const fields = { username: clip(username), clientId };
      const device = this.devices.get(username);
      // No password check can succeed: answer without one, so a flood of made-up usernames costs no scrypt and none
      // of the attempts known devices are allowed; held back as long as a check takes, so timing does not tell a
      // known username from an unknown one.
      if (device === undefined || password === undefined) {
        await new Promise((resolve) => setTimeout(resolve, this.checkMs));
        return this.refuseConnection(
          device === undefined ? 'unknown_user' : 'bad_password',
          RC_BAD_CREDENTIALS,
          fields,
        );
      }
      // Before scrypt: a client retrying in a tight loop must not cost the broker 50 ms of CPU each time.
      const attempt = this.attempts.check(client.id ?? '', address, Date.now());
      if (attempt.refusal !== null)
        return this.refuseConnection(attempt.refusal, RC_SERVER_UNAVAILABLE, { clientId, address });
      const lane = attempt.knownGood ? 'priority' : 'address';
      const check = this.logins.run(
        lane,
        address ?? '',
        () => verifyPassword(password, device.passwordHash),
        () => link?.connection.closed === true,
      );
      // A full queue costs nothing: the attempt is not counted, the device retries.
      if (check === null) return this.refuseConnection('login_busy', RC_SERVER_UNAVAILABLE, { ...fields, address });
      attempt.admit();
      const verified = await check;
      // it left while it waited: its check is not run
      if (verified === 'gone') return this.refuseConnection('gone', RC_SERVER_UNAVAILABLE, { ...fields, address });
      this.metrics.loginChecks.inc({ lane, result: verified ? 'ok' : 'failed' });
      if (!verified) return this.refuseConnection('bad_password', RC_BAD_CREDENTIALS, fields);
      if (!mayConnect(device, this.role, this.edgeWarehouse)) {
        return this.refuseConnection('kind_not_allowed', RC_NOT_AUTHORIZED, {
          ...fields,
          kind: device.kind,
          warehouse: device.warehouse,
        });
      }
      // A client certificate (mutual TLS) names its device: its CN must be the username, so a certificate
      // issued to one device cannot carry another's stolen password.
      const cn = link?.certificate ?? null;
      if (cn !== null && cn !== device.id) {
        return this.refuseConnection('certificate_identity', RC_NOT_AUTHORIZED, { ...fields, subject: clip(cn) });
      }
      // The client id must belong to this device (`<id>` or `<id>-…`), so no device can take over another's session.
      if (this.devices.ownerOfClientId(client.id)?.id !== device.id) {
        return this.refuseConnection('client_id', RC_IDENTIFIER_REJECTED, fields);
      }
      this.attempts.authenticated(client.id ?? '', address);
      if (!this.sessions.admit(client, device))
        return this.refuseConnection('sessions_device', RC_SERVER_UNAVAILABLE, {
          ...fields,
          sessions: this.sessions.sessionsOf(device.id),
        });
      this.authed.set(client, device);
      return null;
    } catch (err) {
      this.log.error({ err, clientId }, 'authentication failed');
      return this.refuseConnection('error', RC_SERVER_UNAVAILABLE, { clientId });
    }
  }

  /** Resolves null when the publish may go on (and the hook, if any, has finished), else the refusal. Never rejects. */
  private async authorizePublish(client: Client | null, packet: PublishPacket): Promise<Error | null> {
    // A will is authorised like any publish of its client, but never goes through the hook.
    // With a null client it is the will of a session whose client is gone: owner from its client id.
    const willClientId = (packet as { clientId?: unknown }).clientId;
    const isWill = client === null || packet === (client as unknown as { will?: unknown }).will;
    const device =
      client !== null
        ? this.authed.get(client)
        : typeof willClientId === 'string'
          ? this.devices.ownerOfClientId(willClientId)
          : undefined;
    const clientId = client?.id ?? (typeof willClientId === 'string' ? willClientId : '');
    const kind: DeviceKind | 'unknown' = device?.kind ?? 'unknown';
    const refuse = (reason: PublishRefusal, extra: Record<string, unknown> = {}): PublishRefused => {
      this.metrics.publishRefusals.inc({ reason, kind });
      // One device disconnected for its rate can leave thousands of held publishes behind: those are not warnings.
      this.log[reason === 'closed' ? 'debug' : 'warn'](
        {
          clientId: clip(clientId),
          device: device?.id,
          kind,
          topic: clip(packet.topic),
          will: isWill,
          reason,
          ...extra,
        },
        'publish refused',
      );
      return new PublishRefused(reason);
    };

    if (device === undefined) return refuse('unknown_client');
    if (packet.topic.startsWith('$SYS')) return refuse('sys');
    const bytes = payloadBytes(packet.payload);
    if (bytes > this.maxPayloadBytes) return refuse('too_large', { bytes });
    if (!mayPublish(device, packet.topic, this.role)) return refuse('acl');
    // Refused before the hook: a device holding this many QoS 2 publishes unreleased (no PUBREL) gets no more. A
    // retransmission (dup) may be one already held; the session store checks those when it stores them.
    if (packet.qos === 2 && !packet.dup && this.sessions.qos2Pending(device.id) >= this.limits.qos2PerDevice) {
      return refuse('qos2_inflight', { pending: this.sessions.qos2Pending(device.id) });
    }
    // Retained topics are central's own (CONTRACT 2): elsewhere the flag is dropped, not the message, so an event
    // is still taken, and 1,500 × 60 KB events cannot sit in the broker's memory to be replayed to every subscriber.
    if (packet.retain && !isRetainedTopic(packet.topic)) {
      packet.retain = false;
      this.metrics.retainDropped.inc({ kind });
    }
    if (isWill) {
      // A lost link is worth a line: displays learn of it from this message.
      this.log.info(
        { clientId: clip(clientId), device: device.id, kind, topic: clip(packet.topic) },
        'will authorised, publishing',
      );
      return null;
    }

    const hook = this.options.beforePuback; // the PUBACK gate (puback-gate.ts): the event is durable before aedes acks it
    // A gateway's batch is events too: decided (and its PUBACK held) by the same gate.
    const isEvent =
      hook !== undefined && (topicMatches(EVENT_FILTER, packet.topic) || topicMatches(BATCH_FILTER, packet.topic));
    // Refused while stopping: the device keeps the event and sends it to the next instance.
    const stopping = () => this.state === 'stopping' || this.state === 'stopped';
    if (isEvent && stopping()) return refuse('stopping');
    // Held here, before the hook: a device over its rate waits (so does its PUBACK), and aedes reads no
    // more of its connection until this publish is decided.
    const admission = await this.limiter.admit(
      device,
      packet.qos,
      this.links.get(client as Client)?.connection ?? new Connection(),
    );
    if (!admission.ok) return refuse(admission.reason);
    try {
      if (isEvent && hook !== undefined) {
        if (stopping()) return refuse('stopping');
        const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
        try {
          await hook({ clientId, device }, { topic: packet.topic, payload, qos: packet.qos, retain: packet.retain });
        } catch (err) {
          return refuse('hook_failed', { err });
        }
      }
    } finally {
      admission.release();
    }
    this.metrics.messagesReceived.inc({ kind });
    return null;
  }

  /** The subscription to grant, or null: aedes then answers QoS 128 for it (MQTT-3.9.3), without disconnecting. */
  private authorizeSubscribe(client: Client, sub: Subscription): Subscription | null {
    const device = this.authed.get(client);
    const kind = device?.kind ?? 'unknown';
    if (device !== undefined && maySubscribe(device, sub.topic, this.role)) {
      if (this.sessions.grant(client, device, sub.topic)) return sub;
      this.metrics.subscribeRefusals.inc({ kind });
      return null;
    }
    this.metrics.subscribeRefusals.inc({ kind });
    this.log.warn(
      { clientId: clip(client.id ?? ''), device: device?.id, kind, filter: clip(sub.topic) },
      'subscription refused',
    );
    return null;
  }

  private onOversizeFrame(client: Client, packetType: number, lengthBytes: number): void {
    const device = this.authed.get(client);
    const fields = {
      clientId: clip(client.id ?? ''),
      device: device?.id,
      kind: device?.kind ?? 'unknown',
      packetType,
      lengthBytes,
    };
    if (packetType === PUBLISH_PACKET_TYPE)
      this.metrics.publishRefusals.inc({ reason: 'too_large', kind: fields.kind });
    this.log.warn(fields, 'oversized packet, connection closed');
  }
}

/** Creates (does not start) the broker of an edge or of central. Throws when the options are invalid. */
export function createBroker(options: BrokerOptions): StockwireBroker {
  return new StockwireBroker(options);
}

/** The subject CN of the verified client certificate of a TLS connection; null without one ('' when it names none). */
function certificateName(stream: Duplex): string | null {
  if (!(stream instanceof TLSSocket) || !stream.authorized) return null;
  const cert = stream.getPeerCertificate();
  if (cert === null || Object.keys(cert).length === 0) return null;
  const cn: unknown = cert.subject?.CN;
  return typeof cn === 'string' ? cn : '';
}
