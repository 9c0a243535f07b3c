import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import {
  ErrorCode,
  ValidationError,
  type ReservationGranted,
  type ReservationRequest,
  type ReservationView,
} from '../../protocol/index.js';
import { allocate, availableOf, type AllocationPolicy, type Level } from '../ledger/reservations.js';
import { claimKeys, storeAnswers, type Answer, type ClaimResult } from './idempotency.js';
import type { Outcome } from './runner.js';
import {
  applyReserved,
  expireLapsed,
  lockSku,
  noChange,
  NOW,
  param,
  skuKnown,
  warehouseKnown,
  type Client,
  type LockedLevel,
  type StockChange,
} from './sql.js';

export const newId = (prefix: 'r' | 't') => `${prefix}-${randomUUID()}`;

export const notFound = (noun: string, value: string, field: string) =>
  new ValidationError(ErrorCode.notFound, `unknown ${noun} ${value}${noun === field ? '' : ` (${field})`}`, field);

/** Why there is no stock row to lock: an unknown sku or warehouse is 404; a known pair without a row has 0 available. */
export async function explainMissing(
  client: Client,
  sku: string,
  wh: string | undefined,
  whField = 'warehouse',
): Promise<void> {
  if (!(await skuKnown(client, sku))) throw notFound('sku', sku, 'sku');
  if (wh !== undefined && !(await warehouseKnown(client, wh))) throw notFound('warehouse', wh, whField);
}

/** Ends the lapsed holds of locked rows (expiry is exact at decision time, whatever the sweeper's pace). */
export async function freeLapsed(
  client: Client,
  sku: string,
  levels: LockedLevel[],
  now: Date | null,
): Promise<{ deltas: Map<string, number>; expired: number }> {
  const deltas = new Map<string, number>();
  const lapsed = levels.filter((l) => l.lapsed > 0).map((l) => l.wh);
  if (lapsed.length === 0) return { deltas, expired: 0 };
  const { freed, ids } = await expireLapsed(client, sku, lapsed, now);
  for (const l of levels) {
    const f = freed.get(l.wh) ?? 0;
    l.reserved -= f;
    if (f !== 0) deltas.set(l.wh, -f);
  }
  return { deltas, expired: ids.length };
}

export function insufficient(sku: string, qty: number, levels: Level[], warehouse?: string): Outcome['answer'] {
  const best = [...levels].sort((a, b) => availableOf(b) - availableOf(a))[0];
  const message =
    warehouse !== undefined
      ? `${warehouse} has ${best ? availableOf(best) : 0} of ${sku} available, ${qty} asked`
      : `no warehouse has ${qty} of ${sku} available${best ? ` (most: ${best.wh} with ${availableOf(best)})` : ''}`;
  return { status: 409, body: { error: { code: ErrorCode.insufficientStock, message } } };
}

/** One reservation request waiting to be decided; `key` and `hash` are its Idempotency-Key and request hash. */
export interface ReserveRequest {
  req: ReservationRequest;
  ttlSeconds: number;
  key: string;
  hash: string;
}

/**
 * POST /v1/reservations for every request of one sku that waited together, in one transaction: lock
 * the sku's stock rows, end lapsed holds, claim the keys, then decide the requests one after another in
 * arrival order with the pure rules — so a batch grants exactly what the same requests one at a time
 * would — and commit once. Per request: its answer, or the refusal to throw (404, 422), which stores nothing.
 */
