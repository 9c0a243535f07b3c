import { expectedStock } from '../../device-sim/ledger.js';
import { rng } from '../../device-sim/random.js';
import { parseEvent, type StockEvent } from '../../protocol/index.js';
import type { OutgoingEvent } from './resending-publisher.js';

/**
 * A realistic mix for one warehouse — receipts, shipments, returns, adjustments and a few cycle
 * counts, out-of-order event times — with the stock the contract says it must produce. The oracle
 * (`expectedStock`, straight from the definition, independent of the SQL path and of the
 * decide/evolve model) lives in device-sim, whose --verify uses it too.
 */
export interface Expected {
  stock: Map<string, { onHand: number }>;
}

export { expectedStock, rng };

export interface WorkloadOptions {
  devices?: number;
  skus?: number;
  /** event times are spread over [now − tsAgoMs, now − tsAgoMs + tsSpanMs); default the last hour, over 50 min */
  tsAgoMs?: number;
  tsSpanMs?: number;
  /**
   * A device's clock: the `ts` it puts on an event whose true time is `ts`, or null to send none. Counts
   * keep their true time when the clock would leave it to the edge or put it in the future, so every
   * count is ordered before every edge-stamped event and the expected stock stays exact.
   */
  clock?: (device: string, ts: number) => number | null;
  /**
   * The latest device time every edge of the run takes as it is (its clock + 5 min): a count that a
   * device clock puts later keeps its true time. Default now; earlier when an edge's clock is behind.
   */
  trustedUntil?: number;
}

export function workload(
  wh: string,
  count: number,
  seed: number,
  o: WorkloadOptions = {},
): { events: OutgoingEvent[]; expected: Expected } {
  const next = rng(seed);
  const devices = o.devices ?? 20;
  const skus = o.skus ?? 50;
  const now = Date.now();
  const base = now - (o.tsAgoMs ?? 3_600_000);
  const span = o.tsSpanMs ?? 3_000_000;
  const events: OutgoingEvent[] = [];
  const parsedEvents: StockEvent[] = [];
  for (let i = 0; i < count; i++) {
    const device = `dev-${Math.floor(next() * devices)}`;
    const sku = `SKU-${Math.floor(next() * skus)}`;
    const roll = next();
    const [type, qty] =
      roll < 0.4
        ? ['received', 1 + Math.floor(next() * 20)]
        : roll < 0.75
          ? ['shipped', 1 + Math.floor(next() * 10)]
          : roll < 0.85
            ? ['returned', 1 + Math.floor(next() * 3)]
            : roll < 0.97
              ? ['adjusted', (next() < 0.5 ? -1 : 1) * (1 + Math.floor(next() * 5))]
              : ['counted', Math.floor(next() * 200)];
    const id = `e${i}`;
    const trueTs = base + Math.floor(next() * span); // event times out of arrival order
    let ts = o.clock ? o.clock(device, trueTs) : trueTs;
    if (type === 'counted' && (ts === null || ts > (o.trustedUntil ?? now))) ts = trueTs;
    const payload = JSON.stringify(ts === null ? { v: 1, id, type, sku, qty } : { v: 1, id, type, sku, qty, ts });
    events.push({ device, id, payload });
    // An event without a trustworthy time gets its receipt time: any moment after every count.
    const parsed = parseEvent(Buffer.from(payload), { wh, device, receivedAt: now });
    if (!parsed.ok) throw new Error(`workload made an invalid event: ${parsed.error.message}`);
    parsedEvents.push(parsed.event);
  }
  return { events, expected: expectedStock(parsedEvents) };
}
