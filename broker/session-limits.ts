import type { Aedes, Client } from 'aedes';
import type { Logger } from 'pino';
import type { Device, DeviceKind, DeviceRegistry } from './devices.js';
import type { DeviceLimits } from './limits.js';
import type { BrokerMetrics, PublishRefusal } from './metrics.js';
import { SessionStore, type AedesPersistence } from './session-store.js';
import { SessionRegistry } from './sessions.js';

// Longest client id or filter copied into a log line, in characters.
const LOG_TEXT_CHARS = 128;
const clip = (text: string): string => (text.length > LOG_TEXT_CHARS ? `${text.slice(0, LOG_TEXT_CHARS)}…` : text);

/**
 * What a client can make one broker keep, bounded (issue 15, item 2): persistent sessions per device and their
 * expiry, their queues (the session store), subscriptions per client, QoS 2 publishes awaiting PUBREL. The
 * broker asks it at each step of a client's life; it counts every refusal and drop in the broker's metrics.
 */
export class SessionLimits {
  private readonly registry: SessionRegistry;
  /** the filters granted to each connected client */
  private readonly granted = new WeakMap<Client, Set<string>>();
  private readonly warned = new WeakSet<Client>();
  private store: SessionStore | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly limits: DeviceLimits,
    private readonly devices: DeviceRegistry,
    private readonly metrics: BrokerMetrics,
    private readonly log: Logger,
  ) {
    this.registry = new SessionRegistry(limits.sessionsPerDevice, limits.sessionExpirySeconds * 1000);
  }

  /** Bounds the persistence aedes made in `listen()` and starts the expiry sweep; before any client connects. */
  attach(aedes: Aedes): void {
    const holder = aedes as unknown as { persistence: AedesPersistence };
    const l = this.limits;
    this.store = new SessionStore(
      holder.persistence,
      {
        queuedPerSession: l.queuedPerSession,
        queuedBytesPerSession: l.queuedBytesPerSession,
        brokerBytes: l.sessionBytes,
        qos2PerDevice: l.qos2PerDevice,
      },
      {
        ownerOf: (clientId) => this.devices.ownerOfClientId(clientId)?.id,
        isGranted: (client, topic) => this.granted.get(client as Client)?.has(topic) === true,
        onDrop: (clientId, reason, messages) =>
          this.metrics.queuedDropped.inc({ kind: this.kindOf(clientId), reason }, messages),
        onQos2Refused: (clientId, reason) =>
          this.qos2Refused(clientId, reason === 'qos2_inflight' ? 'qos2_inflight' : 'session_bytes'),
      },
    );
    holder.persistence = this.store;
    const expiryMs = l.sessionExpirySeconds * 1000;
    this.sweepTimer = setInterval(() => this.expire(), Math.min(60_000, Math.max(100, expiryMs / 2))).unref();
  }

  stop(): void {
    clearInterval(this.sweepTimer);
  }

  get state(): { sessions: number; messages: number; bytes: number } {
    return { sessions: this.registry.size, messages: this.store?.messages ?? 0, bytes: this.store?.bytes ?? 0 };
  }

  /**
   * An authenticated client: a clean one discards its client id's session; a persistent one takes or resumes
   * one, ending the device's session offline the longest past `DEVICE_MAX_SESSIONS`. False: refused, every
   * session of the device being online.
   */
  admit(client: Client, device: Device): boolean {
    if (client.clean) {
      this.registry.forget(client.id);
      return true;
    }
    const admission = this.registry.admit(client.id, device.id, client);
    if (!admission.ok) return false;
    for (const evicted of admission.evict) void this.end(evicted, device.kind, 'evicted');
    return true;
  }

  /** The connection of `client` closed: its session's expiry clock starts, whether or not it got as far as CONNACK. */
  offline(client: Client): void {
    if (client.id !== null) this.registry.offline(client.id, client, Date.now());
  }

  sessionsOf(device: string): number {
    return this.registry.count(device);
  }

  /** QoS 2 publishes of `device` awaiting PUBREL. */
  qos2Pending(device: string): number {
    return this.store?.qos2Pending(device) ?? 0;
  }

  /** A QoS 2 publish refused past a bound: its connection closes without PUBREC. */
  qos2Refused(
    clientId: string,
    reason: Extract<PublishRefusal, 'qos2_inflight' | 'session_bytes'>,
    kind: DeviceKind | 'unknown' = this.kindOf(clientId),
  ): void {
    this.metrics.publishRefusals.inc({ reason, kind });
    this.log.warn({ clientId: clip(clientId), kind, reason }, 'QoS 2 publish refused, connection closed');
  }

  /** May `client`, whose ACL allows `filter`, hold one more subscription? Counted and logged (once per client) when not. */
  grant(client: Client, device: Device, filter: string): boolean {
    const granted = this.granted.get(client) ?? new Set<string>();
    this.granted.set(client, granted);
    if (granted.has(filter) || granted.size < this.limits.subscriptionsPerClient) {
      granted.add(filter);
      return true;
    }
    // Each subscription costs ~2 KB (200,000 of them grew an edge by 366 MB): past the limit they are refused.
    this.metrics.subscriptionsLimited.inc({ kind: device.kind });
    // One line per client: a flood of subscriptions must not become a flood of log lines.
    const level = this.warned.has(client) ? 'debug' : 'warn';
    this.warned.add(client);
    this.log[level](
      {
        clientId: clip(client.id ?? ''),
        device: device.id,
        kind: device.kind,
        limit: this.limits.subscriptionsPerClient,
        filter: clip(filter),
      },
      'subscription refused: too many subscriptions',
    );
    return false;
  }

  unsubscribed(client: Client, filters: string[]): void {
    const granted = this.granted.get(client);
    for (const filter of filters) granted?.delete(filter);
  }

  private kindOf(clientId: string): DeviceKind | 'unknown' {
    return this.devices.ownerOfClientId(clientId)?.kind ?? 'unknown';
  }

  private expire(): void {
    for (const e of this.registry.expire(Date.now()))
      void this.end(e.clientId, this.devices.get(e.device)?.kind ?? 'unknown', 'expired');
  }

  /** Ends a persistent session the broker no longer keeps: its queue, subscriptions and QoS 2 state go. */
  private async end(clientId: string, kind: DeviceKind | 'unknown', reason: 'expired' | 'evicted'): Promise<void> {
    this.metrics.sessionsEnded.inc({ kind, reason });
    this.log.info({ clientId: clip(clientId), kind, reason }, 'persistent session ended');
    try {
      await this.store?.endSession(clientId);
    } catch (err) {
      this.log.error({ err, clientId: clip(clientId) }, 'ending a persistent session failed');
    }
  }
}
