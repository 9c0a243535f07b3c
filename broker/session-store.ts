import { Readable } from 'node:stream';

/** A packet as aedes hands it to its persistence (an aedes-packet). */
export interface StoredPacket {
  cmd?: string;
  topic?: string;
  payload?: Buffer | string;
  messageId?: number;
  brokerId?: string;
  brokerCounter?: number;
  qos?: number;
  retain?: boolean;
  dup?: boolean;
  [key: string]: unknown;
}

interface ClientRef {
  id: string;
}

interface SubscriptionRef {
  topic: string;
  qos: number;
  [key: string]: unknown;
}

/**
 * The promise API aedes 1.x calls on its persistence (aedes-persistence 11's interface). The session store
 * delegates all of it to the persistence it wraps except the outgoing queues, which it keeps itself, bounded.
 */
export interface AedesPersistence {
  readonly broker?: unknown;
  setup(broker: unknown): Promise<void>;
  storeRetained(packet: StoredPacket): Promise<void>;
  createRetainedStream(pattern: string): Readable;
  createRetainedStreamCombi(patterns: string[]): Readable;
  addSubscriptions(client: ClientRef, subs: SubscriptionRef[]): Promise<unknown>;
  removeSubscriptions(client: ClientRef, subs: string[]): Promise<unknown>;
  subscriptionsByClient(client: ClientRef): Promise<SubscriptionRef[]>;
  countOffline(): Promise<unknown>;
  subscriptionsByTopic(pattern: string): Promise<Array<{ clientId: string }>>;
  cleanSubscriptions(client: ClientRef): Promise<unknown>;
  outgoingEnqueue(sub: { clientId: string }, packet: StoredPacket): Promise<void>;
  outgoingEnqueueCombi(subs: Array<{ clientId: string }>, packet: StoredPacket): Promise<void>;
  outgoingUpdate(client: ClientRef, packet: StoredPacket): Promise<unknown>;
  outgoingClearMessageId(client: ClientRef, packet: StoredPacket): Promise<StoredPacket | undefined>;
  outgoingStream(client: ClientRef): Readable;
  incomingStorePacket(client: ClientRef, packet: StoredPacket): Promise<void>;
  incomingGetPacket(client: ClientRef, packet: StoredPacket): Promise<StoredPacket>;
  incomingDelPacket(client: ClientRef, packet: StoredPacket): Promise<void>;
  cleanIncoming?(client: ClientRef): Promise<void>;
  putWill(client: ClientRef, packet: StoredPacket): Promise<unknown>;
  getWill(client: ClientRef): Promise<unknown>;
  delWill(client: ClientRef): Promise<unknown>;
  streamWill(brokers?: Record<string, number>): Readable;
  getClientList(topic: string): Readable;
  destroy(): Promise<void>;
}

/** Why a queued message was dropped, or a QoS 2 publish refused. */
export type QueueDrop = 'session_messages' | 'session_bytes' | 'broker_bytes' | 'session_ended';
export type Qos2Refusal = 'qos2_inflight' | 'broker_bytes';

export interface SessionBounds {
  /** Messages one session keeps queued (sent and unacknowledged, or waiting for its client), oldest dropped beyond. */
  queuedPerSession: number;
  /** Bytes of payload and topic one session keeps queued, oldest dropped beyond. */
  queuedBytesPerSession: number;
  /** Bytes every session of the broker keeps together: queued messages plus QoS 2 publishes awaiting PUBREL. */
  brokerBytes: number;
  /** QoS 2 publishes of one device (all its client ids) received and awaiting their PUBREL. */
  qos2PerDevice: number;
}

export interface SessionStoreHooks {
  /** The device (credential id) a client id belongs to; undefined for none. */
  ownerOf(clientId: string): string | undefined;
  /** Whether `topic` was granted to this connected client: only granted filters are stored for its session. */
  isGranted(client: ClientRef, topic: string): boolean;
  onDrop(clientId: string, reason: QueueDrop, messages: number): void;
  onQos2Refused(clientId: string, reason: Qos2Refusal): void;
}

/** Thrown by `incomingStorePacket` past a QoS 2 bound: aedes then closes the connection, sending no PUBREC. */
export class Qos2Refused extends Error {
  constructor(readonly reason: Qos2Refusal) {
    super(`QoS 2 publish refused: ${reason}`);
    this.name = 'Qos2Refused';
  }
}

