import type { Device, DeviceKind } from './devices.js';
import { isPublishLimited, TokenBucket, type DeviceLimits } from './limits.js';

/** One client connection as the limiter sees it: closing it releases whatever of it still waits. */
export class Connection {
  private open = true;
  private readonly cancels = new Set<() => void>();

  get closed(): boolean {
    return !this.open;
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    for (const cancel of this.cancels) cancel();
    this.cancels.clear();
  }

  /** Runs `cancel` when the connection closes; the returned function unregisters it. */
  onClose(cancel: () => void): () => void {
    this.cancels.add(cancel);
    return () => this.cancels.delete(cancel);
  }
}

interface Waiter {
  go: (ok: boolean) => void;
  done: boolean;
}

// Resolves true when `arm` lets the waiter go, false when its connection closes first (then `onCancel` runs).
function waiter(
  connection: Connection,
  arm: (w: Waiter) => void,
  onCancel: () => void = () => undefined,
): Promise<boolean> {
  return new Promise((resolve) => {
    if (connection.closed) return resolve(false);
    const w: Waiter = { done: false, go: () => undefined };
    const unregister = connection.onClose(() => {
      w.go(false);
      onCancel();
    });
    w.go = (ok) => {
      if (w.done) return;
      w.done = true;
      unregister();
      resolve(ok);
    };
    arm(w);
  });
}

interface Due {
  at: number;
  w: Waiter;
}

/** Publishes held back for the rate, let go in time order (arrival order for one connection) by one timer per device. */
class RateQueue {
  private due: Due[] = [];
  private live = 0;
  private timer: NodeJS.Timeout | null = null;
  private armedAt = Infinity;

  wait(at: number, connection: Connection): Promise<boolean> {
    return waiter(
      connection,
      (w) => {
        // Times grow with the debt, so this is nearly always an append; a refund (a closed connection) can
        // make a later publish due earlier than the ones already waiting on another connection.
        let i = this.due.length;
        while (i > 0 && (this.due[i - 1] as Due).at > at) i--;
        this.due.splice(i, 0, { at, w });
        this.live++;
        this.arm();
      },
      () => this.cancelled(),
    );
  }

  // Waiters of a closed connection are dropped in bulk once they are most of the queue: O(1) amortised.
  private cancelled(): void {
    this.live--;
    if (this.due.length > 2 * this.live + 16) this.due = this.due.filter((d) => !d.w.done);
  }

  private arm(): void {
    const head = this.due[0];
    if (head === undefined || head.at >= this.armedAt) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.armedAt = head.at;
    // unref: a held publish keeps no process alive (its connection does, while it lasts)
    this.timer = setTimeout(() => this.fire(), Math.max(0, head.at - Date.now())).unref();
  }

  private fire(): void {
    this.timer = null;
    this.armedAt = Infinity;
    const now = Date.now();
    while (this.due.length > 0 && (this.due[0] as Due).at <= now) {
      const { w } = this.due.shift() as Due;
      if (w.done) continue;
      this.live--;
      w.go(true);
    }
    this.arm();
  }
}

/** A FIFO semaphore of in-flight slots; a waiter whose connection closed is skipped. */
class Slots {
  private active = 0;
  private readonly queue: Waiter[] = [];

  constructor(private readonly max: number) {}

  /** Resolves true with a slot, false when the connection closed first; `onWait` runs if it has to wait. */
  acquire(connection: Connection, onWait: () => void): Promise<boolean> {
    if (connection.closed) return Promise.resolve(false);
    if (this.active < this.max) {
      this.active++;
      return Promise.resolve(true);
    }
    onWait();
    return waiter(connection, (w) => this.queue.push(w));
  }

  release(): void {
    for (let next = this.queue.shift(); next !== undefined; next = this.queue.shift()) {
      if (next.done) continue;
      next.go(true); // the slot passes straight to the next waiter
      return;
    }
    this.active--;
  }
}

interface DeviceGate {
  bucket: TokenBucket;
  rate: RateQueue;
  slots: Slots;
}

export type Admission = { ok: true; release: () => void } | { ok: false; reason: 'rate_limited' | 'closed' };

const OPEN: Admission = { ok: true, release: () => undefined };
const CLOSED: Admission = { ok: false, reason: 'closed' };
const RATE_LIMITED: Admission = { ok: false, reason: 'rate_limited' };

/**
 * The publish limits of every device of one broker: a token bucket per device (kept across its
 * connections, so a reconnect buys no new burst) and a bound on its QoS 1/2 publishes in flight.
 */
export class PublishLimiter {
  private readonly gates = new Map<string, DeviceGate>();

  constructor(
    private readonly limits: Pick<DeviceLimits, 'publishRate' | 'publishBurst' | 'maxInflight'>,
    private readonly onDelayed: (kind: DeviceKind, limit: 'rate' | 'inflight') => void,
  ) {}

  /**
   * Resolves once this publish may go on (`release` frees its in-flight slot after its PUBACK), or
   * with a refusal: `rate_limited` means the device is to be disconnected, `closed` that its
   * connection closed while it waited.
   */
  async admit(device: Device, qos: number, connection: Connection): Promise<Admission> {
    if (!isPublishLimited(device.kind)) return OPEN;
    // A connection being cut takes no more tokens: what it still sends is refused, once, as closed.
    if (connection.closed) return CLOSED;
    const gate = this.gateOf(device);
    const now = Date.now();
    const wait = gate.bucket.take(now);
    if (wait === null) {
      connection.close(); // its held publishes are refused now, and give their tokens back
      return RATE_LIMITED;
    }
    if (wait > 0) {
      this.onDelayed(device.kind, 'rate');
      if (!(await gate.rate.wait(now + wait, connection))) {
        gate.bucket.refund();
        return CLOSED;
      }
    }
    if (qos === 0) return OPEN;
    if (!(await gate.slots.acquire(connection, () => this.onDelayed(device.kind, 'inflight')))) {
      gate.bucket.refund(); // refused unsent, like a publish closed while it waited for the rate: the device sends it again
      return CLOSED;
    }
    let released = false;
    return {
      ok: true,
      release: () => {
        if (released) return;
        released = true;
        gate.slots.release();
      },
    };
  }

  private gateOf(device: Device): DeviceGate {
    let gate = this.gates.get(device.id);
    if (gate === undefined) {
      gate = {
        bucket: new TokenBucket(this.limits.publishRate, this.limits.publishBurst, Date.now()),
        rate: new RateQueue(),
        slots: new Slots(this.limits.maxInflight),
      };
      this.gates.set(device.id, gate);
    }
    return gate;
  }
}
