import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository's root. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * The one list of test files that `npm test` runs a second time with TEST_DATABASE_URL on TimescaleDB, so that
 * their databases' `events` and `shelf_readings` are hypertables: every file whose SQL path could differ there.
 */
export const TIMESCALE_PASS: readonly string[] = [
  'test/cli.test.ts', // migrate and rebuild as a user runs them
  'test/processors/batch.test.ts',
  'test/processors/batch-link-model.test.ts',
  'test/processors/burst.test.ts',
  'test/processors/central-fuzz.test.ts',
  'test/processors/central.test.ts',
  'test/processors/id-reused.test.ts',
  'test/processors/mirror-sees-all.test.ts',
  'test/processors/pool.test.ts',
  'test/processors/processor.test.ts',
  'test/processors/redis.test.ts',
  'test/processors/replay.test.ts',
  'test/processors/reservation-model.test.ts',
  'test/processors/reservations-api.test.ts',
  'test/processors/reservations-mqtt.test.ts',
  'test/processors/reservations-publish.test.ts',
  'test/processors/reservations-stress.test.ts',
  'test/processors/scale-out.test.ts',
  'test/processors/schema.test.ts',
  'test/processors/transfers.test.ts',
  'test/faults/kill.test.ts',
  'test/faults/postgres.test.ts',
];

/**
 * Files that make a database but run on plain PostgreSQL only, each with why: the database is central's store
 * behind what they test (an edge, a link, a dashboard, a log), and the SQL they reach is covered above.
 */
export const PLAIN_ONLY: Readonly<Record<string, string>> = {
  'test/dashboards/dashboards.test.ts': 'metric names of a running central and edge',
  'test/dashboards/node-red.test.ts': 'Node-RED nodes against central',
  'test/dashboards/prometheus-e2e.test.ts': 'Prometheus scraping central and an edge',
  'test/device-sim/sim.test.ts': 'the simulator against a demo',
  'test/display/display.test.ts': 'the live display in a browser',
  'test/docs/api-docs.test.ts': 'API documents against a running central',
  'test/faults/batch-link.test.ts':
    "kill -9 on the batched edge↔central link and its Mosquitto fallback (the SQL is kill.test's and batch.test's)",
  'test/faults/link-cut.test.ts': 'the edge↔central link',
  'test/faults/link-quality.test.ts': 'the edge↔central link',
  'test/faults/outbox-full.test.ts': "the edge's outbox",
  'test/faults/redis.test.ts': 'the Redis read model',
  'test/faults/skew.test.ts': 'clocks at the devices, edge and central',
  'test/faults/storms.test.ts': 'duplicates through an edge (dedupe is covered by batch, central and kill above)',
  'test/gateway/edge.test.ts': 'the edge',
  'test/gateway/batch-link.test.ts': "the batched edge↔central link (its SQL is batch.test's stockwire_apply_batch)",
  'test/gateway/faults.test.ts': 'the edge',
  'test/gateway/flood.test.ts': 'the edge under a flooding device',
  'test/gateway/mirror-order.test.ts': "the edge's mirror",
  'test/gateway/mirror-reconnect.test.ts':
    "the edge's mirror across a cut link (retained values resent on resubscribe)",
  'test/security/api-token.test.ts': 'HTTP authentication',
  'test/security/log-secrets.test.ts': 'what the logs say',
  'test/security/tls.test.ts': 'TLS listeners',
  'test/processors/http-errors.test.ts': 'HTTP error answers of the API',
  'test/processors/lists.test.ts':
    'the HTTP lists read plain tables (stock, reservations, transfers), never the event log',
  'test/docs/api-conformance.test.ts': 'the HTTP API against its OpenAPI document',
  'test/docs/commands.test.ts': "the docs' shell commands against a demo",
  'test/gateway/last-values.test.ts': "the edge's saved last values across restarts",
  'test/gateway/outbox-quota.test.ts': "the edge's outbox quota and dead letters",
  'test/gateway/alerts-mirror.test.ts': "the edge's mirror of central's alerts",
  'test/security/abuse.test.ts': 'floods against an edge and central (it runs alone: SOLO)',
  'test/gateway/hostile-edge.test.ts': 'the edge under hostile devices',
  'test/processors/hostile-central.test.ts': "central's time rule for forwarded events (its SQL is batch.test's)",
  'test/processors/gateway-batch.test.ts':
    "central's side of the batched link: its events reach the database through batch.test's stockwire_apply_batch",
  // These choose their servers themselves and run on both in the first pass (TEST_SERVERS, TIMESCALE_URL).
  'test/dashboards/ledger.test.ts': 'runs on plain PostgreSQL and TimescaleDB itself',
  'test/processors/archive.test.ts': 'runs on plain PostgreSQL and TimescaleDB itself',
  'test/processors/migrate.test.ts': 'runs on plain PostgreSQL and TimescaleDB itself',
  'test/processors/movements.test.ts': 'runs on plain PostgreSQL and TimescaleDB itself',
  'test/processors/storage.test.ts': 'runs on plain PostgreSQL, TimescaleDB and an unpreloaded TimescaleDB itself',
  'test/processors/timescale.test.ts': 'TimescaleDB itself (TIMESCALE_URL), whatever the pass',
  'test/faults/timescale-crash.test.ts': 'a private TimescaleDB cluster of its own, crashed and restarted',
};

