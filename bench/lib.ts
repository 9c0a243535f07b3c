import { execSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

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
    const dirty = execSync('git status --porcelain -- protocol broker gateway processors bench ":(exclude)bench/RESULTS.md"', { encoding: 'utf8' }).trim() !== '';
    return dirty ? `${sha} (with uncommitted changes)` : sha;
  } catch {
    return 'unknown';
  }
}

/** Appends one run's section to bench/RESULTS.md: date, machine, commit, command, then the table. */
export function record(title: string, command: string, lines: string[]): void {
  const section = [`## ${title} — ${new Date().toISOString()}`, '', `- machine: ${machine()}`, `- commit: ${commit()}`, `- command: \`${command}\``, '', ...lines, ''].join('\n');
  if (!fs.existsSync(RESULTS)) fs.writeFileSync(RESULTS, '# Benchmark results\n\nEvery run of `npm run bench` appends its sections here. Newest last.\n\n');
  fs.appendFileSync(RESULTS, `${section}\n`);
  process.stdout.write(`${section}\n`);
}

/** CPU time (user + system) a process has used so far, in ms, from /proc (Linux). */
export function processCpuMs(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) * (1000 / 100); // clock ticks of 10 ms
}

/** CPU time used so far by every PostgreSQL server process on this machine, in ms. */
export function postgresCpuMs(): number {
  let total = 0;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.includes(' (postgres) ')) total += processCpuMs(Number(entry));
    } catch {
      /* the process ended meanwhile */
    }
  }
  return total;
}

/** Measures the CPU that processes and this (load-generating) process spend during `run`, in µs per event. */
export async function cpuPerEvent<T>(events: number, pids: Record<string, number>, run: () => Promise<T>): Promise<{ result: T; us: Record<string, number> }> {
  const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, processCpuMs(pid)]));
  const pg0 = postgresCpuMs();
  const self0 = process.cpuUsage();
  const result = await run();
  const self = process.cpuUsage(self0);
  const us: Record<string, number> = {};
  for (const [k, pid] of Object.entries(pids)) us[k] = ((processCpuMs(pid) - (before[k] as number)) * 1000) / events;
  us.postgres = ((postgresCpuMs() - pg0) * 1000) / events;
  us['load generator'] = (self.user + self.system) / events;
  return { result, us };
}
