import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';
import { createLogger } from '../runtime/logger.js';
import { registerDisplay } from '../dashboards/display/serve.js';
import { configure, EXIT_USAGE, serve, usageError } from '../runtime/run.js';
import { loadCentralTls, loadListenerTls, reloadTlsOnSighup } from '../runtime/tls.js';
import { deviceLimitConfigProblems, deviceLimitsOf } from '../broker/index.js';
import { Central } from './central.js';
import { centralSpecs, migrateSpecs, processorSpecs, rebuildSpecs, replaySpecs } from './config.js';
import { openDatabase, type Database, type StorageSettings } from './db/open.js';
import type { Logger } from 'pino';
import { StandaloneProcessor } from './processor.js';
import { rebuild } from './rebuild.js';
import { replay } from './replay.js';
import { waitAtMost } from '../runtime/wait.js';

export async function runCentral(argv: string[]): Promise<void> {
  const c = configure(
    'central',
    'The central MQTT broker, the stock processor and the HTTP API, in one process.',
    centralSpecs,
    argv,
  );
  if (!c) return;
  const problems: string[] = deviceLimitConfigProblems(c);
  const tls = await loadListenerTls(c, problems);
  if (problems.length > 0) return usageError('central', problems);
  const log = createLogger('central', c.logLevel);
  const central = new Central({
    ...c,
    tls,
    limits: deviceLimitsOf(c),
    log,
    httpRoutes: (app, ports) => registerDisplay(app, { scope: { role: 'central' }, wsPort: ports.ws }),
  });
  // Rotated certificate files are taken on SIGHUP, without a restart.
  if (tls !== undefined)
    reloadTlsOnSighup(
      log,
      (p) => loadListenerTls(c, p),
      (fresh) => fresh !== undefined && central.reloadTls(fresh),
    );
  await serve(
    log,
    () => central.start(),
    () => central.stop(),
  );
}

export async function runProcessor(argv: string[]): Promise<void> {
  const c = configure(
    'processor',
    'The stock processor alone, as an MQTT client of any central broker (scale-out).',
    processorSpecs,
    argv,
  );
  if (!c) return;
  const problems: string[] = [];
  const centralTls = await loadCentralTls(c, problems);
  if (problems.length > 0) return usageError('processor', problems);
  const log = createLogger('processor', c.logLevel);
  const processor = new StandaloneProcessor({
    ...c,
    username: c.centralUsername,
    password: c.centralPassword,
    centralTls,
    log,
  });
  if (centralTls !== undefined)
    reloadTlsOnSighup(
      log,
      (p) => loadCentralTls(c, p),
      (fresh) => fresh !== undefined && processor.reloadTls(fresh),
    );
  await serve(
    log,
    () => processor.start(),
    () => processor.stop(),
  );
}

/**
 * A one-shot command on the database. SIGINT or SIGTERM closes it, stopping the embedded server this process
 * started (it runs detached, so it would outlive the command), and exits 130 or 143 as an interrupted command does.
 */
async function onDatabase(
  c: StorageSettings & { databaseUrl?: string; dataDir: string },
  log: Logger,
  work: (db: Database) => Promise<void>,
): Promise<void> {
  let db: Database | undefined;
  let signalled: NodeJS.Signals | undefined;
  const exit = (signal: NodeJS.Signals) => process.exit(signal === 'SIGINT' ? 130 : 143);
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled !== undefined) return;
    signalled = signal;
    log.warn({ signal }, 'interrupted; closing the database');
    if (db !== undefined) void db.abort().finally(() => exit(signal));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    db = await openDatabase({ ...c, log, poolSize: 2 });
    if (signalled !== undefined) {
      await db.close();
      exit(signalled);
    }
    await work(db);
  } finally {
    if (signalled === undefined) {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      await db?.close();
    }
  }
}

export async function runMigrate(argv: string[]): Promise<void> {
  const c = configure('migrate', 'Create or upgrade the database schema, then exit.', migrateSpecs, argv);
  if (!c) return;
  const log = createLogger('migrate', c.logLevel);
  await onDatabase(c, log, async (db) => {
    process.stdout.write(
      `${JSON.stringify({ migrated: true, version: db.schema.version, timescale: db.schema.timescale, storage: db.schema.storage.kind })}\n`,
    );
  });
}

export async function runRebuild(argv: string[]): Promise<void> {
  const c = configure(
    'rebuild',
    'Recompute stock from the event log, check reserved against the reservations; report drift; exit 1 on drift.',
    rebuildSpecs,
    argv,
  );
  if (!c) return;
  const log = createLogger('rebuild', c.logLevel);
  await onDatabase(c, log, async (db) => {
    const report = await rebuild(db.pool);
    if (c.format === 'json') process.stdout.write(`${JSON.stringify(report)}\n`);
    else {
      const bad = report.drift.length + report.reservedDrift.length;
      process.stdout.write(`checked ${report.rows} stock rows: ${bad === 0 ? 'no drift' : `${bad} drifted`}\n`);
      for (const d of report.drift)
        process.stdout.write(`  ${d.wh} ${d.sku}: stored ${d.stored ?? 'none'}, recomputed ${d.recomputed}\n`);
      for (const d of report.reservedDrift)
        process.stdout.write(`  ${d.wh} ${d.sku}: reserved ${d.stored}, active reservations hold ${d.held}\n`);
    }
    process.exitCode = report.drift.length === 0 && report.reservedDrift.length === 0 ? 0 : 1;
  });
}

export async function runReplay(argv: string[]): Promise<void> {
  const c = configure(
    'replay',
    'Republish the events of a time range of the event log to a broker, in ledger order, for downstream consumers; then exit.',
    replaySpecs,
    argv,
  );
  if (!c) return;
  if (c.to <= c.from) {
    process.stderr.write('stockwire replay: invalid configuration\n  - --to must be after --from\n');
    process.exitCode = EXIT_USAGE;
    return;
  }
  const log = createLogger('replay', c.logLevel);
  // A signal stops the replay after what was sent is acknowledged; the report says where it stopped.
  const stop = new AbortController();
  const onSignal = (signal: string) => {
    log.info({ signal }, 'stopping');
    stop.abort();
  };
  process.once('SIGTERM', onSignal).once('SIGINT', onSignal);
  // Until the report is out this is a failure: a run that ends any other way (even by an empty event loop) exits 1.
  process.exitCode = 1;
  const db = await openDatabase({ ...c, log, poolSize: 2, applicationName: 'stockwire-replay' });
  let client: mqtt.MqttClient | null = null;
  try {
    client = await mqtt.connectAsync(c.centralUrl, {
      clientId: `${c.centralUsername ?? 'stockwire'}-replay-${randomBytes(4).toString('hex')}`,
      ...(c.centralUsername !== undefined && { username: c.centralUsername }),
      ...(c.centralPassword !== undefined && { password: c.centralPassword }),
      reconnectPeriod: 0, // a batch job: a lost connection fails the run instead of retrying behind its back
      connectTimeout: 10_000, // ms
    });
    const report = await replay({
      pool: db.pool,
      client,
      log,
      from: c.from,
      to: c.to,
      topic: c.topic,
      warehouses: c.warehouses,
      qos: c.qos,
      rate: c.rate,
      signal: stop.signal,
    });
    process.stdout.write(`${JSON.stringify(report)}\n`);
    process.exitCode = 0;
  } finally {
    // Every publish was acknowledged or has failed: nothing is left to flush, and a closed link never drains.
    if (client) await waitAtMost(client.endAsync(true), 2_000);
    await db.close();
  }
}