/**
 * Files whose bounds are about the machine's load (latency and memory under a flood): they run after the first
 * pass, with nothing beside them, so what they measure is their own processes and not another file's.
 */
export const SOLO: readonly string[] = ['test/security/abuse.test.ts'];

/** What marks a test file as one that makes a database of its own (directly or through a fixture). */
export const MAKES_A_DATABASE =
  /\b(createTestDatabase|createDatabaseOn|createTimescaleDatabase|scenarioDatabase|startCentralFixture|startCentralWithData|exportedMetrics)\(|\bTEST_SERVERS\b/;

/** Every test file `npm test` runs: test/*.test.ts and test/*\/*.test.ts, relative to the root, sorted. */
export function allTestFiles(root = ROOT): string[] {
  const inDir = (rel: string) =>
    fs
      .readdirSync(path.join(root, rel), { withFileTypes: true })
      .filter((e) => e.isFile() && e.name.endsWith('.test.ts'))
      .map((e) => `${rel}/${e.name}`);
  const dirs = fs
    .readdirSync(path.join(root, 'test'), { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => `test/${e.name}`);
  return [...inDir('test'), ...dirs.flatMap(inDir)].sort();
}

export interface Pass {
  name: string;
  /** test files at a time; default CONCURRENCY (pass.ts) */
  concurrency?: number;
  /** the database server's admin URL, as TEST_DATABASE_URL */
  databaseUrl: string;
  files: string[];
}

/**
 * The passes over `files`: all of them on the plain PostgreSQL, then those of TIMESCALE_PASS on TimescaleDB
 * (none when `timescaleUrl` is null: the user opted out).
 */
export function planPasses(files: string[], plainUrl: string, timescaleUrl: string | null): Pass[] {
  const together = files.filter((f) => !SOLO.includes(f));
  const alone = files.filter((f) => SOLO.includes(f));
  const passes: Pass[] = together.length > 0 ? [{ name: 'PostgreSQL', databaseUrl: plainUrl, files: together }] : [];
  if (alone.length > 0)
    passes.push({ name: 'PostgreSQL, one file at a time', databaseUrl: plainUrl, files: alone, concurrency: 1 });
  const second = files.filter((f) => TIMESCALE_PASS.includes(f));
  if (timescaleUrl !== null && second.length > 0)
    passes.push({ name: 'TimescaleDB', databaseUrl: timescaleUrl, files: second });
  return passes;
}

/**
 * `npm run test:unit`: the tier that needs no service (no PostgreSQL, Redis, Mosquitto, browser or process of
 * ours; in-process brokers on loopback are fine) and runs in seconds. test/unit.ts runs it with every service URL
 * pointing at a closed port, so a file that reaches a service fails there instead of quietly joining the tier.
 * A file is in the tier by its name: `*.unit.test.ts`; every other test file is an integration test.
 */
export const UNIT_SUFFIX = '.unit.test.ts';
export const UNIT: readonly string[] = allTestFiles().filter((f) => f.endsWith(UNIT_SUFFIX));
