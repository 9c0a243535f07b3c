import type { Logger } from 'pino';
import type { DemoCredential } from './demo-files.js';
import { SimDevice } from './device.js';
import { SentLedger } from './ledger.js';
import { Planner, type Planned, type PlannerOptions, type SimDeviceRef, type Skew } from './plan.js';
import { Dice, rng } from './random.js';

/** The planner's choices (seed, run id, skus, mix, faults) plus how to reach the edges and when to stop. */
export interface SimulatorOptions
  extends Pick<PlannerOptions, 'seed' | 'runId' | 'skuPrefix' | 'skus' | 'mix' | 'faults'> {
  /** warehouse → the MQTT URL of its edge */
  edges: Record<string, string>;
  /** scanner and shelf credentials to simulate (each in a warehouse of `edges`) */
  devices: DemoCredential[];
  /** events per second, all devices together */
  rate: number;
  /** stop after this many events (duplicates not counted), or never */
  count?: number;
  /** stop after this many ms, or never */
  durationMs?: number;
  /** how far the simulator's and the edges' clocks may disagree, ms */
  toleranceMs: number;
  /** follow acks and edge status closely enough to tell when central has committed everything */
  trackCommits: boolean;
  log: Logger;
}

export interface SimStats {
  planned: number;
  events: number;
  publishes: number;
  duplicates: number;
  malformed: number;
  reordered: number;
  skewed: number;
  /** skewed events by kind; `far-ahead` and `absent` get the edge's receipt time */
  skews: Record<Skew, number>;
  acked: number;
  committed: number;
  /** malformed payloads with an id central can read, so a `rejected` ack can name it */
  malformedWithId: number;
  rejectedAsExpected: number;
  drops: number;
  reconnects: number;
  /** publishes MQTT.js gave up on a closed connection, sent again by their device */
  republished: number;
}

export interface UnexpectedRejection {
  wh: string;
  device: string;
  id: string;
  error: string;
}

const TICK_MS = 50;
const MAX_PENDING = 5_000; // publishes awaiting a PUBACK, all devices; above it generation pauses
const TERMINAL_BACKLOG_STATUSES = 2; // empty-outbox statuses after the last PUBACK that prove all committed (see waitCommitted)

/**
 * Simulated scanners and shelf sensors of several warehouses publishing at a rate, with faults.
 * `start()` connects every device; `finished` resolves at the count or duration; `drain()` stops
 * making events and waits until the edges hold every one (PUBACK); `waitCommitted()` waits until
 * central has committed them.
 */
export class Simulator {
  readonly ledger: SentLedger;
  readonly stats: SimStats = {
    planned: 0,
    events: 0,
    publishes: 0,
    duplicates: 0,
    malformed: 0,
    reordered: 0,
    skewed: 0,
    skews: { behind: 0, ahead: 0, 'far-ahead': 0, absent: 0 },
    acked: 0,
    committed: 0,
    malformedWithId: 0,
    rejectedAsExpected: 0,
    drops: 0,
    reconnects: 0,
    republished: 0,
  };
  readonly unexpectedRejections: UnexpectedRejection[] = [];
  readonly finished: Promise<void>;
  private finish: () => void = () => {};
  private readonly planner: Planner;
  private readonly devices: SimDevice[] = [];
  private readonly byId = new Map<string, SimDevice>();
  private readonly timers = new Map<NodeJS.Timeout, () => void>(); // delayed publishes: flushed at drain
  private readonly publishing = new Set<Promise<void>>();
  private readonly uncommitted = new Set<string>(); // `${device}/${id}` of valid events without a commit ack
  private readonly malformedIds = new Set<string>();
  private readonly rejectedSeen = new Set<string>();
  private readonly lastPuback = new Map<string, number>(); // wh → ms
  private readonly emptyStatuses = new Map<string, number>(); // wh → empty-outbox statuses since its last PUBACK
  private readonly commitWaiters = new Set<() => void>();
  private tickTimer: NodeJS.Timeout | null = null;
  private readonly dropTimers = new Map<SimDevice, NodeJS.Timeout>();
  private startedAt = 0;
  private stopped = false;
  private ended = false;

  constructor(private readonly o: SimulatorOptions) {
    this.ledger = new SentLedger(o.toleranceMs);
    const refs: SimDeviceRef[] = [];
    const perKind = new Map<string, number>();
    for (const c of o.devices) {
      if (c.kind !== 'scanner' && c.kind !== 'shelf')
        throw new Error(`${c.id} is a ${c.kind}: the simulator plays scanners and shelf sensors only`);
      const url = o.edges[c.warehouse];
      if (url === undefined) throw new Error(`${c.id} belongs to ${c.warehouse}, which has no edge`);
      const k = `${c.warehouse}/${c.kind}`;
      const index = perKind.get(k) ?? 0;
      perKind.set(k, index + 1);
      const ref: SimDeviceRef = { id: c.id, wh: c.warehouse, kind: c.kind, index };
      refs.push(ref);
      const device = new SimDevice({
        ref,
        password: c.password,
        url,
        clientId: `${c.id}-${o.runId}`,
        watchStatus: o.trackCommits,
        onMessage: (d, topic, payload) => this.onMessage(d, topic, payload),
      });
      this.devices.push(device);
      this.byId.set(c.id, device);
    }
    if (refs.length === 0) throw new Error('no scanner or shelf sensor to simulate');
    this.planner = new Planner({
      seed: o.seed,
      runId: o.runId,
      skuPrefix: o.skuPrefix,
      skus: o.skus,
      mix: o.mix,
      faults: o.faults,
      ledger: this.ledger,
      devices: refs,
    });
    this.finished = new Promise((resolve) => (this.finish = resolve));
  }

