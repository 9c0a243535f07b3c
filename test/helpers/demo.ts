import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { DemoCredential } from '../../device-sim/demo-files.js';
import { BIN, startStockwire, type Running } from './process.js';

/** Every listener of the demo on a free port; the built-in simulator off unless asked for. */
export const DEMO_FREE_PORTS = [
  '--mqtt-port',
  '0',
  '--ws-port',
  '0',
  '--http-port',
  '0',
  '--edge-mqtt-port',
  '0',
  '--edge-ws-port',
  '0',
  '--edge-http-port',
  '0',
];

export interface Ports {
  mqtt: number;
  ws: number;
  http: number;
}

export interface Demo {
  run: Running;
  dataDir: string;
  central: Ports;
  edges: Record<string, Ports>;
  creds: DemoCredential[];
  cred(id: string): DemoCredential;
}

/** Starts `stockwire demo` as a real process on DATA_DIR `dataDir` (a fresh temp folder by default). */
export async function startDemo(
  args: string[],
  env: Record<string, string | undefined>,
  dataDir?: string,
): Promise<Demo> {
  const dir = dataDir ?? (await fs.mkdtemp(path.join(os.tmpdir(), 'stockwire-demo-')));
  const run = await startStockwire(['demo', '--data-dir', dir, ...DEMO_FREE_PORTS, ...args], env, 120_000);
  const ready = run.ports as unknown as Ports & { edges: Record<string, Ports> };
  const creds = JSON.parse(await fs.readFile(path.join(dir, 'demo-credentials.json'), 'utf8')) as DemoCredential[];
  return {
    run,
    dataDir: dir,
    central: { mqtt: ready.mqtt, ws: ready.ws, http: ready.http },
    edges: ready.edges,
    creds,
    cred: (id) => {
      const c = creds.find((x) => x.id === id);
      if (!c) throw new Error(`no demo credential ${id}`);
      return c;
    },
  };
}

/** SIGINT (Ctrl-C), then the exit code. */
export async function interrupt(r: Running): Promise<number | null> {
  r.child.kill('SIGINT');
  return r.exited;
}

export interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a stockwire command to its end. */
export function stockwire(
  args: string[],
  env: Record<string, string | undefined> = {},
  timeoutMs = 180_000,
): Promise<Finished> {
  return new Promise((resolve) => {
    execFile(
      BIN,
      args,
      { env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? ((err as { code?: unknown }).code as number | null) : 0;
        resolve({ code: typeof code === 'number' ? code : null, stdout, stderr });
      },
    );
  });
}

/** Starts a stockwire command without waiting for a ready line (the simulator prints none). */
export function spawnStockwire(
  args: string[],
  env: Record<string, string | undefined> = {},
): { child: ChildProcess; stderr: () => string; done: Promise<Finished> } {
  const child = spawn(BIN, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  return {
    child,
    stderr: () => err,
    done: new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout: out, stderr: err }))),
  };
}
