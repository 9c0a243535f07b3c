import { createLogger } from '../runtime/logger.js';
import { configure, serve, usageError } from '../runtime/run.js';
import { loadCentralTls, loadListenerTls, reloadTlsOnSighup } from '../runtime/tls.js';
import { deviceLimitConfigProblems, deviceLimitsOf } from '../broker/index.js';
import { registerDisplay } from '../dashboards/display/serve.js';
import { DEFAULT_DEVICE_SHARE, deviceShareBytes, edgeSpecs } from './config.js';
import { Edge } from './edge.js';

export async function runEdge(argv: string[]): Promise<void> {
  const c = configure(
    'edge',
    'One warehouse: its Aedes broker for devices, the durable outbox and the bridge to central.',
    edgeSpecs,
    argv,
  );
  if (!c) return;
  const problems: string[] = deviceLimitConfigProblems(c);
  const share = deviceShareBytes(c.outboxDeviceShare ?? DEFAULT_DEVICE_SHARE, c.outboxMaxBytes).problem;
  if (share !== null) problems.push(share);
  const tls = await loadListenerTls(c, problems);
  const centralTls = await loadCentralTls(c, problems);
  if (problems.length > 0) return usageError('edge', problems);
  const log = createLogger('edge', c.logLevel).child({ wh: c.wh });
  const edge = new Edge({
    ...c,
    tls,
    centralTls,
    limits: deviceLimitsOf(c),
    log,
    onFatal: () => {
      log.flush?.();
      process.exit(1);
    },
    httpRoutes: (app, ports) => registerDisplay(app, { scope: { role: 'edge', warehouse: c.wh }, wsPort: ports.ws }),
  });
  // Rotated certificate files (the device listener's, and this edge's for central) are taken on SIGHUP, without a restart.
  if (tls !== undefined || centralTls !== undefined) {
    reloadTlsOnSighup(
      log,
      async (p) => ({ listener: await loadListenerTls(c, p), central: await loadCentralTls(c, p) }),
      (fresh) =>
        edge.reloadTls({
          ...(fresh.listener && { listener: fresh.listener }),
          ...(fresh.central && { central: fresh.central }),
        }),
    );
  }
  await serve(
    log,
    () => edge.start(),
    () => edge.stop(),
  );
}
