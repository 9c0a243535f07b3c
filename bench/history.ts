import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { createPool } from '../processors/db/pool.js';
import { historyQuery } from '../processors/history.js';
import { startStockwire, type Running } from '../test/helpers/process.js';
import { condensePlan, explainAnalyze } from './explain.js';
import {
  COMPRESSION_OVERRIDE,
  HOT_SHARE,
  HOT_SKUS,
  historyDatabase,
  MIX,
  skuName,
  type HistoryDatabase,
  type Shape,
} from './history-data.js';
import {
  benchCommand,
  onCleanup,
  percentile,
  progress,
  record,
  stopProcess,
  watchdog,
  writeFleetDevices,
} from './lib.js';
import { benchTargets, describeTargets, eventsSize, mib, ratio, type DbTarget } from './targets.js';

/**
 * Issue 14/7: the queries users run over a long event log — 10,000,000 events over 120 days, the chunks older
 * than 7 days compressed on TimescaleDB — on TimescaleDB and, for comparison, plain PostgreSQL. Target: under
 * 300 ms. The history query is the server's own (processors/history.ts); movements read `movements_hourly`.
 */
const env = process.env;
const SHAPE: Shape = {
  events: Number(env.BENCH_HISTORY_EVENTS ?? 10_000_000),
  days: Number(env.BENCH_HISTORY_DAYS ?? 120),
  warehouses: Number(env.BENCH_HISTORY_WAREHOUSES ?? 4),
  skus: Number(env.BENCH_HISTORY_SKUS ?? 10_000),
};
const RUNS = Number(env.BENCH_HISTORY_RUNS ?? 20); // timed runs of each query, after WARM_UP untimed ones
const WARM_UP = 2;
const KEEP = env.BENCH_HISTORY_KEEP === '1'; // keep the generated databases for the next run
const TIMEOUT_MS = Number(env.BENCH_HISTORY_TIMEOUT_S ?? 10_800) * 1000;
const TARGET_MS = 300;
const DAY = 86_400_000; // ms
const HOUR = 3_600_000; // ms
const HOT = 'SKU-HOT-1';
const COLD = skuName(SHAPE, SHAPE.skus - 1); // the rarest ordinary sku
const MOVEMENTS_WH = 'WH1';

interface Case {
  kind: 'history' | 'movements';
  label: string;
  query: (anchor: number) => pg.QueryConfig;
  /** the same read through central's HTTP API */
  http?: (anchor: number) => string;
}

// Movements from the continuous aggregate (a plain view on PostgreSQL), for one sku in one warehouse. The
// movements endpoint under way will have its own SQL; until it is merged these stand for it.
const MOVEMENTS_HOURLY = `SELECT bucket, type, qty, delta, events FROM movements_hourly
  WHERE sku = $1 AND wh = $2 AND bucket >= $3 AND bucket < $4 ORDER BY bucket, type`;
const MOVEMENTS_DAILY = `SELECT date_bin('1 day', bucket, 'epoch'::timestamptz) AS bucket, type, sum(qty)::bigint AS qty, sum(delta)::bigint AS delta, sum(events)::bigint AS events
  FROM movements_hourly WHERE sku = $1 AND wh = $2 AND bucket >= $3 AND bucket < $4 GROUP BY 1, 2 ORDER BY 1, 2`;

function cases(): Case[] {
  const list: Case[] = [];
  for (const sku of [HOT, COLD]) {
    for (const [days, bucket, ms] of [
      [1, '1h', HOUR],
      [7, '1h', HOUR],
      [90, '1d', DAY],
      [90, '1h', HOUR],
    ] as const) {
      list.push({
        kind: 'history',
        label: `history ${sku}, ${days} d, bucket ${bucket}`,
        query: (anchor) => historyQuery(sku, anchor - days * DAY, anchor, ms),
        http: (anchor) =>
          `/v1/stock/${sku}/history?from=${new Date(anchor - days * DAY).toISOString()}&to=${new Date(anchor).toISOString()}&bucket=${bucket}`,
      });
    }
  }
  for (const sku of [HOT, COLD]) {
    for (const [days, grain] of [
      [7, 'hour'],
      [7, 'day'],
      [90, 'hour'],
      [90, 'day'],
    ] as const) {
      list.push({
        kind: 'movements',
        label: `movements ${sku} at ${MOVEMENTS_WH}, ${days} d, per ${grain}`,
        query: (anchor) => ({
          text: grain === 'hour' ? MOVEMENTS_HOURLY : MOVEMENTS_DAILY,
          values: [sku, MOVEMENTS_WH, new Date(anchor - days * DAY).toISOString(), new Date(anchor).toISOString()],
        }),
      });
    }
  }
  return list;
}

