/**
 * The batch's one statement, `SELECT stockwire_apply_batch($1::jsonb)` (processors/db/migrations/006): the document it
 * takes and how its answer becomes the batch's result. processors/ingest/batch.ts calls it; nothing else writes here.
 *
 * What a batch's fresh events do to reservations and transfers — a `shipped` naming a reservation consumes it, a
 * `received` naming a transfer counts toward it — is decided inside the batch's one statement, by
 * stockwire_apply_batch, under the batch's row locks and by the rules of
 * processors/ledger/reservations.ts (consume, receiveCheck, transferState). Events are facts: none is refused there;
 * a link that does not fit changes nothing and raises a Notice, an alert published after the commit.
 */
import { createHash } from 'node:crypto';
import {
  deltaOf,
  ErrorCode,
  isEventId,
  MAX_EVENT_BYTES,
  type StockEvent,
  type TransferState,
} from '../../protocol/index.js';
import { globalObjects, type GlobalRow, type VersionRow } from '../db/stock.js';
import { compareKeys, eventKey, stockKey, type BookEvent } from '../ledger/ledger.js';
import type { Notice } from '../publish/publisher.js';
import type { BatchResult, Decision, Parsed } from './types.js';

export const APPLY_BATCH = 'SELECT stockwire_apply_batch($1::jsonb) AS answer';

const iso = (ms: number) => new Date(ms).toISOString();
const clean = (s: string) => s.replaceAll('\u0000', '\\u0000'); // text columns refuse U+0000
const hex = (b: Buffer) => `\\x${b.toString('hex')}`; // bytea's text form, for a JSON string

/** What stockwire_apply_batch answers; bigint as numbers, times as epoch ms. */
export interface Answer {
  /** [first copy's input index, the sku the key first named] of each key decided before; every other key is new */
  repeats: [number, string][];
  /** [wh, sku, on_hand, reserved] of the rows the keys first named, after the batch */
  levels: [string, string, number, number][];
  /** [input index, reason] of the copies dead-lettered id_reused */
  reused: [number, string][];
  stock: { wh: string; sku: string; on_hand: number; reserved: number; version: number; as_of: number }[];
  negative: { wh: string; sku: string; on_hand: number }[];
  versions: VersionRow[];
  global: GlobalRow[];
  shelves: { wh: string; location: string; sku: string; qty: number; ts: number; device: string }[];
  notices: Notice[];
  transitions: { id: string; state: TransferState }[];
}

export const emptyResult = (): BatchResult => ({
  decisions: [],
  warehouseStock: [],
  globalStock: [],
  shelves: [],
  negative: [],
  deadLetters: [],
  applied: [],
  notices: [],
  transitions: [],
});

/** The batch as stockwire_apply_batch takes it: its valid events, and its bad input to keep as dead letters. */
export function batchDocument(items: Parsed[]): string {
  const events: object[] = [];
  const dead: object[] = [];
  items.forEach((item, i) => {
    const d = item.delivery;
    if (!item.ok) {
      dead.push({
        wh: d.wh,
        device: d.device,
        event_id: item.id,
        topic: clean(d.topic),
        code: item.error.code,
        reason: clean(item.error.message),
        raw: hex(d.payload.subarray(0, MAX_EVENT_BYTES)),
        source: clean(d.source),
      });
      return;
    }
    const e = item.event;
    const payload = JSON.stringify(e.payload);
    // Only a reused id's copy is kept with its raw bytes; they are the payload text itself unless the device
    // wrote its JSON otherwise (spaces, escapes), and then they travel too.
    const raw = d.payload.subarray(0, MAX_EVENT_BYTES);
    events.push({
      i,
      wh: e.wh,
      device: e.device,
      id: e.id,
      type: e.type,
      sku: e.sku,
      qty: e.qty,
      delta: e.type === 'counted' || e.type === 'level' ? 0 : deltaOf(e),
      ts: iso(e.ts),
      location: e.location ?? null,
      reservation: e.type === 'shipped' ? (e.reservation ?? null) : null,
      transfer: isEventId(transferOf(e)) ? transferOf(e) : null,
      reason: e.reason ?? null,
      payload,
      raw: raw.equals(Buffer.from(payload)) ? null : hex(raw),
      received_at: iso(e.receivedAt),
      topic: clean(d.topic),
      source: clean(d.source),
      content: hex(contentDigest(e)),
    });
  });
  return JSON.stringify({ events, dead });
}

