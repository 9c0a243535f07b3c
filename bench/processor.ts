import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import { createPool } from '../processors/db/pool.js';
import { migrate } from '../processors/db/migrate.js';
import { createTestDatabase } from '../test/helpers/db.js';
import { writeDevices } from '../test/helpers/devices.js';
import { startStockwire, type Running } from '../test/helpers/process.js';
import { drive, type LoadResult } from './load.js';
import { ceiling } from './ceiling.js';
import { cpuPerEvent, progress, record, startScript } from './lib.js';

/**
 * Processor throughput through the central broker into PostgreSQL (issue 1/7), beside the
 * bare-database ceiling: the same rows in one multi-row INSERT … SELECT unnest per batch.
 */
const EVENTS = Number(process.env.BENCH_EVENTS ?? 200_000);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 4);
const MOSQUITTO = process.env.MOSQUITTO_URL ?? 'mqtt://127.0.0.1:1883';

const fmt = (r: LoadResult) =>
  `${Math.round(r.perSecond).toLocaleString('en')} | ${r.latencyMs.p50.toFixed(1)} | ${r.latencyMs.p99.toFixed(1)} | ${r.latencyMs.max.toFixed(1)} | ${r.events.toLocaleString('en')} in ${r.seconds.toFixed(1)} s`;

/** Table cells: µs of CPU per event for each process, their sum, and the rate 2 cores allow at that cost. */
function cpuCells(us: Record<string, number>, order: string[]): string {
  const total = order.reduce((t, k) => t + (us[k] ?? 0), 0);
  const cores = os.cpus().length;
  return `${order.map((k) => (us[k] ?? 0).toFixed(0)).join(' | ')} | ${total.toFixed(0)} | ${Math.round((cores * 1e6) / total).toLocaleString('en')}`;
}

export async function benchProcessor(): Promise<void> {
  const rows: string[] = [];
  const cpu: string[] = [];
  const whs = Array.from({ length: CLIENTS }, (_, i) => `BW${i}`);

  // 1. stockwire central: Aedes + in-process processor, PUBACK held until commit.
  const db = await createTestDatabase('bench_central');
  const devices = await writeDevices(whs.map((wh) => ({ id: `gw-${wh}`, warehouse: wh, kind: 'gateway' as const, password: `pw-${wh}-bench` })));
  let central: Running | null = null;
  try {
    central = await startStockwire(['central', '--mqtt-port', '0', '--ws-port', '0', '--http-port', '0', '--host', '127.0.0.1', '--devices-file', devices.file, '--data-dir', devices.dir, '--batch-max', '2000', '--log-level', 'warn'], { DATABASE_URL: db.url });
    const url = `mqtt://127.0.0.1:${central.ports.mqtt}`;
    const credentials = (wh: string) => ({ username: `gw-${wh}`, password: `pw-${wh}-bench`, clientId: `gw-${wh}` });
    progress('central: warm-up');
    await drive({ url, warehouses: whs, credentials, eventsPerClient: 2_000, window: 1000, rate: 0, devices: 50, skus: 1000, idPrefix: 'warm' });
    progress('central: saturation');
    const perClient = Math.floor(EVENTS / CLIENTS);
    const { result: sat, us: satCpu } = await cpuPerEvent(perClient * CLIENTS, { central: central.child.pid as number }, () =>
      drive({ url, warehouses: whs, credentials, eventsPerClient: perClient, window: 2000, rate: 0, devices: 50, skus: 1000, idPrefix: 'sat' }),
    );
    rows.push(`| central (Aedes + in-process processor), saturation, ${CLIENTS} gateway clients | ${fmt(sat)} |`);
    cpu.push(`| central, saturation | ${cpuCells(satCpu, ['central', 'postgres', 'load generator'])} |`);
    progress('central: fixed rate');
    const fixed = await drive({ url, warehouses: whs, credentials, eventsPerClient: 5_000, window: 2000, rate: 2_000, devices: 50, skus: 1000, idPrefix: 'fixed' });
    rows.push(`| central, fixed 2,000 events/s | ${fmt(fixed)} |`);
    progress('bare Aedes baseline');
    const bare = await startScript('bare-aedes.ts');
    try {
      const { result: b, us: bareCpu } = await cpuPerEvent(perClient * CLIENTS, { central: bare.child.pid as number }, () =>
        drive({ url: `mqtt://127.0.0.1:${bare.ports.mqtt}`, warehouses: whs, eventsPerClient: perClient, window: 2000, rate: 0, devices: 50, skus: 1000, idPrefix: 'bare' }),
      );
      cpu.push(`| bare Aedes baseline (in the central column) | ${cpuCells(bareCpu, ['central', 'postgres', 'load generator'])} |`);
      rows.push(`| baseline: bare Aedes in its own process, QoS-1 event in and QoS-1 ack out, nothing validated or stored | ${fmt(b)} |`);
    } finally {
      bare.child.kill('SIGTERM');
      await bare.exited;
    }
    progress('database ceiling');
    const c = await ceiling(db.url, EVENTS, CLIENTS);
    rows.push(`| bare database ceiling: same rows, one INSERT … SELECT unnest per 1,000 | ${Math.round(c.perSecond).toLocaleString('en')} | – | – | – | ${EVENTS.toLocaleString('en')} in ${c.seconds.toFixed(1)} s |`);
    rows.push('', `Ratio central / database ceiling: ${((sat.perSecond / c.perSecond) * 100).toFixed(0)}%.`);
  } finally {
    central?.child.kill('SIGTERM');
    await central?.exited;
    await db.drop();
    await fs.rm(devices.dir, { recursive: true, force: true });
  }

  // 2. stockwire processor behind the machine's Mosquitto (default configuration), PUBACK held until commit.
  const db2 = await createTestDatabase('bench_proc');
  const tag = randomBytes(3).toString('hex');
  const pwhs = whs.map((w) => `${w}${tag}`);
  let proc: Running | null = null;
  try {
    const pool = createPool({ url: db2.url, max: 1 });
    await migrate(pool);
    await pool.end();
    proc = await startStockwire(['processor', '--central-url', MOSQUITTO, '--warehouses', pwhs.join(','), '--instance', `bench${tag}`, '--http-port', '0', '--host', '127.0.0.1', '--batch-max', '2000', '--log-level', 'warn'], { DATABASE_URL: db2.url });
    progress('processor behind Mosquitto');
    const n = Math.floor(Math.min(EVENTS, 40_000) / CLIENTS);
    // Mosquitto drops QoS-1 messages beyond max_queued_messages (1000) queued for one client; edges resend them, this load generator does not, so it stays well below.
    const r = await drive({ url: MOSQUITTO, warehouses: pwhs, eventsPerClient: n, window: 100, rate: 0, devices: 50, skus: 1000, idPrefix: 'moz' });
    rows.push('', '| path | events/s | p50 ms | p99 ms | max ms | run |', '| --- | --- | --- | --- | --- | --- |');
    rows.push(`| stockwire processor behind Mosquitto 2 (default config: 20 in flight, 1,000 queued per client), saturation, window 100 per sender | ${fmt(r)} |`);
  } finally {
    proc?.child.kill('SIGTERM');
    await proc?.exited;
    await db2.drop();
  }

  record('Processor throughput (issue 1/7)', 'npm run bench -- processor', [
    'Latency is from the publish at the sending client to central\'s commit ack at that client. Target: ≥ 20,000 events/s sustained.',
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
