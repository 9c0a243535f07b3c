import { randomBytes, randomInt } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import {
  CREDENTIALS_FILE,
  readCredentials,
  readEndpoints,
  type DemoCredential,
  type DemoEndpoints,
} from './demo-files.js';
import { createLogger } from '../runtime/logger.js';
import { configure, EXIT_USAGE } from '../runtime/run.js';
import { API_TOKEN_FILE } from '../protocol/index.js';
import { simSpecs } from './config.js';
import { ALL_FAULTS, DEFAULT_MIX, NO_FAULTS, type Faults } from './plan.js';
import { Progress, summaryText, type SimSummary } from './report.js';
import { Simulator } from './simulator.js';
import { compare, existingRows } from './verify.js';

const DRAIN_MS = 30_000; // without --verify: how long the end waits for the edges' PUBACKs

type Config = NonNullable<ReturnType<typeof configure<typeof simSpecs>>>;

function usageError(problems: string[]): void {
  process.stderr.write(`stockwire sim: invalid configuration\n${problems.map((p) => `  - ${p}`).join('\n')}\n`);
  process.exitCode = EXIT_USAGE;
}

function faultsOf(c: Config): Faults {
  const on = new Set(c.faults ?? []);
  const pick = <K extends keyof Faults>(k: K, name: string, given: number | undefined): Faults[K] =>
    (given ?? (on.has(name) ? ALL_FAULTS[k] : NO_FAULTS[k])) as Faults[K];
  return {
    duplicate: pick('duplicate', 'duplicate', c.duplicate),
    reorder: pick('reorder', 'reorder', c.reorder),
    skew: pick('skew', 'skew', c.skew),
    malformed: pick('malformed', 'malformed', c.malformed),
    disconnectEverySec: pick('disconnectEverySec', 'disconnect', c.disconnectEvery),
  };
}

/** Picks the devices to play: per warehouse the first N scanners and M shelf sensors of the credentials. */
function chooseDevices(
  creds: DemoCredential[],
  warehouses: string[],
  scanners: number | undefined,
  shelves: number | undefined,
): { devices: DemoCredential[]; problems: string[] } {
  const devices: DemoCredential[] = [];
  const problems: string[] = [];
  for (const wh of warehouses) {
    for (const [kind, wanted, flag] of [
      ['scanner', scanners, '--scanners'],
      ['shelf', shelves, '--shelves'],
    ] as const) {
      const have = creds.filter((c) => c.warehouse === wh && c.kind === kind);
      if (wanted !== undefined && have.length < wanted) {
        problems.push(
          `${flag} ${wanted}: the credentials hold only ${have.length} ${kind} device(s) of ${wh} (start the demo with ${flag} ${wanted}, or add devices)`,
        );
      }
      devices.push(...have.slice(0, wanted ?? have.length));
    }
  }
  if (problems.length === 0 && devices.length === 0)
    problems.push(`the credentials hold no scanner or shelf device of ${warehouses.join(', ')}`);
  return { devices, problems };
}

