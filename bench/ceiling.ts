import { createPool } from '../processors/db/pool.js';

/**
 * Baseline (d), the database ceiling: the rows of the event log inserted by one multi-row
 * `INSERT … SELECT unnest(…)` per 1,000, on one connection, into a copy of `events` (same columns
 * and indexes; a hypertable on TimescaleDB) in a migrated database. Nothing else: no inbox, no stock, no broker.
 */
export async function ceiling(
  url: string,
  rows: number,
  warehouses = 4,
): Promise<{ perSecond: number; seconds: number }> {
  const pool = createPool({ url, max: 1 });
  try {
    await pool.query('DROP TABLE IF EXISTS ceiling');
    await pool.query('CREATE TABLE ceiling (LIKE events INCLUDING ALL)');
    // On TimescaleDB the event log is a hypertable (1-day chunks): so is its ceiling.
    const { rows: ts } = await pool
      .query<{ n: number }>(
        `SELECT count(*)::int AS n FROM timescaledb_information.hypertables WHERE hypertable_name = 'events'`,
      )
      .catch(() => ({ rows: [{ n: 0 }] }));
    if ((ts[0]?.n ?? 0) > 0) await pool.query(`SELECT create_hypertable('ceiling', by_range('ts', INTERVAL '1 day'))`);
    const batch = 1000;
    const base = Date.now();
    const t0 = performance.now();
    for (let n = 0; n < rows; n += batch) {
      const idx = Array.from({ length: Math.min(batch, rows - n) }, (_, k) => n + k);
      await pool.query(
        `INSERT INTO ceiling (ts, wh, device, id, type, sku, qty, delta, payload, received_at)
         SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[], $9::jsonb[], $10::timestamptz[])`,
        [
          idx.map((i) => new Date(base + i).toISOString()),
          idx.map((i) => `W${i % warehouses}`),
          idx.map((i) => `d${i % 200}`),
          idx.map((i) => `c-${i}`),
          idx.map((i) => (i % 4 === 3 ? 'shipped' : 'received')),
          idx.map((i) => `SKU-${i % 1000}`),
          idx.map((i) => 1 + (i % 5)),
          idx.map((i) => (i % 4 === 3 ? -1 : 1) * (1 + (i % 5))),
          idx.map((i) =>
            JSON.stringify({
              v: 1,
              id: `c-${i}`,
              type: i % 4 === 3 ? 'shipped' : 'received',
              sku: `SKU-${i % 1000}`,
              qty: 1 + (i % 5),
            }),
          ),
          idx.map(() => new Date(base).toISOString()),
        ],
      );
    }
    const seconds = (performance.now() - t0) / 1000;
    await pool.query('DROP TABLE ceiling');
    return { perSecond: rows / seconds, seconds };
  } finally {
    await pool.end();
  }
}
