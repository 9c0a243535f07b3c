import type { Logger } from 'pino';
import type { EdgeMetrics } from './metrics.js';
import type { RetainedRow, RetainedStore } from './outbox/retained.js';

export interface MirrorOptions {
  /** where the last known values outlive the process (the outbox file) */
  store: RetainedStore;
  /** publishes on the edge broker; resolves once the broker has taken the message */
  publish: (topic: string, payload: Buffer, retain: boolean) => Promise<void>;
  metrics: EdgeMetrics;
  log: Logger;
  /** ms between writes of the topics that changed; default SAVE_EVERY_MS */
  saveEveryMs?: number;
}

// ms: changes are written together, never one per message, so the mirror costs the outbox thread (and the
// events' fsyncs waiting behind it) one small transaction per second. A kill -9 loses at most this much:
// the values served after the restart are then that much older, and central's replace them when it is back.
const SAVE_EVERY_MS = 1_000;
const SAVE_MAX_ROWS = 1_000; // rows per write: a group commit of events waits behind at most this many
const LOAD_PAGE = 2_000; // rows read per request at start

/** What a topic from central is to the mirror. */
type Kind = 'ack' | 'alert' | 'stock' | 'shelf' | null;

/**
 * One split instead of a match per filter (this runs for every message central sends the edge): `wh/+/dev/+/ack`
 * (not "ends with /ack": a sku may be called ack), `alerts/+/+`, `stock/+` and `wh/+/stock/+`, `wh/+/shelf/+/+`.
 */
export function kindOf(topic: string): Kind {
  const l = topic.split('/');
  if (l[0] === 'wh') {
    if (l.length === 4 && l[2] === 'stock') return 'stock';
    if (l.length === 5 && l[2] === 'dev' && l[4] === 'ack') return 'ack';
    if (l.length === 5 && l[2] === 'shelf') return 'shelf';
    return null;
  }
  if (l.length === 2 && l[0] === 'stock') return 'stock';
  if (l.length === 3 && l[0] === 'alerts') return 'alert';
  return null;
}

/**
 * What orders the values of a retained topic: a stock topic's `version` (CONTRACT 4: strictly increasing per topic),
 * a shelf reading's event time (epoch ms: central keeps the latest by time). Null when the payload names neither.
 */
