import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The shared TimescaleDB starter, beside the repository (as CI lays it out): `../shared/timescaledb/start`. */
export const TIMESCALE_START = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '../../../shared/timescaledb/start',
);
const START_TIMEOUT_MS = 180_000; // a first start copies the server binaries and runs initdb; a restart replays the WAL
const STOP_TIMEOUT_MS = 60_000;

/**
 * A TimescaleDB cluster of the test's own (port and folder of its own), which the test may crash and start
 * again: the shared one on 5433 serves other test files and engineers and must never be crashed. Started by the
 * shared `start` script with TIMESCALE_PORT and TIMESCALE_DIR, exactly as a user starts one.
 */
export class PrivateTimescale {
  private folder: string | null = null;
  // While the server is down after a crash, a placeholder listens on its port: another test or benchmark's
  // freePort() would otherwise take the free port, and `start` (which answers at once when something on the port
  // is ready) would hand this test someone else's server (seen once: a crash test reached a soak's cluster).
  private placeholder: net.Server | null = null;
  private readonly stopOnExit = () => {
    spawnSync(this.startScript, ['stop'], { env: this.env(), stdio: 'ignore' });
    if (this.folder) fs.rmSync(this.folder, { recursive: true, force: true });
  };

  constructor(
    readonly port: number,
    private readonly startScript = TIMESCALE_START,
  ) {}

  /** its folder: the server tree under pg/, the cluster under data/ */
  get dir(): string {
    if (this.folder === null) throw new Error('the private TimescaleDB has not been started');
    return this.folder;
  }

  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  private get bin(): string {
    return path.join(this.dir, 'pg/usr/lib/postgresql/15/bin');
  }

  private env(): NodeJS.ProcessEnv {
    return { ...process.env, TIMESCALE_PORT: String(this.port), TIMESCALE_DIR: this.folder ?? '' };
  }

  /** Starts it (creating the cluster the first time; after a crash, with recovery from the WAL); resolves once it accepts connections. */
  async start(): Promise<void> {
    if (this.folder === null) {
      if (!fs.existsSync(this.startScript)) {
        throw new Error(
          `${this.startScript} is absent: this test starts and crashes a TimescaleDB of its own with it. Put the shared folder beside the repository (../shared), or opt out of TimescaleDB with STOCKWIRE_TEST_TIMESCALE=0 (not in CI).`,
        );
      }
      this.folder = fs.mkdtempSync(path.join(os.tmpdir(), 'sw-tsdb-'));
      fs.chmodSync(this.folder, 0o755); // the server runs as the postgres user and must reach its data folder inside
      process.on('exit', this.stopOnExit); // a test file that dies leaves no server behind
    }
    await this.releasePort(); // the server binds it now
    const r = await runCommand(this.startScript, [], this.env(), START_TIMEOUT_MS);
    if (r.code !== 0 || r.stdout.trim() !== this.url)
      throw new Error(`${this.startScript} on port ${this.port} failed (exit ${r.code}):\n${r.stdout}${r.stderr}`);
  }

  /** Holds the port while the server is down (see `placeholder`). */
  private async holdPort(): Promise<void> {
    const server = net.createServer((socket) => socket.destroy());
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.placeholder = server;
  }

  private async releasePort(): Promise<void> {
    const server = this.placeholder;
    this.placeholder = null;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** `pg_ctl stop -m immediate`: every server process quits at once, without a checkpoint — a crash, repaired by recovery at the next start. */
  async stopImmediate(): Promise<void> {
    const pgCtl = `'${this.bin}/pg_ctl' -D '${this.dir}/data' -m immediate -w stop`;
    const [command, args] =
      process.getuid?.() === 0 ? ['su', ['postgres', '-s', '/bin/sh', '-c', pgCtl]] : ['sh', ['-c', pgCtl]];
    const r = await runCommand(command, args, this.env(), STOP_TIMEOUT_MS);
    if (r.code !== 0) throw new Error(`pg_ctl stop -m immediate failed (exit ${r.code}):\n${r.stdout}${r.stderr}`);
    await this.holdPort();
  }

  /** `kill -9` of the postmaster; resolves once it is gone (its backends notice and quit by themselves). */
  async kill9(): Promise<number> {
    const pid = Number(fs.readFileSync(path.join(this.dir, 'data/postmaster.pid'), 'utf8').split('\n')[0]);
    if (!Number.isInteger(pid) || pid <= 1) throw new Error(`no postmaster pid in ${this.dir}/data/postmaster.pid`);
    process.kill(pid, 'SIGKILL');
    const deadline = Date.now() + STOP_TIMEOUT_MS;
    while (alive(pid)) {
      if (Date.now() > deadline) throw new Error(`postmaster ${pid} still alive ${STOP_TIMEOUT_MS} ms after SIGKILL`);
      await new Promise((r) => setTimeout(r, 50));
    }
    // Its backends may still hold the listening socket for a moment; the placeholder takes the port once it is free.
    for (;;) {
      try {
        await this.holdPort();
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    return pid;
  }

  /** Stops it (fast shutdown) and removes its folder. */
  async remove(): Promise<void> {
    await this.releasePort();
    if (this.folder === null) return;
    process.removeListener('exit', this.stopOnExit);
    await runCommand(this.startScript, ['stop'], this.env(), STOP_TIMEOUT_MS);
    fs.rmSync(this.folder, { recursive: true, force: true });
    this.folder = null;
  }
}

/** Running and not a zombie (a container's init may never reap the killed postmaster). */
function alive(pid: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Runs a command to its end (killed after `timeoutMs`): its exit code and output. */
export function runCommand(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const t = setTimeout(() => {
      stderr += `\n(killed after ${timeoutMs} ms)`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(t);
      resolve({ code: null, stdout, stderr: `${stderr}${err.message}` });
    });
    child.once('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}
