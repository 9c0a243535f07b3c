import { createHash } from 'node:crypto';
import type pg from 'pg';
import { deltaOf, ErrorCode, MAX_EVENT_BYTES, ValidationError, type GlobalStock, type ShelfReading, type StockEvent, type WarehouseStock } from '../../protocol/index.js';
import { compareKeys, eventKey, stockKey, type BookEvent, type OrderKey } from '../ledger/ledger.js';
import { isConnectionLost, isDataError, isRetryable } from '../db/pool.js';
import { applyLinks, hasLinks } from '../reservations/consume.js';
import type { BatchResult, Decision, NegativeStock, Parsed } from './types.js';

type LevelEvent = Extract<StockEvent, { type: 'level' }>;

const MAX_RETRIES = 5; // deadlocks and serialization failures are retried this many times

interface Row {
  wh: string;
  sku: string;
  on_hand: number;
  reserved: number;
  anchor_ms: string | null;
  anchor_id: string | null;
  anchor_device: string | null;
  anchor_qty: number | null;
}

const byCodePoint = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const compareInboxKeys = (a: StockEvent, b: StockEvent) => byCodePoint(a.wh, b.wh) || byCodePoint(a.device, b.device) || byCodePoint(a.id, b.id);
const iso = (ms: number) => new Date(ms).toISOString();
const clean = (s: string) => s.replaceAll('\u0000', '\\u0000'); // text columns refuse U+0000

/**
 * Applies a batch in one transaction (DESIGN "Batching in the processor").
 * A data error that a row causes is isolated by splitting the batch until the one
 * poison event is alone; it then becomes a dead letter and the rest commits.
 */
