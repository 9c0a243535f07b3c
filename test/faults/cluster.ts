import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before } from 'node:test';
import type pg from 'pg';
import { createPool } from '../../processors/db/pool.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices, type TestDevice } from '../helpers/devices.js';
import { freePort, kill9, startStockwire, type Running } from '../helpers/process.js';
import { PubackDevices } from '../helpers/puback-devices.js';

export const MOSQUITTO = process.env.MOSQUITTO_URL ?? 'mqtt://127.0.0.1:1883';
export const GATEWAY_PASSWORD = 'pw-gateway-x';
const STOP_WAIT_MS = 20_000; // a clean stop that takes longer than this is a failure, not a hang

// Every process a scenario started and that has not exited. A scenario that fails while starting its processes
// (before its try/finally) would leave the others running, and their pipes would keep this test file alive until
// the runner's timeout: they hold no reference on the event loop, and whatever is left is killed on exit.
const live = new Set<Running>();
process.once('exit', () => {
  for (const r of live) r.child.kill('SIGKILL');
});

/** A scenario file's own database, and the file's small pool on it for its checks. */
export interface ScenarioDatabase {
  readonly db: TestDatabase;
  readonly pool: pg.Pool;
  /** events of warehouse `wh` in central's inbox: how far a stream has got */
  inbox(wh: string): Promise<number>;
}

/**
 * Creates the database before the enclosing suite's tests and drops it after them (call it in `describe`).
 * The pool's application name lets a scenario that terminates backends spare the test's own connections.
 */
export function scenarioDatabase(name: string): ScenarioDatabase {
  let db: TestDatabase | undefined;
  let pool: pg.Pool | undefined;
  before(async () => {
    db = await createTestDatabase(name);
    pool = createPool({ url: db.url, max: 2, applicationName: 'faults-test' });
  });
  after(async () => {
    await pool?.end();
    await db?.drop();
  });
  const ready = <T>(v: T | undefined): T => {
    if (v === undefined) throw new Error(`the database ${name} is created in the suite's before hook`);
    return v;
  };
  return {
    get db() {
      return ready(db);
    },
    get pool() {
      return ready(pool);
    },
    inbox: async (wh) =>
      (await ready(pool).query<{ n: number }>('SELECT count(*)::int AS n FROM inbox WHERE wh = $1', [wh])).rows[0]?.n ??
      0,
  };
}

/** A `stockwire` process that a scenario kills and starts again, always with the same arguments. */
export class Proc {
  private running: Running | null = null;
  starts = 0;
  kills = 0;
  /** what the last killed instance logged */
  private killedLogs: string[] = [];

  constructor(
    readonly name: string,
    private readonly args: () => string[],
    private readonly env: Record<string, string | undefined>,
  ) {}

  get current(): Running {
    if (!this.running) throw new Error(`${this.name} is not running`);
    return this.running;
  }

  get ports(): Record<string, number> {
    return this.current.ports;
  }

  /** started by us and not exited since (a crash shows here) */
  get alive(): boolean {
    return this.running !== null && this.running.child.exitCode === null && this.running.child.signalCode === null;
  }

  async start(): Promise<Running> {
    const r = await startStockwire(this.args(), this.env);
    live.add(r);
    void r.exited.then(() => live.delete(r));
    for (const handle of [r.child, r.child.stdout, r.child.stderr])
      (handle as { unref?: () => void } | null)?.unref?.();
    this.running = r;
    this.starts++;
    // A crash is reported when it happens, with what the process said last: the scenario fails later, elsewhere.
    void r.exited.then((code) => {
      if (this.running === r)
        process.stderr.write(
          `${this.name} exited by itself with ${code} at ${new Date().toISOString()}:\n${r.logs.slice(-25).join('\n')}\n`,
        );
    });
    return r;
  }

  async kill9(): Promise<void> {
    const r = this.current;
    this.running = null;
    this.killedLogs = r.logs;
    this.kills++;
    await kill9(r);
  }

