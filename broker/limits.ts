import type { DeviceKind } from './devices.js';

/**
 * Per-device limits of a broker, so one misbehaving device cannot take the broker down for the others.
 * Scanners and shelf sensors are limited; gateways and processors carry a whole warehouse (an edge's
 * forwarder keeps thousands of events in flight) and are exempt from the publish limits.
 */
export interface DeviceLimits {
  /** Publishes per second one device may sustain: the refill rate of its token bucket. */
  publishRate: number;
  /** Publishes one device may send at once above its rate: the size of its bucket. */
  publishBurst: number;
  /** QoS 1/2 publishes of one device decided (awaiting their PUBACK) at once; more wait in arrival order. */
  maxInflight: number;
  /** Connection attempts per client id within `CONNECT_WINDOW_MS`; more are refused. */
  connectsPerClientId: number;
  /** Connection attempts per remote address within `CONNECT_WINDOW_MS`; more are refused. Known-good logins and unknown usernames do not count. */
  connectsPerAddress: number;
  /** Password checks (scrypt) running at once; more wait their turn. */
  loginConcurrency: number;
  /** Password checks of one remote address waiting their turn; one more is refused. */
  loginQueuePerAddress: number;
  /** Persistent sessions (`clean=false` client ids) one device may hold; a new one ends its session offline the longest. */
  sessionsPerDevice: number;
  /** Seconds a persistent session is kept once its client has gone. */
  sessionExpirySeconds: number;
  /** Messages one persistent session keeps queued; the oldest are dropped beyond. */
  queuedPerSession: number;
  /** Bytes one persistent session keeps queued; the oldest are dropped beyond. */
  queuedBytesPerSession: number;
  /** Bytes all sessions of the broker keep together (queued messages and QoS 2 publishes awaiting PUBREL). */
  sessionBytes: number;
  /** Subscriptions one client may hold; more are refused (SUBACK 0x80). */
  subscriptionsPerClient: number;
  /** QoS 2 publishes of one device awaiting their PUBREL, across its client ids; one more disconnects it. */
  qos2PerDevice: number;
}

/**
 * A handheld scanner scans a few times a second, a fixed conveyor scanner a few tens; a device that
 * was offline flushes its queue in a burst. A device reconnecting with a 1 s backoff makes 60 attempts
 * a minute; a warehouse behind one NAT address powers on a few hundred devices at once.
 */
export const DEFAULT_DEVICE_LIMITS: Readonly<DeviceLimits> = {
  publishRate: 50, // publishes/s
  publishBurst: 500, // publishes
  maxInflight: 100, // unacknowledged QoS 1 publishes
  connectsPerClientId: 30, // attempts per minute
  connectsPerAddress: 600, // attempts per minute
  // Two checks of ~50 ms CPU each at once keep up with 40 logins/s and leave the publishes a core on a 2-core edge.
  loginConcurrency: 2, // scrypt checks
  loginQueuePerAddress: 64, // checks waiting (~1.6 s of checks at 2 at once)
  // A display or processor restarts under a new client id now and then; a device holding 16 sessions is not normal.
  sessionsPerDevice: 16, // persistent sessions
  sessionExpirySeconds: 86_400, // s (1 day)
  queuedPerSession: 1_000, // messages (Mosquitto's max_queued_messages)
  queuedBytesPerSession: 1024 * 1024, // bytes
  sessionBytes: 64 * 1024 * 1024, // bytes
  // A display subscribes to 5 filters, a Node-RED flow one per sku node: 1,000 leaves room and stops 200,000 (+366 MB).
  subscriptionsPerClient: 1_000, // filters
  qos2PerDevice: 100, // publishes awaiting PUBREL (100 × 64 KiB at most)
};

/** The sliding window of the connection-attempt limits, in ms. */
export const CONNECT_WINDOW_MS = 60_000;

/** A device that has had this many bursts' worth of publishes held back, without its bucket ever refilling, is disconnected. */
export const DISCONNECT_AFTER_BURSTS = 10;

