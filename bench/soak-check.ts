import type pg from 'pg';
import { until } from '../test/faults/cluster.js';

/** Waits until central's inbox holds `total` events of `wh` (the database may be coming back meanwhile). */
export async function waitInbox(pool: pg.Pool, wh: string, total: number, ms: number): Promise<void> {
  let n = 0;
  await until(
    async () => {
      n = await pool
        .query<{ n: number }>('SELECT count(*)::int AS n FROM inbox WHERE wh = $1', [wh])
        .then((r) => r.rows[0]?.n ?? 0)
        .catch(() => n);
      return n >= total;
    },
    ms,
    `${total} events of ${wh} in central's inbox (${n} so far)`,
  );
}

/** Each sent event against central's event log and inbox: which are missing, which are there more than once. */
export async function exactlyOnce(
  pool: pg.Pool,
  wh: string,
  sent: readonly { device: string; id: string }[],
): Promise<{ applied: number; lost: string[]; twice: string[]; unknown: number }> {
  const seen = new Map<string, number>();
  const { rows } = await pool.query<{ device: string; id: string; n: number }>(
    'SELECT device, id, count(*)::int AS n FROM events WHERE wh = $1 GROUP BY device, id',
    [wh],
  );
  for (const r of rows) seen.set(`${r.device}/${r.id}`, r.n);
  const inbox = await pool.query<{ device: string; id: string }>('SELECT device, id FROM inbox WHERE wh = $1', [wh]);
  const inInbox = new Set(inbox.rows.map((r) => `${r.device}/${r.id}`));
  const lost: string[] = [];
  let applied = 0;
  const sentKeys = new Set<string>();
  for (const e of sent) {
    const key = `${e.device}/${e.id}`;
    sentKeys.add(key);
    if (seen.has(key)) applied++;
    else lost.push(`${wh}/${key}${inInbox.has(key) ? ' (in the inbox, not in the event log)' : ''}`);
  }
  const twice = rows.filter((r) => r.n > 1).map((r) => `${wh}/${r.device}/${r.id} ×${r.n}`);
  const unknown = rows.filter((r) => !sentKeys.has(`${r.device}/${r.id}`)).length;
  return { applied, lost, twice, unknown };
}
