import type pg from 'pg';
import { isEventId, type TransferState } from '../../protocol/index.js';
import { compareKeys, stockKey, type BookEvent } from '../ledger/ledger.js';
import { consume, isOpen, receiveCheck, transferState, type Hold } from '../ledger/reservations.js';

/** An alert to publish after the commit: `alerts/{wh}/{kind}`. */
export interface Notice {
  wh: string;
  kind: string;
  sku: string;
  message: string;
}

/** What the reservation links of a batch's events did, for the batch to write into `stock`. */
export interface LinkEffects {
  /** stockKey(wh, sku) → change of `reserved` (never positive) */
  reserved: Map<string, number>;
  /** skus whose quantity in transit may have changed (their global topic must be republished) */
  transferSkus: Set<string>;
  notices: Notice[];
  /** transfers that reached a new state in this batch */
  transitions: { id: string; state: TransferState }[];
}

interface HoldRow {
  id: string;
  wh: string;
  sku: string;
  qty: number;
  remaining: number;
  consumed: number;
  state: Hold['state'];
  transfer: string | null;
  expires_ms: number;
  now_ms: number;
}

interface TransferRow {
  id: string;
  sku: string;
  from_wh: string;
  to_wh: string;
  state: TransferState;
  shipped: number;
  received: number;
}

/** The transfer a `received` event names: `transfer` is not a v1 field, so it arrives among the kept unknown fields. */
function transferOf(e: BookEvent): unknown {
  return e.type === 'received' ? e.payload.transfer : undefined;
}

/** True when some event of the batch names a reservation or a transfer (the common batch names none and costs nothing here). */
export function hasLinks(groups: Iterable<BookEvent[]>): boolean {
  for (const events of groups) for (const e of events) if ((e.type === 'shipped' && e.reservation !== undefined) || transferOf(e) !== undefined) return true;
  return false;
}

/**
 * Applies what a batch's fresh events do to reservations and transfers, inside the batch's transaction
 * and after its stock rows are locked (lock order: stock → reservations → transfers).
 * Events are facts: none is refused here; a link that does not fit changes nothing and raises an alert.
 * A hold is changed only through an event of its own (warehouse, sku), whose stock row the batch holds.
 */
