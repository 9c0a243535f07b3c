import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Difference } from '../device-sim/verify.js';

/** The soak's row goes into RELIABILITY.md's "Chaos soak" table, before this marker (SOAK_RELIABILITY: another file). */
export const RELIABILITY = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../RELIABILITY.md');
const TABLE_END = '<!-- soak-table:end -->';

export type FaultKind = 'edge-kill' | 'central-kill' | 'link-cut' | 'db-crash';

/**
 * One planned fault: what, on which edge (or which database crash), for how long, and when: once `at` events are
 * PUBACKed (edge kills: the devices must be mid-stream for their resends to count) or applied at central (the
 * faults of central's side, so that they also hit the drain of the outboxes after the last PUBACK).
 */
export interface Fault {
  kind: FaultKind;
  target: number;
  label: string;
  measure: 'PUBACKed' | 'applied';
  at: number;
  /** how long the process stays down or the link refused, ms (a database stays down until central meets the crash) */
  downMs: number;
  /** filled in when injected */
  detail?: string;
  pubacked?: number;
  applied?: number;
  phase?: 'stream' | 'drain';
  /** s into the run */
  startS?: number;
  endS?: number;
}

/**
 * Every fault of the run, each at a seeded share (5–90 %) of its measure, with its down time drawn here too: the
 * two sequences of faults run side by side, so drawing in the order of injection would depend on timing.
 * Database crashes alternate between `pg_ctl stop -m immediate` (even targets) and kill -9 of the postmaster.
 */
export function faultPlan(
  random: () => number,
  events: number,
  whs: readonly string[],
  counts: Readonly<Record<FaultKind, number>>,
): Fault[] {
  const plan: Fault[] = [];
  const at = () => Math.floor((0.05 + random() * 0.85) * events);
  const ms = (lo: number, hi: number) => lo + Math.round(random() * (hi - lo));
  for (const [k, wh] of whs.entries()) {
    for (let i = 0; i < counts['edge-kill']; i++)
      plan.push({
        kind: 'edge-kill',
        target: k,
        label: `kill -9 edge ${wh}`,
        measure: 'PUBACKed',
        at: at(),
        downMs: ms(200, 2_000),
      });
    for (let i = 0; i < counts['link-cut']; i++)
      plan.push({
        kind: 'link-cut',
        target: k,
        label: `link cut ${wh}↔central`,
        measure: 'applied',
        at: at(),
        downMs: ms(500, 3_000),
      });
  }
  for (let i = 0; i < counts['central-kill']; i++)
    plan.push({
      kind: 'central-kill',
      target: 0,
      label: 'kill -9 central',
      measure: 'applied',
      at: at(),
      downMs: ms(200, 2_000),
    });
  for (let i = 0; i < counts['db-crash']; i++)
    plan.push({
      kind: 'db-crash',
      target: i,
      label: `TimescaleDB crash (${i % 2 === 0 ? 'pg_ctl stop -m immediate' : 'kill -9 postmaster'})`,
      measure: 'applied',
      at: at(),
      downMs: 0,
    });
  return plan.sort((a, b) => a.at - b.at);
}

export interface SoakRow {
  finishedAt: string;
  seed: number;
  events: number;
  devices: number;
  edges: number;
  faults: Fault[];
  publishes: number;
  /** distinct sent events found in central's event log */
  applied: number;
  /** sent (and PUBACKed) but not in the event log: warehouse/device/id */
  lost: string[];
  /** in the event log more than once: warehouse/device/id ×n */
  twice: string[];
  /** event-log keys no device sent (must be 0) */
  unknown: number;
  stockRows: number;
  differences: Difference[];
  rebuildExit: number | null;
  rebuildOutput: string;
  streamSeconds: number;
  seconds: number;
  /** what the edges sent to central (absent in rows from before it was counted) */
  link?: SoakLink;
}

/** Sends from the edges to central over the run, lower bounds (see bench/soak.ts LinkTally). */
export interface SoakLink {
  /** event sends, first and resends, single or in a batch */
  sends: number;
  batches: number;
  /** event sends inside batches */
  inBatches: number;
}

/** How the events crossed the link: in batches, or single (a central without batch support, or the fallback). */
export function linkSummary(l: SoakLink): string {
  const single = l.sends - l.inBatches;
  return `link: ${int(l.inBatches)} event sends in ${int(l.batches)} batches (${l.batches > 0 ? (l.inBatches / l.batches).toFixed(0) : 0} per batch), ${int(single)} single`;
}

const int = (n: number) => n.toLocaleString('en');