export async function applyBatch(pool: pg.Pool, items: Parsed[]): Promise<BatchResult> {
  try {
    return await withRetry(pool, items);
  } catch (err) {
    if (!isDataError(err)) throw err;
    if (items.length === 1) {
      const only = items[0] as Parsed;
      const error = new ValidationError(ErrorCode.schemaViolation, `database refused the event: ${(err as Error).message}`);
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
  for (let attempt = 0; ; attempt++) {
    const client = await pool.connect();
    let lost: Error | undefined; // a dead connection goes back to the pool only to be discarded
    try {
      await client.query('BEGIN');
      const result = await transact(client, items);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      if (isConnectionLost(err)) lost = err as Error;
      else await client.query('ROLLBACK').catch(() => {});
      if (!isRetryable(err) || attempt >= MAX_RETRIES) throw err;
    } finally {
      client.release(lost);
    }
  }
}

async function transact(client: pg.PoolClient, items: Parsed[]): Promise<BatchResult> {
  const decisions: Decision[] = new Array(items.length);
  const result: BatchResult = { decisions, warehouseStock: [], globalStock: [], shelves: [], negative: [], deadLetters: [], applied: [], notices: [], transitions: [] };

  // 1. Dead letters, and dedupe inside the batch (a duplicate storm can put one key in a batch many times).
  const firstIndex = new Map<string, number>();
  const unique: number[] = [];
  const inBatchDuplicates: number[] = [];
  const dead: number[] = [];
  items.forEach((item, i) => {
    if (!item.ok) return void dead.push(i);
    const key = eventKey(item.event);
    if (firstIndex.has(key)) inBatchDuplicates.push(i);
    else {
      firstIndex.set(key, i);
      unique.push(i);
    }
  });
  if (dead.length > 0) await insertDeadLetters(client, items, dead, result);

  // 2. Inbox: which keys are new (the unique key is the dedupe, across processes and restarts), and for the others
  // what they said the first time: a repeat with other content is a reused id, not a resend (migrations/004).
  const fresh = new Set<number>();
  const firstSaid = new Map<string, { sku: string; content: Buffer | null }>(); // by key: the content that stands
  let horizon = -Infinity; // epoch ms
  if (unique.length > 0) {
    // In key order: two transactions inserting the same keys (a duplicate storm over concurrent batches
    // or processors) then wait on each other in one direction only, never in a deadlock.
    const ev = unique.map((i) => (items[i] as Parsed & { ok: true }).event).sort((a, b) => compareInboxKeys(a, b));
    const keys = [ev.map((e) => e.wh), ev.map((e) => e.device), ev.map((e) => e.id)];
    // The ledger's horizon (migrations/003) comes with the new keys, locked FOR KEY SHARE until COMMIT: the
    // archive cannot move it while this batch applies events by it. Read only when a key is new. The stored row of
    // a key already there is read from the statement's snapshot, in the same round trip; OFFSET 0 keeps the
    // `ins.id IS NULL` test a one-time filter, so a new key costs no index look-up (EXPLAIN: loops only for repeats).
    const { rows } = await client.query<{ wh: string; device: string; id: string; fresh: boolean; horizon: string | null; sku: string | null; content: Buffer | null }>(
      `WITH h AS (SELECT archived_before FROM ledger_horizon FOR KEY SHARE),
       ins AS (
         INSERT INTO inbox (wh, device, id, sku, content)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[])
         ON CONFLICT DO NOTHING
         RETURNING wh, device, id, (SELECT CASE WHEN isfinite(archived_before) THEN (extract(epoch FROM archived_before) * 1000)::bigint::text END FROM h) AS horizon
       )
       SELECT u.wh, u.device, u.id, ins.id IS NOT NULL AS fresh, ins.horizon, i.sku, i.content
       FROM unnest($1::text[], $2::text[], $3::text[]) AS u(wh, device, id)
       LEFT JOIN ins ON ins.wh = u.wh AND ins.device = u.device AND ins.id = u.id
       LEFT JOIN LATERAL (SELECT sku, content FROM inbox i WHERE ins.id IS NULL AND i.wh = u.wh AND i.device = u.device AND i.id = u.id OFFSET 0) i ON true`,
      [...keys, ev.map((e) => e.sku), ev.map(contentDigest)],
    );
    const unseen: { wh: string; device: string; id: string }[] = [];
    for (const r of rows) {
      const i = firstIndex.get(eventKey(r)) as number;
      if (r.fresh) {
        fresh.add(i);
        if (r.horizon != null) horizon = Number(r.horizon);
        const e = (items[i] as Parsed & { ok: true }).event;
        firstSaid.set(eventKey(r), { sku: e.sku, content: contentDigest(e) });
      } else if (r.sku !== null) firstSaid.set(eventKey(r), { sku: r.sku, content: r.content });
      else unseen.push(r); // committed by another transaction after this statement's snapshot was taken
    }
    if (unseen.length > 0) {
      // Rare (the same key in two batches at once): a new statement sees what the other transaction committed.
      const { rows: late } = await client.query<{ wh: string; device: string; id: string; sku: string; content: Buffer | null }>(
        `SELECT wh, device, id, sku, content FROM inbox WHERE (wh, device, id) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))`,
        [unseen.map((k) => k.wh), unseen.map((k) => k.device), unseen.map((k) => k.id)],
      );
      for (const r of late) firstSaid.set(eventKey(r), { sku: r.sku, content: r.content });
    }
  }
  // A repeat whose content differs from what stands is kept as a dead letter and answered `duplicate` like any
  // repeat (its sender must stop sending it); one per key and content in a batch, however often it came.
  const reused: number[] = [];
  const reusedSeen = new Set<string>();
  for (const i of [...unique.filter((i) => !fresh.has(i)), ...inBatchDuplicates]) {
    const e = (items[i] as Parsed & { ok: true }).event;
    const stands = firstSaid.get(eventKey(e))?.content;
    if (stands == null) continue; // decided before migrations/004: not checked
    const digest = contentDigest(e);
    const seen = `${eventKey(e)} ${digest.toString('hex')}`;
    if (digest.equals(stands) || reusedSeen.has(seen)) continue;
    reusedSeen.add(seen);
    reused.push(i);
  }
  if (reused.length > 0) await insertReusedIds(client, items, reused, firstSaid, result);

  const freshBook: { i: number; e: BookEvent }[] = [];
  const freshLevel: LevelEvent[] = [];
  for (const i of fresh) {
    const e = (items[i] as Parsed & { ok: true }).event;
    if (e.type === 'level') freshLevel.push(e);
    // Older than the archived history: applied as of the horizon, so the log stays ordered after the baseline
    // (migrations/003). The payload keeps the event's own ts.
    else freshBook.push({ i, e: e.ts < horizon ? { ...e, ts: horizon } : e });
  }

  // 3. Event log and shelf readings.
  if (freshBook.length > 0) await insertEvents(client, freshBook.map((f) => f.e));
  if (freshLevel.length > 0) result.shelves = await insertShelfReadings(client, freshLevel);

  // 4. Book stock: lock the touched rows in key order (no deadlocks between processors), then decide.
  const groups = new Map<string, BookEvent[]>();
  for (const { e } of freshBook) {
    const k = stockKey(e.wh, e.sku);
    const list = groups.get(k);
    if (list) list.push(e);
    else groups.set(k, [e]);
  }
  const levels = new Map<string, { onHand: number; reserved: number }>();
  if (groups.size > 0) await applyStock(client, groups, levels, result);

  // 5. Current levels for duplicates whose rows this batch did not touch: a duplicate is answered with the stock of
  // the sku its key first named (a reused id's copy may name another).
  const duplicateIdx = [...inBatchDuplicates, ...unique.filter((i) => !fresh.has(i))];
  const skuOf = (e: StockEvent) => firstSaid.get(eventKey(e))?.sku ?? e.sku;
  const missing = new Map<string, { wh: string; sku: string }>();
  for (const i of duplicateIdx) {
    const e = (items[i] as Parsed & { ok: true }).event;
    const k = stockKey(e.wh, skuOf(e));
    if (e.type !== 'level' && !levels.has(k)) missing.set(k, { wh: e.wh, sku: skuOf(e) });
  }
  if (missing.size > 0) {
    const m = [...missing.values()];
    const { rows } = await client.query<{ wh: string; sku: string; on_hand: number; reserved: number }>(
      `SELECT wh, sku, on_hand, reserved FROM stock WHERE (wh, sku) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
      [m.map((r) => r.wh), m.map((r) => r.sku)],
    );
    for (const r of rows) levels.set(stockKey(r.wh, r.sku), { onHand: r.on_hand, reserved: r.reserved });
  }

  // 6. Decisions, in input order.
  const now = Date.now();
  items.forEach((item, i) => {
    if (!item.ok) {
      decisions[i] = { status: 'rejected', id: item.id, error: item.error.toBody() };
      return;
    }
    const e = item.event;
    const status = fresh.has(i) ? 'applied' : 'duplicate';
    const level = e.type === 'level' ? undefined : levels.get(stockKey(e.wh, status === 'applied' ? e.sku : skuOf(e)));
    const stock = level && { onHand: level.onHand, available: level.onHand - level.reserved };
    decisions[i] = stock ? { status, id: e.id, stock } : { status, id: e.id };
    if (status === 'applied') result.applied.push({ type: e.type, wh: e.wh, lagMs: now - e.ts });
  });
  return result;
}

interface DeadLetterRow {
  wh: string | null;
  device: string | null;
  id: string | null;
  topic: string;
  code: string;
  reason: string;
  raw: Buffer;
  source: string;
  sku?: string;
}

async function insertDeadLetters(client: pg.PoolClient, items: Parsed[], dead: number[], result: BatchResult): Promise<void> {
  const rows = dead.map((i): DeadLetterRow => {
    const item = items[i] as Parsed & { ok: false };
    const d = item.delivery;
    return { wh: d.wh, device: d.device, id: item.id, topic: clean(d.topic), code: item.error.code, reason: clean(item.error.message), raw: d.payload.subarray(0, MAX_EVENT_BYTES), source: d.source };
  });
  await storeDeadLetters(client, rows, result);
}

/** The copies of reused ids: kept with what they said and what their key first named. */
async function insertReusedIds(client: pg.PoolClient, items: Parsed[], reused: number[], firstSaid: Map<string, { sku: string }>, result: BatchResult): Promise<void> {
  const rows = reused.map((i): DeadLetterRow => {
    const { delivery: d, event: e } = items[i] as Parsed & { ok: true };
    const first = firstSaid.get(eventKey(e))?.sku ?? e.sku;
    const reason = `id ${e.id} of ${e.device} was first used for other content (sku ${first}); this copy (${e.type} ${e.qty} of ${e.sku}) is not applied`;
    return { wh: d.wh, device: d.device, id: e.id, topic: clean(d.topic), code: ErrorCode.idReused, reason: clean(reason), raw: d.payload.subarray(0, MAX_EVENT_BYTES), source: d.source, sku: e.sku };
  });
  await storeDeadLetters(client, rows, result);
}

async function storeDeadLetters(client: pg.PoolClient, rows: DeadLetterRow[], result: BatchResult): Promise<void> {
  await client.query(
    `INSERT INTO dead_letters (wh, device, event_id, topic, code, reason, raw, source)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::text[])`,
    [rows.map((r) => r.wh), rows.map((r) => r.device), rows.map((r) => r.id), rows.map((r) => r.topic), rows.map((r) => r.code), rows.map((r) => r.reason), rows.map((r) => r.raw), rows.map((r) => r.source)],
  );
  for (const r of rows) result.deadLetters.push({ wh: r.wh, device: r.device, code: r.code, reason: r.reason, ...(r.sku !== undefined && { sku: r.sku }) });
}

/**
 * What an event says, for telling a resend from a reused id: everything that decides its effect — type, sku, qty,
 * location, reservation, and the transfer a receipt names — but not ts, which the edge stamps anew into an honest
 * resend of an event without one. 16 bytes of SHA-256: only two versions of one key are ever compared.
 */
export function contentDigest(e: StockEvent): Buffer {
  const transfer = e.type === 'received' ? (e.payload.transfer ?? null) : null;
  const said = [e.type, e.sku, e.qty, e.location ?? null, 'reservation' in e ? (e.reservation ?? null) : null, transfer];
  return createHash('sha256').update(JSON.stringify(said)).digest().subarray(0, 16);
}

async function insertEvents(client: pg.PoolClient, events: BookEvent[]): Promise<void> {
  await client.query(
    `INSERT INTO events (ts, wh, device, id, type, sku, qty, delta, location, reservation, reason, payload, received_at)
     SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[],
                          $9::text[], $10::text[], $11::text[], $12::jsonb[], $13::timestamptz[])`,
    [
      events.map((e) => iso(e.ts)),
      events.map((e) => e.wh),
      events.map((e) => e.device),
      events.map((e) => e.id),
      events.map((e) => e.type),
      events.map((e) => e.sku),
      events.map((e) => e.qty),
      events.map((e) => (e.type === 'counted' ? 0 : deltaOf(e))),
      events.map((e) => e.location ?? null),
      events.map((e) => ('reservation' in e ? (e.reservation ?? null) : null)),
      events.map((e) => e.reason ?? null),
      events.map((e) => JSON.stringify(e.payload)),
      events.map((e) => iso(e.receivedAt)),
    ],
  );
}

async function insertShelfReadings(client: pg.PoolClient, events: LevelEvent[]): Promise<ShelfReading[]> {
  const cols = [
    events.map((e) => iso(e.ts)),
    events.map((e) => e.wh),
    events.map((e) => e.location),
    events.map((e) => e.sku),
    events.map((e) => e.qty),
    events.map((e) => e.device),
    events.map((e) => e.id),
  ];
  await client.query(
    `INSERT INTO shelf_readings (ts, wh, location, sku, qty, device, id, payload, received_at)
     SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::jsonb[], $9::timestamptz[])`,
    [...cols, events.map((e) => JSON.stringify(e.payload)), events.map((e) => iso(e.receivedAt))],
  );
  // Latest by (ts, id, device), whatever the arrival order; only a newer reading replaces the stored one.
  const { rows } = await client.query<{ wh: string; location: string; sku: string; qty: number; ts: Date; device: string }>(
    `INSERT INTO shelf_latest AS s (wh, location, sku, qty, ts, device, id)
     SELECT DISTINCT ON (u.wh, u.location, u.sku) u.wh, u.location, u.sku, u.qty, u.ts, u.device, u.id
     FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[]) AS u(ts, wh, location, sku, qty, device, id)
     ORDER BY u.wh, u.location, u.sku, u.ts DESC, u.id COLLATE "C" DESC, u.device COLLATE "C" DESC
     ON CONFLICT (wh, location, sku) DO UPDATE SET qty = EXCLUDED.qty, ts = EXCLUDED.ts, device = EXCLUDED.device, id = EXCLUDED.id
       WHERE (EXCLUDED.ts, EXCLUDED.id, EXCLUDED.device) > (s.ts, s.id, s.device)
     RETURNING s.wh, s.location, s.sku, s.qty, s.ts, s.device`,
    cols,
  );
  return rows.map((r) => ({ warehouse: r.wh, location: r.location, sku: r.sku, qty: r.qty, ts: r.ts.toISOString(), device: r.device }));
}

interface Change {
  wh: string;
  sku: string;
  onHand: number;
  anchor: (OrderKey & { qty: number }) | null;
  wasNegative: boolean;
  /** change of `reserved` by shipped events consuming reservations (command state, see reservations/consume.ts) */
  reservedDelta: number;
}

async function applyStock(client: pg.PoolClient, groups: Map<string, BookEvent[]>, levels: Map<string, { onHand: number; reserved: number }>, result: BatchResult): Promise<void> {
  const keys = [...groups.values()].map((g) => ({ wh: (g[0] as BookEvent).wh, sku: (g[0] as BookEvent).sku }));
  keys.sort((a, b) => (a.wh === b.wh ? (a.sku < b.sku ? -1 : a.sku > b.sku ? 1 : 0) : a.wh < b.wh ? -1 : 1));
  const whs = keys.map((k) => k.wh);
  const skus = keys.map((k) => k.sku);
  const lock = (w: string[], s: string[]) =>
    client.query<Row>(
      `SELECT wh, sku, on_hand, reserved, (extract(epoch FROM anchor_ts) * 1000)::bigint::text AS anchor_ms, anchor_id, anchor_device, anchor_qty
       FROM stock WHERE (wh, sku) IN (SELECT * FROM unnest($1::text[], $2::text[]))
       ORDER BY wh, sku FOR UPDATE`,
      [w, s],
    );
  // Lock existing rows first; create only the missing ones (rare once a sku is known), then lock those.
  const { rows } = await lock(whs, skus);
  if (rows.length < keys.length) {
    const have = new Set(rows.map((r) => stockKey(r.wh, r.sku)));
    const missing = keys.filter((k) => !have.has(stockKey(k.wh, k.sku)));
    const mw = missing.map((k) => k.wh);
    const ms = missing.map((k) => k.sku);
    await client.query(`INSERT INTO stock (wh, sku) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING`, [mw, ms]);
    rows.push(...(await lock(mw, ms)).rows);
  }

  // Decide per row with the anchor rule of CONTRACT section 4 (the same rule as ledger.ts).
  const changes: Change[] = [];
  const recount: Change[] = [];
  const byKey = new Map<string, Change>(); // every locked row, changed or not
  for (const row of rows) {
    const events = groups.get(stockKey(row.wh, row.sku)) as BookEvent[];
    const old = row.anchor_ms === null ? null : { ts: Number(row.anchor_ms), id: row.anchor_id as string, device: row.anchor_device as string, qty: row.anchor_qty as number };
    let anchor = old;
    for (const e of events) {
      if (e.type === 'counted' && (anchor === null || compareKeys(e, anchor) > 0)) anchor = { ts: e.ts, id: e.id, device: e.device, qty: e.qty };
    }
    const change: Change = { wh: row.wh, sku: row.sku, onHand: row.on_hand, anchor, wasNegative: row.on_hand < 0, reservedDelta: 0 };
    byKey.set(stockKey(row.wh, row.sku), change);
    levels.set(stockKey(row.wh, row.sku), { onHand: row.on_hand, reserved: row.reserved });
    if (anchor !== old) {
      recount.push(change); // onHand = count + every delta in the log ordered after it (this batch's included)
      changes.push(change);
      continue;
    }
    let sum = 0;
    for (const e of events) if (e.type !== 'counted' && (anchor === null || compareKeys(e, anchor) > 0)) sum += deltaOf(e);
    if (sum !== 0) {
      change.onHand += sum;
      changes.push(change);
    }
  }
  // Reservations named by shipped events, transfers named by received ones: whatever their order key (a
  // shipment before the anchor still took the goods the hold was for).
  const links = hasLinks(groups.values()) ? await applyLinks(client, [...groups.values()].flat()) : null;
  if (links) {
    for (const [k, delta] of links.reserved) {
      const c = byKey.get(k);
      if (!c) continue; // only holds of the batch's own (locked) rows are changed
      c.reservedDelta += delta;
      if (!changes.includes(c)) changes.push(c);
    }
    result.notices = links.notices;
    result.transitions = links.transitions;
  }
  if (recount.length > 0) {
    const a = recount.map((c) => c.anchor as OrderKey & { qty: number });
    const { rows: sums } = await client.query<{ i: string; total: number }>(
      `SELECT g.i::text AS i, COALESCE(sum(e.delta), 0)::bigint AS total
       FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[]) WITH ORDINALITY AS g(wh, sku, ts, id, device, i)
       LEFT JOIN events e ON e.wh = g.wh AND e.sku = g.sku AND e.delta <> 0
         AND (e.ts, e.id, e.device) > (g.ts, g.id COLLATE "C", g.device COLLATE "C")
       GROUP BY g.i`,
      [recount.map((c) => c.wh), recount.map((c) => c.sku), a.map((k) => iso(k.ts)), a.map((k) => k.id), a.map((k) => k.device)],
    );
    for (const s of sums) {
      const c = recount[Number(s.i) - 1] as Change;
      c.onHand = (c.anchor as { qty: number }).qty + s.total;
    }
  }
  const transferSkus = links ? [...links.transferSkus] : [];
  if (changes.length === 0 && transferSkus.length === 0) return;

  const { rows: updated } = await client.query<{ wh: string; sku: string; on_hand: number; reserved: number; version: number; updated_at: Date }>(
    `UPDATE stock s SET on_hand = u.on_hand, anchor_ts = u.anchor_ts, anchor_id = u.anchor_id, anchor_device = u.anchor_device,
            anchor_qty = u.anchor_qty, reserved = s.reserved + u.reserved_delta, version = s.version + 1, updated_at = now()
     FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::text[], $6::text[], $7::bigint[], $8::bigint[])
          AS u(wh, sku, on_hand, anchor_ts, anchor_id, anchor_device, anchor_qty, reserved_delta)
     WHERE s.wh = u.wh AND s.sku = u.sku
     RETURNING s.wh, s.sku, s.on_hand, s.reserved, s.version, s.updated_at`,
    [
      changes.map((c) => c.wh),
      changes.map((c) => c.sku),
      changes.map((c) => c.onHand),
      changes.map((c) => (c.anchor ? iso(c.anchor.ts) : null)),
      changes.map((c) => c.anchor?.id ?? null),
      changes.map((c) => c.anchor?.device ?? null),
      changes.map((c) => c.anchor?.qty ?? null),
      changes.map((c) => c.reservedDelta),
    ],
  );
  const negatives: NegativeStock[] = [];
  for (const r of updated) {
    levels.set(stockKey(r.wh, r.sku), { onHand: r.on_hand, reserved: r.reserved });
    result.warehouseStock.push({ sku: r.sku, warehouse: r.wh, onHand: r.on_hand, reserved: r.reserved, available: r.on_hand - r.reserved, version: r.version, asOf: r.updated_at.toISOString() });
  }
  for (const c of changes) if (c.onHand < 0 && !c.wasNegative) negatives.push({ wh: c.wh, sku: c.sku, onHand: c.onHand });
  result.negative = negatives;

  // Global topic: its version row is locked after the warehouse rows, so a later version always carries later numbers.
  const touched = [...new Set([...changes.map((c) => c.sku), ...transferSkus])].sort();
  result.globalStock = await globalStock(client, touched, true);
}

/** Builds `stock/{sku}` objects; with `bump`, increments each sku's topic version first. */
export async function globalStock(client: pg.PoolClient | pg.Pool, skus: string[], bump: boolean): Promise<GlobalStock[]> {
  const versions = bump
    ? await client.query<{ sku: string; version: number; updated_at: Date }>(
        `INSERT INTO sku_versions AS v (sku, version) SELECT unnest($1::text[]), 1
         ON CONFLICT (sku) DO UPDATE SET version = v.version + 1, updated_at = now()
         RETURNING sku, version, updated_at`,
        [skus],
      )
    : await client.query<{ sku: string; version: number; updated_at: Date }>(`SELECT sku, version, updated_at FROM sku_versions WHERE sku = ANY($1::text[])`, [skus]);
  // Rows of wh NULL carry the quantity in transit between warehouses (transfers shipped, not yet received).
  const { rows } = await client.query<{ wh: string | null; sku: string; on_hand: number; reserved: number }>(
    `SELECT wh, sku, on_hand, reserved FROM stock WHERE sku = ANY($1::text[])
     UNION ALL
     SELECT NULL, sku, sum(shipped - received)::bigint, 0 FROM transfers
     WHERE sku = ANY($1::text[]) AND state = 'in_transit' AND shipped > received GROUP BY sku
     ORDER BY 2, 1`,
    [skus],
  );
  const bySku = new Map<string, GlobalStock>();
  for (const v of versions.rows) {
    bySku.set(v.sku, { sku: v.sku, onHand: 0, reserved: 0, available: 0, inTransit: 0, warehouses: {}, version: v.version, asOf: v.updated_at.toISOString() });
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

/** The stored stock of some rows and of their skus, at their current versions (no version bump). */
export async function currentStock(pool: pg.Pool, keys: { wh: string; sku: string }[]): Promise<{ warehouse: WarehouseStock[]; global: GlobalStock[] }> {
  const { rows } = await pool.query<{ wh: string; sku: string; on_hand: number; reserved: number; version: number; updated_at: Date }>(
    `SELECT wh, sku, on_hand, reserved, version, updated_at FROM stock
     WHERE (wh, sku) IN (SELECT * FROM unnest($1::text[], $2::text[])) AND version > 0`,
    [keys.map((k) => k.wh), keys.map((k) => k.sku)],
  );
  const warehouse = rows.map((r) => ({ sku: r.sku, warehouse: r.wh, onHand: r.on_hand, reserved: r.reserved, available: r.on_hand - r.reserved, version: r.version, asOf: r.updated_at.toISOString() }));
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
