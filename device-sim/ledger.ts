/**
 * What the simulator sent, and the stock the contract says it must produce (CONTRACT section 4:
 * `onHand` = the latest `counted` by (ts, id) — or 0 — plus every delta ordered after it).
 * Written from the contract alone, independent of the processor's SQL and of its decide/evolve model,
 * so it can serve as their oracle too (test/helpers/workload.ts uses it).
 */

export type BookType = 'received' | 'shipped' | 'returned' | 'adjusted' | 'counted';

/** One accepted event as the ledger needs it; `level` readings are not book stock and are skipped. */
export interface BookedEvent {
  wh: string;
  sku: string;
  device: string;
  id: string;
  type: BookType | 'level';
  qty: number;
  /** event time, epoch ms */
  ts: number;
}

export const rowKey = (wh: string, sku: string): string => `${wh}\u0000${sku}`;

/** Order of events: (ts, id), then device (ids are unique per device only). Byte order, as PostgreSQL's COLLATE "C". */
export function compareOrder(
  a: { ts: number; id: string; device: string },
  b: { ts: number; id: string; device: string },
): number {
  if (a.ts !== b.ts) return a.ts < b.ts ? -1 : 1;
  if (a.id !== b.id) return a.id < b.id ? -1 : 1;
  if (a.device !== b.device) return a.device < b.device ? -1 : 1;
  return 0;
}

const signed = (e: BookedEvent): number => (e.type === 'shipped' ? -e.qty : e.qty);

/** onHand of one row's events (unique keys), straight from the definition. */
export function onHandOf(events: readonly BookedEvent[]): number {
  let anchor: BookedEvent | null = null;
  for (const e of events) if (e.type === 'counted' && (anchor === null || compareOrder(e, anchor) > 0)) anchor = e;
  let onHand = anchor?.qty ?? 0;
  for (const e of events) {
    if (e.type === 'counted' || e.type === 'level') continue;
    if (anchor === null || compareOrder(e, anchor) > 0) onHand += signed(e);
  }
  return onHand;
}

/** Expected stock per (warehouse, sku) for a set of events with unique keys. */
export function expectedStock(events: readonly BookedEvent[]): { stock: Map<string, { onHand: number }> } {
  const rows = new Map<string, BookedEvent[]>();
  for (const e of events) {
    if (e.type === 'level') continue;
    const k = rowKey(e.wh, e.sku);
    const list = rows.get(k);
    if (list) list.push(e);
    else rows.set(k, [e]);
  }
  return { stock: new Map([...rows].map(([k, list]) => [k, { onHand: onHandOf(list) }])) };
}

/**
 * An event whose time the edge decides: sent without `ts`, or with one more than 5 minutes ahead
 * (CONTRACT section 3). Its time is the edge's receipt, which lies between the first publish and
 * the PUBACK (on clocks that agree within the tolerance); `hi` is null until the PUBACK.
 */
interface Ranged {
  lo: number;
  hi: number | null;
}

interface Entry extends Omit<BookedEvent, 'ts'> {
  ts: number | Ranged;
}

interface Row {
  wh: string;
  sku: string;
  entries: Entry[];
  /** what the simulator believes is on hand if everything arrives; steers realistic quantities */
  believed: number;
}

export interface Expectation {
  wh: string;
  sku: string;
  onHand: number;
}

/**
 * The simulator's own books. An event enters when it is first published (a malformed one never does);
 * a repeat of the same (device, id) is a duplicate and changes nothing, as at central.
 */
export class SentLedger {
  private readonly rows = new Map<string, Row>();
  private readonly keys = new Map<string, Entry>();

  /** @param toleranceMs how far the simulator's and the edge's clocks may disagree, plus the hop between them */
  constructor(private readonly toleranceMs: number) {}

  get events(): number {
    return this.keys.size;
  }

  get rowCount(): number {
    return this.rows.size;
  }

  believed(wh: string, sku: string): number {
    return this.rows.get(rowKey(wh, sku))?.believed ?? 0;
  }

