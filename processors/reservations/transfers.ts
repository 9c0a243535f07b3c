import type pg from 'pg';
import { ErrorCode, ValidationError, type TransferRequest, type TransferView } from '../../protocol/index.js';
import { allocate, inTransitOf, isOpen, type AllocationPolicy } from '../ledger/reservations.js';
import type { Notice } from '../publish/publisher.js';
import { claimKeys, storeAnswers } from './idempotency.js';
import { explainMissing, freeLapsed, insufficient, newId, notFound } from './holds.js';
import type { Outcome } from './runner.js';
import { applyReserved, lockSku, NOW, param, warehouseKnown, type Client } from './sql.js';

/** A row of the table as `SELECT *` reads it (the lists read the same). */
export interface TransferRow {
  id: string;
  sku: string;
  qty: number;
  from_wh: string;
  to_wh: string;
  state: TransferView['state'];
  shipped: number;
  received: number;
  deadline: Date;
  created_at: Date;
  updated_at: Date;
}

/** The API's view of a row; the lists answer the same objects. */
export const transferView = (t: TransferRow): TransferView => ({
  id: t.id,
  sku: t.sku,
  qty: t.qty,
  from: t.from_wh,
  to: t.to_wh,
  state: t.state,
  reservation: t.id,
  shipped: t.shipped,
  received: t.received,
  inTransit: inTransitOf(t),
  deadline: t.deadline.toISOString(),
  createdAt: t.created_at.toISOString(),
  updatedAt: t.updated_at.toISOString(),
});

/**
 * POST /v1/transfers: the saga's first step holds the quantity at the source. The hold's id is the
 * transfer's id, so the source ships with `reservation: <id>` and the destination receives with
 * `transfer: <id>`.
 */
export async function createTransfer(
  client: Client,
  now: Date | null,
  req: TransferRequest,
  timeoutSeconds: number,
  policy: AllocationPolicy,
  key: string,
  hash: string,
): Promise<Outcome> {
  const levels = await lockSku(client, req.sku, [req.from], now);
  if (levels.length === 0) await explainMissing(client, req.sku, req.from, 'from');
  if (!(await warehouseKnown(client, req.to))) throw notFound('warehouse', req.to, 'to');
  const [claim] = await claimKeys(client, [{ key, action: 'transfers.create', hash }]); // after the stock lock, as every command
  if (claim?.kind === 'refused') throw claim.error;
  if (claim?.kind === 'stored') return { answer: claim.answer };
  const { deltas } = await freeLapsed(client, req.sku, levels, now);
  const toDeltas = () => [...deltas].map(([wh, delta]) => ({ wh, sku: req.sku, delta }));
  if (!allocate(levels, { qty: req.qty, warehouse: req.from }, policy)) {
    const answer = insufficient(req.sku, req.qty, levels, req.from);
    await storeAnswers(client, [{ key, answer }]);
    return { answer, change: await applyReserved(client, toDeltas()) };
  }
  const id = newId('t');
  const { rows } = await client.query<TransferRow>(
    `WITH hold AS (
       INSERT INTO reservations (id, wh, sku, qty, remaining, state, transfer, expires_at)
       VALUES ($1, $3, $2, $5, $5, 'active', $1, ${NOW(7)} + make_interval(secs => $6)))
     INSERT INTO transfers (id, sku, qty, from_wh, to_wh, state, deadline, created_at, updated_at)
     VALUES ($1, $2, $5, $3, $4, 'reserved', ${NOW(7)} + make_interval(secs => $6), now(), now())
     RETURNING *`,
    [id, req.sku, req.from, req.to, req.qty, timeoutSeconds, param(now)],
  );
  deltas.set(req.from, (deltas.get(req.from) ?? 0) + req.qty);
  const answer = { status: 201, body: transferView(rows[0] as TransferRow) };
  await storeAnswers(client, [{ key, answer }]);
  return { answer, change: await applyReserved(client, toDeltas()) };
}

