import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import { createPool } from '../processors/db/pool.js';
import { migrate } from '../processors/db/migrate.js';
import { createTestDatabase } from '../test/helpers/db.js';
import { writeDevices } from '../test/helpers/devices.js';
import { startStockwire, type Running } from '../test/helpers/process.js';
import { driveBatches, type BatchLoadResult } from './batch-load.js';
import { drive, type LoadResult } from './load.js';
import { ceiling } from './ceiling.js';
import { benchCommand, cpuPerEvent, progress, record, startScript, stopProcess } from './lib.js';
import { benchTargets, createTargetDatabase, describeTargets, expectSchema, ratio, type DbTarget } from './targets.js';

/**
 * Processor throughput through the central broker into PostgreSQL (issue 1/7), beside the
 * bare-database ceiling: the same rows in one multi-row INSERT … SELECT unnest per batch.
 * Central runs on plain PostgreSQL and on TimescaleDB in the same run (issue 14/7; bench/targets.ts), fed by single
 * events and over the batched edge link (issue 17; bench/batch-load.ts).
 */
const EVENTS = Number(process.env.BENCH_EVENTS ?? 200_000);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 4);
const MOSQUITTO = process.env.MOSQUITTO_URL ?? 'mqtt://127.0.0.1:1883';
const BATCH_EVENTS = Number(process.env.BENCH_BATCH_EVENTS ?? 500); // events per batch, as an edge's default
const BATCH_WINDOW = 4; // batches in flight per gateway link: 2,000 events, the single-event runs' window
const BATCHED_TARGET = 30_000; // events/s, issue 17: central fed by 4 gateway links over the batched link

const fmt = (r: LoadResult) =>
  `${Math.round(r.perSecond).toLocaleString('en')} | ${r.latencyMs.p50.toFixed(1)} | ${r.latencyMs.p99.toFixed(1)} | ${r.latencyMs.max.toFixed(1)} | ${r.events.toLocaleString('en')} in ${r.seconds.toFixed(1)} s`;

/** Table cells: µs of CPU per event for each process, their sum, and the rate 2 cores allow at that cost. */
function cpuCells(us: Record<string, number>, order: string[]): string {
  const total = order.reduce((t, k) => t + (us[k] ?? 0), 0);
  const cores = os.cpus().length;
  return `${order.map((k) => (us[k] ?? 0).toFixed(0)).join(' | ')} | ${total.toFixed(0)} | ${Math.round((cores * 1e6) / total).toLocaleString('en')}`;
}

interface CentralRun {
  sat: LoadResult;
  fixed: LoadResult;
  batchSat: BatchLoadResult;
  batchFixed: BatchLoadResult;
  ceiling: { perSecond: number; seconds: number };
  cpu: Record<string, number>;
  batchCpu: Record<string, number>;
}

/**
 * Fails the bench unless every event of a run was applied once: each ack `applied`, and one ledger row per event. A
 * benchmark that counts events central did not apply measures less than it claims.
 */
async function expectApplied(url: string, whs: string[], idPrefix: string, r: LoadResult): Promise<void> {
  const pool = createPool({ url, max: 1 });
  try {
    const { rows } = await pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM events WHERE wh = ANY($1) AND starts_with(id, $2)',
      [whs, `${idPrefix}-`],
    );
    const n = rows[0]?.n ?? 0;
    if (r.statuses.applied !== r.events || n !== r.events)
      throw new Error(
        `${idPrefix}: ${r.events} events sent, acks ${JSON.stringify(r.statuses)}, ${n} rows in events: not all applied once`,
      );
  } finally {
    await pool.end();
  }
}

