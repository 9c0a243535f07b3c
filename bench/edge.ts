import fs from 'node:fs/promises';
import path from 'node:path';
import { createTestDatabase } from '../test/helpers/db.js';
import { writeDevices } from '../test/helpers/devices.js';
import { freePort, startStockwire, type Running } from '../test/helpers/process.js';
import { PubackDevices } from '../test/helpers/puback-devices.js';
import { workload } from '../test/helpers/workload.js';
import { metric, metricsOnce, record, rssMiB } from './lib.js';

/**
 * Issue 2/7: device→edge accept rate with fsync-per-group durability, edge memory with the backlog
 * on disk, and the drain of that backlog into central once central is reachable.
 */
const EVENTS = Number(process.env.BENCH_EDGE_EVENTS ?? 100_000);
const DEVICES = Number(process.env.BENCH_EDGE_DEVICES ?? 50);

const SETTLE_MS = 30_000; // ms without traffic before the second memory reading

export async function benchEdge(): Promise<void> {
  const wh = 'BE1';
  const db = await createTestDatabase('bench_edge');
  const scanners = Array.from({ length: DEVICES }, (_, i) => ({
    id: `dev-${i}`,
    warehouse: wh,
    kind: 'scanner' as const,
    password: `pw-dev-${i}-bench`,
  }));
  const files = await writeDevices([
    ...scanners,
    { id: 'gw-be1', warehouse: wh, kind: 'gateway', password: 'pw-gw-bench' },
  ]);
  const centralPort = await freePort();
  const edgePort = await freePort();
  const { events } = workload(wh, EVENTS, 5, { devices: DEVICES, skus: 1000 });
  const env = { DATABASE_URL: db.url };
  let edge: Running | null = null;
  let central: Running | null = null;
  const rows: string[] = [];
  try {
    edge = await startStockwire(
      [
        'edge',
        '--warehouse',
        wh,
        '--devices-file',
        files.file,
        '--data-dir',
        path.join(files.dir, 'edge'),
        '--mqtt-port',
        String(edgePort),
        '--ws-port',
        '0',
        '--http-port',
        '0',
        '--host',
        '127.0.0.1',
        '--central-url',
        `mqtt://127.0.0.1:${centralPort}`,
        '--central-username',
        'gw-be1',
        '--central-password',
        'pw-gw-bench',
        '--log-level',
        'error',
        // each bench device sends thousands of events as fast as the edge takes them: far above a scanner's default rate
        '--device-publish-rate',
        '1000000',
        '--device-publish-burst',
        '1000000',
      ],
      env,
    );
    const rssIdle = await rssMiB(edge.child.pid as number);
    const devices = new PubackDevices(`mqtt://127.0.0.1:${edgePort}`, wh, scanners, { window: 50 });
    process.stderr.write(`[bench] edge: ${EVENTS} events from ${DEVICES} devices, central unreachable\n`);
    await metricsOnce(edge.ports.http as number, []); // resets the event-loop lag histogram: what follows covers the burst
    const t0 = performance.now();
    await devices.run(events);
    const acceptSeconds = (performance.now() - t0) / 1000;
    const [lagP99, lagMax] = await metricsOnce(edge.ports.http as number, [
      'nodejs_eventloop_lag_p99_seconds',
      'nodejs_eventloop_lag_max_seconds',
    ]);
    await devices.close();
    const backlog = await metric(edge.ports.http as number, 'stockwire_edge_backlog_events');
    const rssBacklog = await rssMiB(edge.child.pid as number);
    const heapBacklog = (await metric(edge.ports.http as number, 'nodejs_heap_size_used_bytes')) / 2 ** 20;
    // Again once the burst's garbage is collected: V8 shrinks its heap some seconds after allocation stops.
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const rssSettled = await rssMiB(edge.child.pid as number);
    const heapSettled = (await metric(edge.ports.http as number, 'nodejs_heap_size_used_bytes')) / 2 ** 20;
    rows.push(
      `| device → edge accept rate (PUBACK after the group's fsync), ${DEVICES} devices × 50 in flight | ${Math.round(EVENTS / acceptSeconds).toLocaleString('en')} events/s | ≥ 15,000 | ${EVENTS.toLocaleString('en')} in ${acceptSeconds.toFixed(1)} s |`,
    );
    rows.push(
      `| edge event-loop delay during that burst, p99 / max | ${((lagP99 as number) * 1000).toFixed(1)} / ${((lagMax as number) * 1000).toFixed(1)} ms | – | perf_hooks monitorEventLoopDelay, via prom-client |`,
    );
    rows.push(
      `| edge RSS with ${backlog.toLocaleString('en')} events backlogged, right after the burst (idle before: ${rssIdle.toFixed(0)} MiB) | ${rssBacklog.toFixed(0)} MiB (JS heap used ${heapBacklog.toFixed(0)} MiB) | < 200 MB | /proc/PID/status VmRSS |`,
    );
    rows.push(
      `| edge RSS with the same backlog ${SETTLE_MS / 1000} s later | ${rssSettled.toFixed(0)} MiB (JS heap used ${heapSettled.toFixed(0)} MiB) | < 200 MB | /proc/PID/status VmRSS |`,
    );

    process.stderr.write('[bench] edge: central starts, backlog drains\n');
    central = await startStockwire(
      [
        'central',
        '--mqtt-port',
        String(centralPort),
        '--ws-port',
        '0',
        '--http-port',
        '0',
        '--host',
        '127.0.0.1',
        '--devices-file',
        files.file,
        '--data-dir',
        files.dir,
        '--log-level',
        'error',
      ],
      env,
    );
    // The drain starts when the edge's forwarder reconnects (its retry period is 1 s).
    while ((await metric(edge.ports.http as number, 'stockwire_edge_link_up')) !== 1)
      await new Promise((r) => setTimeout(r, 20));
    const t1 = performance.now();
    let left = backlog;
    while (left > 0 && performance.now() - t1 < 60_000) {
      await new Promise((r) => setTimeout(r, 100));
      left = await metric(edge.ports.http as number, 'stockwire_edge_backlog_events');
    }
    const drainSeconds = (performance.now() - t1) / 1000;
    if (left > 0)
      process.stderr.write(
        `[bench] drain stalled with ${left} left; central said:\n${central.logs.slice(-8).join('\n')}\nedge said:\n${edge.logs.slice(-8).join('\n')}\n`,
      );
    rows.push(
      `| backlog drain into central (commit-acked), from the edge's reconnect | ${left === 0 ? Math.round(backlog / drainSeconds).toLocaleString('en') : 'did not finish'} events/s | ≥ 25,000 (issue 17) | ${backlog.toLocaleString('en')} in ${drainSeconds.toFixed(1)} s, |`,
    );
  } finally {
    edge?.child.kill('SIGTERM');
    central?.child.kill('SIGTERM');
    await edge?.exited;
    await central?.exited;
    await db.drop();
    await fs.rm(files.dir, { recursive: true, force: true });
  }
  record('Edge (issue 2/7)', 'npm run bench -- edge', [
    "All processes on this machine's 2 cores.",
    '',
    '| measure | result | target | run |',
    '| --- | --- | --- | --- |',
    ...rows,
  ]);
}