  /** Every (warehouse, sku) the run may write. */
  rows(): { wh: string; sku: string }[] {
    const whs = [...new Set(this.devices.filter((d) => d.ref.kind === 'scanner').map((d) => d.ref.wh))];
    return whs.flatMap((wh) => this.planner.allSkus().map((sku) => ({ wh, sku })));
  }

  get pending(): number {
    return this.devices.reduce((s, d) => s + d.pending, 0);
  }

  get elapsedMs(): number {
    return this.startedAt === 0 ? 0 : Date.now() - this.startedAt;
  }

  async start(): Promise<void> {
    const results = await Promise.allSettled(this.devices.map((d) => d.start()));
    const failed = results.flatMap((r) => (r.status === 'rejected' ? [(r.reason as Error).message] : []));
    if (failed.length > 0) {
      await Promise.all(this.devices.map((d) => d.stop()));
      throw new Error(
        failed.length === 1
          ? (failed[0] as string)
          : `${failed.length} devices could not connect:\n${failed.map((f) => `  - ${f}`).join('\n')}`,
      );
    }
    this.startedAt = Date.now();
    if (!this.ended) this.tickTimer = setInterval(() => this.tick(), TICK_MS);
    if (this.o.faults.disconnectEverySec > 0 && !this.stopped) {
      const dice = new Dice(rng(this.o.seed ^ 0x5eed));
      for (const d of this.devices) this.scheduleDrop(d, dice);
    }
    if (this.o.count === 0) this.stopGenerating();
  }

  /** Makes no more events (a Ctrl-C, or the count or duration reached); resolves `finished`. */
  stopGenerating(): void {
    this.ended = true;
    if (this.tickTimer) clearInterval(this.tickTimer);
    this.tickTimer = null;
    this.finish();
  }

  private scheduleDrop(d: SimDevice, dice: Dice): void {
    // exponential gaps: drops come at random, on average every disconnectEverySec
    const ms = -Math.log(1 - dice.next()) * this.o.faults.disconnectEverySec * 1000;
    this.dropTimers.set(
      d,
      setTimeout(() => {
        if (this.stopped) return;
        d.drop();
        this.scheduleDrop(d, dice);
      }, ms),
    );
  }

  private tick(): void {
    if (this.stopped) return;
    const now = Date.now();
    const elapsed = now - this.startedAt;
    if (
      (this.o.durationMs !== undefined && elapsed >= this.o.durationMs) ||
      (this.o.count !== undefined && this.stats.planned >= this.o.count)
    ) {
      this.stopGenerating();
      return;
    }
    if (this.pending > MAX_PENDING) return; // the edges are slow or away: no point piling up more
    let target = Math.floor((this.o.rate * elapsed) / 1000);
    if (this.o.count !== undefined) target = Math.min(target, this.o.count);
    // behind by more than a second (a pause, a slow machine): skip ahead rather than burst
    const behind = target - this.stats.planned;
    if (behind > Math.max(1, this.o.rate)) this.stats.planned = target - Math.max(1, Math.ceil(this.o.rate));
    while (this.stats.planned < target) this.dispatch(this.planner.next(now));
  }

  private dispatch(p: Planned): void {
    this.stats.planned++;
    const device = this.byId.get(p.device.id) as SimDevice;
    if (p.kind === 'malformed') {
      this.stats.malformed++;
      if (p.id !== null) {
        this.malformedIds.add(p.id);
        this.stats.malformedWithId++;
      }
      this.send(device, p.payload, null);
      return;
    }
    this.stats.events++;
    if (p.skew) {
      this.stats.skewed++;
      this.stats.skews[p.skew]++;
    }
    if (this.o.trackCommits) this.uncommitted.add(`${p.device.id}/${p.id}`);
    const first = () => {
      this.send(device, p.payload, p.id);
      if (p.duplicateAfterMs !== null) {
        this.stats.duplicates++;
        this.later(p.duplicateAfterMs, () => this.send(device, p.payload, p.id));
      }
    };
    if (p.delayMs > 0) {
      this.stats.reordered++;
      this.later(p.delayMs, first);
    } else first();
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.set(t, fn);
  }

