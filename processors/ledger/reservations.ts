import type { ReservationState, TransferState } from '../../protocol/index.js';

/**
 * The reservation rules of CONTRACT sections 4 and 6 as pure functions. The commands
 * (`processors/reservations/`) lock the rows, then ask these functions what to do, so the
 * decision made under the row locks is exactly this one. The event batch decides consumption
 * (consume, receiveCheck, transferState) inside its one statement, in PL/pgSQL
 * (stockwire_apply_batch, migrations/005): batch.test compares it with these functions, and a
 * property test compares the whole SQL implementation with a model written independently of this module.
 */

/** Book stock of one warehouse for one sku, as locked for a decision. */
export interface Level {
  wh: string;
  onHand: number;
  reserved: number;
}

export const availableOf = (l: Level): number => l.onHand - l.reserved;

export type AllocationStrategy = 'most-available' | 'priority';

/** How a reservation without `warehouse` picks one (CONTRACT section 6, README "Allocation"). */
export interface AllocationPolicy {
  strategy: AllocationStrategy;
  /** `priority`: warehouses in order; ones not listed follow, most available first */
  priority: readonly string[];
  /** `priority`: a sales channel's own list, used instead of `priority` for requests naming that channel */
  channels: Readonly<Record<string, readonly string[]>>;
}

export const defaultPolicy: AllocationPolicy = { strategy: 'most-available', priority: [], channels: {} };

const mostAvailableFirst = (a: Level, b: Level): number =>
  availableOf(b) - availableOf(a) || (a.wh < b.wh ? -1 : a.wh > b.wh ? 1 : 0);

/** The warehouses in the order the policy tries them. */
export function candidateOrder(levels: readonly Level[], policy: AllocationPolicy, channel?: string): Level[] {
  const byAvailable = [...levels].sort(mostAvailableFirst);
  if (policy.strategy === 'most-available') return byAvailable;
  const list = (channel !== undefined ? policy.channels[channel] : undefined) ?? policy.priority;
  const listed: Level[] = [];
  for (const wh of list) {
    const l = levels.find((x) => x.wh === wh);
    if (l && !listed.includes(l)) listed.push(l);
  }
  return [...listed, ...byAvailable.filter((l) => !listed.includes(l))];
}

export interface AllocationRequest {
  qty: number;
  warehouse?: string;
  split?: boolean;
  channel?: string;
}

export interface Part {
  wh: string;
  qty: number;
}

/**
 * Which warehouses hold how much of a request; null means `insufficient_stock`.
 * A named warehouse must hold all of it. Otherwise the first warehouse in policy order that can hold
 * all of it does; only with `split` may several share it (largest share first, in policy order),
 * and then only when all of them together have enough: a refusal holds nothing.
 */
export function allocate(levels: readonly Level[], req: AllocationRequest, policy: AllocationPolicy): Part[] | null {
  if (!Number.isSafeInteger(req.qty) || req.qty <= 0) return null;
  if (req.warehouse !== undefined) {
    const l = levels.find((x) => x.wh === req.warehouse);
    return l && availableOf(l) >= req.qty ? [{ wh: l.wh, qty: req.qty }] : null;
  }
  const order = candidateOrder(levels, policy, req.channel);
  const whole = order.find((l) => availableOf(l) >= req.qty);
  if (whole) return [{ wh: whole.wh, qty: req.qty }];
  if (!req.split) return null;
  const parts: Part[] = [];
  let left = req.qty;
  for (const l of order) {
    const take = Math.min(availableOf(l), left);
    if (take <= 0) continue;
    parts.push({ wh: l.wh, qty: take });
    left -= take;
    if (left === 0) return parts;
  }
  return null;
}

/** One reservation (a hold on one warehouse's stock of one sku). */
export interface Hold {
  id: string;
  wh: string;
  sku: string;
  qty: number;
  remaining: number;
  consumed: number;
  state: ReservationState;
  /** epoch ms; ignored for a transfer's hold (its transfer's deadline governs) */
  expiresAt: number;
  transfer: string | null;
}