// Counted per queued message on top of its payload and topic: the packet object and its queue slot, in bytes.
const PACKET_OVERHEAD_BYTES = 200;

function sizeOf(packet: StoredPacket): number {
  const payload = packet.payload;
  const payloadBytes =
    payload === undefined ? 0 : typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
  return payloadBytes + (packet.topic?.length ?? 0) + PACKET_OVERHEAD_BYTES;
}

/** A copy per subscriber, as aedes-persistence makes it (aedes-packet's fields), so each client's messageId is its own. */
function copyOf(packet: StoredPacket): StoredPacket {
  const copy: StoredPacket = {};
  for (const key of ['clientId', 'nl', 'properties', 'messageExpiry'])
    if (Object.hasOwn(packet, key)) copy[key] = packet[key];
  copy.cmd = packet.cmd || 'publish';
  copy.brokerId = packet.brokerId;
  copy.brokerCounter = packet.brokerCounter || 0;
  copy.topic = packet.topic;
  copy.payload = packet.payload || Buffer.alloc(0);
  copy.qos = packet.qos || 0;
  copy.retain = packet.retain || false;
  copy.dup = packet.dup || false;
  if (copy.qos !== 0 || copy.cmd !== 'publish') copy.messageId = undefined;
  return copy;
}

interface Queue {
  packets: StoredPacket[];
  sizes: number[];
  bytes: number;
}

/**
 * The broker's persistence with bounded session state (MQTT 3.1.1 persistent sessions, `clean=false`).
 *
 * aedes keeps every QoS 1/2 message for a persistent session until its client acknowledges it, with no bound:
 * 300 offline sessions of one display credential grew an edge by 260 MB, and one session got 8,152 messages at
 * once on reconnecting. Here each session keeps at most `queuedPerSession` messages and `queuedBytesPerSession`
 * bytes, the oldest dropped first (a display wants the newest stock, and the retained topics give it the
 * latest value anyway), and all sessions together at most `brokerBytes`. A message dropped from the queue of a
 * connected client is still delivered to it; it is only not sent again after a reconnect. QoS 2 publishes a
 * device has not released (no PUBREL) are bounded per device across its client ids, since a `clean=false`
 * session keeps them across reconnects. Everything else is the wrapped persistence's.
 */
export class SessionStore implements AedesPersistence {
  private readonly queues = new Map<string, Queue>();
  /** QoS 2 publishes awaiting PUBREL: client id → message id → bytes */
  private readonly incoming = new Map<string, Map<number, number>>();
  private readonly qos2ByDevice = new Map<string, number>();
  private queuedBytes = 0;
  private queuedMessages = 0;
  private incomingBytes = 0;

  constructor(
    private readonly inner: AedesPersistence,
    private readonly bounds: SessionBounds,
    private readonly hooks: SessionStoreHooks,
  ) {
    // aedes feature-detects cleanIncoming: offer it only when the wrapped persistence has it
    if (typeof inner.cleanIncoming !== 'function') (this as { cleanIncoming?: unknown }).cleanIncoming = undefined;
  }

  /** Bytes held by every session: queued messages plus QoS 2 publishes awaiting PUBREL. */
  get bytes(): number {
    return this.queuedBytes + this.incomingBytes;
  }

  /** Messages queued for every session. */
  get messages(): number {
    return this.queuedMessages;
  }

  /** QoS 2 publishes of `device` awaiting PUBREL, across its client ids. */
  qos2Pending(device: string): number {
    return this.qos2ByDevice.get(device) ?? 0;
  }

  /** Forgets everything of a session: its queue (counted as dropped), its subscriptions and its QoS 2 state. */
  async endSession(clientId: string): Promise<void> {
    const queue = this.queues.get(clientId);
    if (queue !== undefined) {
      this.queues.delete(clientId);
      this.queuedBytes -= queue.bytes;
      this.queuedMessages -= queue.packets.length;
      if (queue.packets.length > 0) this.hooks.onDrop(clientId, 'session_ended', queue.packets.length);
    }
    const ref = { id: clientId };
    await this.inner.cleanSubscriptions(ref);
    await this.cleanIncoming?.(ref);
  }

  // ---- outgoing: kept here, bounded ----------------------------------------------------------

  async outgoingEnqueue(sub: { clientId: string }, packet: StoredPacket): Promise<void> {
    this.enqueue(sub.clientId, packet);
  }