export async function applyLinks(client: pg.PoolClient, fresh: BookEvent[]): Promise<LinkEffects> {
  const effects: LinkEffects = { reserved: new Map(), transferSkus: new Set(), notices: [], transitions: [] };
  const ordered = [...fresh].sort(compareKeys); // deterministic within a batch
  const shipped = ordered.filter((e): e is BookEvent & { reservation: string } => e.type === 'shipped' && e.reservation !== undefined);
  const received: { e: BookEvent; transfer: string }[] = [];
  for (const e of ordered) {
    const t = transferOf(e);
    if (t === undefined) continue;
    if (isEventId(t)) received.push({ e, transfer: t });
    else effects.notices.push({ wh: e.wh, kind: 'transfer-mismatch', sku: e.sku, message: `received ${e.id} from ${e.device}: transfer must be a transfer id; the link is ignored, the receipt applied` });
  }
  if (shipped.length === 0 && received.length === 0) return effects;

  // A transfer's hold has the transfer's id, so one locked read covers both.
  const ids = [...new Set([...shipped.map((e) => e.reservation), ...received.map((r) => r.transfer)])].sort();
  const { rows } = await client.query<HoldRow>(
    `SELECT id, wh, sku, qty, remaining, consumed, state, transfer,
            (extract(epoch FROM expires_at) * 1000)::float8 AS expires_ms, (extract(epoch FROM now()) * 1000)::float8 AS now_ms
     FROM reservations WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE`,
    [ids],
  );
  const now = rows[0]?.now_ms ?? Date.now();
  const holds = new Map<string, Hold>(rows.map((r) => [r.id, { id: r.id, wh: r.wh, sku: r.sku, qty: r.qty, remaining: r.remaining, consumed: r.consumed, state: r.state, expiresAt: r.expires_ms, transfer: r.transfer }]));
  const dirty = new Set<string>();
  const shippedFor = new Map<string, number>(); // transfer → qty shipped against its live hold
  const free = (h: Hold, qty: number) => {
    const k = stockKey(h.wh, h.sku);
    effects.reserved.set(k, (effects.reserved.get(k) ?? 0) - qty);
  };

  for (const e of shipped) {
    const before = holds.get(e.reservation);
    const out = consume(before, e, now);
    if (out.kind === 'mismatch') {
      effects.notices.push({ wh: e.wh, kind: 'reservation-mismatch', sku: e.sku, message: `shipped ${e.id} from ${e.device} names reservation ${e.reservation} (${out.reason}): applied as a shipment, nothing taken from reserved` });
      continue;
    }
    holds.set(e.reservation, out.hold);
    dirty.add(e.reservation);
    if (out.kind === 'lapsed') {
      free(out.hold, out.freed);
      effects.notices.push({ wh: e.wh, kind: 'reservation-mismatch', sku: e.sku, message: `shipped ${e.id} from ${e.device} names reservation ${e.reservation} (expired): the hold ends, applied as a shipment` });
      continue;
    }
    free(out.hold, out.taken);
    if (out.hold.transfer !== null) shippedFor.set(out.hold.transfer, (shippedFor.get(out.hold.transfer) ?? 0) + e.qty);
  }
  if (dirty.size > 0) {
    const hs = [...dirty].sort().map((id) => holds.get(id) as Hold);
    await client.query(
      `UPDATE reservations r SET remaining = u.remaining, consumed = u.consumed, state = u.state,
              ended_at = CASE WHEN u.state = 'active' THEN NULL ELSE now() END
       FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[]) AS u(id, remaining, consumed, state)
       WHERE r.id = u.id`,
      [hs.map((h) => h.id), hs.map((h) => h.remaining), hs.map((h) => h.consumed), hs.map((h) => h.state)],
    );
  }

  const transferIds = [...new Set([...shippedFor.keys(), ...received.map((r) => r.transfer)])].sort();
  if (transferIds.length === 0) return effects;
  const { rows: trows } = await client.query<TransferRow>(
    `SELECT id, sku, from_wh, to_wh, state, shipped, received FROM transfers WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE`,
    [transferIds],
  );
  const transfers = new Map(trows.map((t) => [t.id, { ...t }]));
  const touched = new Set<string>();
  for (const [id, qty] of shippedFor) {
    const t = transfers.get(id);
    if (!t || !isOpen(t.state)) continue; // a live hold belongs to an open transfer; defensive only
    t.shipped += qty;
    touched.add(id);
  }
  for (const { e, transfer } of received) {
    const t = transfers.get(transfer);
    const mismatch = receiveCheck(t && { sku: t.sku, to: t.to_wh, state: t.state }, e);
    if (mismatch !== null || !t) {
      const what = mismatch === 'closed' && t ? `is already ${t.state}` : `(${mismatch ?? 'unknown'})`;
      effects.notices.push({ wh: e.wh, kind: 'transfer-mismatch', sku: e.sku, message: `received ${e.id} from ${e.device} names transfer ${transfer} ${what}: applied as a receipt, the transfer is unchanged` });
      continue;
    }
    t.received += e.qty;
    touched.add(transfer);
  }
  if (touched.size === 0) return effects;
  const changed = [...touched].sort().map((id) => {
    const t = transfers.get(id) as TransferRow;
    const h = holds.get(id);
    const held = h && h.state === 'active' ? h.remaining : 0;
    const state = transferState({ state: t.state, shipped: t.shipped, received: t.received, held });
    if (state !== t.state) effects.transitions.push({ id, state });
    effects.transferSkus.add(t.sku);
    return { ...t, state };
  });
  await client.query(
    `UPDATE transfers t SET shipped = u.shipped, received = u.received, state = u.state, updated_at = now(),
            ended_at = CASE WHEN u.state IN ('reserved', 'in_transit') THEN NULL ELSE now() END
     FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[]) AS u(id, shipped, received, state)
     WHERE t.id = u.id`,
    [changed.map((t) => t.id), changed.map((t) => t.shipped), changed.map((t) => t.received), changed.map((t) => t.state)],
  );
  return effects;
}
