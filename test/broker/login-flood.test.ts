import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { DeviceLimits, DeviceRegistry } from '../../broker/index.js';
import { deviceRegistry, passwordOf, startBroker, until, type TestBroker } from '../helpers/broker.js';
import { flood, login, loginAndLeave, percentile, UNTIL_STOPPED, type Login } from '../helpers/login-flood.js';

// Issue 15, item 3: floods of bogus logins must neither lock a device out nor make its login slow. A real broker on
// 127.0.0.1; the flood comes from other loopback addresses (127.0.0.0/8), as from other machines or a warehouse NAT.
// Bounds are generous for a loaded 2-core machine; the code before this change failed them by far (numbers below).
const LOGIN_BOUND_MS = 5_000;
const REFUSALS = 'stockwire_broker_connection_refusals_total';
const CHECKS = 'stockwire_broker_login_checks_total';

let devices: DeviceRegistry;
const brokers: TestBroker[] = [];

before(async () => {
  devices = await deviceRegistry([
    ...Array.from({ length: 8 }, (_, i) => ({ id: `s${i}`, warehouse: 'W1', kind: 'scanner' as const })),
    { id: 'gw1', warehouse: 'W1', kind: 'gateway' },
  ]);
});
after(async () => {
  await Promise.all(brokers.map((b) => b.broker.stop()));
});

async function edge(limits: Partial<DeviceLimits> = {}): Promise<{ b: TestBroker; port: number }> {
  const b = await startBroker({ role: 'edge', edgeWarehouse: 'W1', devices, limits });
  brokers.push(b);
  return { b, port: Number(new URL(b.url).port) };
}
const device = (port: number, id: string, localAddress: string, password = passwordOf(id)): Login => ({
  port,
  localAddress,
  clientId: id,
  username: id,
  password,
});

describe('unknown usernames', () => {
  // Before: 600 CONNECTs with unknown usernames used up the address's 600 attempts a minute, and a device at that
  // address (a warehouse NAT) was refused for the rest of the minute, again and again.
  test('a flood of unknown usernames from a NAT address costs no password check and locks out none of its devices', async () => {
    const { b, port } = await edge();
    const nat = '127.0.1.1';
    assert.equal((await login(device(port, 's0', nat))).rc, 0, 's0 logged in from the NAT before');
    const f = flood(port, [nat], 700, 50, (_a, i) => ({
      clientId: `x${i}`,
      username: `nobody-${i}`,
      password: 'guess',
    }));
    await f.done;
    const known = await login(device(port, 's0', nat));
    const first = await login(device(port, 's1', nat));
    process.stdout.write(
      `# after 700 unknown usernames from the NAT: s0 logged in in ${known.ms.toFixed(0)} ms (CONNACK ${known.rc}), s1 (first time) in ${first.ms.toFixed(0)} ms (CONNACK ${first.rc})\n`,
    );
    assert.equal(known.rc, 0);
    assert.equal(first.rc, 0, 'a device never seen at that address is not locked out either');
    assert.equal(f.answers.get(4), 700, 'each refused: bad user name or password');
    assert.equal(await b.metric(CHECKS), 3, "only the devices' logins ran scrypt");
  });

  test('a known username without a password is refused without a check', async () => {
    const { b, port } = await edge();
    const r = await login({ port, clientId: 's2', username: 's2' });
    assert.equal(r.rc, 4);
    assert.equal(await b.metric(CHECKS), 0);
    assert.equal(await b.metric(REFUSALS, { reason: 'bad_password' }), 1);
  });
});

describe('bogus logins of known usernames from other addresses', () => {
  // Before: 2,360 bogus logins from 4 addresses made a legitimate login from a fifth take 40 s.
  test('a device logging in again, and one logging in for the first time, each get in promptly while 4 addresses flood', async () => {
    const { b, port } = await edge();
    const home = '127.0.2.1';
    assert.equal((await login(device(port, 's3', home))).rc, 0);
    const attackers = ['127.0.3.1', '127.0.3.2', '127.0.3.3', '127.0.3.4'];
    // wrong passwords for known usernames: each one costs a scrypt check
    // Until stopped, not 590 per address: a flood of fixed size could be over before the devices log in (the refusals
    // are cheap now), and whether the logins were measured during it would depend on the machine's speed.
    const f = flood(port, attackers, UNTIL_STOPPED, 64, (a, i) => ({
      clientId: `s${i % 8}-${a}-${i}`,
      username: `s${i % 8}`,
      password: 'wrong',
    }));
    let over = false;
    void f.done.then(() => (over = true));
    await until(() => f.sent >= 4 * 64, 'the flood to be under way');
    const again: number[] = [];
    for (let i = 0; i < 10; i++) {
      const r = await login(device(port, 's3', home));
      assert.equal(r.rc, 0);
      again.push(r.ms);
    }
    const first = await login(device(port, 's4', '127.0.2.2'));
    const waiting = await b.metric('stockwire_broker_login_waiting');
    const answered = [...f.answers.values()].reduce((a, n) => a + n, 0);
    const underWay = !over; // before stop(), after which the flood does end
    f.stop();
    process.stdout.write(
      `# during 4 addresses' bogus logins (${answered} answered, ${waiting} checks waiting): s3 again p99 ${percentile(again, 99).toFixed(0)} ms (10 logins), s4 first time ${first.ms.toFixed(0)} ms\n`,
    );
    assert.ok(percentile(again, 99) < LOGIN_BOUND_MS, `a known device logs in within ${LOGIN_BOUND_MS} ms`);
    assert.ok(underWay, 'the flood was still under way when the devices had logged in');
    assert.equal(first.rc, 0);
    assert.ok(
      first.ms < LOGIN_BOUND_MS,
      `a device new at its address logs in within ${LOGIN_BOUND_MS} ms (took ${first.ms.toFixed(0)})`,
    );
    await f.done;
  });

  test('one address gets at most LOGIN_QUEUE_PER_ADDRESS checks waiting: one more is refused at once (CONNACK 3), and nothing is spent on it', async () => {
    const { b, port } = await edge({ loginConcurrency: 1, loginQueuePerAddress: 3 });
    const f = flood(port, ['127.0.4.1'], 20, 20, (_a, i) => ({
      clientId: `s5-${i}`,
      username: 's5',
      password: 'wrong',
    }));
    await f.done;
    const busy = await b.metric(REFUSALS, { reason: 'login_busy' });
    assert.ok(busy > 0, 'some were refused as busy');
    assert.equal(f.answers.get(3), busy);
    assert.equal(await b.metric(CHECKS), 20 - busy, 'a busy refusal costs no check');
    assert.equal((await login(device(port, 's5', '127.0.4.2'))).rc, 0, 'another address is served');
  });

  test('a login whose client left while it waited is skipped', async () => {
    const { b, port } = await edge({ loginConcurrency: 1 });
    await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        loginAndLeave({ ...device(port, 's6', '127.0.5.1', 'wrong'), clientId: `s6-${i}` }),
      ),
    );
    await until(
      async () => (await b.metric(CHECKS)) + (await b.metric(REFUSALS, { reason: 'gone' })) === 12,
      'every login to be decided',
    );
    assert.ok((await b.metric(REFUSALS, { reason: 'gone' })) > 0);
  });
});