  /** Starts a row's belief from stock that exists already (a restarted demo); the expectations are unchanged. */
  seedBelieved(wh: string, sku: string, onHand: number): void {
    this.row(wh, sku).believed = onHand;
  }

  /**
   * Records an event the simulator will send (it sends every one it records, until the edge takes it).
   * `ts: null` means the edge stamps it: its time lies after `plannedAt`, the moment it was made.
   */
  record(e: Omit<BookedEvent, 'ts'> & { ts: number | null }, plannedAt: number): void {
    const key = `${e.device}\u0000${e.id}`;
    if (this.keys.has(key)) return;
    const entry: Entry = { ...e, ts: e.ts ?? { lo: plannedAt, hi: null } };
    this.keys.set(key, entry);
    if (e.type === 'level') return;
    const row = this.row(e.wh, e.sku);
    row.entries.push(entry);
    row.believed = e.type === 'counted' ? e.qty : row.believed + signed({ ...e, ts: 0 });
  }

  /** The edge took the event (PUBACK): an edge-stamped time is now known to lie before `at`. */
  settle(device: string, id: string, at: number): void {
    const entry = this.keys.get(`${device}\u0000${id}`);
    if (entry && typeof entry.ts === 'object' && entry.ts.hi === null) entry.ts.hi = at;
  }

  /**
   * May an event of this row be stamped by the edge now? Only when no count of the row could be
   * ordered after it, else the expected stock would depend on a time the simulator cannot know.
   */
  canLeaveTimeToEdge(wh: string, sku: string, now: number): boolean {
    const row = this.rows.get(rowKey(wh, sku));
    if (!row) return true;
    return !row.entries.some((e) => e.type === 'counted' && typeof e.ts === 'number' && e.ts >= now - this.toleranceMs);
  }

  /**
   * A count time near `wanted` that no edge-stamped event of the row makes ambiguous: moved before
   * the earliest such event whose window it falls in (a count that looks late, which is realistic).
   */
  countTime(wh: string, sku: string, wanted: number): number {
    const row = this.rows.get(rowKey(wh, sku));
    if (!row) return wanted;
    let ts = wanted;
    for (let moved = true; moved; ) {
      moved = false;
      for (const e of row.entries) {
        if (typeof e.ts === 'number') continue;
        const lo = e.ts.lo - this.toleranceMs;
        const hi = e.ts.hi === null ? Infinity : e.ts.hi + this.toleranceMs;
        if (ts >= lo && ts <= hi) {
          ts = lo - 1;
          moved = true;
        }
      }
    }
    return ts;
  }

  /**
   * Expected onHand of every row. Throws when an edge-stamped time is still open or could fall on
   * either side of a count — the simulator avoids both, so this is a bug guard, not a result.
   */
  expected(): Expectation[] {
    const out: Expectation[] = [];
    for (const row of this.rows.values()) {
      if (row.entries.length === 0) continue; // only a seeded belief: nothing of this run to check
      const events = row.entries.map((e): BookedEvent => {
        if (typeof e.ts === 'number') return { ...e, ts: e.ts };
        if (e.ts.hi === null) throw new Error(`event ${e.device}/${e.id} was never acknowledged by its edge`);
        return { ...e, ts: e.ts.hi };
      });
      for (const e of row.entries) {
        if (typeof e.ts === 'number' || e.ts.hi === null) continue;
        const { lo, hi } = e.ts;
        const clash = row.entries.find(
          (c) =>
            c.type === 'counted' &&
            typeof c.ts === 'number' &&
            c.ts >= lo - this.toleranceMs &&
            c.ts <= hi + this.toleranceMs,
        );
        if (clash)
          throw new Error(
            `ledger cannot order ${e.device}/${e.id} against count ${clash.device}/${clash.id} in ${row.wh}/${row.sku}`,
          );
      }
      out.push({ wh: row.wh, sku: row.sku, onHand: onHandOf(events) });
    }
    return out;
  }

  private row(wh: string, sku: string): Row {
    const k = rowKey(wh, sku);
    let row = this.rows.get(k);
    if (!row) {
      row = { wh, sku, entries: [], believed: 0 };
      this.rows.set(k, row);
    }
    return row;
  }
}