  async outgoingEnqueueCombi(subs: Array<{ clientId: string }>, packet: StoredPacket): Promise<void> {
    for (const sub of subs) this.enqueue(sub.clientId, packet);
  }

  private enqueue(clientId: string, packet: StoredPacket): void {
    const size = sizeOf(packet);
    if (size > this.bounds.queuedBytesPerSession) {
      this.hooks.onDrop(clientId, 'session_bytes', 1);
      return;
    }
    const queue = this.queues.get(clientId) ?? { packets: [], sizes: [], bytes: 0 };
    let dropped: QueueDrop | null = null;
    let count = 0;
    const dropOldest = (reason: QueueDrop) => {
      this.shift(queue);
      dropped = reason;
      count++;
    };
    while (queue.packets.length >= this.bounds.queuedPerSession) dropOldest('session_messages');
    while (queue.bytes + size > this.bounds.queuedBytesPerSession) dropOldest('session_bytes');
    while (queue.packets.length > 0 && this.bytes + size > this.bounds.brokerBytes) dropOldest('broker_bytes');
    if (dropped !== null) this.hooks.onDrop(clientId, dropped, count);
    if (this.bytes + size > this.bounds.brokerBytes) {
      if (queue.packets.length === 0) this.queues.delete(clientId);
      this.hooks.onDrop(clientId, 'broker_bytes', 1);
      return;
    }
    this.queues.set(clientId, queue);
    queue.packets.push(copyOf(packet));
    queue.sizes.push(size);
    queue.bytes += size;
    this.queuedBytes += size;
    this.queuedMessages++;
  }

  private shift(queue: Queue): void {
    queue.packets.shift();
    const size = queue.sizes.shift() ?? 0;
    queue.bytes -= size;
    this.queuedBytes -= size;
    this.queuedMessages--;
  }

  private remove(queue: Queue, i: number): StoredPacket | undefined {
    const [packet] = queue.packets.splice(i, 1);
    const [size] = queue.sizes.splice(i, 1);
    queue.bytes -= size ?? 0;
    this.queuedBytes -= size ?? 0;
    this.queuedMessages--;
    return packet;
  }

  /** Same matching as aedes-persistence's memory store; a message no longer queued (dropped by a bound) is not an error. */
  async outgoingUpdate(client: ClientRef, packet: StoredPacket): Promise<void> {
    const queue = this.queues.get(client.id);
    if (queue === undefined) return;
    for (let i = 0; i < queue.packets.length; i++) {
      const queued = queue.packets[i] as StoredPacket;
      if (queued.brokerId === packet.brokerId) {
        if (queued.brokerCounter === packet.brokerCounter) {
          queued.messageId = packet.messageId;
          return;
        }
      } else if (queued.messageId === packet.messageId) {
        // PUBREC: the PUBLISH is replaced by its PUBREL, which carries no payload
        queue.packets[i] = packet;
        const size = sizeOf(packet);
        const delta = size - (queue.sizes[i] ?? 0);
        queue.sizes[i] = size;
        queue.bytes += delta;
        this.queuedBytes += delta;
        return;
      }
    }
  }

  async outgoingClearMessageId(client: ClientRef, packet: StoredPacket): Promise<StoredPacket | undefined> {
    const queue = this.queues.get(client.id);
    if (queue === undefined) return undefined;
    const i = queue.packets.findIndex((p) => p.messageId === packet?.messageId);
    if (i < 0) return undefined;
    const removed = this.remove(queue, i);
    if (queue.packets.length === 0) this.queues.delete(client.id);
    return removed;
  }

  outgoingStream(client: ClientRef): Readable {
    // a copy: the queue changes while aedes streams it
    return Readable.from([...(this.queues.get(client.id)?.packets ?? [])]);
  }

  // ---- incoming QoS 2: delegated, counted and bounded -----------------------------------------

  async incomingStorePacket(client: ClientRef, packet: StoredPacket): Promise<void> {
    const messageId = packet.messageId ?? 0;
    const stored = this.incoming.get(client.id);
    const previous = stored?.get(messageId);
    const device = this.hooks.ownerOf(client.id) ?? client.id;
    const size = sizeOf(packet);
    if (previous === undefined) {
      const refusal: Qos2Refusal | null =
        this.qos2Pending(device) >= this.bounds.qos2PerDevice
          ? 'qos2_inflight'
          : this.bytes + size > this.bounds.brokerBytes
            ? 'broker_bytes'
            : null;
      if (refusal !== null) {
        this.hooks.onQos2Refused(client.id, refusal);
        throw new Qos2Refused(refusal);
      }
    }
    await this.inner.incomingStorePacket(client, packet);
    const map = this.incoming.get(client.id) ?? new Map<number, number>();
    this.incoming.set(client.id, map);
    const before = map.get(messageId);
    if (before === undefined) this.qos2ByDevice.set(device, this.qos2Pending(device) + 1);
    map.set(messageId, size);
    this.incomingBytes += size - (before ?? 0);
  }

