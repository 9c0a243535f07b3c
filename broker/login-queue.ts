/**
 * The password checks (scrypt, ~50 ms of CPU each) of one broker, queued so a flood of bogus logins cannot
 * make a legitimate one wait: 2,360 of them from 4 addresses used to hold a device's login for 40 s, past
 * MQTT.js's 30 s connect timeout, because every check went straight to libuv's thread pool, first come first
 * served.
 *
 * - At most `concurrency` checks run at once, so logins never take every core from the publishes.
 * - A device logging in again from an address it authenticated from (`priority`) goes before everyone else.
 * - The others take turns by remote address (round robin), so one address's flood delays another address's
 *   login by one check per flooding address, not by the length of the flood; each address may have at most
 *   `perAddress` checks waiting, and one more is refused at once (the device retries, nothing is spent).
 */
export type LoginLane = 'priority' | 'address';

interface Waiting {
  start: () => void;
  gone: () => boolean;
  skip: () => void;
}

// Most checks waiting in the priority lane: each is bounded by its client id's attempt window already.
const MAX_PRIORITY_WAITING = 4_096;

export class LoginQueue {
  private running = 0;
  private readonly priority: Waiting[] = [];
  /** address → its waiting checks; a Map iterates in insertion order, so re-inserting an address sends it last */
  private readonly byAddress = new Map<string, Waiting[]>();
  private waitingCount = 0;

  constructor(
    private readonly concurrency: number,
    private readonly perAddress: number,
  ) {}

  /** Checks waiting for their turn. */
  get waiting(): number {
    return this.waitingCount;
  }

  /**
   * Runs `check` in its turn. Returns null, running nothing, when its lane is full; the promise resolves
   * with `gone` instead of running the check when `gone()` holds at its turn (the client left meanwhile).
   */
  run<T>(lane: LoginLane, address: string, check: () => Promise<T>, gone: () => boolean): Promise<T | 'gone'> | null {
    const queue = lane === 'priority' ? this.priority : (this.byAddress.get(address) ?? []);
    if (queue.length >= (lane === 'priority' ? MAX_PRIORITY_WAITING : this.perAddress)) return null;
    return new Promise<T | 'gone'>((resolve, reject) => {
      const start = () => {
        this.running++;
        check()
          .then(resolve, reject)
          .finally(() => {
            this.running--;
            this.next();
          });
      };
      queue.push({ start, gone, skip: () => resolve('gone') });
      this.waitingCount++;
      if (lane === 'address' && queue.length === 1) this.byAddress.set(address, queue);
      this.next();
    });
  }

  private next(): void {
    while (this.running < this.concurrency) {
      const w = this.take();
      if (w === undefined) return;
      this.waitingCount--;
      if (w.gone()) w.skip();
      else w.start();
    }
  }

  private take(): Waiting | undefined {
    const first = this.priority.shift();
    if (first !== undefined) return first;
    for (const [address, queue] of this.byAddress) {
      const w = queue.shift();
      this.byAddress.delete(address);
      if (queue.length > 0) this.byAddress.set(address, queue); // its next check waits for the other addresses' turns
      if (w !== undefined) return w;
    }
    return undefined;
  }
}
