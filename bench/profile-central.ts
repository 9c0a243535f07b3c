import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createTestDatabase } from '../test/helpers/db.js';
import { writeDevices } from '../test/helpers/devices.js';
import { startStockwire } from '../test/helpers/process.js';
import { drive } from './load.js';
import { hotFunctions, profiles } from './profile.js';

/** Profiles `stockwire central` under saturation (node --cpu-prof) and prints the hottest functions by self time. */
const dir = process.env.PROFILE_DIR ?? mkdtempSync(path.join(os.tmpdir(), 'stockwire-prof-'));
const whs = ['PW0', 'PW1', 'PW2', 'PW3'];
const db = await createTestDatabase('prof_central');
const devices = await writeDevices(
  whs.map((wh) => ({ id: `gw-${wh}`, warehouse: wh, kind: 'gateway' as const, password: `pw-${wh}-bench` })),
);
const central = await startStockwire(
  [
    'central',
    '--mqtt-port',
    '0',
    '--ws-port',
    '0',
    '--http-port',
    '0',
    '--host',
    '127.0.0.1',
    '--devices-file',
    devices.file,
    '--data-dir',
    devices.dir,
    '--batch-max',
    '2000',
    '--log-level',
    'warn',
  ],
  { DATABASE_URL: db.url },
  60_000,
  ['--cpu-prof', '--cpu-prof-dir', dir],
);
const url = `mqtt://127.0.0.1:${central.ports.mqtt}`;
const credentials = (wh: string) => ({ username: `gw-${wh}`, password: `pw-${wh}-bench`, clientId: `gw-${wh}` });
const r = await drive({
  url,
  warehouses: whs,
  credentials,
  eventsPerClient: Number(process.env.N ?? 30_000),
  window: 2000,
  rate: 0,
  devices: 50,
  skus: 1000,
  idPrefix: `p${Date.now()}`,
});
process.stderr.write(`${Math.round(r.perSecond)} events/s\n`);
central.child.kill('SIGINT');
await central.exited;
await db.drop();
const file = profiles(dir).pop() as string;
for (const line of hotFunctions(file, Number(process.env.TOP ?? 45))) process.stdout.write(`${line}\n`);
process.stdout.write(`${file}\n`);
process.exit(0);