/** stockwire central (Aedes + in-process processor, PUBACK held until commit) on one database target. */
async function centralOn(target: DbTarget, whs: string[]): Promise<CentralRun> {
  const db = await createTargetDatabase(target, 'bench_central');
  const devices = await writeDevices(
    whs.map((wh) => ({ id: `gw-${wh}`, warehouse: wh, kind: 'gateway' as const, password: `pw-${wh}-bench` })),
  );
  let central: Running | null = null;
  try {
    // Migrate here, not in central, to check the path taken; the TimescaleDB policies stay on, as in production.
    const pool = createPool({ url: db.url, max: 1 });
    expectSchema(target, await migrate(pool));
    await pool.end();
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
        devices.file,
        '--data-dir',
        devices.dir,
        '--batch-max',
        '2000',
        '--log-level',
        'warn',
      ],
      { DATABASE_URL: db.url },
    );
    const url = `mqtt://127.0.0.1:${central.ports.mqtt}`;
    const credentials = (wh: string) => ({ username: `gw-${wh}`, password: `pw-${wh}-bench`, clientId: `gw-${wh}` });
    progress(`central on ${target.name}: warm-up`);
    await drive({
      url,
      warehouses: whs,
      credentials,
      eventsPerClient: 2_000,
      window: 1000,
      rate: 0,
      devices: 50,
      skus: 1000,
      idPrefix: 'warm',
    });
    progress(`central on ${target.name}: saturation`);
    const perClient = Math.floor(EVENTS / CLIENTS);
    const { result: sat, us: cpu } = await cpuPerEvent(
      perClient * CLIENTS,
      { central: central.child.pid as number },
      () =>
        drive({
          url,
          warehouses: whs,
          credentials,
          eventsPerClient: perClient,
          window: 2000,
          rate: 0,
          devices: 50,
          skus: 1000,
          idPrefix: 'sat',
        }),
    );
    progress(`central on ${target.name}: fixed rate`);
    await expectApplied(db.url, whs, 'sat', sat);
    const fixed = await drive({
      url,
      warehouses: whs,
      credentials,
      eventsPerClient: 5_000,
      window: 2000,
      rate: 2_000,
      devices: 50,
      skus: 1000,
      idPrefix: 'fixed',
    });
    // The batched link (issue 17), warmed up on its own path first.
    const batched = { url, warehouses: whs, credentials, batchEvents: BATCH_EVENTS, devices: 50, skus: 1000 };
    progress(`central on ${target.name}: batched warm-up`);
    await driveBatches({ ...batched, eventsPerClient: 2_000, window: BATCH_WINDOW, rate: 0, idPrefix: 'bwarm' });
    progress(`central on ${target.name}: batched saturation`);
    const { result: batchSat, us: batchCpu } = await cpuPerEvent(
      perClient * CLIENTS,
      { central: central.child.pid as number },
      () => driveBatches({ ...batched, eventsPerClient: perClient, window: BATCH_WINDOW, rate: 0, idPrefix: 'bsat' }),
    );
    await expectApplied(db.url, whs, 'bsat', batchSat);
    progress(`central on ${target.name}: batched fixed rate`);
    const batchFixed = await driveBatches({
      ...batched,
      eventsPerClient: 5_000,
      window: BATCH_WINDOW,
      rate: 2_000,
      idPrefix: 'bfixed',
    });
    await stopProcess(central);
    progress(`database ceiling on ${target.name}`);
    return {
      sat,
      fixed,
      batchSat,
      batchFixed,
      ceiling: await ceiling(db.url, EVENTS, CLIENTS),
      cpu,
      batchCpu,
    };
  } finally {
    await stopProcess(central);
    await db.drop();
    await fs.rm(devices.dir, { recursive: true, force: true });
  }
}

const TIMESCALE_SHARE = 0.8; // issue 14/7: TimescaleDB ingests at ≥ 80% of plain PostgreSQL's rate

const metOrMissed = (r: LoadResult): string => (r.perSecond >= BATCHED_TARGET ? 'met' : '**missed**');
/** How a batched run's batches looked: the bound used and the mean an event travelled with. */
const batchCells = (r: BatchLoadResult): string =>
  `≤ ${r.batchLimit.used} events per batch, ${Math.round(r.events / r.batches).toLocaleString('en')} on average`;