/** The transfer a `received` event names: `transfer` is not a v1 field, so it arrives among the kept unknown fields. */
const transferOf = (e: StockEvent): unknown => (e.type === 'received' ? e.payload.transfer : undefined);

export function toResult(items: Parsed[], a: Answer): BatchResult {
  const result = emptyResult();
  const decisions: Decision[] = new Array(items.length);
  const firstSaid = new Map(a.repeats); // first copy's index → the sku its key first named
  const level = new Map(
    a.levels.map(([wh, sku, onHand, reserved]) => [stockKey(wh, sku), { onHand, available: onHand - reserved }]),
  );
  const firstOf = new Map<string, number>(); // key → its first copy's index
  const now = Date.now();
  const invalidTransfers: BookEvent[] = [];
  items.forEach((item, i) => {
    if (!item.ok) {
      decisions[i] = { status: 'rejected', id: item.id, error: item.error.toBody() };
      const d = item.delivery;
      result.deadLetters.push({ wh: d.wh, device: d.device, code: item.error.code, reason: clean(item.error.message) });
      return;
    }
    const e = item.event;
    const key = eventKey(e);
    const first = firstOf.get(key) ?? i;
    if (first === i) firstOf.set(key, i);
    const applied = first === i && !firstSaid.has(i);
    // Every copy of a key is answered with the stock of the sku the key first named (a reused id's copy may name another).
    const sku = firstSaid.get(first) ?? (items[first] as Parsed & { ok: true }).event.sku;
    const stock = e.type === 'level' ? undefined : level.get(stockKey(e.wh, sku));
    const status = applied ? 'applied' : 'duplicate';
    decisions[i] = stock ? { status, id: e.id, stock } : { status, id: e.id };
    if (!applied) return;
    result.applied.push({ type: e.type, wh: e.wh, lagMs: now - e.ts });
    if (e.type !== 'level' && transferOf(e) !== undefined && !isEventId(transferOf(e))) invalidTransfers.push(e);
  });
  result.decisions = decisions;
  for (const [i, reason] of a.reused) {
    const e = (items[i] as Parsed & { ok: true }).event;
    result.deadLetters.push({ wh: e.wh, device: e.device, code: ErrorCode.idReused, reason, sku: e.sku });
  }
  // A malformed transfer link needs no database to be refused: the receipt is applied, the link ignored.
  result.notices = invalidTransfers.sort(compareKeys).map((e) => ({
    wh: e.wh,
    kind: 'transfer-mismatch',
    sku: e.sku,
    message: `received ${e.id} from ${e.device}: transfer must be a transfer id; the link is ignored, the receipt applied`,
  }));
  result.notices.push(...a.notices);
  result.transitions = a.transitions;
  result.warehouseStock = a.stock.map((r) => ({
    sku: r.sku,
    warehouse: r.wh,
    onHand: r.on_hand,
    reserved: r.reserved,
    available: r.on_hand - r.reserved,
    version: r.version,
    asOf: iso(r.as_of),
  }));
  result.globalStock = globalObjects(a.versions, a.global);
  result.negative = a.negative.map((r) => ({ wh: r.wh, sku: r.sku, onHand: r.on_hand }));
  result.shelves = a.shelves.map((r) => ({
    warehouse: r.wh,
    location: r.location,
    sku: r.sku,
    qty: r.qty,
    ts: iso(r.ts),
    device: r.device,
  }));
  return result;
}

/**
 * What an event says, for telling a resend from a reused id: everything that decides its effect — type, sku, qty,
 * location, reservation, and the transfer a receipt names — but not ts, which the edge stamps anew into an honest
 * resend of an event without one. 16 bytes of SHA-256: only two versions of one key are ever compared.
 */
export function contentDigest(e: StockEvent): Buffer {
  const transfer = e.type === 'received' ? (e.payload.transfer ?? null) : null;
  const said = [
    e.type,
    e.sku,
    e.qty,
    e.location ?? null,
    'reservation' in e ? (e.reservation ?? null) : null,
    transfer,
  ];
  return createHash('sha256').update(JSON.stringify(said)).digest().subarray(0, 16);
}