  /** SIGTERM, and the exit code (null when it had to be killed after STOP_WAIT_MS). */
  async stop(): Promise<number | null> {
    const r = this.running;
    if (!r) return 0;
    this.running = null;
    r.child.kill('SIGTERM');
    const t = setTimeout(() => r.child.kill('SIGKILL'), STOP_WAIT_MS);
    const code = await r.exited;
    clearTimeout(t);
    if (code !== 0)
      process.stderr.write(
        `${this.name} exited with ${code} on SIGTERM; its last lines:\n${r.logs.slice(-25).join('\n')}\n`,
      );
    return code;
  }

  /** The last lines it logged, for a failure message. */
  logTail(n = 15): string {
    if (this.running) return this.running.logs.slice(-n).join('\n');
    return this.killedLogs.length > 0
      ? `(not running; the instance killed last said:)\n${this.killedLogs.slice(-n).join('\n')}`
      : '(not running)';
  }
}

/** One warehouse: its credentials, a central, an edge, and the devices that publish to the edge. */
export interface Warehouse {
  wh: string;
  scanners: TestDevice[];
  dir: string;
  devicesFile: string;
  centralPort: number;
  edgePort: number;
  centralArgs: (extra?: string[]) => string[];
  edgeArgs: (centralUrl: string, o?: { auth?: boolean; extra?: string[] }) => string[];
  processorArgs: (centralUrl: string) => string[];
  devices: (o?: ConstructorParameters<typeof PubackDevices>[3]) => PubackDevices;
}

export async function warehouse(prefix: string, scannerCount = 10): Promise<Warehouse> {
  const wh = `${prefix}${randomBytes(3).toString('hex')}`;
  const scanners: TestDevice[] = Array.from({ length: scannerCount }, (_, i) => ({
    id: `dev-${i}`,
    warehouse: wh,
    kind: 'scanner' as const,
    password: `pw-dev-${i}-x`,
  }));
  const files = await writeDevices([
    ...scanners,
    { id: `gw-${wh}`, warehouse: wh, kind: 'gateway', password: GATEWAY_PASSWORD },
    { id: `disp-${wh}`, warehouse: wh, kind: 'display', password: 'pw-display-x' },
  ]);
  const centralPort = await freePort();
  const edgePort = await freePort();
  return {
    wh,
    scanners,
    dir: files.dir,
    devicesFile: files.file,
    centralPort,
    edgePort,
    centralArgs: (extra = []) => [
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
      ...extra,
    ],
    edgeArgs: (centralUrl, o = {}) => [
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
      centralUrl,
      '--resend-after-ms',
      '3000',
      '--keepalive',
      '3',
      ...(o.auth === false ? [] : ['--central-username', `gw-${wh}`, '--central-password', GATEWAY_PASSWORD]),
      ...(o.extra ?? []),
    ],
    processorArgs: (centralUrl) => [
      'processor',
      '--central-url',
      centralUrl,
      '--warehouses',
      wh,
      '--instance',
      wh,
      '--http-port',
      '0',
      '--host',
      '127.0.0.1',
    ],
    devices: (o) =>
      new PubackDevices(
        `mqtt://127.0.0.1:${edgePort}`,
        wh,
        scanners.map((s) => ({ id: s.id, password: s.password })),
        o,
      ),
  };
}

/** A metric of a running process: the sum of the series `labels` select; NaN when none (or no answer). */
export async function metric(r: Running, name: string, labels: Record<string, string> = {}): Promise<number> {
  return (await metrics(r, [name], labels))[0] as number;
}

/** Several metrics of a running process from one scrape, each as `metric` reads it. */
export async function metrics(r: Running, names: string[], labels: Record<string, string> = {}): Promise<number[]> {
  let text: string;
  try {
    text = await (
      await fetch(`http://127.0.0.1:${r.ports.http}/metrics`, { signal: AbortSignal.timeout(5_000) })
    ).text();
  } catch {
    return names.map(() => NaN);
  }
  const pairs = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const all = text.split('\n');
  // The sum over every series the labels select: known label values start at 0, so a partial selection (a reason,
  // whatever the kind) matches several series, and the first of them is not the one that moved.
  return names.map((name) => {
    const lines = all.filter(
      (l) => (l.startsWith(`${name} `) || l.startsWith(`${name}{`)) && pairs.every((p) => l.includes(p)),
    );
    return lines.length === 0 ? NaN : lines.reduce((sum, l) => sum + Number(l.split(' ').at(-1)), 0);
  });
}