/** The figures of each target side by side, TimescaleDB as a share of plain PostgreSQL. */
function compareTargets(runs: Map<DbTarget, CentralRun>): string[] {
  const pg = [...runs].find(([t]) => t.key === 'postgres')?.[1];
  const ts = [...runs].find(([t]) => t.key === 'timescaledb')?.[1];
  if (!pg || !ts) return [];
  const int = (n: number) => Math.round(n).toLocaleString('en');
  const share = ts.sat.perSecond / pg.sat.perSecond;
  return [
    '| measure | PostgreSQL | TimescaleDB | TimescaleDB / PostgreSQL | target |',
    '| --- | --- | --- | --- | --- |',
    `| central saturation, events/s | ${int(pg.sat.perSecond)} | ${int(ts.sat.perSecond)} | ${ratio(pg.sat.perSecond, ts.sat.perSecond)} | ≥ ${TIMESCALE_SHARE * 100}%: ${share >= TIMESCALE_SHARE ? 'met' : '**missed**'} |`,
    `| central saturation, p99 ms | ${pg.sat.latencyMs.p99.toFixed(1)} | ${ts.sat.latencyMs.p99.toFixed(1)} | ${ratio(pg.sat.latencyMs.p99, ts.sat.latencyMs.p99)} | – |`,
    `| central at 2,000 events/s, p99 ms | ${pg.fixed.latencyMs.p99.toFixed(1)} | ${ts.fixed.latencyMs.p99.toFixed(1)} | ${ratio(pg.fixed.latencyMs.p99, ts.fixed.latencyMs.p99)} | – |`,
    `| central saturation batched (≤ ${pg.batchSat.batchLimit.used} events per batch), events/s | ${int(pg.batchSat.perSecond)} | ${int(ts.batchSat.perSecond)} | ${ratio(pg.batchSat.perSecond, ts.batchSat.perSecond)} | ≥ ${int(BATCHED_TARGET)} (issue 17): PostgreSQL ${metOrMissed(pg.batchSat)}, TimescaleDB ${metOrMissed(ts.batchSat)} |`,
    `| central saturation batched, p99 ms | ${pg.batchSat.latencyMs.p99.toFixed(1)} | ${ts.batchSat.latencyMs.p99.toFixed(1)} | ${ratio(pg.batchSat.latencyMs.p99, ts.batchSat.latencyMs.p99)} | – |`,
    `| database ceiling, events/s | ${int(pg.ceiling.perSecond)} | ${int(ts.ceiling.perSecond)} | ${ratio(pg.ceiling.perSecond, ts.ceiling.perSecond)} | – |`,
    `| PostgreSQL CPU per event at saturation, µs | ${(pg.cpu.postgres ?? NaN).toFixed(0)} | ${(ts.cpu.postgres ?? NaN).toFixed(0)} | ${ratio(pg.cpu.postgres ?? NaN, ts.cpu.postgres ?? NaN)} | – |`,
  ];
}