  private send(device: SimDevice, payload: string, id: string | null): void {
    this.stats.publishes++;
    const sent = device.publish(payload).then(
      () => {
        const now = Date.now();
        this.stats.acked++;
        if (id !== null) this.ledger.settle(device.ref.id, id, now);
        this.lastPuback.set(device.ref.wh, now);
        this.emptyStatuses.set(device.ref.wh, 0);
      },
      (err: Error) => this.o.log.warn({ device: device.ref.id, err: err.message }, 'publish abandoned'),
    );
    this.publishing.add(sent);
    void sent.finally(() => this.publishing.delete(sent));
  }

  private onMessage(device: SimDevice, topic: string, payload: Buffer): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(payload.toString()) as Record<string, unknown>;
    } catch {
      return;
    }
    if (topic.endsWith('/status')) {
      if (msg.backlog === 0) this.emptyStatuses.set(device.ref.wh, (this.emptyStatuses.get(device.ref.wh) ?? 0) + 1);
      else this.emptyStatuses.set(device.ref.wh, 0);
      this.wakeCommitWaiters();
      return;
    }
    const id = typeof msg.id === 'string' ? msg.id : null;
    if (id === null || !id.startsWith(`${this.o.runId}-`)) return; // another run's event on a shared device
    if (this.malformedIds.has(id)) {
      if (msg.status === 'rejected' && !this.rejectedSeen.has(id)) {
        this.rejectedSeen.add(id);
        this.stats.rejectedAsExpected++;
      }
      return;
    }
    const key = `${device.ref.id}/${id}`;
    if (msg.status === 'rejected') {
      const error = msg.error as { code?: string; message?: string } | undefined;
      if (!this.unexpectedRejections.some((r) => r.id === id && r.device === device.ref.id)) {
        this.unexpectedRejections.push({
          wh: device.ref.wh,
          device: device.ref.id,
          id,
          error: `${error?.code ?? '?'}: ${error?.message ?? ''}`,
        });
      }
      this.uncommitted.delete(key);
    } else if (this.uncommitted.delete(key)) {
      this.stats.committed++;
    }
    this.wakeCommitWaiters();
  }

  /**
   * Stops making events, sends the held-back ones now, and waits until the edges have every event
   * (PUBACK). Rejects after `timeoutMs` with how many are still out.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.stopped = true;
    if (this.tickTimer) clearInterval(this.tickTimer);
    for (const t of this.dropTimers.values()) clearTimeout(t);
    this.dropTimers.clear();
    // a held-back event may schedule its duplicate: flush until nothing is left
    while (this.timers.size > 0) {
      const due = [...this.timers];
      this.timers.clear();
      for (const [t, fn] of due) {
        clearTimeout(t);
        fn();
      }
    }
    const deadline = Date.now() + timeoutMs;
    while (this.publishing.size > 0) {
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(`${this.pending} publishes still without a PUBACK from the edge after ${timeoutMs} ms`);
      await Promise.race([
        Promise.allSettled([...this.publishing]),
        new Promise((r) => setTimeout(r, Math.min(left, 1_000))),
      ]);
    }
  }

  /**
   * Resolves true once central has committed every event of the run: each has its commit ack, or its
   * edge reported an empty outbox in two statuses after its last PUBACK (the edge deletes an event
   * only on central's commit ack, and the second status was computed after the first arrived; acks
   * sent while a device was disconnected are lost, the status is not). False at the timeout.
   */
  async waitCommitted(timeoutMs: number): Promise<boolean> {
    const done = () => {
      if (this.uncommitted.size === 0) return true;
      const open = new Set([...this.uncommitted].map((k) => this.byId.get(k.slice(0, k.indexOf('/')))?.ref.wh));
      return [...open].every(
        (wh) => wh !== undefined && (this.emptyStatuses.get(wh) ?? 0) >= TERMINAL_BACKLOG_STATUSES,
      );
    };
    if (done()) return true;
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.commitWaiters.delete(check);
        resolve(false);
      }, timeoutMs);
      const check = () => {
        if (!done()) return;
        clearTimeout(timer);
        this.commitWaiters.delete(check);
        resolve(true);
      };
      this.commitWaiters.add(check);
    });
  }

  get outstanding(): number {
    return this.uncommitted.size;
  }

  private wakeCommitWaiters(): void {
    for (const w of [...this.commitWaiters]) w();
  }

  /** Disconnects every device. */
  async close(): Promise<void> {
    this.stopped = true;
    if (this.tickTimer) clearInterval(this.tickTimer);
    for (const t of this.dropTimers.values()) clearTimeout(t);
    this.dropTimers.clear();
    for (const t of this.timers.keys()) clearTimeout(t);
    this.timers.clear();
    await Promise.all(this.devices.map((d) => d.stop()));
    this.finish();
  }

  /** Current counters (drops and reconnects summed over devices). */
  snapshot(): SimStats {
    const sum = (f: (d: SimDevice) => number) => this.devices.reduce((s, d) => s + f(d), 0);
    return {
      ...this.stats,
      skews: { ...this.stats.skews },
      drops: sum((d) => d.drops),
      reconnects: sum((d) => d.reconnects),
      republished: sum((d) => d.republished),
    };
  }
}