  incomingGetPacket(client: ClientRef, packet: StoredPacket): Promise<StoredPacket> {
    return this.inner.incomingGetPacket(client, packet);
  }

  async incomingDelPacket(client: ClientRef, packet: StoredPacket): Promise<void> {
    await this.inner.incomingDelPacket(client, packet);
    const map = this.incoming.get(client.id);
    const size = map?.get(packet.messageId ?? 0);
    if (map === undefined || size === undefined) return;
    map.delete(packet.messageId ?? 0);
    if (map.size === 0) this.incoming.delete(client.id);
    this.incomingBytes -= size;
    this.releaseQos2(client.id, 1);
  }

  async cleanIncoming(client: ClientRef): Promise<void> {
    await this.inner.cleanIncoming?.(client);
    const map = this.incoming.get(client.id);
    if (map === undefined) return;
    this.incoming.delete(client.id);
    for (const size of map.values()) this.incomingBytes -= size;
    this.releaseQos2(client.id, map.size);
  }

  private releaseQos2(clientId: string, n: number): void {
    const device = this.hooks.ownerOf(clientId) ?? clientId;
    const left = this.qos2Pending(device) - n;
    if (left > 0) this.qos2ByDevice.set(device, left);
    else this.qos2ByDevice.delete(device);
  }

  // ---- subscriptions: only what was granted is stored -----------------------------------------

  /**
   * aedes stores a SUBSCRIBE packet's whole list once for each filter it grants, refused filters included: a
   * refused `#` would then be matched for the offline session (and its messages delivered on reconnect), and a
   * packet of n filters costs n² work. Only filters granted to this client go on, and each of them once.
   */
  async addSubscriptions(client: ClientRef, subs: SubscriptionRef[]): Promise<unknown> {
    const granted = subs.filter((s) => this.hooks.isGranted(client, s.topic));
    if (granted.length === 0) return client;
    return this.inner.addSubscriptions(client, granted);
  }

  // ---- the rest: the wrapped persistence's ----------------------------------------------------

  // async: aedes refuses a persistence whose setup is not an AsyncFunction
  async setup(broker: unknown): Promise<void> {
    await this.inner.setup(broker);
  }
  get broker(): unknown {
    return this.inner.broker;
  }
  storeRetained(packet: StoredPacket): Promise<void> {
    return this.inner.storeRetained(packet);
  }
  createRetainedStream(pattern: string): Readable {
    return this.inner.createRetainedStream(pattern);
  }
  createRetainedStreamCombi(patterns: string[]): Readable {
    return this.inner.createRetainedStreamCombi(patterns);
  }
  removeSubscriptions(client: ClientRef, subs: string[]): Promise<unknown> {
    return this.inner.removeSubscriptions(client, subs);
  }
  subscriptionsByClient(client: ClientRef): Promise<SubscriptionRef[]> {
    return this.inner.subscriptionsByClient(client);
  }
  countOffline(): Promise<unknown> {
    return this.inner.countOffline();
  }
  subscriptionsByTopic(pattern: string): Promise<Array<{ clientId: string }>> {
    return this.inner.subscriptionsByTopic(pattern);
  }
  cleanSubscriptions(client: ClientRef): Promise<unknown> {
    return this.inner.cleanSubscriptions(client);
  }
  putWill(client: ClientRef, packet: StoredPacket): Promise<unknown> {
    return this.inner.putWill(client, packet);
  }
  getWill(client: ClientRef): Promise<unknown> {
    return this.inner.getWill(client);
  }
  delWill(client: ClientRef): Promise<unknown> {
    return this.inner.delWill(client);
  }
  streamWill(brokers?: Record<string, number>): Readable {
    return this.inner.streamWill(brokers);
  }
  getClientList(topic: string): Readable {
    return this.inner.getClientList(topic);
  }
  destroy(): Promise<void> {
    return this.inner.destroy();
  }
}