export async function benchProcessor(): Promise<void> {
  const rows: string[] = [];
  const cpu: string[] = [];
  const whs = Array.from({ length: CLIENTS }, (_, i) => `BW${i}`);
  const targets = await benchTargets();

  // 1. stockwire central on each database target, one after the other.
  const runs = new Map<DbTarget, CentralRun>();
  for (const target of targets) {
    const r = await centralOn(target, whs);
    runs.set(target, r);
    rows.push(
      `| central (Aedes + in-process processor) on ${target.name}, saturation, ${CLIENTS} gateway clients | ${fmt(r.sat)} |`,
    );
    rows.push(`| central on ${target.name}, fixed 2,000 events/s | ${fmt(r.fixed)} |`);
    rows.push(
      `| central on ${target.name}, saturation, ${CLIENTS} gateway links batched (${batchCells(r.batchSat)}, ${BATCH_WINDOW} batches in flight per link; every ack \`applied\`, one ledger row per event) | ${fmt(r.batchSat)} |`,
    );
    rows.push(
      `| central on ${target.name}, fixed 2,000 events/s batched (each link sends what is due every 5 ms as one batch, as an edge sends what its outbox holds: ${batchCells(r.batchFixed)}) | ${fmt(r.batchFixed)} |`,
    );
    rows.push(
      `| bare ${target.name} ceiling: same rows, one INSERT … SELECT unnest per 1,000${target.key === 'timescaledb' ? ', into a hypertable' : ''} | ${Math.round(r.ceiling.perSecond).toLocaleString('en')} | – | – | – | ${EVENTS.toLocaleString('en')} in ${r.ceiling.seconds.toFixed(1)} s |`,
    );
    cpu.push(
      `| central on ${target.name}, saturation | ${cpuCells(r.cpu, ['central', 'postgres', 'load generator'])} |`,
    );
    cpu.push(
      `| central on ${target.name}, saturation batched | ${cpuCells(r.batchCpu, ['central', 'postgres', 'load generator'])} |`,
    );
  }

  // The broker alone, for scale: no database.
  progress('bare Aedes baseline');
  const bare = await startScript('bare-aedes.ts');
  try {
    const perClient = Math.floor(EVENTS / CLIENTS);
    const { result: b, us: bareCpu } = await cpuPerEvent(
      perClient * CLIENTS,
      { central: bare.child.pid as number },
      () =>
        drive({
          url: `mqtt://127.0.0.1:${bare.ports.mqtt}`,
          warehouses: whs,
          eventsPerClient: perClient,
          window: 2000,
          rate: 0,
          devices: 50,
          skus: 1000,
          idPrefix: 'bare',
        }),
    );
    cpu.push(
      `| bare Aedes baseline (in the central column) | ${cpuCells(bareCpu, ['central', 'postgres', 'load generator'])} |`,
    );
    rows.push(
      `| baseline: bare Aedes in its own process, QoS-1 event in and QoS-1 ack out, nothing validated or stored | ${fmt(b)} |`,
    );
  } finally {
    await stopProcess(bare);
  }
  const ratios = [...runs].map(
    ([t, r]) =>
      `central / database ceiling on ${t.name}: ${((r.sat.perSecond / r.ceiling.perSecond) * 100).toFixed(0)}%`,
  );
  rows.push('', `Ratio ${ratios.join('; ')}.`);
  const issue17 = [...runs].map(
    ([t, r]) => `on ${t.name} ${Math.round(r.batchSat.perSecond).toLocaleString('en')}: ${metOrMissed(r.batchSat)}`,
  );
  rows.push(
    '',
    `Issue 17 target, central fed by ${CLIENTS} gateway links over the batched link: ≥ ${BATCHED_TARGET.toLocaleString('en')} events/s sustained; ${issue17.join('; ')}.`,
  );
  const compared = compareTargets(runs);

  // 2. stockwire processor behind the machine's Mosquitto (default configuration), PUBACK held until commit.
  // The broker path, not the database, decides this row: plain PostgreSQL only.
  const db2 = await createTestDatabase('bench_proc');
  const tag = randomBytes(3).toString('hex');
  const pwhs = whs.map((w) => `${w}${tag}`);
  let proc: Running | null = null;
  try {
    const pool = createPool({ url: db2.url, max: 1 });
    await migrate(pool);
    await pool.end();
    proc = await startStockwire(
      [
        'processor',
        '--central-url',
        MOSQUITTO,
        '--warehouses',
        pwhs.join(','),
        '--instance',
        `bench${tag}`,
        '--http-port',
        '0',
        '--host',
        '127.0.0.1',
        '--batch-max',
        '2000',
        '--log-level',
        'warn',
      ],
      { DATABASE_URL: db2.url },
    );
    progress('processor behind Mosquitto');
    const n = Math.floor(Math.min(EVENTS, 40_000) / CLIENTS);
    // Mosquitto drops QoS-1 messages beyond max_queued_messages (1000) queued for one client; edges resend them, this load generator does not, so it stays well below.
    const r = await drive({
      url: MOSQUITTO,
      warehouses: pwhs,
      eventsPerClient: n,
      window: 100,
      rate: 0,
      devices: 50,
      skus: 1000,
      idPrefix: 'moz',
    });
    rows.push('', '| path | events/s | p50 ms | p99 ms | max ms | run |', '| --- | --- | --- | --- | --- | --- |');
    rows.push(
      `| stockwire processor behind Mosquitto 2 (default config: 20 in flight, 1,000 queued per client), saturation, window 100 per sender | ${fmt(r)} |`,
    );
  } finally {
    await stopProcess(proc);
    await db2.drop();
  }

  record('Processor throughput (issue 1/7)', benchCommand('processor'), [
    "Latency is from the publish at the sending client to central's commit ack at that client (batched: from the batch's publish to its batch-ack, counted once per event). Target: ≥ 20,000 events/s sustained; on TimescaleDB ≥ 80% of plain PostgreSQL's rate (issue 14/7).",
    '',
    ...describeTargets(targets),
    '',
    ...compared,
    '',
    '| path | events/s | p50 ms | p99 ms | max ms | run |',
    '| --- | --- | --- | --- | --- | --- |',
    ...rows,
    '',
    `CPU per event (µs of user + system time, from /proc), and the rate at which that cost fills all ${os.cpus().length} cores. PostgreSQL is every server process on the machine.`,
    '',
    '| run | central | postgres | load generator | sum | events/s the cores allow |',
    '| --- | --- | --- | --- | --- | --- |',
    ...cpu,
  ]);
}