/** `stockwire sim`: simulated scanners and shelf sensors publishing to edges, with faults and --verify. */
export async function runSim(argv: string[]): Promise<void> {
  const c = configure(
    'sim',
    'Simulated scanners and shelf sensors publishing to warehouse edges, with fault injection and an end-to-end check (--verify).',
    simSpecs,
    argv,
  );
  if (!c) return;
  const log = createLogger('sim', c.logLevel);

  // Where to connect: flags, else the demo running on DATA_DIR.
  let demo: DemoEndpoints | null = null;
  const needDemo = c.edges === undefined || (c.verify && c.centralHttp === undefined);
  if (needDemo) {
    try {
      demo = await readEndpoints(c.dataDir);
    } catch (err) {
      const missing = [
        c.edges === undefined ? '--edges' : null,
        c.verify && c.centralHttp === undefined ? '--central-http' : null,
      ].filter(Boolean);
      return usageError([
        `${(err as Error).message}: start \`stockwire demo --data-dir ${c.dataDir}\`, or give ${missing.join(' and ')}`,
      ]);
    }
  }
  const host = demo?.host ?? '127.0.0.1';
  const edges =
    c.edges ?? Object.fromEntries(Object.entries(demo?.edges ?? {}).map(([wh, p]) => [wh, `mqtt://${host}:${p.mqtt}`]));
  const centralHttp = c.centralHttp ?? (demo ? `http://${host}:${demo.central.http}` : undefined);

  // Central's API reads need a token only when it sets API_READ_TOKEN; a demo's write token (which also reads) is in DATA_DIR.
  const apiToken =
    c.apiToken ??
    (await fs.readFile(path.join(c.dataDir, API_TOKEN_FILE), 'utf8').then(
      (t) => t.trim() || undefined,
      () => undefined,
    ));
  const problems: string[] = [];
  const warehouses = c.warehouses ?? Object.keys(edges);
  for (const wh of warehouses)
    if (edges[wh] === undefined)
      problems.push(`--warehouses: ${wh} has no edge (known: ${Object.keys(edges).join(', ') || 'none'})`);
  if (c.count !== undefined && c.duration !== undefined) problems.push('--count and --duration: give one of them');
  let creds: DemoCredential[] = [];
  const credsFile = c.credentials ?? path.join(c.dataDir, CREDENTIALS_FILE);
  try {
    creds = await readCredentials(credsFile);
  } catch (err) {
    problems.push(`--credentials: ${(err as Error).message}`);
  }
  const chosen =
    creds.length > 0
      ? chooseDevices(
          creds,
          warehouses.filter((wh) => edges[wh] !== undefined),
          c.scanners,
          c.shelves,
        )
      : { devices: [], problems: [] };
  problems.push(...chosen.problems);
  if (problems.length > 0) return usageError(problems);

  const runId = randomBytes(3).toString('hex');
  const seed = c.seed ?? randomInt(2 ** 31 - 1);
  const skuPrefix = c.skuPrefix ?? `sim-${runId}-`;
  const faults = faultsOf(c);
  let sim: Simulator;
  try {
    sim = new Simulator({
      edges,
      devices: chosen.devices,
      rate: c.rate,
      ...(c.count !== undefined && { count: c.count }),
      ...(c.duration !== undefined && { durationMs: c.duration * 1000 }),
      seed,
      runId,
      skuPrefix,
      skus: c.skus,
      mix: c.mix ?? DEFAULT_MIX,
      faults,
      toleranceMs: c.clockTolerance,
      trackCommits: c.verify,
      log,
    });
  } catch (err) {
    return usageError([(err as Error).message]);
  }

  if (c.verify) {
    // The ledger knows only this run's events: refuse skus that already have stock from anyone else.
    let taken: { wh: string; sku: string }[];
    try {
      taken = await existingRows(centralHttp as string, sim.rows(), apiToken);
    } catch (err) {
      process.stderr.write(`stockwire sim: ${(err as Error).message}\n`);
      process.exitCode = 1;
      return;
    }
    if (taken.length > 0) {
      const list = taken
        .slice(0, 5)
        .map((r) => `${r.wh}/${r.sku}`)
        .join(', ');
      return usageError([
        `--verify needs skus that only this run writes, but ${taken.length} already have stock at central (${list}${taken.length > 5 ? ', …' : ''}); leave --sku-prefix at its per-run default or pick a fresh one`,
      ]);
    }
  }

  const progress = new Progress(sim, process.stderr);
  process.stderr.write(
    `stockwire sim: run ${runId}, seed ${seed}, ${chosen.devices.length} devices in ${warehouses.join(', ')}, ${c.rate} events/s, skus ${skuPrefix}001…${String(c.skus).padStart(3, '0')}` +
      `${c.count !== undefined ? `, ${c.count} events` : c.duration !== undefined ? `, ${c.duration} s` : ', until Ctrl-C'}` +
      `${Object.entries(faults).some(([, v]) => v > 0) ? `, faults ${JSON.stringify(faults)}` : ''}\n`,
  );
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) process.exit(1); // a second Ctrl-C: give up at once
    interrupted = true;
    process.stderr.write('\nstockwire sim: stopping (Ctrl-C again to quit at once)\n');
    sim.stopGenerating();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const summary: SimSummary = {
    runId,
    seed,
    skuPrefix,
    warehouses,
    devices: chosen.devices.length,
    faults,
    elapsedMs: 0,
    stats: sim.snapshot(),
    verify: null,
    error: null,
  };
  try {
    await sim.start();
    progress.start();
    await sim.finished;
    summary.elapsedMs = sim.elapsedMs;
    await sim.drain(c.verify ? c.verifyTimeout * 1000 : DRAIN_MS);
    if (c.verify) {
      progress.phase('waiting for central to commit');
      const committed = await sim.waitCommitted(c.verifyTimeout * 1000);
      progress.phase('comparing stock');
      const expected = sim.ledger.expected();
      const differences = await compare(centralHttp as string, expected, committed ? 5_000 : 0, apiToken);
      summary.verify = {
        rows: expected.length,
        events: sim.ledger.events,
        committed,
        outstanding: sim.outstanding,
        differences,
        unexpectedRejections: sim.unexpectedRejections,
      };
    }
  } catch (err) {
    summary.error = (err as Error).message;
  } finally {
    progress.stop();
    await sim.close();
  }
  summary.stats = sim.snapshot();
  process.stdout.write(c.format === 'json' ? `${JSON.stringify(summary)}\n` : summaryText(summary));
  const v = summary.verify;
  const failed =
    summary.error !== null ||
    (v !== null && (!v.committed || v.differences.length > 0 || v.unexpectedRejections.length > 0));
  process.exitCode = failed ? 1 : 0;
  log.flush?.();
}
