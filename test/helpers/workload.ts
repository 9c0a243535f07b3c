import { parseEvent, type StockEvent } from '../../protocol/index.js';
import { compareKeys, stockKey, type OrderKey } from '../../processors/ledger/ledger.js';
import type { OutgoingEvent } from './resending-publisher.js';

/** Deterministic pseudo-random numbers (mulberry32), so a failing run can be replayed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A realistic mix for one warehouse — receipts, shipments, returns, adjustments and a few cycle
 * counts, out-of-order event times — with the stock the pure ledger says it must produce.
 */
export interface Expected {
  stock: Map<string, { onHand: number }>;
}

/**
 * The stock the contract defines for a set of events with unique keys, computed straight from the
 * definition (latest count by (ts, id, device) plus every delta ordered after it) in one pass per row:
 * an oracle independent of both the SQL path and the incremental decide/evolve model.
 */
export function expectedStock(events: StockEvent[]): Expected {
  const rows = new Map<string, StockEvent[]>();
  for (const e of events) {
    if (e.type === 'level') continue;
    const k = stockKey(e.wh, e.sku);
    const list = rows.get(k);
    if (list) list.push(e);
    else rows.set(k, [e]);
  }
  const stock = new Map<string, { onHand: number }>();
  for (const [k, list] of rows) {
    let anchor: (OrderKey & { qty: number }) | null = null;
    for (const e of list) if (e.type === 'counted' && (anchor === null || compareKeys(e, anchor) > 0)) anchor = e;
    let onHand = anchor?.qty ?? 0;
    for (const e of list) if (e.type !== 'counted' && (anchor === null || compareKeys(e, anchor) > 0)) onHand += e.type === 'shipped' ? -e.qty : e.qty;
    stock.set(k, { onHand });
  }
  return { stock };
}

export function workload(wh: string, count: number, seed: number, o: { devices?: number; skus?: number } = {}): { events: OutgoingEvent[]; expected: Expected } {
  const next = rng(seed);
  const devices = o.devices ?? 20;
  const skus = o.skus ?? 50;
  const base = Date.now() - 3_600_000;
  const events: OutgoingEvent[] = [];
  const parsedEvents: StockEvent[] = [];
  for (let i = 0; i < count; i++) {
    const device = `dev-${Math.floor(next() * devices)}`;
    const sku = `SKU-${Math.floor(next() * skus)}`;
    const roll = next();
    const [type, qty] =
      roll < 0.4 ? ['received', 1 + Math.floor(next() * 20)] :
      roll < 0.75 ? ['shipped', 1 + Math.floor(next() * 10)] :
      roll < 0.85 ? ['returned', 1 + Math.floor(next() * 3)] :
      roll < 0.97 ? ['adjusted', (next() < 0.5 ? -1 : 1) * (1 + Math.floor(next() * 5))] :
      ['counted', Math.floor(next() * 200)];
    const id = `e${i}`;
    const ts = base + Math.floor(next() * 3_000_000); // event times out of arrival order
    const payload = JSON.stringify({ v: 1, id, type, sku, qty, ts });
    events.push({ device, id, payload });
    const parsed = parseEvent(Buffer.from(payload), { wh, device, receivedAt: Date.now() });
    if (!parsed.ok) throw new Error(`workload made an invalid event: ${parsed.error.message}`);
    parsedEvents.push(parsed.event);
  }
  return { events, expected: expectedStock(parsedEvents) };
}
