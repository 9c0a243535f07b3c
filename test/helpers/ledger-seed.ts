import type pg from 'pg';

/** One stored book event, as the processor writes it (delta: its signed effect on onHand; 0 for a count). */
export interface SeedEvent {
  ts: string;
  wh: string;
  sku: string;
  id: string;
  type: 'received' | 'shipped' | 'returned' | 'adjusted' | 'counted';
  qty: number;
}

const deltaOf = (e: SeedEvent) => (e.type === 'shipped' ? -e.qty : e.type === 'counted' ? 0 : e.qty);

/**
 * A small ledger with known answers, over two days and two warehouses. WA/S1 in ledger order (ts, id, device):
 *   08:10 +100, 08:40 −30, 09:05 +5, 09:30 −2, 09:45 a0 +1 (before the count: 'a0' < 'k1'), 09:45 count 70
 *   (book just before: 74, correction −4), 09:45 s2 −3 (after it: 's2' > 'k1'), 10:00 −80 (onHand 70 − 3 − 80 = −13:
 *   stock went negative), next day 07:00 +20 (7), 07:30 count 12 (correction +5).
 * WA/S2: 09:50 +10, next day 23:59:59.999 −4. WB/S1: 10:00 +50, 10:30 count 45 (correction −5).
 * Inserted out of ledger order on purpose: the order of arrival must not matter.
 */
export const SEED_EVENTS: SeedEvent[] = [
  { ts: '2026-11-02T10:00:00Z', wh: 'WA', sku: 'S1', id: 's3', type: 'shipped', qty: 80 },
  { ts: '2026-11-02T08:10:00Z', wh: 'WA', sku: 'S1', id: 'r1', type: 'received', qty: 100 },
  { ts: '2026-11-02T09:45:00Z', wh: 'WA', sku: 'S1', id: 'k1', type: 'counted', qty: 70 },
  { ts: '2026-11-02T08:40:00Z', wh: 'WA', sku: 'S1', id: 's1', type: 'shipped', qty: 30 },
  { ts: '2026-11-02T09:05:00Z', wh: 'WA', sku: 'S1', id: 't1', type: 'returned', qty: 5 },
  { ts: '2026-11-02T09:45:00Z', wh: 'WA', sku: 'S1', id: 's2', type: 'shipped', qty: 3 },
  { ts: '2026-11-02T09:30:00Z', wh: 'WA', sku: 'S1', id: 'a1', type: 'adjusted', qty: -2 },
  { ts: '2026-11-02T09:45:00Z', wh: 'WA', sku: 'S1', id: 'a0', type: 'adjusted', qty: 1 },
  { ts: '2026-11-03T07:30:00Z', wh: 'WA', sku: 'S1', id: 'k2', type: 'counted', qty: 12 },
  { ts: '2026-11-03T07:00:00Z', wh: 'WA', sku: 'S1', id: 'r2', type: 'received', qty: 20 },
  { ts: '2026-11-02T09:50:00Z', wh: 'WA', sku: 'S2', id: 'r3', type: 'received', qty: 10 },
  { ts: '2026-11-03T23:59:59.999Z', wh: 'WA', sku: 'S2', id: 's4', type: 'shipped', qty: 4 },
  { ts: '2026-11-02T10:30:00Z', wh: 'WB', sku: 'S1', id: 'k3', type: 'counted', qty: 45 },
  { ts: '2026-11-02T10:00:00Z', wh: 'WB', sku: 'S1', id: 'r4', type: 'received', qty: 50 },
];

/** Inserts events into the event log (and their inbox keys), as committed batches leave them. */
export async function insertEvents(pool: pg.Pool, events: SeedEvent[], device = 'scan-1'): Promise<void> {
  const columns = [
    events.map((e) => e.ts),
    events.map((e) => e.wh),
    events.map((e) => e.sku),
    events.map((e) => e.id),
    events.map((e) => e.type),
    events.map((e) => e.qty),
    events.map(deltaOf),
  ];
  await pool.query(
    `INSERT INTO events (ts, wh, device, id, type, sku, qty, delta, payload, received_at)
     SELECT ts, wh, $8, id, type, sku, qty, delta, jsonb_build_object('v', 1, 'id', id, 'type', type, 'sku', sku, 'qty', qty), ts
     FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[]) AS e(ts, wh, sku, id, type, qty, delta)`,
    [...columns, device],
  );
  await pool.query(
    `INSERT INTO inbox (wh, device, id, sku) SELECT wh, $4, id, sku FROM unnest($1::text[], $2::text[], $3::text[]) AS k(wh, id, sku)`,
    [columns[1], columns[3], columns[2], device],
  );
}

const REFRESH_ATTEMPTS = 300; // × 100 ms: the policy's own refresh, which starts with the database, may hold the lock

/**
 * On TimescaleDB, materialises movements_hourly over everything (a continuous aggregate shows only what it has
 * materialised, or that plus the rows after its watermark when real-time); on plain PostgreSQL it is a view.
 */
export async function refreshMovements(pool: pg.Pool, timescale: boolean): Promise<void> {
  if (!timescale) return;
  for (let attempt = 1; ; attempt++) {
    try {
      return void (await pool.query(`CALL refresh_continuous_aggregate('movements_hourly', NULL, NULL)`));
    } catch (err) {
      // 55P03 lock_not_available: "due to a concurrent refresh" (the refresh policy's job); wait for it to end.
      if ((err as { code?: string }).code !== '55P03' || attempt === REFRESH_ATTEMPTS) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}
