import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The launcher users run (compiled code when built, else the sources through tsx). */
export const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/stockwire');

export interface Running {
  child: ChildProcess;
  ports: Record<string, number>;
  /** the last lines the process wrote to stderr (its logs) */
  logs: string[];
  exited: Promise<number | null>;
}

/**
 * Starts `stockwire <args>` as a real process through the launcher and waits for its ready line on stdout.
 * With `nodeArgs` (e.g. `--cpu-prof`, which NODE_OPTIONS refuses) node runs the sources itself, without the launcher.
 */
export async function startStockwire(
  args: string[],
  env: Record<string, string | undefined> = {},
  timeoutMs = 60_000,
  nodeArgs: string[] = [],
): Promise<Running> {
  const [command, argv] = nodeArgs.length > 0 ? [process.execPath, [...nodeArgs, `${BIN}.js`, ...args]] : [BIN, args];
  const child = spawn(command, argv, {
    env: { ...process.env, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  child.stderr?.on('data', (b: Buffer) => {
    logs.push(...b.toString().split('\n').filter(Boolean));
    if (logs.length > 400) logs.splice(0, logs.length - 400);
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ports = await new Promise<Record<string, number>>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(
      () => reject(new Error(`stockwire ${args[0]} not ready after ${timeoutMs} ms:\n${logs.slice(-20).join('\n')}`)),
      timeoutMs,
    );
    child.stdout?.on('data', (b: Buffer) => {
      buf += b.toString();
      for (const line of buf.split('\n').slice(0, -1)) {
        try {
          const msg = JSON.parse(line) as Record<string, unknown>;
          if (msg.ready === true) {
            clearTimeout(timer);
            const { ready: _ready, ...p } = msg;
            resolve(p as Record<string, number>);
          }
        } catch {
          /* not the ready line */
        }
      }
      buf = buf.slice(buf.lastIndexOf('\n') + 1);
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`stockwire ${args[0]} exited with ${code} before ready:\n${logs.slice(-20).join('\n')}`));
    });
  });
  return { child, ports, logs, exited };
}

export async function kill9(r: Running): Promise<void> {
  r.child.kill('SIGKILL');
  await r.exited;
}

// Below Linux's ephemeral range (32768–60999): a port the kernel hands out for port 0 or an outgoing
// connection is never one of these, so a port picked here stays free between the check and its use
// (picked with port 0, another test's listener or client took it in that gap: EADDRINUSE in CI).
const PORT_RANGE = { from: 20_000, to: 32_000 };

/** A TCP port free on 127.0.0.1 now and outside the ephemeral range, for a process that must keep its port across restarts. */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = PORT_RANGE.from + Math.floor(Math.random() * (PORT_RANGE.to - PORT_RANGE.from));
    const free = await new Promise<boolean>((resolve) => {
      const server = net.createServer();
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error(`no free port in ${PORT_RANGE.from}–${PORT_RANGE.to} after 50 tries`);
}