export async function getTransfer(pool: pg.Pool, id: string): Promise<Outcome['answer']> {
  const { rows } = await pool.query<TransferRow>(`SELECT * FROM transfers WHERE id = $1`, [id]);
  const t = rows[0];
  if (!t) throw notFound('transfer', id, 'id');
  return { status: 200, body: transferView(t) };
}

/** Locks a transfer's source row, then its hold, then the transfer (the global lock order). */
async function lockTransfer(
  client: Client,
  now: Date | null,
  id: string,
): Promise<{ t: TransferRow; held: number } | null> {
  const { rows: found } = await client.query<{ from_wh: string; sku: string }>(
    `SELECT from_wh, sku FROM transfers WHERE id = $1`,
    [id],
  );
  const f = found[0];
  if (!f) return null;
  await lockSku(client, f.sku, [f.from_wh], now);
  const { rows: hold } = await client.query<{ remaining: number; state: string }>(
    `SELECT remaining, state FROM reservations WHERE id = $1 FOR UPDATE`,
    [id],
  );
  const { rows } = await client.query<TransferRow>(`SELECT * FROM transfers WHERE id = $1 FOR UPDATE`, [id]);
  const h = hold[0];
  return { t: rows[0] as TransferRow, held: h && h.state === 'active' ? h.remaining : 0 };
}

/** Ends a transfer: its hold gives back what it still holds; the new state goes into the row. */
async function close(
  client: Client,
  now: Date | null,
  t: TransferRow,
  held: number,
  state: 'cancelled' | 'compensated',
): Promise<Outcome['change']> {
  await client.query(
    `UPDATE reservations SET state = 'released', remaining = 0, ended_at = ${NOW(2)} WHERE id = $1 AND state = 'active'`,
    [t.id, param(now)],
  );
  await client.query(`UPDATE transfers SET state = $2, updated_at = now(), ended_at = ${NOW(3)} WHERE id = $1`, [
    t.id,
    state,
    param(now),
  ]);
  return applyReserved(client, [{ wh: t.from_wh, sku: t.sku, delta: -held }], [t.sku]);
}

/** DELETE /v1/transfers/{id}: cancels a transfer nothing has happened to yet; 204 again when already cancelled. */
export async function cancelTransfer(client: Client, now: Date | null, id: string): Promise<Outcome> {
  const locked = await lockTransfer(client, now, id);
  if (!locked) throw notFound('transfer', id, 'id');
  const { t, held } = locked;
  if (t.state === 'cancelled') return { answer: { status: 204, body: null } };
  if (t.state !== 'reserved' || t.shipped > 0 || t.received > 0) {
    throw new ValidationError(
      ErrorCode.invalidState,
      `transfer ${id} is ${t.state} (shipped ${t.shipped}, received ${t.received}): only a transfer nothing was shipped or received for can be cancelled`,
      'id',
    );
  }
  return { answer: { status: 204, body: null }, change: await close(client, now, t, held, 'cancelled') };
}

/**
 * The saga's compensation: a transfer still open at its deadline gives back what its hold still
 * holds and ends `compensated`; the source is alerted, and the destination too when goods left.
 * Returns null when another instance (or a last event) got there first.
 */
export async function compensate(client: Client, now: Date | null, id: string): Promise<Outcome | null> {
  const locked = await lockTransfer(client, now, id);
  if (!locked) return null;
  const { t, held } = locked;
  const due = await client.query(`SELECT 1 WHERE $1::timestamptz <= ${NOW(2)}`, [t.deadline.toISOString(), param(now)]);
  if (!isOpen(t.state) || due.rows.length === 0) return null;
  const change = await close(client, now, t, held, 'compensated');
  const message = `transfer ${t.id} of ${t.qty} ${t.sku} from ${t.from_wh} to ${t.to_wh} timed out (shipped ${t.shipped}, received ${t.received}): ${held} released at ${t.from_wh}`;
  const notices: Notice[] = [{ wh: t.from_wh, kind: 'transfer-timeout', sku: t.sku, message }];
  if (t.shipped > t.received) notices.push({ wh: t.to_wh, kind: 'transfer-timeout', sku: t.sku, message });
  return { answer: { status: 200, body: transferView({ ...t, state: 'compensated' }) }, change, notices };
}
