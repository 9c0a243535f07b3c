import { randomBytes, randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import { addDevice, type DeviceKind } from '../broker/index.js';
import { registerDisplay } from '../dashboards/display/serve.js';
import { DEFAULT_MIX, NO_FAULTS } from '../device-sim/plan.js';
import { Simulator } from '../device-sim/simulator.js';
import { centralOnHand } from '../device-sim/verify.js';
import { Edge } from '../gateway/edge.js';
import { Central } from '../processors/central.js';
import { API_TOKEN_FILE } from '../protocol/index.js';
import {
  CREDENTIALS_FILE,
  DEVICES_FILE,
  readCredentials,
  removeEndpoints,
  writeEndpoints,
  type DemoCredential,
  type DemoEndpoints,
  type Ports,
} from '../device-sim/demo-files.js';
import { createLogger, logLevel, type LogLevel } from '../runtime/logger.js';
import { int, opt, port, positive, str, url, warehouseList } from '../runtime/options.js';
import { configure, serve } from '../runtime/run.js';

export const demoSpecs = {
  dataDir: opt({
    flag: 'data-dir',
    env: 'DATA_DIR',
    help: 'durable local state: embedded database, edge outboxes, demo credentials',
    parse: str,
    default: './data',
  }),
  databaseUrl: opt({
    flag: 'database-url',
    env: 'DATABASE_URL',
    help: 'PostgreSQL; unset: embedded PostgreSQL under DATA_DIR',
    parse: url('postgres:', 'postgresql:'),
    secret: true,
  }),
  redisUrl: opt({
    flag: 'redis-url',
    env: 'REDIS_URL',
    help: 'Redis for the shared read model; unset: in-process',
    parse: url('redis:', 'rediss:'),
    secret: true,
  }),
  host: opt({
    flag: 'host',
    env: 'HOST',
    help: 'interface every listener binds to (0.0.0.0 opens the demo to the network)',
    parse: str,
    default: '127.0.0.1',
  }),
  mqttPort: opt({
    flag: 'mqtt-port',
    env: 'MQTT_PORT',
    help: 'central MQTT port (a free one if taken)',
    parse: port,
    default: 1884,
  }),
  wsPort: opt({
    flag: 'ws-port',
    env: 'WS_PORT',
    help: 'central MQTT over WebSocket port (a free one if taken)',
    parse: port,
    default: 8084,
  }),
  httpPort: opt({
    flag: 'http-port',
    env: 'HTTP_PORT',
    help: 'central HTTP port: API and live display (a free one if taken)',
    parse: port,
    default: 8080,
  }),
  warehouses: opt({
    flag: 'warehouses',
    env: 'DEMO_WAREHOUSES',
    help: 'one edge per warehouse',
    parse: warehouseList({ min: 1, max: 8 }),
    default: ['WH1', 'WH2'],
  }),
  edgeMqttPort: opt({
    flag: 'edge-mqtt-port',
    env: 'EDGE_MQTT_PORT',
    help: 'MQTT port of the first edge; the next edges count up (0: free ports)',
    parse: port,
    default: 1885,
  }),
  edgeWsPort: opt({
    flag: 'edge-ws-port',
    env: 'EDGE_WS_PORT',
    help: 'WebSocket port of the first edge; the next count up',
    parse: port,
    default: 8085,
  }),
  edgeHttpPort: opt({
    flag: 'edge-http-port',
    env: 'EDGE_HTTP_PORT',
    help: 'HTTP port of the first edge; the next count up',
    parse: port,
    default: 9101,
  }),
  scanners: opt({
    flag: 'scanners',
    env: 'DEMO_SCANNERS',
    help: 'scanner credentials per warehouse',
    parse: int(0, 1000),
    default: 3,
  }),
  shelves: opt({
    flag: 'shelves',
    env: 'DEMO_SHELVES',
    help: 'shelf sensor credentials per warehouse',
    parse: int(0, 1000),
    default: 2,
  }),
  simRate: opt({
    flag: 'sim-rate',
    env: 'DEMO_SIM_RATE',
    help: 'events per second of the built-in simulator (0: none)',
    parse: (raw: string) => (raw.trim() === '0' ? 0 : positive(10_000)(raw)),
    default: 4,
  }),
  logLevel: opt({
    flag: 'log-level',
    env: 'LOG_LEVEL',
    help: 'pino level',
    parse: logLevel,
    default: 'warn' as LogLevel,
  }),
};

const DEMO_SKUS = 12; // skus per warehouse the built-in simulator moves

async function portTaken(p: number, host: string): Promise<boolean> {
  if (p === 0) return false;
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(true));
    s.listen(p, host, () => s.close(() => resolve(false)));
  });
}

