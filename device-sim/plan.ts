import { MAX_CLOCK_AHEAD_MS } from '../protocol/index.js';
import type { BookType, SentLedger } from './ledger.js';
import { Dice, rng } from './random.js';

export type EventType = BookType | 'level';
export const EVENT_TYPES: readonly EventType[] = ['received', 'shipped', 'returned', 'adjusted', 'counted', 'level'];

/** Relative weights of event types. Scanners send the book events, shelf sensors the `level` readings. */
export type Mix = Record<EventType, number>;

/** A working day of a small warehouse: more picking than receiving, a few returns, corrections and cycle counts. */
export const DEFAULT_MIX: Mix = { received: 25, shipped: 35, returned: 4, adjusted: 6, counted: 5, level: 25 };

/** Parses `received=30,shipped=40,…`; types left out get weight 0. */
export function parseMix(raw: string): Mix {
  const mix: Mix = { received: 0, shipped: 0, returned: 0, adjusted: 0, counted: 0, level: 0 };
  for (const part of raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const m = /^([a-z]+)=(\d+(?:\.\d+)?)$/.exec(part);
    if (!m || !(EVENT_TYPES as readonly string[]).includes(m[1] as string)) {
      throw new Error(
        `must be a list like received=30,shipped=40 with types ${EVENT_TYPES.join(', ')} (got ${JSON.stringify(part)})`,
      );
    }
    mix[m[1] as EventType] = Number(m[2]);
  }
  if (Object.values(mix).every((w) => w === 0)) throw new Error('needs at least one type with a weight above 0');
  return mix;
}

/** Fault injection, each a probability per event except `disconnectEverySec`. */
export interface Faults {
  /** the same event (same id) published again */
  duplicate: number;
  /** held back 0.2–3 s, so it arrives after events made later */
  reorder: number;
  /** event time from a wrong clock: hours behind, minutes ahead, far ahead, or absent */
  skew: number;
  /** a payload central must reject (bad JSON, schema violations, oversized…) */
  malformed: number;
  /** each device drops its connection on average this often, in s (0: never) */
  disconnectEverySec: number;
}

export const NO_FAULTS: Faults = { duplicate: 0, reorder: 0, skew: 0, malformed: 0, disconnectEverySec: 0 };
/** `--faults all`: every fault at a rate that still leaves a readable display. */
export const ALL_FAULTS: Faults = { duplicate: 0.05, reorder: 0.1, skew: 0.1, malformed: 0.03, disconnectEverySec: 15 };

export interface SimDeviceRef {
  id: string;
  wh: string;
  kind: 'scanner' | 'shelf';
  /** position among the warehouse's devices of its kind; names the shelf's location */
  index: number;
}

export type Skew = 'behind' | 'ahead' | 'far-ahead' | 'absent';

export interface PlannedEvent {
  kind: 'event';
  device: SimDeviceRef;
  id: string;
  type: EventType;
  sku: string;
  payload: string;
  skew: Skew | null;
  /** ms to hold the event back before its first publish (reorder) */
  delayMs: number;
  /** ms after the first publish to publish it again, or null */
  duplicateAfterMs: number | null;
}

export interface PlannedMalformed {
  kind: 'malformed';
  device: SimDeviceRef;
  /** the id central can read from the payload (and answers `rejected` for), or null */
  id: string | null;
  reason: string;
  payload: string;
}

export type Planned = PlannedEvent | PlannedMalformed;

const AHEAD_MARGIN_MS = 60_000; // "ahead" skew stays this far inside the 5-minute rule, for clocks that drift
const MINUTE = 60_000; // ms
const HOUR = 60 * MINUTE;

export interface PlannerOptions {
  seed: number;
  /** unique per run, so event ids never collide with an earlier run on the same devices */
  runId: string;
  skuPrefix: string;
  skus: number;
  mix: Mix;
  faults: Faults;
  ledger: SentLedger;
  devices: readonly SimDeviceRef[];
}

/** Makes the events of a run: a realistic mix, fault decisions, and every valid one entered in the ledger. */
export class Planner {
  readonly dice: Dice;
  private seq = 0;
  private readonly byKind: Record<'scanner' | 'shelf', SimDeviceRef[]>;
  private readonly mix: Mix;

  constructor(private readonly o: PlannerOptions) {
    this.dice = new Dice(rng(o.seed));
    this.byKind = {
      scanner: o.devices.filter((d) => d.kind === 'scanner'),
      shelf: o.devices.filter((d) => d.kind === 'shelf'),
    };
    // a type whose kind of device is absent is never chosen
    this.mix = { ...o.mix };
    if (this.byKind.scanner.length === 0) for (const t of EVENT_TYPES) if (t !== 'level') this.mix[t] = 0;
    if (this.byKind.shelf.length === 0) this.mix.level = 0;
    if (Object.values(this.mix).every((w) => w === 0))
      throw new Error(
        'the mix has no event type that these devices can send (scanners send book events, shelf sensors level readings)',
      );
  }

  sku(n: number): string {
    return `${this.o.skuPrefix}${String(n).padStart(3, '0')}`;
  }

  /** Every sku of the run. */
  allSkus(): string[] {
    return Array.from({ length: this.o.skus }, (_, i) => this.sku(i + 1));
  }

