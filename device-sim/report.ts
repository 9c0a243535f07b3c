import type { Faults } from './plan.js';
import type { SimStats, Simulator, UnexpectedRejection } from './simulator.js';
import type { Difference } from './verify.js';

export interface SimSummary {
  runId: string;
  seed: number;
  skuPrefix: string;
  warehouses: string[];
  devices: number;
  faults: Faults;
  elapsedMs: number;
  stats: SimStats;
  verify: {
    rows: number;
    events: number;
    /** central committed every event before the comparison */
    committed: boolean;
    /** events still without a commit ack (when the edges' empty outboxes proved them committed, not a problem) */
    outstanding: number;
    differences: Difference[];
    unexpectedRejections: UnexpectedRejection[];
  } | null;
  error: string | null;
}

const EVERY_MS = 1_000; // progress on a terminal
const EVERY_MS_PIPED = 5_000; // progress into a file or pipe: fewer lines

/** The progress line on stderr: rewritten in place on a terminal, a line every few seconds otherwise. */
export class Progress {
  private timer: NodeJS.Timeout | null = null;
  private label = 'sending';
  private lastPublishes = 0;
  private lastAt = 0;

  constructor(
    private readonly sim: Simulator,
    private readonly out: NodeJS.WriteStream,
  ) {}

  start(): void {
    this.lastAt = Date.now();
    this.timer = setInterval(() => this.print(), this.out.isTTY ? EVERY_MS : EVERY_MS_PIPED);
  }

  phase(label: string): void {
    this.label = label;
    this.print();
  }

  private print(): void {
    const s = this.sim.snapshot();
    const now = Date.now();
    const rate = ((s.planned - this.lastPublishes) * 1000) / Math.max(1, now - this.lastAt);
    this.lastPublishes = s.planned;
    this.lastAt = now;
    const line =
      `sim ${(this.sim.elapsedMs / 1000).toFixed(0)}s ${this.label}: ${s.events} events (${rate.toFixed(1)}/s), ` +
      `${s.acked}/${s.publishes} publishes acked, ${s.committed} committed, ${s.duplicates} dup, ${s.malformed} malformed, ` +
      `${s.reordered} reordered, ${s.skewed} skewed, ${s.drops} drops, pending ${this.sim.pending}`;
    this.out.write(this.out.isTTY ? `\r\x1b[2K${line}` : `${line}\n`);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.out.isTTY) this.out.write('\n');
  }
}

export function summaryText(s: SimSummary): string {
  const st = s.stats;
  const lines = [
    `run ${s.runId} (seed ${s.seed}): ${st.events} events from ${s.devices} devices in ${s.warehouses.join(', ')} over ${(s.elapsedMs / 1000).toFixed(1)} s, skus ${s.skuPrefix}…`,
    `  faults: ${st.duplicates} duplicates, ${st.reordered} reordered, ${st.drops} connection drops (${st.reconnects} reconnects),`,
    `          ${st.skewed} skewed clocks (${st.skews.behind} behind, ${st.skews.ahead} ahead, ${st.skews['far-ahead']} too far ahead and ${st.skews.absent} without ts: edge time),`,
    `          ${st.malformed} malformed (${st.malformedWithId} with a readable id, ${st.rejectedAsExpected} of them answered rejected)`,
    `  ${st.acked} of ${st.publishes} publishes acknowledged by the edges${st.republished > 0 ? ` (${st.republished} sent again after MQTT.js dropped them on a closed connection)` : ''}`,
  ];
  const v = s.verify;
  if (v) {
    lines.push(
      `verify: ${v.events} events in ${v.rows} stock rows; central ${v.committed ? 'committed every one' : `had not committed ${v.outstanding} in time`}` +
        (v.committed && v.outstanding > 0
          ? ` (${v.outstanding} commit acks missed during drops; the edges' outboxes drained)`
          : ''),
    );
    for (const r of v.unexpectedRejections) lines.push(`  REJECTED ${r.wh} ${r.device}/${r.id}: ${r.error}`);
    for (const d of v.differences)
      lines.push(
        `  DIFFERENCE ${d.wh} ${d.sku}: expected onHand ${d.expected}, central ${d.actual ?? 'has no stock row'}`,
      );
    lines.push(
      `verify: ${v.differences.length} differences${v.unexpectedRejections.length ? `, ${v.unexpectedRejections.length} valid events rejected` : ''}`,
    );
  }
  if (s.error) lines.push(`error: ${s.error}`);
  return `${lines.join('\n')}\n`;
}
