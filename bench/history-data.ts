import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { migrate } from '../processors/db/migrate.js';
import { createPool } from '../processors/db/pool.js';
import { progress } from './lib.js';
import { compressEventsBefore, expectSchema, pauseTimescaleJobs, type DbTarget } from './targets.js';

/** The shape of the generated event log (bench/history.ts). */
export interface Shape {
  events: number;
  days: number;
  warehouses: number;
  skus: number;
}

export const HOT_SKUS = 5; // SKU-HOT-1…5
export const HOT_SHARE = 0.1; // of all events, split evenly over the hot skus
// The simulator's default mix (SIM_MIX) without `level`, which is not a book event.
export const MIX: [string, number][] = [
  ['received', 25],
  ['shipped', 35],
  ['returned', 4],
  ['adjusted', 6],
  ['counted', 5],
];
const GENERATOR = 1; // bump whenever the generated rows change: a cached database of another version is rebuilt

/**
 * TimescaleDB compression settings to try instead of the product's (migrate.ts), e.g. segmentby `wh` and orderby
 * `sku, ts, id, device`: BENCH_HISTORY_COMPRESS_SEGMENTBY / BENCH_HISTORY_COMPRESS_ORDERBY. Unset: the product's.
 */
export const COMPRESSION_OVERRIDE = {
  segmentby: process.env.BENCH_HISTORY_COMPRESS_SEGMENTBY,
  orderby: process.env.BENCH_HISTORY_COMPRESS_ORDERBY,
};
for (const [k, v] of Object.entries(COMPRESSION_OVERRIDE)) {
  if (v !== undefined && !/^[a-z_]+( (ASC|DESC))?(, ?[a-z_]+( (ASC|DESC))?)*$|^$/.test(v))
    throw new Error(`BENCH_HISTORY_COMPRESS_${k.toUpperCase()}: a list of columns, not ${JSON.stringify(v)}`);
}
const DAY_MS = 86_400_000;
const MIGRATIONS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../processors/db');

/** The sku of rank `rank` among the ordinary skus (0 is the most frequent). */
export const skuName = (shape: Shape, rank: number): string =>
  `SKU-${String(rank).padStart(Math.max(5, String(shape.skus - 1).length), '0')}`;

export interface HistoryDatabase {
  url: string;
  name: string;
  /** the end of the generated data (an hour boundary): the queries' `to` */
  anchor: Date;
  /** seconds of each build step, as measured when the database was built */
  build: Record<string, number>;
  builtAt: Date;
  /** true: found from an earlier run (BENCH_HISTORY_KEEP=1) and used as it was */
  reused: boolean;
  drop(): Promise<void>;
}

// A uniform number in [0, 1) from row i and a stream k: hashint8 is immutable, so the data is the same every build.
const u = (k: number) => `((hashint8(i * 8 + ${k}) & 2147483647)::float8 / 2147483648)`;

/**
 * The events of rows [lo, hi): evenly spaced in time over the shape's days; warehouses uniform; 10% on 5 hot
 * skus, the rest over the ordinary skus with a power-law skew (sku rank = ⌊skus · u²⌋: rank 0 gets ~1% of them, the
 * last ~1/(2·skus)); types in the simulator's mix; quantities 1–24, counts 0–500, adjustments ±1–6.
 */
