import { execSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { hashPassword, type DeviceKind } from '../broker/index.js';
import type { Running } from '../test/helpers/process.js';

export const RESULTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'RESULTS.md');

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

export function machine(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown cpu';
  let pgVersion = 'unknown';
  try {
    pgVersion = execSync(`psql -At -h 127.0.0.1 -U postgres -c 'show server_version'`, { encoding: 'utf8' }).trim();
  } catch {
    /* psql absent */
  }
  return `${os.cpus().length} × ${cpu}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, PostgreSQL ${pgVersion}`;
}

export function commit(): string {
  try {
    const sha = execSync('git rev-parse --short HEAD', { encoding: 'utf8' }).trim();
    const dirty =
      execSync('git status --porcelain -- protocol broker gateway processors bench ":(exclude)bench/RESULTS.md"', {
        encoding: 'utf8',
      }).trim() !== '';
    return dirty ? `${sha} (with uncommitted changes)` : sha;
  } catch {
    return 'unknown';
  }
}

/** Appends one run's section to bench/RESULTS.md: date, machine, commit, command, then the table. */
export function record(title: string, command: string, lines: string[]): void {
  const load = os
    .loadavg()
    .map((l) => l.toFixed(1))
    .join(' / ');
  const section = [
    `## ${title} — ${new Date().toISOString()}`,
    '',
    `- machine: ${machine()}`,
    `- load average when recorded (1 / 5 / 15 min): ${load}`,
    `- commit: ${commit()}`,
    `- command: \`${command}\``,
    '',
    ...lines,
    '',
  ].join('\n');
  const file = process.env.BENCH_RESULTS ?? RESULTS; // BENCH_RESULTS: elsewhere, for smoke runs on a busy machine
  if (!fs.existsSync(file))
    fs.writeFileSync(
      file,
      '# Benchmark results\n\nEvery run of `npm run bench` appends its sections here. Newest last.\n\n',
    );
  fs.appendFileSync(file, `${section}\n`);
  process.stdout.write(`${section}\n`);
}

/** CPU time (user + system) a process has used so far, in ms, from /proc (Linux). */
export function processCpuMs(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) * (1000 / 100); // clock ticks of 10 ms
}

/** CPU time used so far by each PostgreSQL server process on this machine (either server), in ms by pid. */
export function postgresCpuMs(): Map<number, number> {
  const byPid = new Map<number, number>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.includes(' (postgres) ')) byPid.set(Number(entry), processCpuMs(Number(entry)));
    } catch {
      /* the process ended meanwhile */
    }
  }
  return byPid;
}

/**
 * CPU the PostgreSQL processes alive at the end spent since `before`, in ms. Per pid: a backend that ended
 * meanwhile (another client's, on a shared machine) must not subtract all its past CPU from the sum.
 */
function postgresCpuSince(before: Map<number, number>): number {
  let total = 0;
  for (const [pid, ms] of postgresCpuMs()) total += ms - (before.get(pid) ?? 0);
  return total;
}

/** Measures the CPU that processes and this (load-generating) process spend during `run`, in µs per event. */
export async function cpuPerEvent<T>(
  events: number,
  pids: Record<string, number>,
  run: () => Promise<T>,
): Promise<{ result: T; us: Record<string, number> }> {
  const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, processCpuMs(pid)]));
  const pg0 = postgresCpuMs();
  const self0 = process.cpuUsage();
  const result = await run();
  const self = process.cpuUsage(self0);
  const us: Record<string, number> = {};
  for (const [k, pid] of Object.entries(pids)) us[k] = ((processCpuMs(pid) - (before[k] as number)) * 1000) / events;
  us.postgres = (postgresCpuSince(pg0) * 1000) / events;
  us['load generator'] = (self.user + self.system) / events;
  return { result, us };
}

/** Resident memory of a process, in MiB (/proc/PID/status VmRSS). */
export async function rssMiB(pid: number): Promise<number> {
  const status = await fs.promises.readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) / 1024;
}

/** One sample of a Prometheus metric served at `http://127.0.0.1:{port}/metrics` (the first series of that name). */
export async function metric(httpPort: number, name: string): Promise<number> {
  return (await metricsOnce(httpPort, [name]))[0] as number;
}

