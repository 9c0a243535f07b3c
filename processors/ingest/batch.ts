import { createHash } from 'node:crypto';
import type pg from 'pg';
import {
  deltaOf,
  ErrorCode,
  isEventId,
  MAX_EVENT_BYTES,
  ValidationError,
  type GlobalStock,
  type StockEvent,
  type TransferState,
  type WarehouseStock,
} from '../../protocol/index.js';
import { compareKeys, eventKey, stockKey, type BookEvent } from '../ledger/ledger.js';
import { isConnectionLost, isDataError, isRetryable } from '../db/pool.js';
import type { Notice } from '../reservations/consume.js';
import type { BatchResult, Decision, Parsed } from './types.js';

const MAX_RETRIES = 5; // deadlocks and serialization failures are retried this many times

const iso = (ms: number) => new Date(ms).toISOString();
const clean = (s: string) => s.replaceAll('\u0000', '\\u0000'); // text columns refuse U+0000
const hex = (b: Buffer) => `\\x${b.toString('hex')}`; // bytea's text form, for a JSON string

/** What stockwire_apply_batch answers (migrations/005); bigint as numbers, times as epoch ms. */
interface Answer {
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
interface VersionRow {
  sku: string;
  version: number;
  as_of: number;
}
/** One warehouse's row of a sku; `wh` null: the quantity in transit between warehouses. */
interface GlobalRow {
  wh: string | null;
  sku: string;
  on_hand: number;
  reserved: number;
}

/**
 * Applies a batch in one statement, one round trip: `stockwire_apply_batch` (migrations/005) dedupes, logs,
 * decides stock and reservations and bumps versions in its own transaction (DESIGN "Batching in the processor").
 * A data error that a row causes is isolated by splitting the batch until the one poison event is alone; it then
 * becomes a dead letter and the rest commits.
 */
export async function applyBatch(pool: pg.Pool, items: Parsed[]): Promise<BatchResult> {
  try {
    return await withRetry(pool, items);
  } catch (err) {
    if (!isDataError(err)) throw err;
    if (items.length === 1) {
      const only = items[0] as Parsed;
      const error = new ValidationError(
        ErrorCode.schemaViolation,
        `database refused the event: ${(err as Error).message}`,
      );
      const poisoned: Parsed = { delivery: only.delivery, ok: false, id: only.ok ? only.event.id : only.id, error };
      return withRetry(pool, [poisoned]);
    }
    const mid = items.length >> 1;
    const a = await applyBatch(pool, items.slice(0, mid));
    const b = await applyBatch(pool, items.slice(mid));
    return mergeResults(a, b);
  }
}

async function withRetry(pool: pg.Pool, items: Parsed[]): Promise<BatchResult> {
  if (items.length === 0) return emptyResult();
  const batch = batchDocument(items);
  for (let attempt = 0; ; attempt++) {
    const client = await pool.connect();
    let lost: Error | undefined; // a dead connection goes back to the pool only to be discarded
    try {
      // Autocommit: the one statement is its own transaction, so BEGIN and COMMIT cost no round trips of their own.
      const { rows } = await client.query<{ answer: Answer }>('SELECT stockwire_apply_batch($1::jsonb) AS answer', [
        batch,
      ]);
      return toResult(items, (rows[0] as { answer: Answer }).answer);
    } catch (err) {
      if (isConnectionLost(err)) lost = err as Error;
      if (!isRetryable(err) || attempt >= MAX_RETRIES) throw err;
    } finally {
      client.release(lost);
    }
  }
}

const emptyResult = (): BatchResult => ({
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
function batchDocument(items: Parsed[]): string {
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

function toResult(items: Parsed[], a: Answer): BatchResult {
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

/** `stock/{sku}` objects from the skus' versions and their rows. */
function globalObjects(versions: VersionRow[], rows: GlobalRow[]): GlobalStock[] {
  const bySku = new Map<string, GlobalStock>();
  for (const v of versions) {
    bySku.set(v.sku, {
      sku: v.sku,
      onHand: 0,
      reserved: 0,
      available: 0,
      inTransit: 0,
      warehouses: {},
      version: v.version,
      asOf: iso(v.as_of),
    });
  }
  for (const r of rows) {
    const g = bySku.get(r.sku);
    if (!g) continue;
    if (r.wh === null) {
      g.inTransit = r.on_hand;
      continue;
    }
    g.onHand += r.on_hand;
    g.reserved += r.reserved;
    g.available += r.on_hand - r.reserved;
    g.warehouses[r.wh] = { onHand: r.on_hand, reserved: r.reserved, available: r.on_hand - r.reserved };
  }
  return [...bySku.values()];
}

/** Builds `stock/{sku}` objects; with `bump`, increments each sku's topic version first. */
export async function globalStock(
  client: pg.PoolClient | pg.Pool,
  skus: string[],
  bump: boolean,
): Promise<GlobalStock[]> {
  const asOf = `floor(extract(epoch FROM updated_at) * 1000)::bigint AS as_of`;
  const versions = bump
    ? await client.query<VersionRow>(
        `INSERT INTO sku_versions AS v (sku, version) SELECT unnest($1::text[]), 1
         ON CONFLICT (sku) DO UPDATE SET version = v.version + 1, updated_at = now()
         RETURNING sku, version, ${asOf}`,
        [skus],
      )
    : await client.query<VersionRow>(`SELECT sku, version, ${asOf} FROM sku_versions WHERE sku = ANY($1::text[])`, [
        skus,
      ]);
  // Rows of wh NULL carry the quantity in transit between warehouses (transfers shipped, not yet received).
  const { rows } = await client.query<GlobalRow>(
    `SELECT wh, sku, on_hand, reserved FROM stock WHERE sku = ANY($1::text[])
     UNION ALL
     SELECT NULL, sku, sum(shipped - received)::bigint, 0 FROM transfers
     WHERE sku = ANY($1::text[]) AND state = 'in_transit' AND shipped > received GROUP BY sku
     ORDER BY 2, 1`,
    [skus],
  );
  return globalObjects(versions.rows, rows);
}

/** The stored stock of some rows and of their skus, at their current versions (no version bump). */
export async function currentStock(
  pool: pg.Pool,
  keys: { wh: string; sku: string }[],
): Promise<{ warehouse: WarehouseStock[]; global: GlobalStock[] }> {
  const { rows } = await pool.query<{
    wh: string;
    sku: string;
    on_hand: number;
    reserved: number;
    version: number;
    updated_at: Date;
  }>(
    `SELECT wh, sku, on_hand, reserved, version, updated_at FROM stock
     WHERE (wh, sku) IN (SELECT * FROM unnest($1::text[], $2::text[])) AND version > 0`,
    [keys.map((k) => k.wh), keys.map((k) => k.sku)],
  );
  const warehouse = rows.map((r) => ({
    sku: r.sku,
    warehouse: r.wh,
    onHand: r.on_hand,
    reserved: r.reserved,
    available: r.on_hand - r.reserved,
    version: r.version,
    asOf: r.updated_at.toISOString(),
  }));
  const global = await globalStock(pool, [...new Set(keys.map((k) => k.sku))], false);
  return { warehouse, global };
}

function mergeResults(a: BatchResult, b: BatchResult): BatchResult {
  // Later halves hold later row versions; keep the highest version of each topic.
  const latest = <T extends { version: number }>(xs: T[], key: (x: T) => string) => {
    const m = new Map<string, T>();
    for (const x of xs) {
      const k = key(x);
      const prev = m.get(k);
      if (!prev || prev.version < x.version) m.set(k, x);
    }
    return [...m.values()];
  };
  return {
    decisions: [...a.decisions, ...b.decisions],
    warehouseStock: latest([...a.warehouseStock, ...b.warehouseStock], (s) => stockKey(s.warehouse, s.sku)),
    globalStock: latest([...a.globalStock, ...b.globalStock], (s) => s.sku),
    shelves: [...a.shelves, ...b.shelves],
    negative: [...a.negative, ...b.negative],
    deadLetters: [...a.deadLetters, ...b.deadLetters],
    applied: [...a.applied, ...b.applied],
    notices: [...a.notices, ...b.notices],
    transitions: [...a.transitions, ...b.transitions],
  };
}