function insertSql(shape: Shape): string {
  const total = MIX.reduce((t, [, w]) => t + w, 0);
  let acc = 0;
  const type = `CASE ${MIX.slice(0, -1)
    .map(([t, w]) => {
      acc += w;
      return `WHEN ${u(4)} < ${acc / total} THEN '${t}'`;
    })
    .join(' ')} ELSE '${MIX[MIX.length - 1]?.[0]}' END`;
  const width = Math.max(5, String(shape.skus - 1).length);
  return `INSERT INTO events (ts, wh, device, id, type, sku, qty, delta, payload, received_at, committed_at)
    SELECT ts, wh, device, id, type, sku, qty,
           CASE type WHEN 'shipped' THEN -qty WHEN 'counted' THEN 0 ELSE qty END,
           jsonb_build_object('v', 1, 'id', id, 'type', type, 'sku', sku, 'qty', qty), ts, ts
    FROM (SELECT ts, wh, wh || '-dev-' || (i % 25) AS device, 'h-' || i AS id, type, sku,
                 CASE type WHEN 'counted' THEN floor(${u(5)} * 501)::bigint
                           WHEN 'adjusted' THEN (CASE WHEN ${u(6)} < 0.5 THEN -1 ELSE 1 END) * (1 + floor(${u(5)} * 6))::bigint
                           ELSE 1 + floor(${u(5)} * 24)::bigint END AS qty
          FROM (SELECT i, $3::timestamptz + make_interval(secs => i * $4::double precision) AS ts,
                       'WH' || (1 + floor(${u(1)} * ${shape.warehouses}))::int AS wh,
                       CASE WHEN ${u(2)} < ${HOT_SHARE} THEN 'SKU-HOT-' || (1 + floor(${u(2)} / ${HOT_SHARE} * ${HOT_SKUS}))::int
                            ELSE 'SKU-' || lpad(floor(${shape.skus} * ${u(3)} ^ 2)::int::text, ${width}, '0') END AS sku,
                       ${type} AS type
                FROM generate_series($1::bigint, $2::bigint - 1) i) g) e`;
}

/** What a cached database must match: the shape, the generator and the schema it was built with. */
function cacheKey(shape: Shape): string {
  const h = createHash('sha256').update(
    JSON.stringify({ shape, GENERATOR, sql: insertSql(shape), COMPRESSION_OVERRIDE }),
  );
  for (const f of [
    ...fs
      .readdirSync(path.join(MIGRATIONS, 'migrations'))
      .sort()
      .map((m) => path.join('migrations', m)),
    'migrate.ts',
  ])
    h.update(fs.readFileSync(path.join(MIGRATIONS, f)));
  return h.digest('hex').slice(0, 10);
}

async function admin<T>(target: DbTarget, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: target.adminUrl });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/**
 * The generated database on `target`: found (same shape, generator and schema; every row there) or built.
 * Its name is fixed by the shape, so a run with BENCH_HISTORY_KEEP=1 leaves it for the next run to reuse.
 */
export async function historyDatabase(target: DbTarget, shape: Shape): Promise<HistoryDatabase> {
  const key = cacheKey(shape);
  const name = `sw_bench_history_${shape.events}_${key}`;
  const url = new URL(target.adminUrl);
  url.pathname = `/${name}`;
  const drop = () =>
    admin(target, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => undefined);
  const exists = await admin(
    target,
    async (c) => (await c.query(`SELECT 1 FROM pg_database WHERE datname = $1`, [name])).rowCount === 1,
  );
  if (exists) {
    const found = await cached(url.toString(), key, shape);
    if (found) {
      progress(`history on ${target.name}: reusing ${name}, built ${found.builtAt.toISOString()}`);
      return { url: url.toString(), name, ...found, reused: true, drop };
    }
    progress(`history on ${target.name}: ${name} is incomplete or stale; building it again`);
    await drop();
  }
  await admin(target, (c) => c.query(`CREATE DATABASE ${name}`));
  const built = await build(target, url.toString(), key, shape);
  return { url: url.toString(), name, ...built, reused: false, drop };
}

async function cached(
  url: string,
  key: string,
  shape: Shape,
): Promise<{ anchor: Date; build: Record<string, number>; builtAt: Date } | null> {
  const pool = createPool({ url, max: 1 });
  try {
    const { rows } = await pool.query<{ key: string; anchor: Date; build: Record<string, number>; built_at: Date }>(
      'SELECT key, anchor, build, built_at FROM bench_history_shape',
    );
    const r = rows[0];
    if (!r || r.key !== key) return null;
    const { rows: n } = await pool.query<{ n: number }>('SELECT count(*)::bigint AS n FROM events');
    return n[0]?.n === shape.events ? { anchor: r.anchor, build: r.build, builtAt: r.built_at } : null;
  } catch {
    return null; // no marker table: the build did not finish
  } finally {
    await pool.end();
  }
}