interface Timing {
  p50: number;
  p95: number;
  max: number;
  rows: number;
  events: number;
}

/** WARM_UP untimed runs, then RUNS timed ones, one after the other. */
async function time(run: () => Promise<{ rows: number; events: number }>): Promise<Timing> {
  let last = { rows: 0, events: 0 };
  for (let i = 0; i < WARM_UP; i++) last = await run();
  const ms: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t = performance.now();
    last = await run();
    ms.push(performance.now() - t);
  }
  ms.sort((a, b) => a - b);
  return { p50: percentile(ms, 50), p95: percentile(ms, 95), max: ms[ms.length - 1] as number, ...last };
}

interface TargetRun {
  db: HistoryDatabase;
  sizes: string[];
  sql: Map<string, Timing>;
  http: Map<string, Timing>;
  plans: { label: string; plan: string[] }[];
}

export async function benchHistory(): Promise<void> {
  const disarm = watchdog(TIMEOUT_MS, 'history');
  const runs = new Map<DbTarget, TargetRun>();
  const planFile = path.join(
    os.tmpdir(),
    `stockwire-history-explain-${new Date().toISOString().replace(/[:.]/g, '-')}.txt`,
  );
  const targets = await benchTargets();
  try {
    for (const target of targets) runs.set(target, await onTarget(target));
  } finally {
    disarm();
  }
  const full = [...runs].flatMap(([t, r]) =>
    r.plans.map((p) => [`== ${t.name}: ${p.label}`, ...p.plan, ''].join('\n')),
  );
  await fs.writeFile(planFile, full.join('\n'));
  record(
    'History and movements over a long event log (issue 14/7)',
    benchCommand('history'),
    report(runs, targets, planFile),
  );
}

async function onTarget(target: DbTarget): Promise<TargetRun> {
  const db = await historyDatabase(target, SHAPE);
  const dropDb = onCleanup(() => (KEEP ? undefined : db.drop()));
  const pool = createPool({ url: db.url, max: 1 });
  const endPool = onCleanup(() => pool.end());
  try {
    const anchor = db.anchor.getTime();
    const size = await eventsSize(pool, target);
    const sizes = [`events with indexes ${mib(size.total)}`];
    if (size.compression)
      sizes.push(
        `${size.compression.chunks} compressed chunks: ${mib(size.compression.before)} → ${mib(size.compression.after)} (${(size.compression.before / size.compression.after).toFixed(1)}×${size.compression.after > size.compression.before ? ': larger than before' : ''})`,
      );
    if (target.key === 'timescaledb') {
      const { rows: settings } = await pool.query<{ segmentby: string | null; orderby: string | null }>(
        `SELECT segmentby, orderby FROM timescaledb_information.hypertable_compression_settings WHERE hypertable = 'events'::regclass`,
      );
      const overridden = COMPRESSION_OVERRIDE.segmentby !== undefined || COMPRESSION_OVERRIDE.orderby !== undefined;
      sizes.push(
        `compression segmentby ${settings[0]?.segmentby ?? '(none)'}, orderby ${settings[0]?.orderby ?? '(none)'}${overridden ? " (**not the product's**: BENCH_HISTORY_COMPRESS_*)" : " (the product's)"}`,
      );
      const { rows } = await pool.query<{ n: number; bytes: number }>(
        `SELECT (SELECT count(*) FROM movements_hourly)::bigint AS n, hypertable_size(format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)::regclass)::bigint AS bytes
         FROM timescaledb_information.continuous_aggregates WHERE view_name = 'movements_hourly'`,
      );
      sizes.push(`movements_hourly ${(rows[0]?.n ?? 0).toLocaleString('en')} rows, ${mib(rows[0]?.bytes ?? NaN)}`);
    }
    const sql = new Map<string, Timing>();
    const plans: { label: string; plan: string[] }[] = [];
    for (const c of cases()) {
      progress(`history on ${target.name}: ${c.label}`);
      const q = c.query(anchor);
      sql.set(
        c.label,
        await time(async () => {
          const { rows } = await pool.query<{ events: number }>(q);
          return { rows: rows.length, events: rows.reduce((t, r) => t + Number(r.events), 0) };
        }),
      );
    }
    // The plan of the slowest query of each kind, and of every query over the target.
    for (const kind of ['history', 'movements'] as const) {
      const ofKind = cases().filter((c) => c.kind === kind);
      const slowest = ofKind.reduce((a, b) => ((sql.get(b.label)?.p95 ?? 0) > (sql.get(a.label)?.p95 ?? 0) ? b : a));
      for (const c of ofKind) {
        if (c !== slowest && (sql.get(c.label)?.p95 ?? 0) <= TARGET_MS) continue;
        plans.push({
          label: `${c.label}${c === slowest ? ` (the slowest ${kind} query)` : ''}`,
          plan: await explainAnalyze(pool, c.query(anchor)),
        });
      }
    }
    const http = await overHttp(target, db, anchor, sql);
    return { db, sizes, sql, http, plans };
  } finally {
    await endPool();
    await dropDb();
  }
}