/**
 * Runs `action` each time `progress()` passes the next threshold (one action at a time), while a
 * scenario's load runs. `stop()` ends the watch and waits for an action in progress; `failed` rejects
 * when an action fails (the watch stops there).
 */
export function atProgress(
  progress: () => number | Promise<number>,
  thresholds: number[],
  action: (i: number) => Promise<void>,
) {
  const todo = [...thresholds].sort((a, b) => a - b);
  let done = 0;
  let busy: Promise<void> | null = null;
  let failure: Error | null = null;
  let rejectFailed: (err: Error) => void = () => undefined;
  // Rejects as soon as an action fails: a scenario races its load against it instead of waiting out a timeout.
  const failed = new Promise<never>((_resolve, reject) => (rejectFailed = reject));
  failed.catch(() => undefined);
  const timer = setInterval(() => {
    if (busy || done >= todo.length) return;
    busy = (async () => {
      const p = await progress();
      if (p < (todo[done] as number)) return;
      await action(done);
      done++;
    })()
      .catch((err: Error) => {
        failure = err;
        clearInterval(timer);
        rejectFailed(err);
      })
      .finally(() => (busy = null));
  }, 50);
  return {
    get done() {
      return done;
    },
    /** rejects with the first action's failure; never resolves */
    failed,
    async stop(): Promise<void> {
      clearInterval(timer);
      await busy;
      if (failure) throw failure;
    },
  };
}

/** `count` distinct thresholds in [lo, hi), from a seeded random function. */
export function randomThresholds(random: () => number, count: number, lo: number, hi: number): number[] {
  return Array.from({ length: count }, () => Math.floor(lo + random() * (hi - lo))).sort((a, b) => a - b);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `pred` until it holds; throws after `ms`, naming what did not happen (and stops polling). */
export async function until(pred: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms`);
    await sleep(100);
  }
}

/** Rejects after `ms` with a message naming what did not finish: a hang fails the scenario instead of blocking. */
export async function within<T>(
  ms: number,
  what: string,
  p: Promise<T>,
  detail?: () => string | Promise<string>,
): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_r, reject) => {
        t = setTimeout(() => {
          const message = `${what} did not finish within ${ms} ms`;
          void Promise.resolve(detail?.())
            .catch((err: Error) => `(no detail: ${err.message})`)
            .then((d) => reject(new Error(d ? `${message}\n${d}` : message)));
        }, ms);
      }),
    ]);
  } finally {
    clearTimeout(t);
  }
}

/** What a scenario whose devices did not finish reports: where each device stands, and what each process refused and logged last. */
export function stuckDetail(devices: PubackDevices, ...procs: Proc[]): () => Promise<string> {
  return async () => {
    const parts = [devices.describe()];
    for (const p of procs) {
      if (!p.alive) {
        parts.push(`${p.name}: ${p.logTail(20)}`);
        continue;
      }
      const text = await fetch(`http://127.0.0.1:${p.ports.http}/metrics`, { signal: AbortSignal.timeout(5_000) })
        .then((r) => r.text())
        .catch((err: Error) => `(metrics unreachable: ${err.message})`);
      const refusals = text
        .split('\n')
        .filter(
          (l) =>
            /^stockwire_broker_(connection|publish)_refusals_total\{/.test(l) ||
            l.startsWith('stockwire_outbox_backlog'),
        );
      parts.push(`${p.name} (started ${p.starts}×): ${refusals.join('; ') || 'no refusals'}\n${p.logTail(20)}`);
    }
    return parts.join('\n');
  };
}