export function passed(r: SoakRow): boolean {
  return (
    r.lost.length === 0 &&
    r.twice.length === 0 &&
    r.unknown === 0 &&
    r.differences.length === 0 &&
    r.rebuildExit === 0 &&
    r.applied === r.events
  );
}

function faultSummary(r: SoakRow): string {
  const count = (kind: FaultKind) => r.faults.filter((f) => f.kind === kind).length;
  const mid = r.faults.filter((f) => f.phase === 'stream').length;
  const perEdge = (kind: FaultKind) => `${count(kind)} (${Math.round(count(kind) / r.edges)} per edge)`;
  return [
    `edge SIGKILL ×${perEdge('edge-kill')}`,
    `central SIGKILL ×${count('central-kill')}`,
    `link cut ×${perEdge('link-cut')}`,
    `TimescaleDB crash ×${count('db-crash')}`,
    `${mid} of ${r.faults.length} while devices published, the rest during the drain`,
    ...(r.link ? [linkSummary(r.link)] : []),
  ].join(', ');
}

/** The row of RELIABILITY.md's "Chaos soak" table. */
export function tableRow(r: SoakRow): string {
  const cells = [
    r.finishedAt.slice(0, 16).replace('T', ' '),
    int(r.events),
    `${r.devices} / ${r.edges}`,
    faultSummary(r),
    int(r.publishes),
    int(r.applied),
    int(r.lost.length),
    int(r.twice.length),
    r.differences.length === 0
      ? `equal (${r.stockRows} rows)`
      : `**${r.differences.length} of ${r.stockRows} rows differ**`,
    r.rebuildExit === 0 ? 'no drift' : `**exit ${r.rebuildExit}**`,
    `${(r.seconds / 60).toFixed(1)} (stream ${(r.streamSeconds / 60).toFixed(1)})`,
    String(r.seed),
    passed(r) ? 'pass' : '**FAIL**: see bench/RESULTS.md',
  ];
  return `| ${cells.join(' | ')} |`;
}

/** Inserts the row at the end of the table in RELIABILITY.md (or SOAK_RELIABILITY). */
export function appendSoakRow(r: SoakRow, file = process.env.SOAK_RELIABILITY ?? RELIABILITY): void {
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : `${TABLE_END}\n`;
  const at = text.indexOf(TABLE_END);
  if (at < 0) throw new Error(`${file} has no ${TABLE_END} marker for the soak's row`);
  fs.writeFileSync(file, `${text.slice(0, at)}${tableRow(r)}\n${text.slice(at)}`);
}

/** The bench/RESULTS.md section: the verdict, every fault as it happened, and any finding in detail. */
export function resultLines(r: SoakRow, reliabilityFile: string): string[] {
  const lines = [
    `Result row appended to the "Chaos soak" table of ${reliabilityFile}: ${passed(r) ? '**pass**' : '**FAIL**'} — ${int(r.events)} events from ${r.devices} devices over ${r.edges} edges, ${int(r.publishes)} publishes, ${int(r.applied)} applied, ${r.lost.length} lost, ${r.twice.length} applied twice, ${r.unknown} unknown keys in the event log, stock ${r.differences.length === 0 ? `equal to the oracle (${r.stockRows} rows)` : `off in ${r.differences.length} rows`}, \`stockwire rebuild\` exit ${r.rebuildExit}; ${(r.seconds / 60).toFixed(1)} min (streaming ${(r.streamSeconds / 60).toFixed(1)}), seed ${r.seed}.`,
    '',
    '| s into the run | fault | due at | PUBACKed / applied then | phase | detail |',
    '| --- | --- | --- | --- | --- | --- |',
    ...r.faults.map(
      (f) =>
        `| ${(f.startS ?? 0).toFixed(1)}–${(f.endS ?? 0).toFixed(1)} | ${f.label} | ${int(f.at)} ${f.measure} | ${int(f.pubacked ?? 0)} / ${int(f.applied ?? 0)} | ${f.phase ?? ''} | ${f.detail ?? ''} |`,
    ),
  ];
  if (r.lost.length > 0) lines.push('', `Lost (first 50 of ${r.lost.length}): ${r.lost.slice(0, 50).join(', ')}`);
  if (r.twice.length > 0)
    lines.push('', `Applied twice (first 50 of ${r.twice.length}): ${r.twice.slice(0, 50).join(', ')}`);
  if (r.differences.length > 0)
    lines.push('', `Stock differences (first 20): ${JSON.stringify(r.differences.slice(0, 20))}`);
  if (r.rebuildExit !== 0) lines.push('', `\`stockwire rebuild\` said:`, '', '```', r.rebuildOutput, '```');
  return lines;
}
