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
