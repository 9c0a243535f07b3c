import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';

const READY_TIMEOUT_MS = 10_000;

/**
 * A Redis of the test's own on a free port, which the test may kill and start again: the machine's
 * Redis is shared with other tests and must never be stopped. No persistence, as in a cache, unless
 * `dir` is given: a start then loads the snapshot (dump.rdb) a SAVE left there, as a restarted Redis does.
 */
export class PrivateRedis {
  private child: ChildProcess | null = null;

  constructor(
    readonly port: number,
    private readonly dir?: string,
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    let child: ChildProcess;
    try {
      const snapshot = this.dir === undefined ? [] : ['--dir', this.dir, '--dbfilename', 'dump.rdb'];
      child = spawn(
        'redis-server',
        ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...snapshot],
        { stdio: 'ignore' },
      );
    } catch (err) {
      throw new Error(
        `cannot start redis-server (${(err as Error).message}): install it with \`apt-get install redis-server\``,
      );
    }
    this.child = child;
    const spawned = new Promise<never>((_resolve, reject) =>
      child.once('error', (err) =>
        reject(
          new Error(`cannot start redis-server (${err.message}): install it with \`apt-get install redis-server\``),
        ),
      ),
    );
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (await Promise.race([ping(this.port), spawned])) return;
      if (child.exitCode !== null) throw new Error(`redis-server on port ${this.port} exited with ${child.exitCode}`);
      if (Date.now() > deadline)
        throw new Error(`redis-server on port ${this.port} not answering after ${READY_TIMEOUT_MS} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** SIGSTOP: a hung Redis. Its connections stay open and nothing answers (no FIN, no RST). */
  pause(): void {
    this.child?.kill('SIGSTOP');
  }

  resume(): void {
    this.child?.kill('SIGCONT');
  }

  /** SIGKILL: a crash; what was written since the last SAVE (everything, without `dir`) is gone with it. */
  async kill(): Promise<void> {
    const child = this.child;
    this.child = null;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  }
}

/** True when a Redis answers PING on the port. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1_000, () => done(false));
    s.once('error', () => done(false));
    s.once('connect', () => s.write('PING\r\n'));
    s.once('data', (b) => done(b.toString().startsWith('+PONG')));
  });
}
