import fs from 'node:fs/promises';
import { createLogger } from '../cli/logger.js';
import { configure, serve, EXIT_USAGE } from '../cli/run.js';
import { registerDisplay } from '../dashboards/display/serve.js';
import { edgeSpecs } from './config.js';
import { Edge } from './edge.js';

export async function runEdge(argv: string[]): Promise<void> {
  const c = configure('edge', 'One warehouse: its Aedes broker for devices, the durable outbox and the bridge to central.', edgeSpecs, argv);
  if (!c) return;
  if ((c.tlsPort !== undefined) !== (c.tlsCert !== undefined && c.tlsKey !== undefined)) {
    process.stderr.write('stockwire edge: invalid configuration\n  - --tls-port, --tls-cert and --tls-key go together\n');
    process.exitCode = EXIT_USAGE;
    return;
  }
  const log = createLogger('edge', c.logLevel).child({ wh: c.wh });
  const edge = new Edge({
    ...c,
    tls: c.tlsPort !== undefined ? { port: c.tlsPort, cert: await fs.readFile(c.tlsCert as string), key: await fs.readFile(c.tlsKey as string) } : undefined,
    centralTls: c.centralCa ? { ca: await fs.readFile(c.centralCa) } : undefined,
    log,
    httpRoutes: (app, ports) => registerDisplay(app, { scope: { role: 'edge', warehouse: c.wh }, wsPort: ports.ws }),
  });
  await serve(log, () => edge.start() as unknown as Promise<Record<string, number>>, () => edge.stop());
}
