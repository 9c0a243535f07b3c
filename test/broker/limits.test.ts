import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import {
  createBroker,
  DEFAULT_DEVICE_LIMITS,
  DeviceRegistry,
  DISCONNECT_AFTER_BURSTS,
  isPublishLimited,
} from '../../broker/index.js';
import { AttemptWindow, ConnectLimiter, TokenBucket } from '../../broker/limits.js';
import { deviceLimitSpecs, deviceLimitsOf } from '../../broker/config.js';
import { Connection, PublishLimiter } from '../../broker/publish-limiter.js';
import { ConfigError, parseConfig } from '../../runtime/options.js';
import { BIN } from '../helpers/process.js';
import { pinFastCheck } from '../helpers/seed.js';

pinFastCheck('broker/limits');

describe('AttemptWindow: connection attempts in a sliding window', () => {
  test('given a limit of 3 a minute, when a 4th attempt comes within the minute, then it is refused', () => {
    const w = new AttemptWindow(3, 60_000);
    assert.deepEqual(
      [0, 10, 20, 30].map((t) => w.record('c1', t)),
      [true, true, true, false],
    );
  });

  test('refused attempts do not count: a client that keeps retrying is admitted again as soon as its window has room, at most the limit per window', () => {
    const w = new AttemptWindow(2, 1_000);
    const admitted: number[] = [];
    for (let t = 0; t < 5_000; t += 100) if (w.record('c1', t)) admitted.push(t);
    // Retrying every 100 ms (a device refused while a full outbox closed its connections): never locked out for good.
    assert.deepEqual(admitted, [0, 100, 1_000, 1_100, 2_000, 2_100, 3_000, 3_100, 4_000, 4_100]);
    for (let start = 0; start < 5_000; start += 100) {
      assert.ok(
        admitted.filter((t) => t > start - 1_000 && t <= start).length <= 2,
        `at most 2 admitted in the window ending at ${start}`,
      );
    }
  });

  test('the window slides: an attempt is allowed again as soon as the oldest leaves the window', () => {
    const w = new AttemptWindow(2, 1_000);
    assert.equal(w.record('c1', 0), true);
    assert.equal(w.record('c1', 600), true);
    assert.equal(w.record('c1', 900), false);
    // 0 has left (100, 1100]; 600 remains, the refused 900 never counted
    assert.equal(w.record('c1', 1_100), true);
    assert.equal(w.record('c1', 1_500), false, '600 and 1100 are in (500, 1500]');
    assert.equal(w.record('c1', 1_601), true);
  });

  test('keys are independent', () => {
    const w = new AttemptWindow(1, 1_000);
    assert.equal(w.record('a', 0), true);
    assert.equal(w.record('b', 0), true);
    assert.equal(w.record('a', 1), false);
  });

  test('memory is bounded: idle keys are swept, and past the bound the oldest keys are forgotten', () => {
    const w = new AttemptWindow(5, 1_000, 3);
    for (const k of ['a', 'b', 'c']) w.record(k, 0);
    w.record('d', 2_000); // a, b, c idle for a whole window: swept
    assert.equal(w.size, 1);
    for (const k of ['e', 'f', 'g', 'h']) w.record(k, 2_000);
    assert.ok(w.size <= 3, `size ${w.size}`);
  });
});