/** Chooses each wanted port, or 0 (any free one) when it is taken, saying so. */
async function choosePorts<K extends string>(
  wanted: Record<K, { port: number; what: string }>,
  host: string,
): Promise<Record<K, number>> {
  const out = {} as Record<K, number>;
  for (const [k, { port: p, what }] of Object.entries(wanted) as [K, { port: number; what: string }][]) {
    if (await portTaken(p, host)) {
      process.stderr.write(
        `port ${p} (${what}) is already in use on this machine; the demo takes a free port instead (printed below)\n`,
      );
      out[k] = 0;
    } else out[k] = p;
  }
  return out;
}

const lower = (wh: string) => wh.toLowerCase();

/** The credentials the demo needs: gateways, displays, scanners and shelf sensors of every warehouse. */
function wantedDevices(
  warehouses: string[],
  scanners: number,
  shelves: number,
): { id: string; warehouse: string; kind: DeviceKind }[] {
  const first = warehouses[0] as string;
  return [
    { id: 'display', warehouse: first, kind: 'display' }, // central's display (it sees every warehouse there)
    ...warehouses.flatMap((wh) => [
      { id: `gw-${lower(wh)}`, warehouse: wh, kind: 'gateway' as const },
      { id: `display-${lower(wh)}`, warehouse: wh, kind: 'display' as const }, // the edge's display
      ...Array.from({ length: scanners }, (_, i) => ({
        id: `scan-${lower(wh)}-${i + 1}`,
        warehouse: wh,
        kind: 'scanner' as const,
      })),
      ...Array.from({ length: shelves }, (_, i) => ({
        id: `shelf-${lower(wh)}-${i + 1}`,
        warehouse: wh,
        kind: 'shelf' as const,
      })),
    ]),
  ];
}

/**
 * Credentials made once per DATA_DIR and kept (mode 0600), so a second start finds the same ones;
 * devices a later start asks for (more scanners, another warehouse) are added.
 */
async function demoCredentials(
  dataDir: string,
  wanted: { id: string; warehouse: string; kind: DeviceKind }[],
): Promise<{ devicesFile: string; creds: DemoCredential[] }> {
  const credsFile = path.join(dataDir, CREDENTIALS_FILE);
  const devicesFile = path.join(dataDir, DEVICES_FILE);
  let creds: DemoCredential[] = [];
  if (existsSync(credsFile) && existsSync(devicesFile)) creds = await readCredentials(credsFile);
  else await fs.rm(devicesFile, { force: true }); // one without the other is of no use: start both again
  const missing = wanted.filter((w) => !creds.some((c) => c.id === w.id));
  for (const w of missing) {
    const c = { ...w, password: randomBytes(9).toString('base64url') };
    await addDevice(devicesFile, c);
    creds.push(c);
  }
  if (missing.length > 0) await fs.writeFile(credsFile, `${JSON.stringify(creds, null, 2)}\n`, { mode: 0o600 });
  return { devicesFile, creds };
}

interface Running {
  central: Central | null;
  edges: Edge[];
  sim: Simulator | null;
}

async function stopAll(r: Running, dataDir: string, log: Logger): Promise<void> {
  const attempt = async (what: string, fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (err) {
      log.error({ err: (err as Error).message }, `stopping ${what} failed`);
    }
  };
  // devices first, then edges (their outboxes keep what central has not confirmed), then central
  if (r.sim) await attempt('the simulator', () => (r.sim as Simulator).close());
  await Promise.all(r.edges.map((e) => attempt('an edge', () => e.stop())));
  if (r.central) await attempt('central', () => (r.central as Central).stop());
  await removeEndpoints(dataDir);
}