  next(now: number): Planned {
    const { dice, o } = this;
    const type = dice.weighted(this.mix);
    const device = dice.pick(type === 'level' ? this.byKind.shelf : this.byKind.scanner);
    const id = `${o.runId}-${(this.seq++).toString(36)}`;
    if (dice.chance(o.faults.malformed)) return { kind: 'malformed', device, ...malformed(dice, id, this.sku(1)) };

    // a few skus sell much more than the rest
    const sku = this.sku(1 + Math.floor(o.skus * dice.next() ** 1.6));
    const believed = o.ledger.believed(device.wh, sku);
    let t: EventType = type;
    let qty: number;
    switch (type) {
      case 'received':
        qty = dice.chance(0.05) ? dice.int(50, 200) : dice.int(1, 24);
        break;
      case 'shipped':
        qty = dice.int(1, 8);
        // pickers take what is there; now and then the books are wrong and stock goes negative (an alert)
        if (believed <= 0 && !dice.chance(0.03)) [t, qty] = ['received', dice.int(6, 24)];
        else if (believed > 0 && qty > believed && !dice.chance(0.03)) qty = believed;
        break;
      case 'returned':
        qty = dice.int(1, 3);
        break;
      case 'adjusted':
        qty = dice.chance(0.7) ? -dice.int(1, 3) : dice.int(1, 5); // damage more often than found goods
        break;
      case 'counted':
        qty = Math.max(0, believed + dice.int(-2, 1)); // cycle counts find a little shrinkage
        break;
      case 'level':
        qty = Math.max(0, Math.round(believed * (0.2 + dice.next() * 0.4)));
        break;
    }

    let skew: Skew | null = dice.chance(o.faults.skew)
      ? dice.pick<Skew>(['behind', 'ahead', 'far-ahead', 'absent'])
      : null;
    // The edge decides the time of a far-ahead or absent one; only where no count could end up on either side of it.
    // (A level reading is not book stock: any time will do.)
    if (
      (skew === 'far-ahead' || skew === 'absent') &&
      (t === 'counted' || (t !== 'level' && !o.ledger.canLeaveTimeToEdge(device.wh, sku, now)))
    )
      skew = 'behind';
    let ts: number | null;
    switch (skew) {
      case null:
        ts = now;
        break;
      case 'behind':
        ts = now - dice.int(MINUTE, 2 * HOUR);
        break;
      case 'ahead':
        ts = now + dice.int(10_000, MAX_CLOCK_AHEAD_MS - AHEAD_MARGIN_MS);
        break;
      case 'far-ahead':
      case 'absent':
        ts = null;
        break;
    }
    if (t === 'counted' && ts !== null) ts = o.ledger.countTime(device.wh, sku, ts);

    const body: Record<string, unknown> = { v: 1, id, type: t, sku, qty };
    if (skew === 'far-ahead') body.ts = new Date(now + dice.int(10 * MINUTE, 24 * HOUR)).toISOString();
    else if (ts !== null) body.ts = dice.chance(0.5) ? new Date(ts).toISOString() : ts; // both forms are valid
    if (t === 'level') body.location = `bay-${device.index + 1}`;
    if (t === 'adjusted') body.reason = qty < 0 ? 'damaged' : 'found';
    o.ledger.record({ wh: device.wh, sku, device: device.id, id, type: t, qty, ts }, now);
    return {
      kind: 'event',
      device,
      id,
      type: t,
      sku,
      payload: JSON.stringify(body),
      skew,
      delayMs: dice.chance(o.faults.reorder) ? dice.int(200, 3_000) : 0,
      duplicateAfterMs: dice.chance(o.faults.duplicate) ? dice.int(0, 2_000) : null,
    };
  }
}

/** One payload central must refuse, with the id it can still read from it (or null). */
export function malformed(dice: Dice, id: string, sku: string): { id: string | null; reason: string; payload: string } {
  const valid = { v: 1, id, type: 'received', sku, qty: 1 };
  const cases: [string, () => unknown, boolean][] = [
    ['truncated JSON', () => `${JSON.stringify(valid).slice(0, 20)}`, false],
    ['qty 0 on a receipt', () => ({ ...valid, qty: 0 }), true],
    ['unknown type', () => ({ ...valid, type: 'stolen' }), true],
    ['missing sku', () => ({ v: 1, id, type: 'shipped', qty: 2 }), true],
    ['unsupported version', () => ({ ...valid, v: 2 }), true],
    ['bad sku', () => ({ ...valid, sku: 'no spaces allowed' }), true],
    ['level without location', () => ({ ...valid, type: 'level' }), true],
    ['unreadable ts', () => ({ ...valid, ts: 'yesterday' }), true],
    ['reason over 200 characters', () => ({ ...valid, type: 'adjusted', qty: -1, reason: 'r'.repeat(201) }), true],
    ['over 8 KiB', () => ({ ...valid, note: 'x'.repeat(9_000) }), false],
    ['not an object', () => [valid], false],
  ];
  const [reason, make, readable] = dice.pick(cases);
  const value = make();
  return { id: readable ? id : null, reason, payload: typeof value === 'string' ? value : JSON.stringify(value) };
}
