import { deltaOf, type StockEvent } from '../../protocol/index.js';

/**
 * The stock rules of CONTRACT section 4 as pure functions (decide/evolve).
 * The SQL batch path (`batch.ts`) implements the same rules set-based; a test
 * runs both over random event sets and requires the same stock.
 */

/** Total order of events: (ts, id, device). The contract orders by (ts, id); device breaks ties between devices that reuse an id. */
export interface OrderKey {
  ts: number; // epoch ms
  id: string;
  device: string;
}

export function compareKeys(a: OrderKey, b: OrderKey): number {
  if (a.ts !== b.ts) return a.ts < b.ts ? -1 : 1;
  // Byte order, as PostgreSQL's COLLATE "C" compares: identifiers are ASCII.
  if (a.id !== b.id) return a.id < b.id ? -1 : 1;
  if (a.device !== b.device) return a.device < b.device ? -1 : 1;
  return 0;
}

export interface Movement extends OrderKey {
  delta: number;
}

/** Book stock of one (warehouse, sku). */
export interface SkuStock {
  onHand: number;
  reserved: number;
  /** The latest `counted` applied, or null when none was. */
  anchor: (OrderKey & { qty: number }) | null;
  /** Every accepted delta (the event log's view of this row). */
  movements: readonly Movement[];
}

export const emptyStock: SkuStock = { onHand: 0, reserved: 0, anchor: null, movements: [] };

export type BookEvent = Exclude<StockEvent, { type: 'level' }>;

export function eventKey(e: { wh: string; device: string; id: string }): string {
  return `${e.wh}\u0000${e.device}\u0000${e.id}`;
}

export function stockKey(wh: string, sku: string): string {
  return `${wh}\u0000${sku}`;
}

/** What accepting an event does to its row: the decision, before any state changes. */
export type Effect =
  | { kind: 'add'; amount: number } // a delta ordered after the anchor
  | { kind: 'anchor'; onHand: number } // a count ordered after the anchor: onHand = qty + deltas after it
  | { kind: 'none' }; // ordered before the anchor: stored, changes nothing

export function decide(state: SkuStock, event: BookEvent): Effect {
  const after = state.anchor === null || compareKeys(event, state.anchor) > 0;
  if (!after) return { kind: 'none' };
  if (event.type === 'counted') {
    let sum = 0;
    for (const m of state.movements) if (compareKeys(m, event) > 0) sum += m.delta;
    return { kind: 'anchor', onHand: event.qty + sum };
  }
  return { kind: 'add', amount: deltaOf(event) };
}

export function evolve(state: SkuStock, event: BookEvent): SkuStock {
  const effect = decide(state, event);
  const movements =
    event.type === 'counted'
      ? state.movements
      : [...state.movements, { ts: event.ts, id: event.id, device: event.device, delta: deltaOf(event) }];
  switch (effect.kind) {
    case 'add':
      return { ...state, movements, onHand: state.onHand + effect.amount };
    case 'anchor':
      return {
        ...state,
        movements,
        onHand: effect.onHand,
        anchor: { ts: event.ts, id: event.id, device: event.device, qty: event.qty },
      };
    case 'none':
      return { ...state, movements };
  }
}

export interface Book {
  seen: ReadonlySet<string>;
  stock: ReadonlyMap<string, SkuStock>;
}

export const emptyBook: Book = { seen: new Set(), stock: new Map() };

export type Outcome = 'applied' | 'duplicate';

/** Applies one delivery to the whole book: dedupe by (warehouse, device, id), then evolve its row. */
export function applyToBook(book: Book, event: StockEvent): { book: Book; outcome: Outcome } {
  const key = eventKey(event);
  if (book.seen.has(key)) return { book, outcome: 'duplicate' };
  const seen = new Set(book.seen).add(key);
  if (event.type === 'level') return { book: { seen, stock: book.stock }, outcome: 'applied' };
  const sk = stockKey(event.wh, event.sku);
  const stock = new Map(book.stock);
  stock.set(sk, evolve(book.stock.get(sk) ?? emptyStock, event));
  return { book: { seen, stock }, outcome: 'applied' };
}

export function onHandOf(book: Book, wh: string, sku: string): number {
  return book.stock.get(stockKey(wh, sku))?.onHand ?? 0;
}
