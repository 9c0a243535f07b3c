import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { RunnerError } from './timescale.js';

/**
 * What `npm test` needs of the machine besides node_modules, and how it gets each on a fresh machine of ours
 * (Debian, root, Debian's registry reachable): the README's test command then passes with nothing installed by hand.
 */
export interface Need {
  what: string;
  /** true when the machine has it */
  present: () => boolean;
  /** Debian package that brings it */
  apt: string;
}

export const FAKETIME_LIB = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';
const onPath = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

export const NEEDS: Need[] = [
  {
    what: 'chromium (the live display test; CHROMIUM_PATH)',
    present: () => existsSync(process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'),
    apt: 'chromium',
  },
  {
    what: 'promtool and prometheus (alert rule tests, scrape end to end)',
    present: () => onPath('promtool') && onPath('prometheus'),
    apt: 'prometheus',
  },
  {
    what: 'amtool and alertmanager (the Alertmanager config and end-to-end alert tests)',
    present: () => onPath('amtool') && onPath('prometheus-alertmanager'),
    apt: 'prometheus-alertmanager',
  },
  { what: 'libfaketime (the clock-skew fault scenario)', present: () => existsSync(FAKETIME_LIB), apt: 'faketime' },
  {
    what: 'mosquitto_pub and mosquitto_sub (interop tests)',
    present: () => onPath('mosquitto_pub') && onPath('mosquitto_sub'),
    apt: 'mosquitto-clients',
  },
  { what: 'mosquitto (the reference broker)', present: () => onPath('mosquitto'), apt: 'mosquitto' },
  { what: 'redis-server (the fault suite starts its own)', present: () => onPath('redis-server'), apt: 'redis-server' },
  { what: 'openssl (test certificates)', present: () => onPath('openssl'), apt: 'openssl' },
];

/** A service the tests talk to, and the command that starts it as the machine's own start-up does. */
export interface Service {
  name: string;
  port: number;
  start: string;
}

export const SERVICES: Service[] = [
  {
    name: 'PostgreSQL',
    port: 5432,
    start: 'pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start',
  },
  {
    name: 'Redis',
    port: 6379,
    start: 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
  },
  { name: 'Mosquitto', port: 1883, start: 'mosquitto -d -c /etc/mosquitto/mosquitto.conf' },
];

export interface MachineOptions {
  /** STOCKWIRE_TEST_INSTALL=0: report what is missing instead of installing or starting it */
  install: boolean;
  root: boolean;
  say: (line: string) => void;
  /** runs a shell command; throws when it fails (tests replace it) */
  run?: (command: string) => void;
  portOpen?: (port: number) => Promise<boolean>;
  /** ms a started service has to listen */
  startWaitMs?: number;
}

export function portOpen(port: number, host = '127.0.0.1', timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.once('connect', () => done(true)).once('error', () => done(false));
  });
}

const shell = (command: string) => void execFileSync('sh', ['-c', command], { stdio: ['ignore', 'ignore', 'inherit'] });

/**
 * Installs the missing packages (apt-get, as root) and starts the services that are down, or throws a RunnerError
 * that lists what is missing and the commands that would bring it. Idempotent: a ready machine costs a few checks.
 */
export async function prepareMachine(needs: Need[], services: Service[], o: MachineOptions): Promise<void> {
  const run = o.run ?? shell;
  const isOpen = o.portOpen ?? portOpen;
  const missing = needs.filter((n) => !n.present());
  if (missing.length > 0) {
    const packages = [...new Set(missing.map((n) => n.apt))];
    const command = `apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${packages.join(' ')}`;
    if (!o.install || !o.root) {
      throw new RunnerError(
        `missing: ${missing.map((n) => n.what).join('; ')}.\nInstall them with: ${command}${o.root ? '' : ' (as root)'}${o.install ? '' : '\n(STOCKWIRE_TEST_INSTALL=0: npm test does not install them itself)'}`,
      );
    }
    o.say(`installing ${packages.join(' ')} (missing: ${missing.map((n) => n.what).join('; ')})`);
    try {
      run(command);
    } catch (err) {
      throw new RunnerError(`${command} failed: ${(err as Error).message}`);
    }
    const still = missing.filter((n) => !n.present());
    if (still.length > 0)
      throw new RunnerError(`still missing after ${command}: ${still.map((n) => n.what).join('; ')}`);
  }
  for (const s of services) {
    if (await isOpen(s.port)) continue;
    if (!o.install || !o.root)
      throw new RunnerError(`${s.name} is not listening on 127.0.0.1:${s.port}. Start it with: ${s.start}`);
    o.say(`starting ${s.name}: ${s.start}`);
    try {
      run(s.start);
    } catch (err) {
      throw new RunnerError(`${s.name} did not start (${s.start}): ${(err as Error).message}`);
    }
    const waitMs = o.startWaitMs ?? 30_000;
    const deadline = Date.now() + waitMs;
    let up = await isOpen(s.port);
    while (!up && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, Math.min(500, waitMs)));
      up = await isOpen(s.port);
    }
    if (!up)
      throw new RunnerError(
        `${s.name} was started (${s.start}) but does not listen on 127.0.0.1:${s.port} after ${waitMs / 1000} s`,
      );
  }
}
