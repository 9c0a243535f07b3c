import fs from 'node:fs/promises';
import path from 'node:path';
import pino from 'pino';
import type { Registry } from 'prom-client';
import { Edge } from '../../gateway/edge.js';
import { Central } from '../../processors/central.js';
import { createTestDatabase } from './db.js';
import { writeDevices } from './devices.js';

/** One series name a scrape can hold (a histogram gives three: _bucket, _sum, _count) and its label names. */
export type Catalogue = Map<string, Set<string>>;

function add(catalogue: Catalogue, name: string, labels: Iterable<string>): void {
  const set = catalogue.get(name) ?? new Set<string>();
  for (const l of labels) set.add(l);
  catalogue.set(name, set);
}

/** The series names a metric family of `type` exposes (Prometheus text format 0.0.4). */
function seriesOf(name: string, type: string): { name: string; extra: string[] }[] {
  if (type === 'histogram')
    return [
      { name: `${name}_bucket`, extra: ['le'] },
      { name: `${name}_sum`, extra: [] },
      { name: `${name}_count`, extra: [] },
    ];
  if (type === 'summary')
    return [
      { name, extra: ['quantile'] },
      { name: `${name}_sum`, extra: [] },
      { name: `${name}_count`, extra: [] },
    ];
  return [{ name, extra: [] }];
}

/**
 * Reads a /metrics answer: every `# TYPE` family with its series names, and the label names of its
 * samples. Labels carried by every sample (registry default labels, such as the edge's `wh`) are
 * given to every family, including those without samples yet. `registry`, when given, adds the
 * declared label names of metrics that have no samples yet (a labelled counter never incremented).
 */
export function parseExposition(text: string, registry?: Registry): Catalogue {
  const catalogue: Catalogue = new Map();
  const families = new Map<string, string>(); // family → type
  let common: Set<string> | null = null;
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) {
      families.set(type[1] as string, type[2] as string);
      for (const s of seriesOf(type[1] as string, type[2] as string)) add(catalogue, s.name, s.extra);
      continue;
    }
    if (line === '' || line.startsWith('#')) continue;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+/.exec(line);
    if (!sample) throw new Error(`not a sample line: ${line}`);
    const labels = [...(sample[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)].map((m) => m[1] as string);
    if (!catalogue.has(sample[1] as string)) throw new Error(`sample of an undeclared family: ${line}`);
    add(catalogue, sample[1] as string, labels);
    common = common === null ? new Set(labels) : new Set(labels.filter((l) => common?.has(l)));
  }
  for (const metric of registry?.getMetricsAsArray() ?? []) {
    const m = metric as unknown as { name: string; type: string; labelNames: string[] };
    for (const s of seriesOf(m.name, m.type)) add(catalogue, s.name, m.labelNames);
  }
  for (const labels of catalogue.values()) for (const l of common ?? []) labels.add(l);
  return catalogue;
}

export function mergeCatalogues(...catalogues: Catalogue[]): Catalogue {
  const out: Catalogue = new Map();
  for (const c of catalogues) for (const [name, labels] of c) add(out, name, labels);
  return out;
}

/**
 * What the code exports, read the way Prometheus reads it: starts a central and an edge in this
 * process (central's ingest and broker metrics, the edge's outbox, forwarder and broker metrics,
 * both processes' default metrics), scrapes their /metrics over HTTP and stops them.
 */
export async function exportedMetrics(): Promise<Catalogue> {
  const db = await createTestDatabase('metrics');
  const devices = await writeDevices([{ id: 'gw-m', warehouse: 'WM', kind: 'gateway', password: 'pw-gateway-m' }]);
  const log = pino({ level: 'silent' });
  const central = new Central({
    databaseUrl: db.url,
    redisPrefix: 'x',
    dataDir: devices.dir,
    devicesFile: devices.file,
    host: '127.0.0.1',
    mqttPort: 0,
    wsPort: 0,
    httpPort: 0,
    batchMax: 100,
    batchWaitMs: 5,
    log,
  });
  let edge: Edge | null = null;
  try {
    const c = await central.start();
    edge = new Edge({
      wh: 'WM',
      devicesFile: devices.file,
      dataDir: path.join(devices.dir, 'edge'),
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: 0,
      httpPort: 0,
      centralUrl: `mqtt://127.0.0.1:${c.mqtt}`,
      centralUsername: 'gw-m',
      centralPassword: 'pw-gateway-m',
      outboxMaxBytes: 1024 ** 2,
      forwardWindow: 100,
      resendAfterMs: 1_000,
      keepalive: 5,
      log,
    });
    const e = await edge.start();
    const scrape = async (port: number) => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    return mergeCatalogues(
      parseExposition(await scrape(c.http), central.registry),
      parseExposition(await scrape(e.http), edge.registry),
    );
  } finally {
    await edge?.stop().catch(() => {});
    await central.stop().catch(() => {});
    await db.drop();
    await fs.rm(devices.dir, { recursive: true, force: true });
  }
}