/** Whether the hold still holds stock at `now` (epoch ms). */
export function isLive(h: Hold, now: number): boolean {
  return h.state === 'active' && (h.transfer !== null || h.expiresAt > now);
}

/** Whether a still-active hold has passed its expiry and must be released as expired. */
export function hasLapsed(h: Hold, now: number): boolean {
  return h.state === 'active' && h.transfer === null && h.expiresAt <= now;
}

/** Ends a hold: what it still held goes back to `available`. */
export function endHold(h: Hold, state: 'released' | 'expired'): { hold: Hold; freed: number } {
  if (h.state !== 'active') return { hold: h, freed: 0 };
  return { hold: { ...h, state, remaining: 0 }, freed: h.remaining };
}

/** Why a `shipped` naming a reservation could not take from it (it still counts as a shipment). */
export type ConsumeMismatch = 'unknown' | 'other-warehouse' | 'other-sku' | 'expired' | 'released' | 'consumed';

export type ConsumeOutcome =
  | { kind: 'consumed'; hold: Hold; taken: number } // taken from the hold; the rest of the qty, if any, was not reserved
  | { kind: 'lapsed'; hold: Hold; freed: number } // the hold had expired unswept: it ends now, freeing `freed`
  | { kind: 'mismatch'; reason: ConsumeMismatch };

/**
 * A `shipped` event naming a reservation (CONTRACT section 4). Events are facts: the shipment always
 * lowers onHand (the ledger's job); this decides only what it does to `reserved` — it takes up to its
 * qty from a live hold of its own warehouse and sku, and nothing from any other.
 */
export function consume(h: Hold | undefined, e: { wh: string; sku: string; qty: number }, now: number): ConsumeOutcome {
  if (!h) return { kind: 'mismatch', reason: 'unknown' };
  if (h.wh !== e.wh) return { kind: 'mismatch', reason: 'other-warehouse' };
  if (h.sku !== e.sku) return { kind: 'mismatch', reason: 'other-sku' };
  if (hasLapsed(h, now)) {
    const { hold, freed } = endHold(h, 'expired');
    return { kind: 'lapsed', hold, freed };
  }
  if (h.state !== 'active') return { kind: 'mismatch', reason: h.state === 'consumed' ? 'consumed' : h.state };
  const taken = Math.min(h.remaining, e.qty);
  const remaining = h.remaining - taken;
  return {
    kind: 'consumed',
    taken,
    hold: { ...h, remaining, consumed: h.consumed + taken, state: remaining === 0 ? 'consumed' : 'active' },
  };
}

/** A transfer's progress: what the saga knows from the events that named it. */
export interface TransferProgress {
  state: TransferState;
  shipped: number;
  received: number;
  /** what its hold at the source still holds */
  held: number;
}

export const isOpen = (state: TransferState): boolean => state === 'reserved' || state === 'in_transit';

/**
 * The saga's state from its progress, whatever order the events came in: in transit once the source
 * shipped something; completed once the hold is used up and everything shipped has been received.
 * Terminal states never change.
 */
export function transferState(t: TransferProgress): TransferState {
  if (!isOpen(t.state)) return t.state;
  if (t.shipped > 0 && t.held === 0 && t.received >= t.shipped) return 'completed';
  return t.shipped > 0 ? 'in_transit' : 'reserved';
}

/** Quantity on the road: shipped and not yet received, while the transfer is in transit. */
export function inTransitOf(t: { state: TransferState; shipped: number; received: number }): number {
  return t.state === 'in_transit' ? Math.max(0, t.shipped - t.received) : 0;
}

export type ReceiveMismatch = 'unknown' | 'other-warehouse' | 'other-sku' | 'closed';

/** A destination `received` naming a transfer: counts toward the transfer only while it is open and matches. */
export function receiveCheck(
  t: { sku: string; to: string; state: TransferState } | undefined,
  e: { wh: string; sku: string },
): ReceiveMismatch | null {
  if (!t) return 'unknown';
  if (t.to !== e.wh) return 'other-warehouse';
  if (t.sku !== e.sku) return 'other-sku';
  if (!isOpen(t.state)) return 'closed';
  return null;
}