describe('ConnectLimiter: per client id and per remote address', () => {
  test('fresh client ids from one address are refused once the address is over its limit', () => {
    const l = new ConnectLimiter({ connectsPerClientId: 10, connectsPerAddress: 3 });
    const answers = ['x1', 'x2', 'x3', 'x4'].map((id) => l.record(id, '10.0.0.9', 0));
    assert.deepEqual(answers, [null, null, null, 'attempts_address']);
    assert.equal(l.record('x5', '10.0.0.10', 0), null, 'another address is not affected');
  });

  test('one client id from many addresses is refused once the client id is over its limit', () => {
    const l = new ConnectLimiter({ connectsPerClientId: 2, connectsPerAddress: 100 });
    assert.deepEqual(
      ['a1', 'a2', 'a3'].map((addr) => l.record('scanner-1', addr, 0)),
      [null, null, 'attempts_client_id'],
    );
  });

  test("an attempt refused by one key counts against neither: a locked-out address does not use up its devices' own allowance", () => {
    const l = new ConnectLimiter({ connectsPerClientId: 2, connectsPerAddress: 2 });
    assert.equal(l.record('a', '10.0.0.1', 0), null);
    assert.equal(l.record('b', '10.0.0.1', 0), null);
    for (let i = 0; i < 5; i++) assert.equal(l.record('c', '10.0.0.1', i), 'attempts_address');
    assert.equal(l.record('c', '10.0.0.2', 10), null, "c's refused attempts did not count against c");
    assert.equal(l.record('c', '10.0.0.3', 10), null);
    assert.equal(l.record('c', '10.0.0.4', 10), 'attempts_client_id');
  });

  test('wrong-password attempts from elsewhere cannot lock a device out: the address it authenticated from has its own window for its client id', () => {
    const l = new ConnectLimiter({ connectsPerClientId: 2, connectsPerAddress: 100 });
    assert.equal(l.record('gw-WH1', '10.0.0.1', 0), null);
    l.authenticated('gw-WH1', '10.0.0.1'); // the edge's link
    // Someone else, with any password, spends the client id's window (the broker counts before the scrypt check).
    // (The edge's first attempt, before the client id knew its address, counts in that shared window too.)
    assert.deepEqual(
      [1, 2, 3].map((t) => l.record('gw-WH1', '10.6.6.6', t)),
      [null, 'attempts_client_id', 'attempts_client_id'],
    );
    assert.equal(l.record('gw-WH1', '10.7.7.7', 4), 'attempts_client_id', 'any other address shares that window');
    // The edge reconnects from its own address: admitted, and its own reconnect loop is still bounded.
    assert.deepEqual(
      [5, 6, 7].map((t) => l.record('gw-WH1', '10.0.0.1', t)),
      [null, null, 'attempts_client_id'],
    );
    assert.equal(l.record('gw-WH1', '10.0.0.1', 60_010), null, 'a minute later');
  });

  test('a client id remembers the last 4 addresses it authenticated from', () => {
    const l = new ConnectLimiter({ connectsPerClientId: 1, connectsPerAddress: 100 });
    for (const a of ['a1', 'a2', 'a3', 'a4', 'a5']) l.authenticated('s1', a);
    assert.equal(l.record('s1', 'a1', 0), null, 'a1 is forgotten: the shared window, still empty');
    assert.equal(l.record('s1', 'a1', 1), 'attempts_client_id', 'and now full');
    for (const a of ['a2', 'a3', 'a4', 'a5']) assert.equal(l.record('s1', a, 2), null, `${a} has its own window`);
  });

  test('a connection without a known address is limited by its client id alone', () => {
    const l = new ConnectLimiter({ connectsPerClientId: 1, connectsPerAddress: 1 });
    assert.equal(l.record('a', undefined, 0), null);
    assert.equal(l.record('b', undefined, 0), null);
    assert.equal(l.record('a', undefined, 0), 'attempts_client_id');
  });
});

