import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NEEDS, prepareMachine, SERVICES, type Need, type Service } from './machine.js';
import { RunnerError } from './timescale.js';

/** A machine where `have` holds what is installed and `listening` the open ports; run() records the commands. */
function fakeMachine(have: Set<string>, listening: Set<number>, o: { aptWorks?: boolean; startWorks?: boolean } = {}) {
  const ran: string[] = [];
  const needs: Need[] = ['chromium', 'prometheus'].map((apt) => ({ what: apt, apt, present: () => have.has(apt) }));
  const services: Service[] = [{ name: 'Redis', port: 6379, start: 'redis-server --daemonize yes' }];
  const run = (command: string) => {
    ran.push(command);
    if (command.startsWith('apt-get')) {
      if (o.aptWorks === false) throw new Error('E: Unable to locate package');
      for (const n of needs) if (command.includes(` ${n.apt}`)) have.add(n.apt);
    } else if (o.startWorks !== false) listening.add(6379);
  };
  return { ran, needs, services, run, portOpen: async (p: number) => listening.has(p) };
}

describe('npm test prepares a fresh machine (README: the test command needs nothing installed by hand)', () => {
  it('installs what is missing with one apt-get and starts what is down, as root', async () => {
    const m = fakeMachine(new Set(['prometheus']), new Set());
    const said: string[] = [];
    await prepareMachine(m.needs, m.services, {
      install: true,
      root: true,
      say: (l) => said.push(l),
      run: m.run,
      portOpen: m.portOpen,
      startWaitMs: 1_000,
    });
    assert.deepEqual(m.ran, [
      'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium',
      'redis-server --daemonize yes',
    ]);
    assert.match(said.join('\n'), /installing chromium/);
    assert.match(said.join('\n'), /starting Redis/);
  });

  it('a ready machine runs nothing', async () => {
    const m = fakeMachine(new Set(['chromium', 'prometheus']), new Set([6379]));
    await prepareMachine(m.needs, m.services, {
      install: true,
      root: true,
      say: () => {},
      run: m.run,
      portOpen: m.portOpen,
    });
    assert.deepEqual(m.ran, []);
  });

  it('without root, or with STOCKWIRE_TEST_INSTALL=0, it says what to install and how, and changes nothing', async () => {
    for (const o of [
      { install: true, root: false },
      { install: false, root: true },
    ]) {
      const m = fakeMachine(new Set(), new Set());
      await assert.rejects(
        prepareMachine(m.needs, m.services, { ...o, say: () => {}, run: m.run, portOpen: m.portOpen }),
        (e: Error) =>
          e instanceof RunnerError &&
          /missing: chromium; prometheus/.test(e.message) &&
          /apt-get install -y -qq chromium prometheus/.test(e.message),
      );
      assert.deepEqual(m.ran, []);
    }
    const down = fakeMachine(new Set(['chromium', 'prometheus']), new Set());
    await assert.rejects(
      prepareMachine(down.needs, down.services, {
        install: false,
        root: true,
        say: () => {},
        run: down.run,
        portOpen: down.portOpen,
      }),
      /Redis is not listening on 127\.0\.0\.1:6379\. Start it with: redis-server/,
    );
  });

  it('an apt-get that fails, or a service that never listens, stops the run with the reason', async () => {
    const apt = fakeMachine(new Set(), new Set([6379]), { aptWorks: false });
    await assert.rejects(
      prepareMachine(apt.needs, apt.services, {
        install: true,
        root: true,
        say: () => {},
        run: apt.run,
        portOpen: apt.portOpen,
      }),
      /apt-get .* failed: E: Unable to locate package/,
    );
    const dead = fakeMachine(new Set(['chromium', 'prometheus']), new Set(), { startWorks: false });
    await assert.rejects(
      prepareMachine(dead.needs, dead.services, {
        install: true,
        root: true,
        say: () => {},
        run: dead.run,
        portOpen: dead.portOpen,
        startWaitMs: 300,
      }),
      /Redis was started \(redis-server --daemonize yes\) but does not listen on 127\.0\.0\.1:6379 after 0\.3 s/,
    );
  });

  it('this machine has every package and service npm test needs (the runner saw to it)', () => {
    const absent = NEEDS.filter((n) => !n.present()).map((n) => n.what);
    assert.deepEqual(absent, []);
    assert.deepEqual(
      SERVICES.map((s) => s.port),
      [5432, 6379, 1883],
    );
  });
});