/** Kinds with no publish rate or in-flight limit. */
export function isPublishLimited(kind: DeviceKind): boolean {
  return kind !== 'gateway' && kind !== 'processor';
}

/** The problems of a set of limits; empty when they are valid. */
export function limitProblems(limits: DeviceLimits): string[] {
  const problems: string[] = [];
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isInteger(value) || value < 1)
      problems.push(`limits.${name}: must be a positive integer (got ${String(value)})`);
  }
  if (limits.sessionBytes < limits.queuedBytesPerSession) {
    problems.push(
      `limits.sessionBytes: must be at least queuedBytesPerSession (${limits.queuedBytesPerSession}), or no session could queue its bound`,
    );
  }
  return problems;
}

// Most keys a window remembers; beyond it the stalest are forgotten (a flood of made-up client ids).
const MAX_WINDOW_KEYS = 100_000;

/**
 * Attempts per key in a sliding window: an attempt is refused when `limit` admitted attempts lie within
 * the last `windowMs`. Refused attempts do not count: they cost no password check, and counting them
 * locked out for good a device that retries every second (MQTT.js's default) once it had been refused,
 * e.g. after a full outbox closed its connection on every publish. It is admitted again as soon as its
 * window has room, at most `limit` times per window.
 * Keeps at most `limit` times per key, and forgets keys idle for a whole window.
 */
export class AttemptWindow {
  private readonly attempts = new Map<string, number[]>();

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
    private readonly maxKeys = MAX_WINDOW_KEYS,
  ) {}

  /** Records an attempt at `now` (ms) if it is within the limit; true when it is. */
  record(key: string, now: number): boolean {
    if (!this.allows(key, now)) return false;
    this.admit(key, now);
    return true;
  }

  /** True when an attempt at `now` (ms) would be within the limit; records nothing. */
  allows(key: string, now: number): boolean {
    const times = this.attempts.get(key);
    if (times === undefined) return true;
    const since = now - this.windowMs;
    while (times.length > 0 && (times[0] as number) <= since) times.shift();
    return times.length < this.limit;
  }

  /** Counts an admitted attempt at `now` (ms). */
  admit(key: string, now: number): void {
    let times = this.attempts.get(key);
    if (times === undefined) {
      if (this.attempts.size >= this.maxKeys) this.sweep(now);
      times = [];
      this.attempts.set(key, times);
    }
    times.push(now);
    if (times.length > this.limit) times.shift();
  }

  /** Keys remembered (for tests and memory checks). */
  get size(): number {
    return this.attempts.size;
  }

  private sweep(now: number): void {
    const since = now - this.windowMs;
    for (const [key, times] of this.attempts) if ((times.at(-1) ?? 0) <= since) this.attempts.delete(key);
    // Still full: forget the oldest keys (a Map iterates in insertion order).
    for (const key of this.attempts.keys()) {
      if (this.attempts.size < this.maxKeys) break;
      this.attempts.delete(key);
    }
  }
}

export type ConnectDecision =
  | { refusal: 'attempts_client_id' | 'attempts_address' }
  | { refusal: null; knownGood: boolean; admit: () => void };

/** Addresses remembered per client id as ones it authenticated from lately (a gateway's, a scanner's, after DHCP). */
const KNOWN_ADDRESSES_PER_CLIENT_ID = 4;

/**
 * Connection attempts per client id and per remote address, each in its sliding window.
 *
 * Attempts are counted before the password check (that is what spares the scrypt work), so anyone who can
 * reach the broker could use up a client id's window with wrong passwords and lock its device out: an
 * edge's link to central, for one (its client id is its username). So an address that client id last
 * authenticated from has a window of its own for that client id: attempts from elsewhere cannot use it
 * up, and the device's own reconnect loop is bounded all the same.
 */
export class ConnectLimiter {
  private readonly byClientId: AttemptWindow;
  private readonly byClientIdAtKnownAddress: AttemptWindow;
  private readonly byAddress: AttemptWindow;
  /** client id → addresses it authenticated from, most recent last (a Map keeps insertion order: oldest ids first) */
  private readonly known = new Map<string, string[]>();