/** Several metrics from one scrape (a scrape resets prom-client's event-loop lag histogram). */
export async function metricsOnce(httpPort: number, names: readonly string[]): Promise<number[]> {
  const lines = (await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text()).split('\n');
  return names.map((name) =>
    Number(lines.find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`))?.split(' ')[1] ?? NaN),
  );
}

export const progress = (what: string): void =>
  void process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${what}\n`);

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const cleanups: (() => Promise<unknown> | unknown)[] = [];

/** Registers a clean-up (stop a process, drop a database, remove files) that a watchdog or Ctrl-C also runs. */
export function onCleanup(fn: () => Promise<unknown> | unknown): () => Promise<void> {
  cleanups.push(fn);
  return async () => {
    const i = cleanups.indexOf(fn);
    if (i < 0) return;
    cleanups.splice(i, 1);
    await fn();
  };
}

async function cleanUpAll(): Promise<void> {
  for (const fn of cleanups.splice(0).reverse())
    await Promise.resolve()
      .then(fn)
      .catch((err: Error) => progress(`clean-up failed: ${err.message}`));
}

/**
 * A benchmark stops by itself: after `ms` (or on Ctrl-C / SIGTERM) every registered clean-up runs and the
 * process exits 1. Returns a function that disarms it.
 */
export function watchdog(ms: number, what: string): () => void {
  let firing = false;
  const fire = (why: string) => {
    if (firing) return progress(`${what}: ${why}; already cleaning up`); // a second Ctrl-C must not cut the clean-up short
    firing = true;
    progress(`${what}: ${why}; cleaning up`);
    void cleanUpAll().finally(() => process.exit(1));
  };
  const timer = setTimeout(() => fire(`still running after ${Math.round(ms / 1000)} s`), ms);
  const onSignal = () => fire('interrupted');
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return () => {
    clearTimeout(timer);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
}

/**
 * A devices file for many devices at once. `addDevice` hashes every password (scrypt, ~50 ms each) and
 * rewrites the file per device; here one hash is shared by every device with the same password.
 */
export async function writeFleetDevices(
  file: string,
  devices: { id: string; warehouse: string; kind: DeviceKind; password: string }[],
): Promise<void> {
  const hashes = new Map<string, string>();
  for (const d of devices) if (!hashes.has(d.password)) hashes.set(d.password, await hashPassword(d.password));
  const list = devices.map((d) => ({
    id: d.id,
    warehouse: d.warehouse,
    kind: d.kind,
    passwordHash: hashes.get(d.password) as string,
  }));
  await fs.promises.writeFile(file, `${JSON.stringify({ devices: list })}\n`, { mode: 0o600 });
}

/** Runs a script of bench/ in its own node process and waits for its `{"ready":true,…}` line on stdout. */
export async function startScript(
  script: string,
  args: string[] = [],
  env: Record<string, string> = {},
  timeoutMs = 30_000,
): Promise<Running> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(path.dirname(RESULTS), script), ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const ports = await new Promise<Record<string, number>>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`${script} not ready after ${timeoutMs} ms`)), timeoutMs);
    child.stdout?.on('data', (b: Buffer) => {
      buf += b.toString();
      const line = buf.split('\n').find((l) => l.startsWith('{"ready":true'));
      if (line === undefined) return;
      clearTimeout(timer);
      const { ready: _ready, ...p } = JSON.parse(line) as Record<string, number>;
      resolve(p);
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${script} exited with ${code} before ready`));
    });
  });
  return { child, ports, logs: [], exited };
}

/** Stops a process started by this bench (SIGTERM, then SIGKILL after `graceMs`) and waits for its exit. */
export async function stopProcess(r: Running | null | undefined, graceMs = 15_000): Promise<void> {
  if (!r || r.child.exitCode !== null || r.child.signalCode !== null) return;
  r.child.kill('SIGTERM');
  const t = setTimeout(() => r.child.kill('SIGKILL'), graceMs);
  await r.exited;
  clearTimeout(t);
}

/** The command that reproduces this run: `npm run bench -- NAME` with every BENCH_* variable that was set. */
export function benchCommand(name: string): string {
  const vars = Object.entries(process.env)
    .filter(([k]) => k.startsWith('BENCH_') && k !== 'BENCH_RESULTS')
    .map(([k, v]) => `${k}=${v ?? ''}`)
    .sort();
  return [...vars, `npm run bench -- ${name}`].join(' ');
}

/** Waits until every edge's link to central is up. */
export async function linksUp(edges: Running[], timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (const e of edges) {
    while ((await metric(e.ports.http as number, 'stockwire_edge_link_up')) !== 1) {
      if (Date.now() > until)
        throw new Error(`edge not linked to central after ${timeoutMs} ms:\n${e.logs.slice(-10).join('\n')}`);
      await sleep(20);
    }
  }
}

/** Waits for the edges to link up again, then for their outboxes to empty; events/s from the link to empty. */
export async function drained(
  edges: Running[],
  timeoutMs = 300_000,
): Promise<{ events: number; seconds: number; perSecond: number }> {
  const backlog = async () =>
    (await Promise.all(edges.map((e) => metric(e.ports.http as number, 'stockwire_edge_backlog_events')))).reduce(
      (a, b) => a + b,
      0,
    );
  await linksUp(edges);
  const events = await backlog();
  const t0 = performance.now();
  let left = events;
  while (left > 0) {
    if (performance.now() - t0 > timeoutMs)
      throw new Error(`backlog drain: ${left} of ${events} events still in the outboxes after ${timeoutMs / 1000} s`);
    await sleep(100);
    left = await backlog();
  }
  const seconds = (performance.now() - t0) / 1000;
  return { events, seconds, perSecond: events / seconds };
}