export async function reserveBatch(
  client: Client,
  now: Date | null,
  sku: string,
  batch: ReserveRequest[],
  policy: AllocationPolicy,
): Promise<{ answers: (Answer | ValidationError)[]; change: StockChange }> {
  const named = batch.every((b) => b.req.warehouse !== undefined)
    ? [...new Set(batch.map((b) => b.req.warehouse as string))].sort()
    : null;
  const levels = await lockSku(client, sku, named, now);
  const answers: (Answer | ValidationError | undefined)[] = new Array(batch.length);
  if (levels.length === 0 && !(await skuKnown(client, sku)))
    return { answers: batch.map(() => notFound('sku', sku, 'sku')), change: noChange() };
  const { deltas } = await freeLapsed(client, sku, levels, now);
  const unknownWh = new Set<string>();
  for (const wh of new Set(batch.map((b) => b.req.warehouse))) {
    if (wh !== undefined && !levels.some((l) => l.wh === wh) && !(await warehouseKnown(client, wh))) unknownWh.add(wh);
  }
  const eligible: number[] = [];
  batch.forEach((b, i) => {
    if (b.req.warehouse !== undefined && unknownWh.has(b.req.warehouse))
      answers[i] = notFound('warehouse', b.req.warehouse, 'warehouse');
    else eligible.push(i);
  });
  const claims = await claimKeys(
    client,
    eligible.map((i) => ({
      key: (batch[i] as ReserveRequest).key,
      action: 'reservations.create',
      hash: (batch[i] as ReserveRequest).hash,
    })),
  );

  const holds: { id: string; group: string | null; wh: string; qty: number; ttl: number; channel: string | null }[] =
    [];
  const granted: { i: number; ids: string[]; group: string | null; parts: { wh: string; qty: number }[] }[] = [];
  eligible.forEach((i, n) => {
    const claim = claims[n] as ClaimResult;
    if (claim.kind === 'stored') {
      answers[i] = claim.answer;
      return;
    }
    if (claim.kind === 'refused') {
      answers[i] = claim.error;
      return;
    }
    if (claim.kind === 'repeat') return; // answered below, with the answer of the request it repeats
    const { req, ttlSeconds } = batch[i] as ReserveRequest;
    const parts = allocate(levels, req, policy);
    if (!parts) {
      answers[i] = insufficient(sku, req.qty, levels, req.warehouse);
      return;
    }
    const group = parts.length > 1 ? newId('r') : null;
    const ids = parts.map(() => newId('r'));
    parts.forEach((p, k) => {
      const level = levels.find((l) => l.wh === p.wh) as Level;
      level.reserved += p.qty; // the next request of the batch sees this hold
      deltas.set(p.wh, (deltas.get(p.wh) ?? 0) + p.qty);
      holds.push({ id: ids[k] as string, group, wh: p.wh, qty: p.qty, ttl: ttlSeconds, channel: req.channel ?? null });
    });
    granted.push({ i, ids, group, parts });
  });

  if (holds.length > 0) {
    const { rows } = await client.query<{ id: string; expires_at: Date }>(
      `INSERT INTO reservations (id, group_id, wh, sku, qty, remaining, state, channel, expires_at)
       SELECT u.id, u.grp, u.wh, $1, u.qty, u.qty, 'active', u.channel, ${NOW(2)} + make_interval(secs => u.ttl)
       FROM unnest($3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::int[]) AS u(id, grp, wh, qty, channel, ttl)
       RETURNING id, expires_at`,
      [
        sku,
        param(now),
        holds.map((h) => h.id),
        holds.map((h) => h.group),
        holds.map((h) => h.wh),
        holds.map((h) => h.qty),
        holds.map((h) => h.channel),
        holds.map((h) => h.ttl),
      ],
    );
    const expiry = new Map(rows.map((r) => [r.id, r.expires_at.toISOString()]));
    for (const g of granted) {
      const { req } = batch[g.i] as ReserveRequest;
      const listed = g.parts.map((p, k) => ({ id: g.ids[k] as string, warehouse: p.wh, qty: p.qty }));
      const first = listed[0] as { id: string; warehouse: string };
      const body: ReservationGranted = {
        id: g.group ?? first.id,
        sku,
        qty: req.qty,
        warehouse: g.group ? null : first.warehouse,
        expiresAt: expiry.get(first.id) as string,
        ...(req.split && { parts: listed }),
      };
      answers[g.i] = { status: 201, body };
    }
  }
  eligible.forEach((i, n) => {
    const claim = claims[n] as ClaimResult;
    if (claim.kind !== 'repeat') return;
    const first = answers[eligible[claim.of] as number] as Answer | ValidationError;
    answers[i] = first instanceof ValidationError ? first : { ...first, replayed: true };
  });
  await storeAnswers(
    client,
    eligible
      .filter((_, n) => (claims[n] as ClaimResult).kind === 'ours')
      .map((i) => ({ key: (batch[i] as ReserveRequest).key, answer: answers[i] as Answer })),
  );
  const change = await applyReserved(
    client,
    [...deltas].map(([wh, delta]) => ({ wh, sku, delta })),
  );
  return { answers: answers as (Answer | ValidationError)[], change };
}

