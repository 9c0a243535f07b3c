import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount: number;
}

/**
 * The main-thread `.cpuprofile` files a `node --cpu-prof --cpu-prof-dir DIR` process wrote, oldest first
 * (named CPU.date.time.pid.thread.seq; tsx's loader thread writes a small one of its own beside it).
 */
export function profiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => /\.\d+\.0\.\d+\.cpuprofile$/.test(f))
    .sort()
    .map((f) => path.join(dir, f));
}

/**
 * The hottest functions of a CPU profile by self time, as a share of the time the thread was busy
 * (idle samples left out), as lines `  12.3% name file:line`.
 */
export function hotFunctions(file: string, top = 30): string[] {
  const prof = JSON.parse(readFileSync(file, 'utf8')) as { nodes: ProfileNode[]; samples: number[] };
  const self = new Map<string, number>();
  let busy = 0;
  for (const n of prof.nodes) {
    if (n.callFrame.functionName === '(idle)') continue;
    busy += n.hitCount;
    const where = n.callFrame.url
      .replace(/^.*node_modules\//, '~')
      .replace(/^file:\/\/.*?\/(protocol|runtime|broker|gateway|processors|cli|bench)\//, '$1/');
    const key = `${n.callFrame.functionName || '(anon)'} ${where}:${n.callFrame.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + n.hitCount);
  }
  const lines = [...self]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, v]) => `${((100 * v) / busy).toFixed(1).padStart(5)}% ${k}`);
  return [
    `busy ${((100 * busy) / prof.samples.length).toFixed(0)}% of ${prof.samples.length} samples; self time as a share of busy time:`,
    ...lines,
  ];
}