export function orderOf(topic: string, payload: Buffer, kind: Kind = kindOf(topic)): number | null {
  if (kind !== 'stock' && kind !== 'shelf') return null;
  let value: unknown;
  try {
    value = JSON.parse(payload.toString('utf8'));
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  if (kind === 'stock') {
    const version = (value as { version?: unknown }).version;
    return Number.isSafeInteger(version) ? (version as number) : null;
  }
  const ts = (value as { ts?: unknown }).ts;
  const ms = typeof ts === 'string' ? Date.parse(ts) : Number.NaN;
  return Number.isFinite(ms) ? ms : null;
}

/**
 * The downlink mirror (DESIGN, the flow): central's stock and shelf topics republished retained on the edge
 * broker, and central's acks plainly. The retained values are also kept in the outbox file, so an edge restarted
 * while central is unreachable serves its displays the last known values (README, CONTRACT 4), with its
 * `wh/{wh}/status` saying central is offline: that is how a display knows they are stale, as when the link drops
 * while the edge runs. An older version never replaces a newer one, in the broker or on disk.
 */
export class DownlinkMirror {
  readonly #saveEveryMs: number;
  /** topic → the order of the value served (null: its payload names none) */
  readonly #served = new Map<string, number | null>();
  /** topics changed since the last write, with their newest value */
  #unsaved = new Map<string, RetainedRow>();
  #timer: NodeJS.Timeout | undefined;
  #saving: Promise<void> = Promise.resolve();
  #stopped = false;

  constructor(private readonly o: MirrorOptions) {
    this.#saveEveryMs = o.saveEveryMs ?? SAVE_EVERY_MS;
  }

  /**
   * Serves the values kept on disk, retained, before anything from central arrives. A store that cannot be read
   * leaves the edge without them (logged, counted), never without its outbox: events matter more than displays.
   */
  async restore(): Promise<number> {
    let restored = 0;
    try {
      for (let after = ''; ; ) {
        const page = await this.o.store.loadRetained(after, LOAD_PAGE);
        if (page.length === 0) break;
        await Promise.all(page.map((r) => this.o.publish(r.topic, r.payload, true)));
        for (const r of page) this.#served.set(r.topic, r.order);
        restored += page.length;
        after = (page[page.length - 1] as RetainedRow).topic;
      }
    } catch (err) {
      this.o.metrics.mirrorErrors.inc({ op: 'restore' });
      this.o.log.error(
        { err: (err as Error).message, restored },
        'the last known values could not all be read back: displays get what central sends when it is back',
      );
    }
    this.o.metrics.mirrorRestored.set(restored);
    if (restored > 0)
      this.o.log.info({ topics: restored }, "serving the last known values of central's topics until central is back");
    return restored;
  }

  /** A message from central on a mirrored topic (stock, shelf, acks, alerts). */
  offer(topic: string, payload: Buffer): void {
    const kind = kindOf(topic);
    if (kind === 'ack') {
      void this.o.publish(topic, payload, false);
      this.o.metrics.mirrored.inc({ kind: 'ack' });
      return;
    }
    // Central's alerts for this warehouse (negative-stock, dead-letter…) reach the edge's displays; not retained, as at central.
    if (kind === 'alert') {
      void this.o.publish(topic, payload, false);
      this.o.metrics.mirrored.inc({ kind: 'alert' });
      return;
    }
    const order = payload.length === 0 ? null : orderOf(topic, payload, kind);
    const served = this.#served.get(topic);
    if (order !== null && served !== undefined && served !== null && order <= served) {
      // Several processors can publish a topic out of version order, and a restarted central's broker may hold an
      // older copy than the one served here: never a newer value.
      if (order < served) this.o.metrics.mirrorOlder.inc();
      // The same version is the same value (CONTRACT 4: a version per change): central's broker sends every retained
      // topic again on each reconnect, which would rewrite them all on disk for nothing.
      return;
    }
    if (payload.length === 0) this.#served.delete(topic);
    else this.#served.set(topic, order);
    void this.o.publish(topic, payload, true);
    this.o.metrics.mirrored.inc({ kind: kind === 'shelf' ? 'shelf' : 'stock' });
    this.#unsaved.set(topic, { topic, order, payload });
    this.o.metrics.mirrorUnsaved.set(this.#unsaved.size);
    this.#schedule();
  }

  /** Writes what changed since the last write; one write at a time, in rows of SAVE_MAX_ROWS. */
  save(): Promise<void> {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#saving = this.#saving.then(() => this.#write());
    return this.#saving;
  }

  async #write(): Promise<void> {
    const rows = [...this.#unsaved.values()];
    this.#unsaved = new Map();
    for (let i = 0; i < rows.length; i += SAVE_MAX_ROWS) {
      const chunk = rows.slice(i, i + SAVE_MAX_ROWS);
      try {
        await this.o.store.saveRetained(chunk);
      } catch (err) {
        // Kept for the next write, unless a newer value of the topic came meanwhile (it is there already).
        for (const r of rows.slice(i)) if (!this.#unsaved.has(r.topic)) this.#unsaved.set(r.topic, r);
        this.o.metrics.mirrorErrors.inc({ op: 'save' });
        this.o.log.error(
          { err: (err as Error).message, topics: rows.length - i },
          'writing the mirrored topics failed; retrying',
        );
        break;
      }
    }
    this.o.metrics.mirrorUnsaved.set(this.#unsaved.size);
    this.#schedule();
  }

  /** A write in SAVE_EVERY_MS when something waits for one. */
  #schedule(): void {
    if (this.#timer !== undefined || this.#stopped || this.#unsaved.size === 0) return;
    this.#timer = setTimeout(() => void this.save(), this.#saveEveryMs);
  }

  /** Writes what is left (the edge closes the outbox next). */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.save();
  }
}