/** `stockwire demo`: central, one edge per warehouse, simulated devices and the live display, in one process. */
export async function runDemo(argv: string[]): Promise<void> {
  const c = configure(
    'demo',
    'Central, two warehouse edges, simulated scanners and shelf sensors, and the live display, on one machine, no services needed.',
    demoSpecs,
    argv,
  );
  if (!c) return;
  const began = Date.now();
  const log = createLogger('demo', c.logLevel);
  await fs.mkdir(c.dataDir, { recursive: true });
  // where this machine's clients connect: loopback for "every interface"; an IPv6 literal goes in brackets in URLs
  const clientHost =
    c.host === '0.0.0.0' || c.host === '::' ? '127.0.0.1' : c.host.includes(':') ? `[${c.host}]` : c.host;
  const count = (base: number, i: number) => (base === 0 ? 0 : base + i);
  const central = await choosePorts(
    {
      mqtt: { port: c.mqttPort, what: 'central MQTT' },
      ws: { port: c.wsPort, what: 'central WebSocket' },
      http: { port: c.httpPort, what: 'central HTTP' },
    },
    c.host,
  );
  const edgePorts: Record<string, Ports> = {};
  for (const [i, wh] of c.warehouses.entries()) {
    edgePorts[wh] = await choosePorts(
      {
        mqtt: { port: count(c.edgeMqttPort, i), what: `${wh} edge MQTT` },
        ws: { port: count(c.edgeWsPort, i), what: `${wh} edge WebSocket` },
        http: { port: count(c.edgeHttpPort, i), what: `${wh} edge HTTP` },
      },
      c.host,
    );
  }
  const { devicesFile, creds } = await demoCredentials(c.dataDir, wantedDevices(c.warehouses, c.scanners, c.shelves));
  const cred = (id: string) => creds.find((x) => x.id === id) as DemoCredential;
  const asLogin = (x: DemoCredential) => ({ username: x.id, password: x.password });

  const running: Running = { central: null, edges: [], sim: null };
  await serve(
    log,
    async () => {
      running.central = new Central({
        databaseUrl: c.databaseUrl,
        redisUrl: c.redisUrl,
        redisPrefix: 'stockwire:',
        dataDir: c.dataDir,
        devicesFile,
        host: c.host,
        mqttPort: central.mqtt,
        wsPort: central.ws,
        httpPort: central.http,
        batchMax: 1000,
        batchWaitMs: 5,
        log: log.child({ part: 'central' }),
        httpRoutes: (app, ports) =>
          registerDisplay(app, {
            scope: { role: 'central' },
            wsPort: ports.ws,
            warehouses: c.warehouses,
            credential: asLogin(cred('display')),
          }),
      });
      const cp = await running.central.start();
      const edges: Record<string, Ports> = {};
      for (const wh of c.warehouses) {
        const gw = cred(`gw-${lower(wh)}`);
        const edge = new Edge({
          wh,
          devicesFile,
          dataDir: c.dataDir,
          host: c.host,
          mqttPort: edgePorts[wh]?.mqtt ?? 0,
          wsPort: edgePorts[wh]?.ws ?? 0,
          httpPort: edgePorts[wh]?.http ?? 0,
          centralUrl: `mqtt://${clientHost}:${cp.mqtt}`,
          centralUsername: gw.id,
          centralPassword: gw.password,
          outboxMaxBytes: 1024 ** 3,
          forwardWindow: 10_000,
          resendAfterMs: 10_000,
          keepalive: 10,
          log: log.child({ part: 'edge', wh }),
          httpRoutes: (app, ports) =>
            registerDisplay(app, {
              scope: { role: 'edge', warehouse: wh },
              wsPort: ports.ws,
              credential: asLogin(cred(`display-${lower(wh)}`)),
            }),
        });
        running.edges.push(edge);
        const p = await edge.start();
        edges[wh] = { mqtt: p.mqtt, ws: p.ws, http: p.http };
      }
      const endpoints: DemoEndpoints = {
        pid: process.pid,
        startedAt: new Date().toISOString(),
        host: clientHost,
        central: cp,
        edges,
      };
      await writeEndpoints(c.dataDir, endpoints);

      const devices = creds.filter(
        (x) => (x.kind === 'scanner' || x.kind === 'shelf') && c.warehouses.includes(x.warehouse),
      );
      if (c.simRate > 0 && devices.length > 0)
        running.sim = await startSimulator(c.simRate, c.warehouses, devices, endpoints, log);
      const api = { token: running.central.apiToken, file: path.join(c.dataDir, API_TOKEN_FILE) };
      process.stderr.write(
        banner(c.dataDir, endpoints, creds, api, c.warehouses, running.sim ? c.simRate : 0, Date.now() - began, c.host),
      );
      return { mqtt: cp.mqtt, ws: cp.ws, http: cp.http, edges } as unknown as Record<string, number>;
    },
    () => stopAll(running, c.dataDir, log),
  );
}

async function startSimulator(
  rate: number,
  warehouses: string[],
  devices: DemoCredential[],
  e: DemoEndpoints,
  log: Logger,
): Promise<Simulator> {
  const runId = `d${randomBytes(3).toString('hex')}`; // event ids stay unique per device across restarts
  const sim = new Simulator({
    edges: Object.fromEntries(Object.entries(e.edges).map(([wh, p]) => [wh, `mqtt://${e.host}:${p.mqtt}`])),
    devices,
    rate,
    seed: randomInt(2 ** 31 - 1),
    runId,
    skuPrefix: 'SKU-',
    skus: DEMO_SKUS,
    mix: DEFAULT_MIX,
    faults: NO_FAULTS,
    toleranceMs: 2_000,
    trackCommits: false,
    log: log.child({ part: 'sim' }),
  });
  // After a restart the simulator picks up the stock where it was, so its shipments stay plausible.
  const centralHttp = `http://${e.host}:${e.central.http}`;
  for (const wh of warehouses) {
    for (const { sku } of sim.rows().filter((r) => r.wh === wh)) {
      const onHand = await centralOnHand(centralHttp, wh, sku).catch(() => null);
      if (onHand !== null) sim.ledger.seedBelieved(wh, sku, onHand);
    }
  }
  await sim.start();
  return sim;
}

