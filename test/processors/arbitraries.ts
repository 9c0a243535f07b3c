import fc from 'fast-check';
import type { StockEvent } from '../../protocol/index.js';
import type { BookEvent } from '../../processors/ledger/ledger.js';

/** A book event at warehouse W1, sku S1, device d1, for given/when/then tests. */
export function ev(type: BookEvent['type'], qty: number, ts: number, id: string): BookEvent {
  return {
    wh: 'W1',
    device: 'd1',
    sku: 'S1',
    id,
    type,
    qty,
    ts,
    receivedAt: ts,
    payload: { v: 1, id, type, sku: 'S1', qty },
  } as BookEvent;
}

const typeQty = fc.oneof(
  fc.record({ type: fc.constantFrom('received', 'shipped', 'returned'), qty: fc.integer({ min: 1, max: 50 }) }),
  fc.record({ type: fc.constant('adjusted'), qty: fc.integer({ min: -30, max: 30 }).filter((q) => q !== 0) }),
  fc.record({ type: fc.constant('counted'), qty: fc.integer({ min: 0, max: 200 }) }),
);

/** Events over 2 warehouses, 3 skus, 3 devices, with colliding timestamps on purpose; keys are unique. */
export function arbitraryEvents(maxLength = 40): fc.Arbitrary<StockEvent[]> {
  return fc
    .array(
      fc.record({
        wh: fc.constantFrom('W1', 'W2'),
        sku: fc.constantFrom('S1', 'S2', 'S3'),
        device: fc.constantFrom('d1', 'd2', 'd3'),
        ts: fc.integer({ min: 0, max: 20 }).map((t) => 1_700_000_000_000 + t * 1000),
        tq: typeQty,
      }),
      { maxLength },
    )
    .map((raw) =>
      raw.map((r, n) => {
        const id = `e${(n * 7919) % 1000}`; // ids unique per device, not sorted like arrival
        return {
          wh: r.wh,
          device: r.device,
          sku: r.sku,
          id: `${id}-${n}`,
          type: r.tq.type,
          qty: r.tq.qty,
          ts: r.ts,
          receivedAt: r.ts,
          payload: { v: 1, id: `${id}-${n}`, type: r.tq.type, sku: r.sku, qty: r.tq.qty },
        } as StockEvent;
      }),
    );
}

/** Reads a fast-check number stream one value at a time (so a failing case shrinks). */
export function numbers(stream: Iterable<number>): () => number {
  const it = stream[Symbol.iterator]();
  return () => it.next().value as number;
}

/** Every event delivered 1–3 times, in a random order. */
export function shuffledWithDuplicates(events: StockEvent[], next: () => number): StockEvent[] {
  const delivered: StockEvent[] = [];
  for (const e of events) for (let k = next() % 3; k >= 0; k--) delivered.push(e);
  for (let i = delivered.length - 1; i > 0; i--) {
    const j = next() % (i + 1);
    [delivered[i], delivered[j]] = [delivered[j] as StockEvent, delivered[i] as StockEvent];
  }
  return delivered;
}