async function build(
  target: DbTarget,
  url: string,
  key: string,
  shape: Shape,
): Promise<{ anchor: Date; build: Record<string, number>; builtAt: Date }> {
  const pool = createPool({ url, max: 1 });
  const steps: Record<string, number> = {};
  const step = async (label: string, fn: () => Promise<unknown>) => {
    const t = performance.now();
    await fn();
    steps[label] = (performance.now() - t) / 1000;
  };
  try {
    expectSchema(target, await migrate(pool));
    // The benchmark compresses and refreshes itself, at known moments; no policy job runs behind it.
    if (target.key === 'timescaledb') await pauseTimescaleJobs(pool);
    const { rows } = await pool.query<{ anchor: Date }>(`SELECT date_trunc('hour', now()) AS anchor`);
    const anchor = (rows[0] as { anchor: Date }).anchor;
    const start = new Date(anchor.getTime() - shape.days * DAY_MS);
    const step_s = (shape.days * 86_400) / shape.events; // s between two events
    const sql = insertSql(shape);
    await step('insert events', async () => {
      // One statement per day of data, oldest first, as the events would have arrived.
      const t0 = performance.now();
      for (let d = 0; d < shape.days; d++) {
        const lo = Math.ceil((d * shape.events) / shape.days);
        const hi = Math.ceil(((d + 1) * shape.events) / shape.days);
        await pool.query(sql, [lo, hi, start.toISOString(), step_s]);
        if ((d + 1) % 10 === 0 || d + 1 === shape.days)
          progress(
            `history on ${target.name}: ${hi.toLocaleString('en')} events inserted (${Math.round(hi / ((performance.now() - t0) / 1000)).toLocaleString('en')}/s)`,
          );
      }
    });
    await step('stock rows', async () => {
      await pool.query(
        `INSERT INTO stock (wh, sku, on_hand, version, updated_at) SELECT wh, sku, sum(delta), count(*), $1 FROM events GROUP BY wh, sku`,
        [anchor.toISOString()],
      );
      await pool.query(
        `INSERT INTO sku_versions (sku, version, updated_at) SELECT sku, sum(version), $1 FROM stock GROUP BY sku`,
        [anchor.toISOString()],
      );
    });
    if (target.key === 'timescaledb') {
      // Refreshed before compression, as in production: the refresh policy (every 15 min) runs long before 7 days.
      progress(`history on ${target.name}: refreshing movements_hourly`);
      await step('refresh movements_hourly', () =>
        pool.query(`CALL refresh_continuous_aggregate('movements_hourly', NULL, $1::timestamptz)`, [
          anchor.toISOString(),
        ]),
      );
      const { segmentby, orderby } = COMPRESSION_OVERRIDE;
      if (segmentby !== undefined)
        await pool.query(`ALTER TABLE events SET (timescaledb.compress_segmentby = '${segmentby}')`);
      if (orderby !== undefined)
        await pool.query(`ALTER TABLE events SET (timescaledb.compress_orderby = '${orderby}')`);
      progress(`history on ${target.name}: compressing the chunks older than 7 days`);
      await step('compress chunks older than 7 days', () =>
        compressEventsBefore(pool, new Date(anchor.getTime() - 7 * DAY_MS)),
      );
    }
    // A table in service has been vacuumed (visibility map: index-only scans) and analysed; plain PostgreSQL here runs without autovacuum.
    progress(`history on ${target.name}: VACUUM ANALYZE`);
    await step('VACUUM ANALYZE', () => pool.query('VACUUM (ANALYZE)'));
    const total = Object.values(steps).reduce((a, b) => a + b, 0);
    steps.total = total;
    const builtAt = new Date();
    await pool.query(
      'CREATE TABLE bench_history_shape (key text NOT NULL, anchor timestamptz NOT NULL, build jsonb NOT NULL, built_at timestamptz NOT NULL)',
    );
    await pool.query('INSERT INTO bench_history_shape VALUES ($1, $2, $3, $4)', [
      key,
      anchor.toISOString(),
      JSON.stringify(steps),
      builtAt.toISOString(),
    ]);
    return { anchor, build: steps, builtAt };
  } finally {
    await pool.end();
  }
}
