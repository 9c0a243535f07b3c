import assert from 'node:assert/strict';
import type pg from 'pg';
import { stockKey } from '../../processors/ledger/ledger.js';
import { rebuild } from '../../processors/rebuild.js';
import type { Expected } from './workload.js';

/** Waits until central's inbox holds `total` events of the warehouse. */
export async function waitApplied(pool: pg.Pool, wh: string, total: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM inbox WHERE wh = $1', [wh]);
    if ((rows[0]?.n ?? 0) >= total) return;
    if (Date.now() > deadline)
      throw new Error(`only ${rows[0]?.n} of ${total} events applied at central after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Exactly once: every key applied, none twice, stock as the oracle says, and rebuild finds no drift. */
export async function assertExact(pool: pg.Pool, wh: string, total: number, expected: Expected): Promise<void> {
  const events = await pool.query<{ n: number; keys: number }>(
    'SELECT count(*)::int AS n, count(DISTINCT (device, id))::int AS keys FROM events WHERE wh = $1',
    [wh],
  );
  assert.equal(events.rows[0]?.keys, total, 'every event applied');
  assert.equal(events.rows[0]?.n, total, 'none applied twice');
  const { rows } = await pool.query<{ sku: string; on_hand: number }>('SELECT sku, on_hand FROM stock WHERE wh = $1', [
    wh,
  ]);
  const actual = new Map(rows.map((r) => [stockKey(wh, r.sku), r.on_hand]));
  for (const [key, s] of expected.stock) assert.equal(actual.get(key), s.onHand, `stock of ${key}`);
  assert.deepEqual((await rebuild(pool)).drift, [], 'rebuild finds no drift');
}
