import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LoginQueue } from '../../broker/login-queue.js';
import { ConnectLimiter } from '../../broker/limits.js';
import { SessionRegistry } from '../../broker/sessions.js';

/** A check that finishes when the test says so, recording the order checks start in. */
function gate(started: string[]) {
  const pending = new Map<string, () => void>();
  return {
    check: (name: string) => () =>
      new Promise<boolean>((resolve) => {
        started.push(name);
        pending.set(name, () => resolve(true));
      }),
    finish: async (name: string) => {
      pending.get(name)?.();
      await new Promise((r) => setImmediate(r));
    },
  };
}

describe('LoginQueue: whose password is checked next', () => {
  test('given checks waiting from several addresses, they take turns by address; a device logging in again goes first', async () => {
    const started: string[] = [];
    const g = gate(started);
    const q = new LoginQueue(1, 10);
    const never = () => false;
    q.run('address', 'A', g.check('a0'), never);
    for (const name of ['a1', 'a2', 'a3']) q.run('address', 'A', g.check(name), never);
    q.run('address', 'B', g.check('b1'), never);
    q.run('address', 'C', g.check('c1'), never);
    q.run('priority', 'A', g.check('known'), never);
    assert.equal(q.waiting, 6);
    for (const name of ['a0', 'known', 'a1', 'b1', 'c1', 'a2']) await g.finish(name);
    assert.deepEqual(started, ['a0', 'known', 'a1', 'b1', 'c1', 'a2', 'a3']);
  });

  test('at most `concurrency` run at once; one more than `perAddress` waiting is refused without running', async () => {
    const started: string[] = [];
    const g = gate(started);
    const q = new LoginQueue(2, 2);
    const runs = ['x1', 'x2', 'x3', 'x4'].map((n) => q.run('address', 'X', g.check(n), () => false));
    assert.deepEqual(started, ['x1', 'x2']);
    assert.equal(
      q.run('address', 'X', g.check('x5'), () => false),
      null,
      'x3 and x4 wait: X is full',
    );
    assert.notEqual(
      q.run('address', 'Y', g.check('y1'), () => false),
      null,
      'another address is not',
    );
    await g.finish('x1');
    assert.deepEqual(started, ['x1', 'x2', 'x3']);
    for (const n of ['x2', 'x3', 'y1', 'x4']) await g.finish(n);
    assert.deepEqual(await Promise.all(runs), [true, true, true, true]);
  });

  test('a check whose client has gone is skipped when its turn comes', async () => {
    const started: string[] = [];
    const g = gate(started);
    const q = new LoginQueue(1, 10);
    q.run('address', 'A', g.check('first'), () => false);
    const left = q.run('address', 'A', g.check('left'), () => true);
    q.run('address', 'A', g.check('stayed'), () => false);
    await g.finish('first');
    assert.equal(await left, 'gone');
    assert.deepEqual(started, ['first', 'stayed']);
  });

  test('a check that fails lets the next one run', async () => {
    const q = new LoginQueue(1, 10);
    const failing = q.run(
      'address',
      'A',
      () => Promise.reject(new Error('scrypt broke')),
      () => false,
    );
    const next = q.run(
      'address',
      'A',
      () => Promise.resolve(true),
      () => false,
    );
    await assert.rejects(failing as Promise<unknown>, /scrypt broke/);
    assert.equal(await next, true);
  });
});

describe('ConnectLimiter: a device at its own address', () => {
  test("is not refused by that address's window: a flood from its NAT address does not lock it out", () => {
    const l = new ConnectLimiter({ connectsPerClientId: 5, connectsPerAddress: 2 });
    assert.equal(l.record('s1', '10.0.0.1', 0), null);
    l.authenticated('s1', '10.0.0.1');
    assert.equal(l.record('x1', '10.0.0.1', 1), null);
    assert.equal(l.record('x2', '10.0.0.1', 2), 'attempts_address', 'the address is full');
    const s1 = l.check('s1', '10.0.0.1', 3);
    assert.equal(s1.refusal, null);
    assert.equal(s1.refusal === null && s1.knownGood, true);
    assert.equal(
      l.check('s2', '10.0.0.1', 3).refusal,
      'attempts_address',
      'a device new at that address is still limited',
    );
  });
});

describe('SessionRegistry: persistent sessions per device', () => {
  test('a new session beyond the bound ends the ones offline the longest; with all online it is refused', () => {
    const r = new SessionRegistry(2, 1_000);
    const [a, b, c] = [{}, {}, {}];
    assert.deepEqual(r.admit('d-1', 'd', a), { ok: true, evict: [] });
    assert.deepEqual(r.admit('d-2', 'd', b), { ok: true, evict: [] });
    assert.deepEqual(r.admit('d-3', 'd', c), { ok: false });
    r.offline('d-2', b, 10);
    r.offline('d-1', a, 20);
    assert.deepEqual(r.admit('d-3', 'd', c), { ok: true, evict: ['d-2'] });
    assert.deepEqual(r.admit('d-1', 'd', {}), { ok: true, evict: [] }, 'its own session is resumed');
    assert.equal(r.count('d'), 2);
  });

  test('a session offline past the expiry is ended; a newer connection under its id keeps it', () => {
    const r = new SessionRegistry(5, 1_000);
    const [old, newer] = [{}, {}];
    r.admit('d-1', 'd', old);
    r.admit('d-1', 'd', newer); // a takeover: the old connection closes after
    r.offline('d-1', old, 0);
    assert.deepEqual(r.expire(5_000), [], 'still online through the newer connection');
    r.offline('d-1', newer, 1_000);
    assert.deepEqual(r.expire(2_000), []);
    assert.deepEqual(
      r.expire(2_001).map((e) => e.clientId),
      ['d-1'],
    );
    assert.equal(r.size, 0);
  });
});