/** The history cases through `GET /v1/stock/{sku}/history` of a running `stockwire central` on the same database. */
async function overHttp(
  target: DbTarget,
  db: HistoryDatabase,
  anchor: number,
  sql: Map<string, Timing>,
): Promise<Map<string, Timing>> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'stockwire-history-'));
  const removeDir = onCleanup(() => fs.rm(dir, { recursive: true, force: true }));
  let central: Running | null = null;
  const stopCentral = onCleanup(() => stopProcess(central));
  const http = new Map<string, Timing>();
  try {
    await writeFleetDevices(path.join(dir, 'devices.json'), [
      { id: 'display-history', warehouse: 'WH1', kind: 'display', password: 'bench-history-password' },
    ]);
    central = await startStockwire(
      [
        'central',
        '--mqtt-port',
        '0',
        '--ws-port',
        '0',
        '--http-port',
        '0',
        '--host',
        '127.0.0.1',
        '--devices-file',
        path.join(dir, 'devices.json'),
        '--data-dir',
        dir,
        '--log-level',
        'warn',
      ],
      { DATABASE_URL: db.url },
      300_000,
    );
    const base = `http://127.0.0.1:${central.ports.http}`;
    for (const c of cases()) {
      if (!c.http) continue;
      progress(`history on ${target.name}: ${c.label}, over HTTP`);
      const url = `${base}${c.http(anchor)}`;
      const t = await time(async () => {
        const res = await fetch(url);
        const body = (await res.json()) as { movements?: { events: number }[] };
        if (!res.ok) throw new Error(`${c.label}: HTTP ${res.status} ${JSON.stringify(body)}`);
        return { rows: body.movements?.length ?? 0, events: (body.movements ?? []).reduce((a, m) => a + m.events, 0) };
      });
      // The API must answer what the query answers: else the two tables would not measure the same thing.
      if (t.events !== sql.get(c.label)?.events)
        throw new Error(`${c.label}: HTTP answered ${t.events} events, the query ${sql.get(c.label)?.events}`);
      http.set(c.label, t);
    }
  } finally {
    await stopCentral();
    await removeDir();
  }
  return http;
}

const ms = (n: number | undefined) => (n === undefined ? '–' : n < 10 ? n.toFixed(1) : n.toFixed(0));
const cells = (t: Timing | undefined) => (t ? `${ms(t.p50)} / ${ms(t.p95)} / ${ms(t.max)}` : '–');
const verdict = (t: Timing | undefined) => (t ? (t.p95 < TARGET_MS ? 'met' : '**missed**') : '–');

