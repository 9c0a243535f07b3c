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