  constructor(limits: Pick<DeviceLimits, 'connectsPerClientId' | 'connectsPerAddress'>) {
    this.byClientId = new AttemptWindow(limits.connectsPerClientId, CONNECT_WINDOW_MS);
    this.byClientIdAtKnownAddress = new AttemptWindow(limits.connectsPerClientId, CONNECT_WINDOW_MS);
    this.byAddress = new AttemptWindow(limits.connectsPerAddress, CONNECT_WINDOW_MS);
  }

  /** The limit an attempt exceeds, or null: then it counts against both keys (a refused one counts against neither). */
  record(clientId: string, address: string | undefined, now: number): 'attempts_client_id' | 'attempts_address' | null {
    const decision = this.check(clientId, address, now);
    if (decision.refusal !== null) return decision.refusal;
    decision.admit();
    return null;
  }

  /**
   * Whether an attempt is within its windows, recording nothing: `admit` then counts it. An attempt from an
   * address its client id authenticated from (`knownGood`) is limited by its own window only: a flood of
   * attempts from that address (a warehouse behind one NAT address) must not lock out its known devices.
   */
  check(clientId: string, address: string | undefined, now: number): ConnectDecision {
    const knownGood = address !== undefined && this.known.get(clientId)?.includes(address) === true;
    if (!knownGood && address !== undefined && !this.byAddress.allows(address, now))
      return { refusal: 'attempts_address' };
    const [window, key] = knownGood
      ? [this.byClientIdAtKnownAddress, `${clientId}\u0000${address}`]
      : [this.byClientId, clientId];
    if (!window.allows(key, now)) return { refusal: 'attempts_client_id' };
    return {
      refusal: null,
      knownGood,
      admit: () => {
        window.admit(key, now);
        if (!knownGood && address !== undefined) this.byAddress.admit(address, now);
      },
    };
  }

  /** The client id authenticated from `address`: later attempts from there have their own window. */
  authenticated(clientId: string, address: string | undefined): void {
    if (address === undefined) return;
    const addresses = (this.known.get(clientId) ?? []).filter((a) => a !== address);
    addresses.push(address);
    if (addresses.length > KNOWN_ADDRESSES_PER_CLIENT_ID) addresses.shift();
    this.known.delete(clientId); // re-inserted last: the least recently authenticated ids go first
    this.known.set(clientId, addresses);
    if (this.known.size > MAX_WINDOW_KEYS) this.known.delete(this.known.keys().next().value as string);
  }
}

/**
 * A device's token bucket. `take` answers how long its next publish must wait (its PUBACK is held
 * that long, and aedes reads no more from the connection meanwhile), or null once the device has
 * gone on far beyond its rate: `DISCONNECT_AFTER_BURSTS` × burst publishes held back since the
 * bucket was last full.
 */
export class TokenBucket {
  private tokens: number;
  private updatedAt: number;
  private heldSinceFull = 0;

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.updatedAt = now;
  }

  /** Takes a token at `now` (ms): the ms to wait (0: none), or null when the device is to be disconnected. */
  take(now: number): number | null {
    this.tokens = Math.min(this.burst, this.tokens + (Math.max(0, now - this.updatedAt) * this.rate) / 1000);
    this.updatedAt = Math.max(this.updatedAt, now);
    if (this.tokens >= this.burst) this.heldSinceFull = 0;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    if (this.heldSinceFull >= this.burst * DISCONNECT_AFTER_BURSTS) {
      this.heldSinceFull = 0; // a reconnect starts a new count, still in debt: its publishes wait
      return null;
    }
    this.heldSinceFull++;
    this.tokens -= 1;
    return Math.ceil((-this.tokens * 1000) / this.rate);
  }

  /** Gives back a token taken for a publish that never went on (its connection closed while it waited). */
  refund(): void {
    this.tokens = Math.min(this.burst, this.tokens + 1);
  }
}
