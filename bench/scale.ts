import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { migrate } from '../processors/db/migrate.js';
import { createPool } from '../processors/db/pool.js';
import { rebuild } from '../processors/rebuild.js';
import { BIN, startStockwire, type Running } from '../test/helpers/process.js';
import { Fleet } from './fleet.js';
import { LeanClient } from './lean-client.js';
import {
  benchCommand,
  drained,
  linksUp,
  metric,
  onCleanup,
  progress,
  record,
  rssMiB,
  sleep,
  stopProcess,
  watchdog,
  writeFleetDevices,
} from './lib.js';
import { hotFunctions, profiles } from './profile.js';
import {
  benchTargets,
  compressEventsBefore,
  createTargetDatabase,
  describeTargets,
  eventsSize,
  expectSchema,
  mib,
  pauseTimescaleJobs,
  ratio,
  type DbTarget,
} from './targets.js';

/**
 * Issue 6/7, scale: 100,000 skus with retained stock topics and 1,000,000 events in the log (loaded
 * with SQL), then `stockwire rebuild`, central's start-up republish, a new display receiving every
 * `stock/{sku}`, history queries — on plain PostgreSQL and on TimescaleDB in the same run (issue 14/7); and
 * 10,000 devices connected to one edge.
 */
const env = process.env;
const SKUS = Number(env.BENCH_SCALE_SKUS ?? 100_000);
const WAREHOUSES = Number(env.BENCH_SCALE_WAREHOUSES ?? 2);
const EVENTS = Number(env.BENCH_SCALE_EVENTS ?? 1_000_000);
const DEVICES = Number(env.BENCH_SCALE_DEVICES ?? 10_000);
const DEVICE_EVENTS = Number(env.BENCH_SCALE_DEVICE_EVENTS ?? 5); // events per device after all are connected
const CONNECT_CONCURRENCY = Number(env.BENCH_SCALE_CONNECT_CONCURRENCY ?? 16); // CONNECTs awaiting CONNACK at once
const PROFILE_DIR = env.BENCH_PROFILE; // set: central runs under node --cpu-prof (its start-up republish)
const TIMEOUT_MS = Number(env.BENCH_SCALE_TIMEOUT_S ?? 2_400) * 1000;
const PASSWORD = 'bench-scale-password';
const DAYS = 30; // the events' timestamps spread over this many days before now

const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en') : '–');
const verdict = (ok: boolean) => (ok ? 'met' : '**missed**');

/** One figure per measure, for the side-by-side table of the targets (smaller is better unless `higher`). */
type Figures = Map<string, { value: number; unit: string }>;

export async function benchScale(): Promise<void> {
  const disarm = watchdog(TIMEOUT_MS, 'scale');
  const rows: string[] = [];
  const header: string[] = [];
  const figures = new Map<DbTarget, Figures>();
  try {
    if (SKUS > 0) {
      const targets = await benchTargets();
      header.push(...describeTargets(targets), '');
      for (const target of targets) {
        const f: Figures = new Map();
        figures.set(target, f);
        rows.push(...(await ledgerAtScale(target, f)));
      }
    }
    if (DEVICES > 0) rows.push(...(await devicesAtScale()));
  } finally {
    disarm();
  }
  record('Scale (issue 6/7)', benchCommand('scale'), [
    `All processes on this machine's ${os.cpus().length} cores.`,
    '',
    ...header,
    ...compareTargets(figures),
    '| measure | result | target | run |',
    '| --- | --- | --- | --- |',
    ...rows,
  ]);
}