function report(runs: Map<DbTarget, TargetRun>, targets: DbTarget[], planFile: string): string[] {
  const all = [...runs];
  const first = all[0]?.[1];
  const shape = `${SHAPE.events.toLocaleString('en')} events, evenly over ${SHAPE.days} days up to an hour boundary, ${SHAPE.warehouses} warehouses (uniform), ${SHAPE.skus.toLocaleString('en')} skus plus ${HOT_SKUS} hot ones taking ${HOT_SHARE * 100}% of the events; the others skewed (rank ⌊skus · u²⌋). Types ${MIX.map(([t, w]) => `${t} ${w}`).join(', ')} (the simulator's mix). Hot sku ${HOT} has ${(first?.sql.get(`history ${HOT}, 90 d, bucket 1d`)?.events ?? NaN).toLocaleString('en')} events in 90 days, cold ${COLD} ${(first?.sql.get(`history ${COLD}, 90 d, bucket 1d`)?.events ?? NaN).toLocaleString('en')}.`;
  const steps = [...new Set(all.flatMap(([, r]) => Object.keys(r.db.build)))].sort(
    (a, b) => Number(a === 'total') - Number(b === 'total'),
  );
  const head = `| | ${all.map(([t]) => t.name).join(' | ')} |`;
  const rule = `| --- | ${all.map(() => '---').join(' | ')} |`;
  const lines = [
    `Target: each query under ${TARGET_MS} ms (p95 here) on TimescaleDB, compressed chunks included. Warm: ${WARM_UP} untimed runs, then ${RUNS} timed one after the other on one connection; ms p50 / p95 / max.`,
    '',
    ...describeTargets(targets),
    `- data: ${shape}`,
    `- database: ${all.map(([t, r]) => `${t.name} ${r.db.reused ? `**reused** from an earlier run (built ${r.db.builtAt.toISOString()})` : 'built by this run'}${KEEP ? ', kept for the next run (BENCH_HISTORY_KEEP=1)' : ', dropped at the end'}`).join('; ')}`,
    `- sizes: ${all.map(([t, r]) => `${t.name}: ${r.sizes.join('; ')}`).join('. ')}`,
    '',
    `Build, seconds (TimescaleDB: policy jobs paused; the aggregate refreshed, then the chunks older than 7 days compressed, by the benchmark):`,
    '',
    head,
    rule,
    ...steps.map(
      (s) =>
        `| ${s} | ${all.map(([, r]) => (r.db.build[s] === undefined ? '–' : r.db.build[s].toFixed(1))).join(' | ')} |`,
    ),
    '',
    `| query | rows | events | ${all.map(([t]) => `${t.name} ms`).join(' | ')} | TimescaleDB / PostgreSQL p50 | < ${TARGET_MS} ms on TimescaleDB |`,
    `| --- | --- | --- | ${all.map(() => '---').join(' | ')} | --- | --- |`,
  ];
  const pg = all.find(([t]) => t.key === 'postgres')?.[1];
  const ts = all.find(([t]) => t.key === 'timescaledb')?.[1];
  const row = (label: string, pick: (r: TargetRun) => Timing | undefined, suffix = '') => {
    const any = all.map(([, r]) => pick(r)).find(Boolean);
    return `| ${label}${suffix} | ${any?.rows ?? '–'} | ${any?.events.toLocaleString('en') ?? '–'} | ${all.map(([, r]) => cells(pick(r))).join(' | ')} | ${pg && ts ? ratio(pick(pg)?.p50 ?? NaN, pick(ts)?.p50 ?? NaN) : '–'} | ${ts ? verdict(pick(ts)) : '–'} |`;
  };
  for (const c of cases())
    lines.push(row(c.label, (r) => r.sql.get(c.label), c.kind === 'history' ? " (the server's SQL)" : ''));
  for (const c of cases()) if (c.http) lines.push(row(c.label, (r) => r.http.get(c.label), ', over HTTP'));
  lines.push(
    '',
    `EXPLAIN (ANALYZE, BUFFERS) of the slowest query of each kind, runs of chunk scans alike folded (all plans taken: ${planFile}):`,
    '',
  );
  for (const [t, r] of all) {
    for (const p of r.plans.filter((x) => x.label.includes('slowest')))
      lines.push(`${t.name}, ${p.label}:`, '', '```', ...condensePlan(p.plan), '```', '');
  }
  return lines;
}
