import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { ErrorCode, ValidationError, type ReservationGranted, type ReservationRequest, type ReservationView } from '../../protocol/index.js';
import { allocate, availableOf, type AllocationPolicy, type Level } from '../ledger/reservations.js';
import type { Outcome } from './runner.js';
import { applyReserved, expireLapsed, lockSku, NOW, param, skuKnown, warehouseKnown, type Client, type LockedLevel } from './sql.js';

export const newId = (prefix: 'r' | 't') => `${prefix}-${randomUUID()}`;

export const notFound = (noun: string, value: string, field: string) =>
  new ValidationError(ErrorCode.notFound, `unknown ${noun} ${value}${noun === field ? '' : ` (${field})`}`, field);

/** Why there is no stock row to lock: an unknown sku or warehouse is 404; a known pair without a row has 0 available. */
export async function explainMissing(client: Client, sku: string, wh: string | undefined, whField = 'warehouse'): Promise<void> {
  if (!(await skuKnown(client, sku))) throw notFound('sku', sku, 'sku');
  if (wh !== undefined && !(await warehouseKnown(client, wh))) throw notFound('warehouse', wh, whField);
}

/** Ends the lapsed holds of locked rows (expiry is exact at decision time, whatever the sweeper's pace). */
export async function freeLapsed(client: Client, sku: string, levels: LockedLevel[], now: Date | null): Promise<{ deltas: Map<string, number>; expired: number }> {
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

const toDeltas = (sku: string, m: Map<string, number>) => [...m].map(([wh, delta]) => ({ wh, sku, delta }));

/** POST /v1/reservations, decided under the locks of the sku's stock rows. */
export async function reserve(client: Client, now: Date | null, req: ReservationRequest, ttlSeconds: number, policy: AllocationPolicy): Promise<Outcome> {
  const levels = await lockSku(client, req.sku, req.warehouse !== undefined ? [req.warehouse] : null, now);
  if (levels.length === 0) await explainMissing(client, req.sku, req.warehouse);
  const { deltas } = await freeLapsed(client, req.sku, levels, now);
  const parts = allocate(levels, req, policy);
  if (!parts) return { answer: insufficient(req.sku, req.qty, levels, req.warehouse), change: await applyReserved(client, toDeltas(req.sku, deltas)) };

  const ids = parts.map(() => newId('r'));
  const group = parts.length > 1 ? newId('r') : null;
  const { rows } = await client.query<{ expires_at: Date }>(
    `INSERT INTO reservations (id, group_id, wh, sku, qty, remaining, state, channel, expires_at)
     SELECT u.id, $3, u.wh, $4, u.qty, u.qty, 'active', $5, ${NOW(7)} + make_interval(secs => $6)
     FROM unnest($1::text[], $2::text[], $8::bigint[]) AS u(id, wh, qty)
     RETURNING expires_at`,
    [ids, parts.map((p) => p.wh), group, req.sku, req.channel ?? null, ttlSeconds, param(now), parts.map((p) => p.qty)],
  );
  for (const p of parts) deltas.set(p.wh, (deltas.get(p.wh) ?? 0) + p.qty);
  const expiresAt = (rows[0] as { expires_at: Date }).expires_at.toISOString();
  const listed = parts.map((p, i) => ({ id: ids[i] as string, warehouse: p.wh, qty: p.qty }));
  const first = listed[0] as { id: string; warehouse: string };
  const body: ReservationGranted = {
    id: group ?? first.id,
    sku: req.sku,
    qty: req.qty,
    warehouse: group ? null : first.warehouse,
    expiresAt,
    ...(req.split && { parts: listed }),
  };
  return { answer: { status: 201, body }, change: await applyReserved(client, toDeltas(req.sku, deltas)) };
}

interface HoldRow {
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

const view = (r: HoldRow): ReservationView => ({
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
  const { rows } = await pool.query<HoldRow>(`SELECT * FROM reservations WHERE id = $1 OR group_id = $1 ORDER BY wh`, [id]);
  const exact = rows.find((r) => r.id === id);
  if (exact) return { status: 200, body: view(exact) };
  const first = rows[0];
  if (!first) throw notFound('reservation', id, 'id');
  const parts = rows.map(view);
  return { status: 200, body: { id, sku: first.sku, qty: parts.reduce((n, p) => n + p.qty, 0), warehouse: null, expiresAt: parts[0]?.expiresAt, parts } };
}

/** DELETE /v1/reservations/{id}: gives back what the hold (or every part of a split answer) still holds. 204 also when nothing is left. */
export async function release(client: Client, now: Date | null, id: string): Promise<Outcome> {
  const { rows } = await client.query<{ id: string; wh: string; sku: string; transfer: string | null }>(
    `SELECT id, wh, sku, transfer FROM reservations WHERE id = $1 OR group_id = $1`,
    [id],
  );
  const first = rows[0];
  if (!first) throw notFound('reservation', id, 'id');
  if (first.transfer !== null) throw new ValidationError(ErrorCode.invalidState, `reservation ${id} holds stock for transfer ${first.transfer}: cancel the transfer instead`, 'id');
  const whs = [...new Set(rows.map((r) => r.wh))].sort();
  await lockSku(client, first.sku, whs, now); // lock order: the stock rows before the holds
  const { rows: freed } = await client.query<{ wh: string; freed: number }>(
    `WITH held AS (SELECT id, remaining FROM reservations WHERE id = ANY($1::text[]) AND state = 'active' ORDER BY id FOR UPDATE)
     UPDATE reservations r SET state = CASE WHEN r.expires_at <= ${NOW(2)} THEN 'expired' ELSE 'released' END, remaining = 0, ended_at = ${NOW(2)}
     FROM held WHERE r.id = held.id
     RETURNING r.wh, held.remaining AS freed`,
    [rows.map((r) => r.id), param(now)],
  );
  const change = await applyReserved(client, freed.map((f) => ({ wh: f.wh, sku: first.sku, delta: -f.freed })));
  return { answer: { status: 204, body: null }, change };
}