/** A row of the table as `SELECT *` reads it (the lists read the same). */
export interface HoldRow {
  id: string;
  group_id: string | null;
  wh: string;
  sku: string;
  qty: number;
  remaining: number;
  consumed: number;
  state: ReservationView['state'];
  channel: string | null;
  transfer: string | null;
  expires_at: Date;
  created_at: Date;
}

/** The API's view of a row; the lists answer the same objects. */
export const reservationView = (r: HoldRow): ReservationView => ({
  id: r.id,
  sku: r.sku,
  qty: r.qty,
  warehouse: r.wh,
  expiresAt: r.expires_at.toISOString(),
  state: r.state,
  remaining: r.remaining,
  consumed: r.consumed,
  createdAt: r.created_at.toISOString(),
  ...(r.group_id !== null && { group: r.group_id }),
  ...(r.channel !== null && { channel: r.channel }),
  ...(r.transfer !== null && { transfer: r.transfer }),
});

/** GET /v1/reservations/{id}: one hold, or the parts of a split answer by its id. */
export async function getReservation(pool: pg.Pool, id: string): Promise<Outcome['answer']> {
  const { rows } = await pool.query<HoldRow>(`SELECT * FROM reservations WHERE id = $1 OR group_id = $1 ORDER BY wh`, [
    id,
  ]);
  const exact = rows.find((r) => r.id === id);
  if (exact) return { status: 200, body: reservationView(exact) };
  const first = rows[0];
  if (!first) throw notFound('reservation', id, 'id');
  const parts = rows.map(reservationView);
  return {
    status: 200,
    body: {
      id,
      sku: first.sku,
      qty: parts.reduce((n, p) => n + p.qty, 0),
      warehouse: null,
      expiresAt: parts[0]?.expiresAt,
      parts,
    },
  };
}

/** DELETE /v1/reservations/{id}: gives back what the hold (or every part of a split answer) still holds. 204 also when nothing is left. */
export async function release(client: Client, now: Date | null, id: string): Promise<Outcome> {
  const { rows } = await client.query<{ id: string; wh: string; sku: string; transfer: string | null }>(
    `SELECT id, wh, sku, transfer FROM reservations WHERE id = $1 OR group_id = $1`,
    [id],
  );
  const first = rows[0];
  if (!first) throw notFound('reservation', id, 'id');
  if (first.transfer !== null)
    throw new ValidationError(
      ErrorCode.invalidState,
      `reservation ${id} holds stock for transfer ${first.transfer}: cancel the transfer instead`,
      'id',
    );
  const whs = [...new Set(rows.map((r) => r.wh))].sort();
  await lockSku(client, first.sku, whs, now); // lock order: the stock rows before the holds
  const { rows: freed } = await client.query<{ wh: string; freed: number }>(
    `WITH held AS (SELECT id, remaining FROM reservations WHERE id = ANY($1::text[]) AND state = 'active' ORDER BY id FOR UPDATE)
     UPDATE reservations r SET state = CASE WHEN r.expires_at <= ${NOW(2)} THEN 'expired' ELSE 'released' END, remaining = 0, ended_at = ${NOW(2)}
     FROM held WHERE r.id = held.id
     RETURNING r.wh, held.remaining AS freed`,
    [rows.map((r) => r.id), param(now)],
  );
  const change = await applyReserved(
    client,
    freed.map((f) => ({ wh: f.wh, sku: first.sku, delta: -f.freed })),
  );
  return { answer: { status: 204, body: null }, change };
}
