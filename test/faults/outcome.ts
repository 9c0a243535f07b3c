import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { compare, type Difference } from '../../device-sim/verify.js';
import { BIN } from '../helpers/process.js';
import type { Expected } from '../helpers/workload.js';

/** Where each scenario leaves its numbers; `test/faults/render.ts` turns them into RELIABILITY.md. */
export const REPORT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../artifacts/faults');

export interface Outcome {
  scenario: string;
  /** the faults injected, in words */
  faults: string;
  /** how many times they were injected */
  injected: number;
  /** distinct events the devices sent */
  sent: number;
  /** publishes by the devices, repeats included */
  deliveries: number;
  /** distinct events in central's event log */
  applied: number;
  /** sent but not in the event log */
  lost: number;
  /** event-log rows beyond one per event: events applied more than once */
  duplicated: number;
  /** rows whose stock differs from the oracle's, read through central's HTTP API as `sim --verify` does */
  stockDifferences: Difference[];
  /** exit code of `stockwire rebuild` (0: no drift) */
  rebuildExit: number | null;
  rebuildOutput: string;
  seconds: number;
  finishedAt: string;
}

/** Runs `stockwire rebuild` as a user would, against the scenario's database. */
export async function runRebuild(databaseUrl: string): Promise<{ code: number | null; output: string }> {
  const child = spawn(BIN, ['rebuild', '--database-url', databaseUrl, '--log-level', 'warn'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (b: Buffer) => (output += b.toString()));
  child.stderr.on('data', (b: Buffer) => (output += b.toString()));
  const t = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  clearTimeout(t);
  return { code, output: output.trim() };
}

/**
 * Counts what happened to a warehouse's events and checks the stock like `stockwire sim --verify`:
 * central's API against the ledger oracle. `centralHttp` null: the database's stock table instead
 * (a standalone processor without a read model to ask).
 */
export async function measure(o: {
  pool: pg.Pool;
  databaseUrl: string;
  wh: string;
  expected: Expected;
  sent: number;
  deliveries: number;
  centralHttp: string | null;
  scenario: string;
  faults: string;
  injected: number;
  startedAt: number;
}): Promise<Outcome> {
  const { rows } = await o.pool.query<{ n: number; keys: number }>(
    'SELECT count(*)::int AS n, count(DISTINCT (device, id))::int AS keys FROM events WHERE wh = $1',
    [o.wh],
  );
  const n = rows[0]?.n ?? 0;
  const keys = rows[0]?.keys ?? 0;
  const expectations = [...o.expected.stock].map(([k, s]) => {
    const [wh, sku] = k.split('\u0000') as [string, string];
    return { wh, sku, onHand: s.onHand };
  });
  let stockDifferences: Difference[];
  if (o.centralHttp) stockDifferences = await compare(o.centralHttp, expectations, 10_000);
  else {
    const stored = await o.pool.query<{ sku: string; on_hand: number }>(
      'SELECT sku, on_hand FROM stock WHERE wh = $1',
      [o.wh],
    );
    const actual = new Map(stored.rows.map((r) => [r.sku, r.on_hand]));
    stockDifferences = expectations.flatMap((e) =>
      actual.get(e.sku) === e.onHand
        ? []
        : [{ wh: e.wh, sku: e.sku, expected: e.onHand, actual: actual.get(e.sku) ?? null }],
    );
  }
  const rebuild = await runRebuild(o.databaseUrl);
  // npm test runs some scenarios a second time on TimescaleDB: their rows in RELIABILITY.md say so.
  const timescale = await eventsIsHypertable(o.pool);
  const outcome: Outcome = {
    scenario: timescale && !/TimescaleDB/.test(o.scenario) ? `${o.scenario}, on TimescaleDB` : o.scenario,
    faults: o.faults,
    injected: o.injected,
    sent: o.sent,
    deliveries: o.deliveries,
    applied: keys,
    lost: o.sent - keys,
    duplicated: n - keys,
    stockDifferences,
    rebuildExit: rebuild.code,
    rebuildOutput: rebuild.output,
    seconds: Math.round((Date.now() - o.startedAt) / 100) / 10,
    finishedAt: new Date().toISOString(),
  };
  await record(outcome);
  return outcome;
}

async function eventsIsHypertable(pool: pg.Pool): Promise<boolean> {
  const { rows } = await pool.query<{ ts: boolean }>(
    `SELECT to_regclass('timescaledb_information.hypertables') IS NOT NULL AS ts`,
  );
  if (!rows[0]?.ts) return false;
  return (
    ((await pool.query(`SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = 'events'`))
      .rowCount ?? 0) > 0
  );
}

async function record(o: Outcome): Promise<void> {
  await fs.mkdir(REPORT_DIR, { recursive: true });
  const slug = o.scenario
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '');
  await fs.writeFile(path.join(REPORT_DIR, `${slug}.json`), `${JSON.stringify(o, null, 2)}\n`);
}

/** The promise of the suite: none lost, none applied twice, stock as the oracle says, no drift. */
export function assertOutcome(o: Outcome): void {
  assert.equal(o.lost, 0, `${o.scenario}: ${o.lost} of ${o.sent} events lost`);
  assert.equal(o.duplicated, 0, `${o.scenario}: ${o.duplicated} events applied more than once`);
  assert.deepEqual(o.stockDifferences, [], `${o.scenario}: stock differs from the oracle`);
  assert.equal(o.rebuildExit, 0, `${o.scenario}: stockwire rebuild reports drift:\n${o.rebuildOutput}`);
  assert.ok(o.injected > 0, `${o.scenario}: no fault was injected`);
}