/** The ledger figures of plain PostgreSQL and TimescaleDB side by side. */
function compareTargets(figures: Map<DbTarget, Figures>): string[] {
  const pg = [...figures].find(([t]) => t.key === 'postgres')?.[1];
  const ts = [...figures].find(([t]) => t.key === 'timescaledb')?.[1];
  if (!pg || !ts) return [];
  const cell = (v: { value: number; unit: string } | undefined) =>
    v ? `${v.value.toFixed(v.unit === 's' ? 1 : 0)} ${v.unit}` : '–';
  return [
    'The ledger at scale on each database (TimescaleDB: chunks older than 7 days compressed, as its policy would have them).',
    '',
    '| measure | PostgreSQL | TimescaleDB | TimescaleDB / PostgreSQL |',
    '| --- | --- | --- | --- |',
    ...[...pg.keys()].map(
      (k) =>
        `| ${k} | ${cell(pg.get(k))} | ${cell(ts.get(k))} | ${ratio(pg.get(k)?.value ?? NaN, ts.get(k)?.value ?? NaN)} |`,
    ),
    '',
  ];
}

/** The ledger part on one database target: bulk-load, rebuild, republish at start, a display's full receipt, history. */
async function ledgerAtScale(target: DbTarget, figures: Figures): Promise<string[]> {
  const rows: string[] = [];
  const on = `on ${target.name}`;
  const db = await createTargetDatabase(target, 'bench_scale');
  const dropDb = onCleanup(() => db.drop());
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'stockwire-scale-'));
  const removeDir = onCleanup(() => fs.rm(dir, { recursive: true, force: true }));
  let central: Running | null = null;
  const stopCentral = onCleanup(() => stopProcess(central));
  try {
    const pool = createPool({ url: db.url, max: 2 });
    const endPool = onCleanup(() => pool.end());
    expectSchema(target, await migrate(pool));
    // Nothing compresses or refreshes behind the measurements; the compression below stands for the policy's.
    if (target.key === 'timescaledb') await pauseTimescaleJobs(pool);
    progress(`scale ${on}: loading ${int(EVENTS)} events over ${int(SKUS)} skus × ${WAREHOUSES} warehouses with SQL`);
    const t0 = performance.now();
    await load(pool);
    const loadSeconds = (performance.now() - t0) / 1000;
    figures.set('load with SQL', { value: loadSeconds, unit: 's' });
    const { rows: counts } = await pool.query<{ events: string; stock: string; skus: string }>(
      'SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM stock) AS stock, (SELECT count(*) FROM sku_versions) AS skus',
    );
    const n = counts[0] as { events: string; stock: string; skus: string };
    const skuCount = Number(n.skus);
    rows.push(
      `| ${target.name}: data set, loaded with SQL (event log, inbox, stock, versions) | ${int(Number(n.events))} events, ${int(Number(n.stock))} stock rows, ${int(skuCount)} skus | – | ${loadSeconds.toFixed(1)} s |`,
    );
    if (target.key === 'timescaledb') {
      progress(`scale ${on}: compressing the chunks older than 7 days`);
      const c = await compressEventsBefore(pool, new Date(Date.now() - 7 * 86_400_000));
      await pool.query('ANALYZE events');
      const size = await eventsSize(pool, target);
      const cmp = size.compression;
      const { rows: all } = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM show_chunks('events')`);
      rows.push(
        `| ${target.name}: compression of the ${c.chunks} chunks (of ${all[0]?.n}) older than 7 days | ${c.seconds.toFixed(1)} s | – | ${cmp ? `${mib(cmp.before)} → ${mib(cmp.after)} (${(cmp.before / cmp.after).toFixed(1)}×); events now ${mib(size.total)}` : 'nothing compressed'} |`,
      );
    } else {
      rows.push(
        `| ${target.name}: size of events with its indexes | ${mib((await eventsSize(pool, target)).total)} | – | – |`,
      );
    }

    progress(`scale ${on}: stockwire rebuild`);
    const t1 = performance.now();
    const exit = await run(BIN, ['rebuild', '--log-level', 'warn'], { DATABASE_URL: db.url });
    const rebuildSeconds = (performance.now() - t1) / 1000;
    const t2 = performance.now();
    const report = await rebuild(pool);
    const querySeconds = (performance.now() - t2) / 1000;
    figures.set('`stockwire rebuild`, wall time', { value: rebuildSeconds, unit: 's' });
    figures.set('rebuild query alone', { value: querySeconds, unit: 's' });
    rows.push(
      `| ${target.name}: \`stockwire rebuild\` over ${int(Number(n.events))} events (exit ${exit.code}: ${exit.stdout.trim() || exit.stderr.trim().split('\n').pop()}) | ${rebuildSeconds.toFixed(1)} s (its query alone ${querySeconds.toFixed(1)} s, ${report.drift.length} drifted) | – | wall time of the command, process start included |`,
    );
    await endPool();

    progress(`scale ${on}: central start-up with every stock topic republished`);
    await writeFleetDevices(path.join(dir, 'devices.json'), [
      { id: 'display-scale', warehouse: 'S1', kind: 'display', password: PASSWORD },
    ]);
    const t3 = performance.now();
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
        'info',
      ],
      { DATABASE_URL: db.url },
      300_000,
      PROFILE_DIR ? ['--cpu-prof', '--cpu-prof-dir', PROFILE_DIR] : [],
    );
    const readySeconds = (performance.now() - t3) / 1000;
    const republished = central.logs.map(parseLog).find((l) => l?.msg === 'stock topics republished from the database');
    const republishSeconds = (republished?.ms ?? NaN) / 1000;
    const rssReady = await rssMiB(central.child.pid as number);
    figures.set('central start-up republish', { value: republishSeconds, unit: 's' });
    rows.push(
      `| ${target.name}: central start-up: republish of ${int(republished?.skus ?? NaN)} \`stock/{sku}\` and ${int(republished?.rows ?? NaN)} \`wh/{wh}/stock/{sku}\` from the database | ${republishSeconds.toFixed(1)} s | < 10 s: ${verdict(republishSeconds < 10)} | ready line after ${readySeconds.toFixed(1)} s (process start included) |`,
    );

    progress(`scale ${on}: a new display subscribes to stock/#`);
    const display = new LeanClient({
      host: '127.0.0.1',
      port: central.ports.mqtt as number,
      clientId: 'display-scale',
      username: 'display-scale',
      password: PASSWORD,
      keepalive: 0,
    });
    const closeDisplay = onCleanup(() => display.end());
    await display.connect();
    let received = 0;
    let done: () => void = () => {};
    const all = new Promise<void>((resolve) => (done = resolve));
    display.onMessage = (topic) => {
      if (topic.startsWith('stock/') && ++received === skuCount) done();
    };
    const t4 = performance.now();
    await display.subscribe('stock/#', 1);
    const timedOut = await Promise.race([all.then(() => false), sleep(120_000).then(() => true)]);
    const displaySeconds = (performance.now() - t4) / 1000;
    rows.push(
      `| ${target.name}: a new display subscribing \`stock/#\` at central receives every retained topic | ${timedOut ? `only ${int(received)} of ${int(skuCount)} in` : ''} ${displaySeconds.toFixed(1)} s | – | ${int(received)} messages, QoS 1 |`,
    );
    await closeDisplay();
    const rssAfter = await rssMiB(central.child.pid as number);
    rows.push(
      `| ${target.name}: central RSS with ${int(skuCount)} skus retained | ${rssReady.toFixed(0)} MiB after the republish, ${rssAfter.toFixed(0)} MiB after the display | – | /proc/PID/status VmRSS |`,
    );

    progress(`scale ${on}: history queries`);
    const http = central.ports.http as number;
    const to = new Date();
    const from = new Date(to.getTime() - DAYS * 86_400_000);
    for (const [sku, bucket] of [
      ['SKU-HOT', '1h'],
      ['SKU-HOT', '1d'],
      ['SKU-000042', '1h'],
    ] as const) {
      const times: number[] = [];
      let events = 0;
      for (let i = 0; i < 5; i++) {
        const t = performance.now();
        const res = await fetch(
          `http://127.0.0.1:${http}/v1/stock/${sku}/history?from=${from.toISOString()}&to=${to.toISOString()}&bucket=${bucket}`,
        );
        const body = (await res.json()) as { movements?: { events: number }[] };
        times.push(performance.now() - t);
        if (!res.ok) throw new Error(`history of ${sku}: HTTP ${res.status} ${JSON.stringify(body)}`);
        events = (body.movements ?? []).reduce((a, m) => a + Number(m.events), 0);
      }
      const first = times[0] as number;
      times.sort((a, b) => a - b);
      figures.set(`history of ${sku} over ${DAYS} days, bucket ${bucket}, HTTP median`, {
        value: times[2] as number,
        unit: 'ms',
      });
      rows.push(
        `| ${target.name}: history of ${sku} over ${DAYS} days, bucket ${bucket}, over HTTP (${int(events)} events) | first ${first.toFixed(0)} ms, median of 5 ${(times[2] as number).toFixed(0)} ms | – | 5 requests in a row |`,
      );
    }
    await stopCentral();
    if (PROFILE_DIR)
      for (const file of profiles(PROFILE_DIR).slice(-1))
        progress(`profile of central (start-up republish): ${file}\n${hotFunctions(file, 30).join('\n')}`);
  } finally {
    await stopCentral();
    await dropDb();
    await removeDir();
  }
  return rows;
}