function banner(
  dataDir: string,
  e: DemoEndpoints,
  creds: DemoCredential[],
  api: { token: string; file: string },
  warehouses: string[],
  simRate: number,
  startMs: number,
  host: string,
): string {
  const h = e.host;
  const display = creds.find((x) => x.id === 'display') as DemoCredential;
  const firstWh = warehouses[0] as string;
  const scanner = creds.find((x) => x.kind === 'scanner' && x.warehouse === firstWh);
  const firstEdge = e.edges[firstWh] as Ports;
  const lines = [
    '',
    `stockwire demo is running (started in ${(startMs / 1000).toFixed(1)} s). Ctrl-C stops it; the data stays in ${path.resolve(dataDir)}`,
    '',
    `  Live display   http://${h}:${e.central.http}/display/   (all warehouses)`,
    ...warehouses.map((wh) => `                 http://${h}:${e.edges[wh]?.http}/display/   (${wh} edge only)`),
    `  Central        MQTT mqtt://${h}:${e.central.mqtt}   WebSocket ws://${h}:${e.central.ws}   HTTP http://${h}:${e.central.http} (/v1/stock/SKU-001, /metrics)`,
    ...warehouses.map((wh) => {
      const p = e.edges[wh] as Ports;
      return `  Edge ${wh.padEnd(9)} MQTT mqtt://${h}:${p.mqtt}   WebSocket ws://${h}:${p.ws}   HTTP http://${h}:${p.http} (/metrics)`;
    }),
    simRate > 0
      ? `  Simulator      ${creds.filter((x) => x.kind === 'scanner' && warehouses.includes(x.warehouse)).length} scanners and ${creds.filter((x) => x.kind === 'shelf' && warehouses.includes(x.warehouse)).length} shelf sensors, ${simRate} events/s on SKU-001…SKU-${String(DEMO_SKUS).padStart(3, '0')} (--sim-rate 0 turns it off)`
      : '  Simulator      off (--sim-rate 0)',
    '',
    `  Credentials (demo only; kept in ${path.join(dataDir, CREDENTIALS_FILE)}, mode 0600):`,
    ...creds
      .filter((x) => warehouses.includes(x.warehouse) || x.id === 'display')
      .filter((x) => x.kind !== 'scanner' || x.id.endsWith('-1'))
      .filter((x) => x.kind !== 'shelf' || x.id.endsWith('-1'))
      .map((x) => `    ${x.kind.padEnd(8)} ${x.id.padEnd(14)} ${x.warehouse.padEnd(6)} ${x.password}`),
    `    (all ${creds.length} credentials, with every scanner and shelf sensor, are in the file)`,
    `    api      HTTP writes (POST/DELETE /v1/…) send  Authorization: Bearer ${api.token}`,
    `             (kept in ${api.file}, mode 0600; reads are open)`,
    '',
    '  Try:',
    `    mosquitto_sub -h ${h} -p ${e.central.mqtt} -u ${display.id} -P '${display.password}' -i ${display.id}-cli -t 'stock/#' -t 'wh/+/stock/#' -v`,
    ...(scanner
      ? [
          `    mosquitto_pub -h ${h} -p ${firstEdge.mqtt} -u ${scanner.id} -P '${scanner.password}' -i ${scanner.id}-cli -q 1 -t 'wh/${firstWh}/dev/${scanner.id}/event' \\`,
          `      -m '{"v":1,"id":"try-1","type":"received","sku":"SKU-001","qty":5}'     (a new id per scan: a repeated id is a duplicate)`,
        ]
      : []),
    `    curl http://${h}:${e.central.http}/v1/stock/SKU-001`,
    `    curl -H "Authorization: Bearer $(cat ${api.file})" -H 'Idempotency-Key: try-1' -H 'content-type: application/json' \\`,
    `      -d '{"sku":"SKU-001","qty":1}' http://${h}:${e.central.http}/v1/reservations`,
    `    stockwire sim --data-dir ${dataDir} --duration 60 --faults all --verify     (bin/stockwire sim … in a checkout)`,
    '',
  ];
  if (host !== '127.0.0.1' && host !== 'localhost' && host !== '::1') {
    lines.push(
      `  Listening on ${host}: pages loaded from other machines get no credential and ask for one (use a display credential above).`,
      '',
    );
  }
  return `${lines.join('\n')}\n`;
}
