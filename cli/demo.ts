import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { addDevice } from '../broker/index.js';
import { Central } from '../processors/central.js';
import { createLogger, logLevel, type LogLevel } from './logger.js';
import { port, str } from './options.js';
import { configure, serve } from './run.js';

const specs = {
  dataDir: { flag: 'data-dir', env: 'DATA_DIR', help: 'durable local state (embedded database, demo credentials)', parse: str, default: './data' },
  databaseUrl: { flag: 'database-url', env: 'DATABASE_URL', help: 'PostgreSQL; unset: embedded PostgreSQL under DATA_DIR', parse: str, secret: true },
  mqttPort: { flag: 'mqtt-port', env: 'MQTT_PORT', help: 'central MQTT port (a free one if taken)', parse: port, default: 1884 },
  wsPort: { flag: 'ws-port', env: 'WS_PORT', help: 'central MQTT over WebSocket port (a free one if taken)', parse: port, default: 8084 },
  httpPort: { flag: 'http-port', env: 'HTTP_PORT', help: 'central HTTP port (a free one if taken)', parse: port, default: 8080 },
  logLevel: { flag: 'log-level', env: 'LOG_LEVEL', help: 'pino level', parse: logLevel, default: 'warn' as LogLevel },
};

const WAREHOUSES = ['WH1', 'WH2'];

async function portTaken(p: number): Promise<boolean> {
  if (p === 0) return false;
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(true));
    s.listen(p, '127.0.0.1', () => s.close(() => resolve(false)));
  });
}

/** Credentials made once per DATA_DIR and kept (mode 0600) so a second start finds the same ones. */
async function demoCredentials(dataDir: string): Promise<{ file: string; creds: { id: string; warehouse: string; kind: string; password: string }[] }> {
  const credsFile = path.join(dataDir, 'demo-credentials.json');
  const file = path.join(dataDir, 'demo-devices.json');
  if (existsSync(credsFile) && existsSync(file)) return { file, creds: JSON.parse(await fs.readFile(credsFile, 'utf8')) };
  await fs.rm(file, { force: true });
  const pw = () => randomBytes(9).toString('base64url');
  const creds = [
    ...WAREHOUSES.map((wh) => ({ id: `gw-${wh.toLowerCase()}`, warehouse: wh, kind: 'gateway', password: pw() })),
    { id: 'display', warehouse: 'WH1', kind: 'display', password: pw() },
  ];
  for (const c of creds) await addDevice(file, c);
  await fs.writeFile(credsFile, JSON.stringify(creds, null, 2), { mode: 0o600 });
  return { file, creds };
}

/**
 * `stockwire demo`: for now central with the embedded database and generated credentials.
 * Edges, the simulator and the live display join it with issues 2/7 and 3/7.
 */
export async function runDemo(argv: string[]): Promise<void> {
  const c = configure('demo', 'Central with an embedded database and demo credentials, on one machine, no services needed.', specs, argv);
  if (!c) return;
  const log = createLogger('demo', c.logLevel);
  await fs.mkdir(c.dataDir, { recursive: true });
  const ports: Record<string, number> = { mqttPort: c.mqttPort, wsPort: c.wsPort, httpPort: c.httpPort };
  for (const [name, p] of Object.entries(ports)) {
    if (await portTaken(p)) {
      process.stderr.write(`port ${p} (${name}) is taken on this machine; using a free port instead\n`);
      ports[name] = 0;
    }
  }
  const { file, creds } = await demoCredentials(c.dataDir);
  const central = new Central({
    databaseUrl: c.databaseUrl,
    redisPrefix: 'stockwire:',
    dataDir: c.dataDir,
    devicesFile: file,
    host: '127.0.0.1',
    mqttPort: ports.mqttPort as number,
    wsPort: ports.wsPort as number,
    httpPort: ports.httpPort as number,
    batchMax: 1000,
    batchWaitMs: 5,
    log,
  });
  await serve(
    log,
    async () => {
      const p = await central.start();
      const gw = creds.find((x) => x.kind === 'gateway');
      const display = creds.find((x) => x.kind === 'display');
      process.stderr.write(
        [
          '',
          'stockwire demo is running (Ctrl-C stops it; data stays in ' + path.resolve(c.dataDir) + ')',
          `  MQTT           mqtt://127.0.0.1:${p.mqtt}   (WebSocket ws://127.0.0.1:${p.ws})`,
          `  HTTP API       http://127.0.0.1:${p.http}/v1/stock/SKU-1   metrics: http://127.0.0.1:${p.http}/metrics`,
          '  Credentials (demo only, kept in demo-credentials.json):',
          ...creds.map((x) => `    ${x.kind.padEnd(8)} ${x.id.padEnd(8)} ${x.warehouse}  password ${x.password}`),
          '  Try:',
          `    mosquitto_sub -p ${p.mqtt} -u ${display?.id} -P '${display?.password}' -i ${display?.id} -t 'stock/#' -v`,
          `    mosquitto_pub -p ${p.mqtt} -u ${gw?.id} -P '${gw?.password}' -i ${gw?.id} -q 1 -t 'wh/${gw?.warehouse}/dev/scanner-1/event' -m '{"v":1,"id":"scan-1","type":"received","sku":"SKU-1","qty":5}'`,
          '',
        ].join('\n'),
      );
      return p as unknown as Record<string, number>;
    },
    () => central.stop(),
  );
}