/** A ledger of EVENTS `received` events, with the inbox, stock and versions that applying them would leave. */
async function load(pool: ReturnType<typeof createPool>): Promise<void> {
  // One event in ten goes to SKU-HOT, so one history query covers many events.
  await pool.query(
    `INSERT INTO events (ts, wh, device, id, type, sku, qty, delta, payload, received_at, committed_at)
     SELECT ts, wh, device, id, 'received', sku, qty, qty, jsonb_build_object('v', 1, 'id', id, 'type', 'received', 'sku', sku, 'qty', qty), ts, ts
     FROM (SELECT now() - make_interval(secs => (i % ($4 * 86400))) AS ts,
                  'S' || (1 + i % $2) AS wh,
                  'dev-' || (i % 1000) AS device,
                  'e-' || i AS id,
                  CASE WHEN i % 10 = 0 THEN 'SKU-HOT' ELSE 'SKU-' || lpad(((i / $2) % $3)::text, 6, '0') END AS sku,
                  1 + i % 3 AS qty
           FROM generate_series(0, $1 - 1) i) e`,
    [EVENTS, WAREHOUSES, SKUS, DAYS],
  );
  await pool.query(
    `INSERT INTO inbox (wh, device, id, sku, decided_at) SELECT wh, device, id, sku, committed_at FROM events`,
  );
  await pool.query(
    `INSERT INTO stock (wh, sku, on_hand, reserved, version, updated_at)
     SELECT w.wh, s.sku, COALESCE(e.on_hand, 0), 0, 1 + COALESCE(e.n, 0), now()
     FROM (SELECT 'SKU-' || lpad(k::text, 6, '0') AS sku FROM generate_series(0, $1 - 1) k UNION ALL SELECT 'SKU-HOT') s
     CROSS JOIN (SELECT 'S' || w AS wh FROM generate_series(1, $2) w) w
     LEFT JOIN (SELECT wh, sku, sum(delta) AS on_hand, count(*) AS n FROM events GROUP BY wh, sku) e ON e.wh = w.wh AND e.sku = s.sku`,
    [SKUS, WAREHOUSES],
  );
  await pool.query(
    `INSERT INTO sku_versions (sku, version, updated_at) SELECT sku, sum(version), now() FROM stock GROUP BY sku`,
  );
  await pool.query('ANALYZE');
}

