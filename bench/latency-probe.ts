import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startStockwire, type Running } from '../test/helpers/process.js';
import { Fleet } from './fleet.js';
import { linksUp, onCleanup, progress, stopProcess, writeFleetDevices } from './lib.js';
import { benchTargets, createTargetDatabase } from './targets.js';

const RATE = Number(process.env.P_RATE ?? 2000);
const SECONDS = Number(process.env.P_SECONDS ?? 15);
const EDGES = Number(process.env.P_EDGES ?? 2);
const DEVICES = 200;
const PASSWORD = 'probe-password-x';

async function scrape(port: number, prefix: RegExp): Promise<string[]> {
  const t = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return t.split('\n').filter((l) => prefix.test(l) && !l.startsWith('#'));
}

async function main(): Promise<void> {
  const target = (await benchTargets())[0]!;
  const db = await createTargetDatabase(target, 'probe');
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'probe-'));
  const whs = Array.from({ length: EDGES }, (_, i) => `P${i + 1}`);
  const scanners = Array.from({ length: DEVICES }, (_, i) => ({ id: `dev-${i}`, warehouse: whs[i % EDGES]!, kind: 'scanner' as const, password: PASSWORD }));
  const file = path.join(dir, 'devices.json');
  await writeFleetDevices(file, [...scanners, ...whs.map((wh) => ({ id: `gw-${wh}`, warehouse: wh, kind: 'gateway' as const, password: PASSWORD }))]);
  const listen = ['--mqtt-port', '0', '--ws-port', '0', '--http-port', '0', '--host', '127.0.0.1', '--log-level', 'warn'];
  const central = await startStockwire(['central', ...listen, '--devices-file', file, '--data-dir', path.join(dir, 'c')], { DATABASE_URL: db.url, ...(process.env.P_CENTRAL_ENV ? JSON.parse(process.env.P_CENTRAL_ENV) : {}) });
  const edges: Running[] = [];
  onCleanup(async () => { for (const e of edges) await stopProcess(e); await stopProcess(central); await db.drop(); });
  for (const wh of whs) edges.push(await startStockwire(['edge', ...listen, '--warehouse', wh, '--devices-file', file, '--data-dir', path.join(dir, wh), '--central-url', `mqtt://127.0.0.1:${central.ports.mqtt}`, '--central-username', `gw-${wh}`, '--central-password', PASSWORD, '--address-connect-limit', '1000000', '--device-publish-rate', '1000000', '--device-publish-burst', '1000000']));
  await linksUp(edges);
  const fleet = new Fleet(scanners.map((s, i) => ({ wh: s.warehouse, id: s.id, host: '127.0.0.1', port: edges[i % EDGES]!.ports.mqtt as number, password: PASSWORD })));
  await fleet.connect({ concurrency: 8, subscribeAcks: true });
  await fleet.run({ events: 4000, window: 10, rate: 1000, until: 'ack', skus: 1000, prefix: 'warm' });
  for (const p of [central, ...edges]) await scrape(p.ports.http as number, /^x/);
  const r = await fleet.run({ events: RATE * SECONDS, window: 10, rate: RATE, until: 'ack', skus: 1000, prefix: 'fixed' });
  console.log(`rate ${RATE}: puback p50/p99/max ${r.puback.p50.toFixed(1)}/${r.puback.p99.toFixed(1)}/${r.puback.max.toFixed(1)}  ack ${r.ack.p50.toFixed(1)}/${r.ack.p99.toFixed(1)}/${r.ack.max.toFixed(1)}`);
  const re = /^(nodejs_eventloop_lag_(p50|p99|max)_seconds|nodejs_gc_duration_seconds_(sum|count)|stockwire_commit_seconds_(sum|count)|stockwire_batch_size_(sum|count)|stockwire_ingest_lag_seconds_(sum|count)|stockwire_edge_batch_events_(sum|count))/;
  console.log('central', (await scrape(central.ports.http as number, re)).join('\n  '));
  for (const e of edges) console.log('edge', (await scrape(e.ports.http as number, re)).join('\n  '));
  await fleet.close();
}
main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
