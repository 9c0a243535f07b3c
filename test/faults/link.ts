import type pg from 'pg';
import { waitApplied } from '../helpers/exactly-once.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import type { TestDatabase } from '../helpers/db.js';
import { workload } from '../helpers/workload.js';
import { atProgress, metric, Proc, stuckDetail, until, warehouse, within } from './cluster.js';
import { assertOutcome, measure, type Outcome } from './outcome.js';

export interface LinkScenario {
  name: string;
  faults: string;
  total: number;
  seed: number;
  /** fractions of the events committed at central at which `fault` runs */
  at: number[];
  /** injects the fault through the proxy between the edge and central (and usually lifts it); `linkUp` asks the edge */
  fault: (proxy: TcpProxy, i: number, linkUp: () => Promise<boolean>) => Promise<void>;
}

/**
 * Devices publish to an edge whose only way to central is a TCP proxy; the scenario's fault hits that
 * proxy at the given moments. Returns the outcome (already asserted) and the edge's link counters.
 */
export async function runLinkScenario(
  db: TestDatabase,
  pool: pg.Pool,
  s: LinkScenario,
): Promise<{ outcome: Outcome; linkDowns: number; resends: number; proxy: TcpProxy }> {
  const startedAt = Date.now();
  const w = await warehouse('LK');
  const { events, expected } = workload(w.wh, s.total, s.seed, { devices: w.scanners.length });
  const env = { DATABASE_URL: db.url };
  const central = new Proc('central', () => w.centralArgs(), env);
  await central.start();
  const proxy = new TcpProxy(w.centralPort);
  const proxyPort = await proxy.start();
  const edge = new Proc('edge', () => w.edgeArgs(`mqtt://127.0.0.1:${proxyPort}`), env);
  await edge.start();
  const devices = w.devices();
  const inbox = async () =>
    (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM inbox WHERE wh = $1', [w.wh])).rows[0]?.n ?? 0;
  // Each fault waits for the edge to be connected again: a fault on a link that is already down proves nothing.
  const chaos = atProgress(
    inbox,
    s.at.map((f) => f * s.total),
    async (i) => {
      await until(
        async () => (await metric(edge.current, 'stockwire_edge_link_up')) === 1,
        30_000,
        'the edge connected to central',
      );
      await s.fault(proxy, i, async () => (await metric(edge.current, 'stockwire_edge_link_up')) === 1);
    },
  );
  try {
    await within(
      120_000,
      'devices publishing to the edge',
      Promise.race([devices.run(events), chaos.failed]),
      stuckDetail(devices, edge),
    );
    await until(() => chaos.done >= s.at.length, 90_000, 'the link faults');
    await chaos.stop();
    proxy.restore();
    await waitApplied(pool, w.wh, s.total, 60_000).catch((err: Error) => {
      throw new Error(`${err.message}\nedge log:\n${edge.logTail()}`);
    });
    const linkDowns = await metric(edge.current, 'stockwire_edge_link_changes_total', { state: 'down' });
    const resends = await metric(edge.current, 'stockwire_edge_events_sent_total', { attempt: 'resend' });
    const outcome = await measure({
      pool,
      databaseUrl: db.url,
      wh: w.wh,
      expected,
      sent: s.total,
      deliveries: devices.publishes,
      centralHttp: `http://127.0.0.1:${central.ports.http}`,
      scenario: s.name,
      faults: proxy.resets > 0 ? `${s.faults} (${proxy.resets} connections reset)` : s.faults,
      injected: Math.max(chaos.done, proxy.resets),
      startedAt,
    });
    assertOutcome(outcome);
    return { outcome, linkDowns, resends, proxy };
  } finally {
    await chaos.stop().catch(() => {});
    proxy.restore();
    await devices.close();
    await edge.stop();
    await central.stop();
    await proxy.stop();
  }
}