function parseLog(line: string): { msg?: string; ms?: number; skus?: number; rows?: number } | null {
  try {
    return JSON.parse(line) as { msg?: string; ms?: number; skus?: number; rows?: number };
  } catch {
    return null;
  }
}

function run(
  command: string,
  args: string[],
  extraEnv: Record<string, string>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * 10,000 devices on one edge, linked to a real central (plain PostgreSQL) over the batched link: connect time, then
 * the accept rate (PUBACK after the fsync) while the edge forwards in batches, then every device waiting for
 * central's commit ack, which the edge fans out from each batch-ack to 10,000 ack topics. RSS is sampled throughout.
 */
async function devicesAtScale(): Promise<string[]> {
  const rows: string[] = [];
  const limit = Number((await run('sh', ['-c', 'ulimit -n'], {})).stdout.trim());
  if (Number.isFinite(limit) && limit < DEVICES + 1_000) {
    throw new Error(
      `scale: ${DEVICES} connections need more file descriptors than ulimit -n allows (${limit}); raise it (ulimit -n ${DEVICES + 1_000}) or set BENCH_SCALE_DEVICES`,
    );
  }
  const wh = 'SCALE';
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'stockwire-scale-edge-'));
  const removeDir = onCleanup(() => fs.rm(dir, { recursive: true, force: true }));
  const target = (await benchTargets())[0] as DbTarget;
  const db = await createTargetDatabase(target, 'bench_scale_devices');
  const dropDb = onCleanup(() => db.drop());
  let edge: Running | null = null;
  let central: Running | null = null;
  const stopAll = onCleanup(async () => {
    await stopProcess(edge);
    await stopProcess(central);
  });
  let fleet: Fleet | null = null;
  const closeFleet = onCleanup(() => fleet?.close());
  let sampler: NodeJS.Timeout | undefined;
  const devices = Array.from({ length: DEVICES }, (_, i) => ({
    id: `sc-${i}`,
    warehouse: wh,
    kind: 'scanner' as const,
    password: PASSWORD,
  }));
  const listen = ['--mqtt-port', '0', '--ws-port', '0', '--http-port', '0', '--host', '127.0.0.1'];
  try {
    const file = path.join(dir, 'devices.json');
    await writeFleetDevices(file, [
      ...devices,
      { id: `gw-${wh}`, warehouse: wh, kind: 'gateway' as const, password: PASSWORD },
    ]);
    central = await startStockwire(
      ['central', ...listen, '--devices-file', file, '--data-dir', path.join(dir, 'central'), '--log-level', 'warn'],
      { DATABASE_URL: db.url },
    );
    edge = await startStockwire([
      'edge',
      ...['--warehouse', wh, '--devices-file', file, '--data-dir', path.join(dir, 'edge'), ...listen],
      ...['--central-url', `mqtt://127.0.0.1:${central.ports.mqtt}`, '--central-username', `gw-${wh}`],
      ...['--central-password', PASSWORD, '--log-level', 'warn'],
      ...['--address-connect-limit', '1000000'], // every device connects from 127.0.0.1
    ]);
    const edgeHttp = edge.ports.http as number;
    await linksUp([edge]);
    const pid = edge.child.pid as number;
    const rssIdle = await rssMiB(pid);
    let rssPeak = rssIdle;
    sampler = setInterval(
      () =>
        void rssMiB(pid).then(
          (m) => (rssPeak = Math.max(rssPeak, m)),
          () => undefined,
        ),
      250,
    );
    const port = edge.ports.mqtt as number;
    fleet = new Fleet(devices.map((d) => ({ wh, id: d.id, host: '127.0.0.1', port, password: PASSWORD })));
    progress(
      `scale: connecting ${int(DEVICES)} devices to one edge, ${CONNECT_CONCURRENCY} at a time (a scrypt check of ~50 ms CPU each)`,
    );
    let shown = 0;
    const connectSeconds = await fleet.connect({
      concurrency: CONNECT_CONCURRENCY,
      subscribeAcks: true,
      onProgress: (n) => {
        if (n - shown >= 1_000) {
          shown = n;
          progress(`scale: ${int(n)} connected`);
        }
      },
    });
    const rssConnected = await rssMiB(pid);
    rows.push(
      `| ${int(DEVICES)} devices connecting to one edge (scrypt password check each, ${CONNECT_CONCURRENCY} at a time; \`--address-connect-limit\` raised, all come from 127.0.0.1) | ${connectSeconds.toFixed(1)} s, ${int(DEVICES / connectSeconds)} connections/s | – | each device also subscribes to its ack topic |`,
    );
    const events = DEVICES * DEVICE_EVENTS;
    progress(`scale: ${int(events)} events, ${DEVICE_EVENTS} from each device, each done at the edge's PUBACK`);
    const accepted = await fleet.run({
      events,
      window: DEVICE_EVENTS,
      rate: 0,
      until: 'puback',
      skus: 1000,
      prefix: 'scale',
      stallMs: 60_000,
    });
    rows.push(
      `| accept rate with ${int(DEVICES)} devices connected (PUBACK after the outbox fsync), the edge forwarding to central meanwhile | ${int(accepted.perSecond)} events/s | – | ${int(accepted.events)} in ${accepted.seconds.toFixed(1)} s; PUBACK p50 / p99 / max ${accepted.puback.p50.toFixed(0)} / ${accepted.puback.p99.toFixed(0)} / ${accepted.puback.max.toFixed(0)} ms |`,
    );
    const drain = await drained([edge]);
    progress(`scale: ${int(events)} more, each done at central's commit ack`);
    const acked = await fleet.run({
      events,
      window: DEVICE_EVENTS,
      rate: 0,
      until: 'ack',
      skus: 1000,
      prefix: 'scale-ack',
      stallMs: 60_000,
    });
    const applied = acked.statuses.applied ?? 0;
    rows.push(
      `| ${int(DEVICES)} devices each waiting for central's commit ack (batch-ack fanned out by the edge) | ${int(acked.perSecond)} events/s | – | ${int(acked.events)} in ${acked.seconds.toFixed(1)} s, ${int(applied)} acks \`applied\`; ack p50 / p99 / max ${acked.ack.p50.toFixed(0)} / ${acked.ack.p99.toFixed(0)} / ${acked.ack.max.toFixed(0)} ms; the first ${int(drain.events)} drained at ${int(drain.perSecond)} events/s before it |`,
    );
    if (applied !== events) throw new Error(`scale: ${applied} of ${events} acks were \`applied\``);
    const [batching, batches, inBatches] = (await Promise.all(
      ['stockwire_edge_link_batching', 'stockwire_edge_batch_events_count', 'stockwire_edge_batch_events_sum'].map(
        (name) => metric(edgeHttp, name),
      ),
    )) as [number, number, number];
    rows.push(
      `| the link during these runs | ${batching === 1 ? 'batched' : '**not batched**'} | – | ${int(inBatches)} events in ${int(batches)} batches (the edge's metrics); central on ${target.label} |`,
    );
    clearInterval(sampler);
    const rssAfter = await rssMiB(pid);
    rssPeak = Math.max(rssPeak, rssConnected, rssAfter); // readings of their own may fall between two samples
    rows.push(
      `| edge RSS with ${int(DEVICES)} devices connected (idle before: ${rssIdle.toFixed(0)} MiB) | ${rssConnected.toFixed(0)} MiB connected, ${rssPeak.toFixed(0)} MiB at the peak (sampled every 250 ms), ${rssAfter.toFixed(0)} MiB after | < 1 GB (953 MiB): ${verdict(rssPeak < 953.7)} | /proc/PID/status VmRSS |`,
    );
  } finally {
    clearInterval(sampler);
    await closeFleet();
    await stopAll();
    await dropDb();
    await removeDir();
  }
  return rows;
}
