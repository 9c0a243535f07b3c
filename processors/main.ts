import { createLogger } from '../cli/logger.js';
import { configure, serve } from '../cli/run.js';
import { Central } from './central.js';
import { centralSpecs, migrateSpecs, processorSpecs, rebuildSpecs } from './config.js';
import { openDatabase } from './db/open.js';
import { StandaloneProcessor } from './processor.js';
import { rebuild } from './rebuild.js';

export async function runCentral(argv: string[]): Promise<void> {
  const c = configure('central', 'The central MQTT broker, the stock processor and the HTTP API, in one process.', centralSpecs, argv);
  if (!c) return;
  const log = createLogger('central', c.logLevel);
  const central = new Central({ ...c, log });
  await serve(log, () => central.start() as unknown as Promise<Record<string, number>>, () => central.stop());
}

export async function runProcessor(argv: string[]): Promise<void> {
  const c = configure('processor', 'The stock processor alone, as an MQTT client of any central broker (scale-out).', processorSpecs, argv);
  if (!c) return;
  const log = createLogger('processor', c.logLevel);
  const processor = new StandaloneProcessor({ ...c, username: c.centralUsername, password: c.centralPassword, log });
  await serve(log, () => processor.start(), () => processor.stop());
}

export async function runMigrate(argv: string[]): Promise<void> {
  const c = configure('migrate', 'Create or upgrade the database schema, then exit.', migrateSpecs, argv);
  if (!c) return;
  const log = createLogger('migrate', c.logLevel);
  const db = await openDatabase({ databaseUrl: c.databaseUrl, dataDir: c.dataDir, log, poolSize: 2 });
  process.stdout.write(`${JSON.stringify({ migrated: true, version: db.schema.version, timescale: db.schema.timescale })}\n`);
  await db.close();
}

export async function runRebuild(argv: string[]): Promise<void> {
  const c = configure('rebuild', 'Recompute stock from the event log, check reserved against the reservations; report drift; exit 1 on drift.', rebuildSpecs, argv);
  if (!c) return;
  const log = createLogger('rebuild', c.logLevel);
  const db = await openDatabase({ databaseUrl: c.databaseUrl, dataDir: c.dataDir, log, poolSize: 2 });
  try {
    const report = await rebuild(db.pool);
    if (c.format === 'json') process.stdout.write(`${JSON.stringify(report)}\n`);
    else {
      const bad = report.drift.length + report.reservedDrift.length;
      process.stdout.write(`checked ${report.rows} stock rows: ${bad === 0 ? 'no drift' : `${bad} drifted`}\n`);
      for (const d of report.drift) process.stdout.write(`  ${d.wh} ${d.sku}: stored ${d.stored ?? 'none'}, recomputed ${d.recomputed}\n`);
      for (const d of report.reservedDrift) process.stdout.write(`  ${d.wh} ${d.sku}: reserved ${d.stored}, active reservations hold ${d.held}\n`);
    }
    process.exitCode = report.drift.length === 0 && report.reservedDrift.length === 0 ? 0 : 1;
  } finally {
    await db.close();
  }
}
