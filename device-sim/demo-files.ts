import fs from 'node:fs/promises';
import path from 'node:path';
import { isDeviceKind, type DeviceKind } from '../broker/index.js';
import { isIdent } from '../protocol/index.js';

/**
 * Files a running `stockwire demo` leaves in DATA_DIR, so `stockwire sim` (and a person) can find it
 * with no manual steps: the credentials it generated (kept across starts) and the ports it listens on
 * (written at each start, removed at a clean stop).
 */
export const CREDENTIALS_FILE = 'demo-credentials.json';
export const DEVICES_FILE = 'demo-devices.json';
export const ENDPOINTS_FILE = 'demo-endpoints.json';

/** A clear-text credential as the demo hands it out (the devices file keeps only its scrypt hash). */
export interface DemoCredential {
  id: string;
  warehouse: string;
  kind: DeviceKind;
  password: string;
}

export interface Ports {
  mqtt: number;
  ws: number;
  http: number;
}

export interface DemoEndpoints {
  pid: number;
  startedAt: string;
  /** the host clients should connect to */
  host: string;
  central: Ports;
  edges: Record<string, Ports>;
}

/** Reads and checks a credentials file (a JSON array of {id, warehouse, kind, password}); every problem is listed. */
export async function readCredentials(file: string): Promise<DemoCredential[]> {
  let raw: unknown;
  try {
    raw = JSON.parse(await fs.readFile(file, 'utf8'));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new Error(
      e.code === 'ENOENT'
        ? `${file} does not exist (start \`stockwire demo\` first, or pass --credentials)`
        : `${file}: ${e.message}`,
    );
  }
  if (!Array.isArray(raw)) throw new Error(`${file}: must be a JSON array of {"id","warehouse","kind","password"}`);
  const problems: string[] = [];
  const out: DemoCredential[] = [];
  raw.forEach((c: unknown, i) => {
    const o = (typeof c === 'object' && c !== null ? c : {}) as Record<string, unknown>;
    const bad: string[] = [];
    if (!isIdent(o.id)) bad.push('id');
    if (!isIdent(o.warehouse)) bad.push('warehouse');
    if (!isDeviceKind(o.kind)) bad.push('kind');
    if (typeof o.password !== 'string' || o.password === '') bad.push('password');
    if (bad.length > 0) problems.push(`entry ${i}: bad ${bad.join(', ')}`);
    else
      out.push({
        id: o.id as string,
        warehouse: o.warehouse as string,
        kind: o.kind as DeviceKind,
        password: o.password as string,
      });
  });
  if (problems.length > 0) throw new Error(`${file}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  return out;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The endpoints of the demo running on DATA_DIR; a clear error when none runs. */
export async function readEndpoints(dataDir: string): Promise<DemoEndpoints> {
  const file = path.join(dataDir, ENDPOINTS_FILE);
  let e: DemoEndpoints;
  try {
    e = JSON.parse(await fs.readFile(file, 'utf8')) as DemoEndpoints;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(
      code === 'ENOENT'
        ? `no demo is running on ${path.resolve(dataDir)} (no ${ENDPOINTS_FILE})`
        : `${file}: ${(err as Error).message}`,
    );
  }
  if (typeof e.pid !== 'number' || typeof e.central?.http !== 'number' || typeof e.edges !== 'object')
    throw new Error(`${file}: not a demo endpoints file`);
  if (!alive(e.pid)) throw new Error(`the demo that wrote ${file} (pid ${e.pid}) is not running any more`);
  return e;
}

export async function writeEndpoints(dataDir: string, e: DemoEndpoints): Promise<void> {
  await fs.writeFile(path.join(dataDir, ENDPOINTS_FILE), `${JSON.stringify(e, null, 2)}\n`);
}

export async function removeEndpoints(dataDir: string): Promise<void> {
  await fs.rm(path.join(dataDir, ENDPOINTS_FILE), { force: true });
}