describe('TokenBucket: publish rate of one device', () => {
  test('given a full bucket, a burst goes through without waiting; the next publish waits one token', () => {
    const b = new TokenBucket(10, 3, 0);
    assert.deepEqual([b.take(0), b.take(0), b.take(0)], [0, 0, 0]);
    assert.equal(b.take(0), 100); // 1 token at 10/s
    assert.equal(b.take(0), 200);
  });

  test('tokens come back at the rate, up to the burst', () => {
    const b = new TokenBucket(10, 2, 0);
    b.take(0);
    b.take(0);
    assert.equal(b.take(100), 0, 'one token back after 100 ms');
    assert.equal(b.take(10_000), 0);
    assert.equal(b.take(10_000), 0);
    assert.ok((b.take(10_000) as number) > 0, 'the bucket holds at most the burst');
  });

  test(`a device that goes on far beyond its rate (${DISCONNECT_AFTER_BURSTS} × burst held back) is to be disconnected`, () => {
    const burst = 2;
    const b = new TokenBucket(10, burst, 0);
    for (let i = 0; i < burst; i++) assert.equal(b.take(0), 0);
    for (let i = 0; i < burst * DISCONNECT_AFTER_BURSTS; i++) assert.ok((b.take(0) as number) > 0, `held ${i}`);
    assert.equal(b.take(0), null);
    // after the disconnect it is still in debt: its next publish waits, it is not cut at once
    assert.ok((b.take(0) as number) > 0);
  });

  test('a pause that refills the bucket starts the count again', () => {
    const b = new TokenBucket(10, 2, 0);
    for (let i = 0; i < 2 + 19; i++) b.take(0);
    const later = 60_000; // debt paid, bucket full
    for (let i = 0; i < 2; i++) assert.equal(b.take(later), 0);
    for (let i = 0; i < 20; i++) assert.ok((b.take(later) as number) > 0, `held ${i}`);
    assert.equal(b.take(later), null);
  });

  test('a refund gives a token back (a held publish whose connection closed)', () => {
    const b = new TokenBucket(10, 1, 0);
    b.take(0);
    assert.equal(b.take(0), 100);
    b.refund();
    assert.equal(b.take(0), 100, 'the refunded token is taken again');
  });

  test('property: release times (now + wait) never go backwards, so held publishes go in arrival order', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1000 }),
        fc.integer({ min: 1, max: 50 }),
        fc.array(fc.integer({ min: 0, max: 500 }), { maxLength: 300 }),
        (rate, burst, gaps) => {
          const b = new TokenBucket(rate, burst, 0);
          let now = 0;
          let last = -Infinity;
          for (const gap of gaps) {
            now += gap;
            const wait = b.take(now);
            if (wait === null) continue;
            assert.ok(wait >= 0);
            if (wait > 0) {
              assert.ok(now + wait >= last, `release ${now + wait} before ${last}`);
              last = now + wait;
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('PublishLimiter: one device across its connections', () => {
  const scanner = { id: 's1', warehouse: 'W1', kind: 'scanner' as const, passwordHash: 'x' };
  const limits = { publishRate: 10, publishBurst: 1, maxInflight: 5, connectsPerClientId: 1, connectsPerAddress: 1 };
  // The limiter's timer does not hold the process open (a broker's sockets do): this test holds it instead.
  let alive: NodeJS.Timeout;
  before(() => {
    alive = setInterval(() => undefined, 1_000);
  });
  after(() => clearInterval(alive));

  test('a closed connection gives its held tokens back: a later publish on another connection goes before the one that waited behind them', async () => {
    const delayed: string[] = [];
    const limiter = new PublishLimiter(limits, (kind, limit) => delayed.push(`${kind}/${limit}`));
    const [a, b, c] = [new Connection(), new Connection(), new Connection()];
    assert.ok((await limiter.admit(scanner, 1, a)).ok, 'its burst');
    const heldOnA = Array.from({ length: 5 }, () => limiter.admit(scanner, 1, a));
    const order: string[] = [];
    const onB = limiter.admit(scanner, 1, b).then((r) => {
      order.push('b');
      return r;
    });
    a.close();
    assert.deepEqual(
      (await Promise.all(heldOnA)).map((r) => r.ok || r.reason),
      ['closed', 'closed', 'closed', 'closed', 'closed'],
    );
    const onC = limiter.admit(scanner, 1, c).then((r) => {
      order.push('c');
      return r;
    });
    assert.ok((await onB).ok && (await onC).ok);
    assert.deepEqual(order, ['c', 'b'], 'c owes less than b was scheduled for, once a paid back');
    assert.equal(delayed.length, 7);
  });

  test('a connection closed while it waits for an in-flight slot is refused; the slot goes to the next waiter', async () => {
    const limiter = new PublishLimiter({ ...limits, publishBurst: 100, maxInflight: 1 }, () => undefined);
    const [a, b] = [new Connection(), new Connection()];
    const first = await limiter.admit(scanner, 1, a);
    assert.ok(first.ok);
    const waitingOnB = limiter.admit(scanner, 1, b);
    const waitingOnA = limiter.admit(scanner, 1, a);
    b.close();
    assert.deepEqual(await waitingOnB, { ok: false, reason: 'closed' });
    first.release();
    const next = await waitingOnA;
    assert.ok(next.ok, 'the slot passed over the closed waiter');
    next.release();
    assert.deepEqual(
      await limiter.admit(scanner, 0, b),
      { ok: false, reason: 'closed' },
      'a closed connection is refused at once',
    );
  });
  test('a publish refused because its connection closed while it waited for an in-flight slot gives its token back', async () => {
    const delayed: string[] = [];
    const limiter = new PublishLimiter({ ...limits, publishBurst: 2, maxInflight: 1 }, (kind, limit) =>
      delayed.push(`${kind}/${limit}`),
    );
    const [a, b, c] = [new Connection(), new Connection(), new Connection()];
    const first = await limiter.admit(scanner, 1, a); // the first token of the burst of 2
    assert.ok(first.ok);
    const waiting = limiter.admit(scanner, 1, b); // the second token, then a wait for the one slot
    b.close();
    assert.deepEqual(await waiting, { ok: false, reason: 'closed' });
    first.release();
    const next = await limiter.admit(scanner, 1, c);
    assert.ok(next.ok);
    next.release();
    assert.deepEqual(
      delayed,
      ['scanner/inflight'],
      'c took the token b gave back: no wait for the rate (10/s: 100 ms)',
    );
  });
});

describe('limits configuration', () => {
  test('gateways and processors are exempt from publish limits; devices are not', () => {
    assert.deepEqual(
      (['scanner', 'shelf', 'display', 'gateway', 'processor'] as const).map((k) => isPublishLimited(k)),
      [true, true, true, false, false],
    );
  });

  test('flags and environment variables give the limits; a bad value names its flag', () => {
    const c = parseConfig(deviceLimitSpecs, ['--device-publish-rate', '5', '--session-max-queued-bytes', '512KiB'], {
      DEVICE_PUBLISH_BURST: '7',
      ADDRESS_CONNECT_LIMIT: '9',
      BROKER_MAX_SESSION_BYTES: '2GiB',
      SESSION_EXPIRY: '60',
    });
    assert.deepEqual(deviceLimitsOf(c), {
      ...DEFAULT_DEVICE_LIMITS,
      publishRate: 5,
      publishBurst: 7,
      connectsPerAddress: 9,
      queuedBytesPerSession: 512 * 1024,
      sessionBytes: 2 * 1024 ** 3,
      sessionExpirySeconds: 60,
    });
    assert.throws(
      () => parseConfig(deviceLimitSpecs, ['--session-max-queued-bytes', '12 apples', '--login-concurrency', '0'], {}),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message.includes('--session-max-queued-bytes') &&
        err.message.includes('--login-concurrency'),
    );
    assert.throws(
      () => parseConfig(deviceLimitSpecs, ['--device-publish-rate', '0', '--device-max-inflight', 'x'], {}),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message.includes('--device-publish-rate') &&
        err.message.includes('--device-max-inflight'),
    );
  });

  test("edge and central exit 2 when the broker-wide session bytes are below one session's bound", async () => {
    for (const command of [['edge', '--warehouse', 'W1'], ['central']]) {
      const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
        execFile(
          BIN,
          [
            ...command,
            '--devices-file',
            '/nonexistent',
            '--broker-max-session-bytes',
            '2048',
            '--session-max-queued-bytes',
            '4KiB',
          ],
          { timeout: 60_000 },
          (err, _stdout, stderr) =>
            resolve({ code: err === null ? 0 : ((err as { code?: number }).code ?? null), stderr }),
        );
      });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /--broker-max-session-bytes: must be at least --session-max-queued-bytes \(4096\)/);
    }
  });

  test('the broker refuses invalid limits at creation, naming each', () => {
    const common = {
      role: 'central' as const,
      devices: DeviceRegistry.fromList([]),
      registry: new Registry(),
      log: pino({ level: 'silent' }),
    };
    assert.throws(
      () => createBroker({ ...common, limits: { publishRate: 0, maxInflight: 1.5 } }),
      (err: Error) => /limits\.publishRate/.test(err.message) && /limits\.maxInflight/.test(err.message),
    );
    assert.throws(
      () => createBroker({ ...common, limits: { sessionBytes: 1024, queuedBytesPerSession: 4096 } }),
      (err: Error) => /limits\.sessionBytes: must be at least queuedBytesPerSession/.test(err.message),
    );
  });
});
