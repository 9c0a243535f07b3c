import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import mqtt, { type MqttClient } from 'mqtt';
import { metric, Proc, scenarioDatabase, sleep, until } from '../faults/cluster.js';
import { writeDevices, type TestDevice } from '../helpers/devices.js';
import { freePort } from '../helpers/process.js';
import { flood, login, percentile, publishFrame, RawMqtt, UNTIL_STOPPED, type Login } from '../helpers/login-flood.js';

// The abuse suite (issue 15, items 2 and 3): floods of broker state and of logins against a real `stockwire edge` and
// `stockwire central` (processes, loopback only), while legitimate scanners publish. Asserted: memory stays bounded,
// legitimate devices keep publishing promptly, a legitimate login gets in during each flood, no acknowledged event
// is lost. Bounds are generous for a loaded 2-core machine; the code before issue 15 broke them by far: 200,000
// subscriptions alone grew an edge by 366 MB, and the unknown-username flood locked the devices' address out.
// Before issue 15 this suite grew the edge by 194 MiB in flood 2 and 548 MiB over both floods, central by 114 and 190 MiB;
// since, at most 45 and 78 MiB (V8 keeps its heap grown for a while after a flood: the figure varies from run to run).
const QOS2_ROUNDS = 3; // reconnects of the QoS 2 flooder's persistent session
const ROUND_MS = 60_000; // a round the broker never closes ends after this (the code before issue 15)
const RSS_GROWTH_BOUND = 150 * 1024 * 1024; // bytes, per process, from before the floods to after them
const ACK_P99_BOUND_MS = 5_000; // a legitimate publish's PUBACK at the edge (before: 9.1 s in flood 2; since: 0.1–1.4 s)
const LOGIN_BOUND_MS = 5_000; // a legitimate login during a flood
const PUBLISH_RATE = 20; // events/s per legitimate scanner
const SCANNERS = 5;

/** Legitimate scanners: MQTT.js clients that publish at a steady rate and remember each PUBACK and how long it took. */
class Scanners {
  readonly acks: Array<{ at: number; ms: number }> = [];
  readonly acked = new Set<string>();
  private readonly clients: MqttClient[] = [];
  private readonly timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly url: string,
    private readonly wh: string,
    private readonly devices: TestDevice[],
  ) {}

  start(): void {
    for (const d of this.devices) {
      const client = mqtt.connect(this.url, {
        username: d.id,
        password: d.password,
        clientId: d.id,
        clean: true,
        reconnectPeriod: 500,
        reconnectOnConnackError: true,
        connectTimeout: 30_000,
      });
      client.on('error', () => undefined);
      this.clients.push(client);
      let n = 0;
      let pending = 0;
      this.timers.push(
        setInterval(() => {
          if (!client.connected || pending >= 5) return;
          const id = `${d.id}-${n++}`;
          const began = performance.now();
          pending++;
          const event = JSON.stringify({ v: 1, id, type: 'received', sku: `SKU-${n % 20}`, qty: 1 });
          client.publish(`wh/${this.wh}/dev/${d.id}/event`, event, { qos: 1 }, (err) => {
            pending--;
            if (err) return;
            this.acks.push({ at: Date.now(), ms: performance.now() - began });
            this.acked.add(`${d.id}/${id}`);
          });
        }, 1000 / PUBLISH_RATE),
      );
    }
  }

  /** PUBACKs since `from` (ms since the epoch): how many, and their p99 latency. */
  since(from: number): { count: number; p99: number } {
    const ms = this.acks.filter((a) => a.at >= from).map((a) => a.ms);
    return { count: ms.length, p99: percentile(ms, 99) };
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    await sleep(1_000); // the last PUBACKs
    await Promise.all(this.clients.map((c) => c.endAsync().catch(() => undefined)));
  }
}

const MiB = (bytes: number) => (bytes / 1024 / 1024).toFixed(0);

describe('abuse suite: floods of broker state and logins against a real edge and central', () => {
  const s = scenarioDatabase('abuse');

  it('memory stays bounded, devices keep publishing, logins get in, no acknowledged event is lost', {
    timeout: 150_000,
  }, async (t: TestContext) => {
    const wh = `AB${randomBytes(3).toString('hex')}`;
    const scanners = Array.from(
      { length: SCANNERS },
      (_, i): TestDevice => ({ id: `dev-${i}`, warehouse: wh, kind: 'scanner', password: `pw-dev-${i}-x` }),
    );
    const probes: TestDevice[] = ['probe-1', 'probe-2'].map((id) => ({
      id,
      warehouse: wh,
      kind: 'scanner',
      password: `pw-${id}-x`,
    }));
    const mal: TestDevice = { id: 'mal', warehouse: wh, kind: 'scanner', password: 'pw-mal-x' }; // a stolen scanner credential
    const display: TestDevice = { id: 'disp', warehouse: wh, kind: 'display', password: 'pw-disp-x' };
    const gateway: TestDevice = { id: `gw-${wh}`, warehouse: wh, kind: 'gateway', password: 'pw-gw-x' };
    const malGateway: TestDevice = { id: 'gw-mal', warehouse: wh, kind: 'gateway', password: 'pw-gw-mal-x' };
    const files = await writeDevices([...scanners, ...probes, mal, display, gateway, malGateway]);
    const [centralPort, edgePort] = [await freePort(), await freePort()];
    const common = ['--ws-port', '0', '--http-port', '0', '--host', '127.0.0.1', '--devices-file', files.file];
    const central = new Proc(
      'central',
      () => ['central', '--mqtt-port', String(centralPort), '--data-dir', files.dir, ...common],
      { DATABASE_URL: s.db.url, LOG_LEVEL: 'error' },
    );
    const edge = new Proc(
      'edge',
      () => [
        'edge',
        '--warehouse',
        wh,
        '--mqtt-port',
        String(edgePort),
        '--data-dir',
        path.join(files.dir, 'edge'),
        '--central-url',
        `mqtt://127.0.0.1:${centralPort}`,
        '--central-username',
        gateway.id,
        '--central-password',
        gateway.password,
        ...common,
      ],
      { LOG_LEVEL: 'error' },
    );
    const legit = new Scanners(`mqtt://127.0.0.1:${edgePort}`, wh, scanners);
    const numbers: string[] = [];
    const note = (line: string) => {
      numbers.push(line);
      t.diagnostic(line);
    };
    const rss = async (p: Proc) => metric(p.current, 'process_resident_memory_bytes');
    /** A known device logging in `n` times while a flood runs: each must get CONNACK 0; the times it took. */
    const probeLogins = async (n: number, l: () => Login): Promise<number[]> => {
      const times: number[] = [];
      for (let i = 0; i < n; i++) {
        const r = await login(l());
        assert.equal(r.rc, 0, `a legitimate login during the flood got CONNACK ${r.rc}`);
        times.push(r.ms);
        await sleep(200);
      }
      return times;
    };
    try {
      await central.start();
      await edge.start();
      legit.start();
      // The probes log in once now, as devices do day to day: from then on they are known at their address.
      const probeLogin = (port: number, d: TestDevice, localAddress: string): Login => ({
        port,
        localAddress,
        clientId: d.id,
        username: d.id,
        password: d.password,
      });
      assert.equal((await login(probeLogin(edgePort, probes[0] as TestDevice, '127.0.0.1'))).rc, 0);
      assert.equal((await login(probeLogin(centralPort, display, '127.0.0.1'))).rc, 0);
      await until(() => legit.acked.size >= 200, 30_000, 'the scanners to be publishing');
      const baseline = Date.now();
      await sleep(2_000);
      const before = { edge: await rss(edge), central: await rss(central) };
      note(
        `before the floods: edge RSS ${MiB(before.edge)} MiB, central ${MiB(before.central)} MiB; PUBACK p99 ${legit.since(baseline).p99.toFixed(0)} ms`,
      );

      // ---- flood 2: broker state ------------------------------------------------------------------------------
      const phase2 = Date.now();
      const attacker = '127.0.0.9';
      const sessions = async (port: number, filters: string[], n: number) => {
        let kept = 0;
        for (let i = 0; i < n; i += 10) {
          await Promise.all(
            Array.from({ length: Math.min(10, n - i) }, async (_, j) => {
              const c = await RawMqtt.open({
                port,
                localAddress: attacker,
                clientId: `disp-${i + j}`,
                username: display.id,
                password: display.password,
                clean: false,
              });
              await c.subscribe(1, filters);
              await c.disconnect();
              kept++;
            }),
          );
        }
        return kept;
      };
      // Each part of the flood stops at a deadline: the code before issue 15 took minutes over some of them.
      const deadline = Date.now() + 30_000;
      const subscriptions = async (l: Login, filter: (i: number) => string) => {
        const c = await RawMqtt.open(l);
        let granted = 0;
        for (let p = 0; p < 100 && Date.now() < deadline; p++) {
          const codes = await Promise.race([
            c.subscribe(
              p + 1,
              Array.from({ length: 2_000 }, (_, i) => filter(p * 2_000 + i)),
            ),
            sleep(deadline - Date.now()).then(() => []),
          ]);
          granted += codes.filter((rc) => rc !== 0x80).length;
        }
        c.destroy();
        return granted;
      };
      // QoS 2 publishes of 60 KB never released (no PUBREL), QOS2_ROUNDS rounds on a persistent session that reconnects.
      // Each round waits for the broker to close the connection past its bound (the 101st unreleased publish; from
      // the second round on, the first), however long a loaded machine takes to get there: a round cut short by a
      // clock would leave the bound unreached and the refusals uncounted. ROUND_MS only ends a round that never
      // closes (the code before issue 15 held them all).
      const unreleased = async (l: Login, topic: string) => {
        let pubrecs = 0;
        for (let round = 0; round < QOS2_ROUNDS; round++) {
          const c = await RawMqtt.open({ ...l, clean: false }).catch(() => null);
          if (c === null) continue;
          c.write(
            Buffer.concat(
              Array.from({ length: 110 }, (_, i) =>
                publishFrame(topic, Buffer.alloc(60_000, 'q'), 2, round * 110 + i + 1),
              ),
            ),
          );
          await Promise.race([c.closed, sleep(ROUND_MS)]); // the broker closes it past its bound
          pubrecs += c.received.filter((p) => p.type === 5).length;
          c.destroy();
        }
        return pubrecs;
      };
      const [edgeSessions, centralSessions, edgeSubs, centralSubs, edgeQos2, centralQos2, edgeLogins2, centralLogins2] =
        await Promise.all([
          sessions(edgePort, ['stock/#', `wh/${wh}/stock/#`], 300),
          sessions(centralPort, ['stock/#', 'wh/+/stock/#'], 100),
          subscriptions(
            {
              port: edgePort,
              localAddress: attacker,
              clientId: 'mal-subs',
              username: mal.id,
              password: mal.password,
              clean: false,
            },
            (i) => `wh/${wh}/stock/x${i}`,
          ),
          subscriptions(
            {
              port: centralPort,
              localAddress: attacker,
              clientId: 'disp-subs',
              username: display.id,
              password: display.password,
              clean: false,
            },
            (i) => `wh/+/stock/x${i}`,
          ),
          unreleased(
            { port: edgePort, localAddress: attacker, clientId: 'mal-q2', username: mal.id, password: mal.password },
            `wh/${wh}/dev/mal/event`,
          ),
          unreleased(
            {
              port: centralPort,
              localAddress: attacker,
              clientId: 'gw-mal-q2',
              username: malGateway.id,
              password: malGateway.password,
            },
            `wh/${wh}/dev/mal/event`,
          ),
          probeLogins(10, () => probeLogin(edgePort, probes[0] as TestDevice, '127.0.0.1')),
          probeLogins(10, () => probeLogin(centralPort, display, '127.0.0.1')),
        ]);
      await sleep(3_000); // stock keeps changing: the offline sessions' queues fill up to their bound
      const afterState = { edge: await rss(edge), central: await rss(central) };
      const p2 = legit.since(phase2);
      note(
        `flood 2 (state): ${edgeSessions} + ${centralSessions} persistent display sessions (edge + central), 2 × 200,000 subscriptions (granted ${edgeSubs}, ${centralSubs}), ` +
          `2 × ${QOS2_ROUNDS * 110} QoS 2 × 60 KB never released (PUBREC ${edgeQos2}, ${centralQos2}); edge RSS ${MiB(afterState.edge)} MiB (+${MiB(afterState.edge - before.edge)}), ` +
          `central ${MiB(afterState.central)} MiB (+${MiB(afterState.central - before.central)}); ${p2.count} PUBACKs, p99 ${p2.p99.toFixed(0)} ms; ` +
          `a known device's login p99 ${percentile(edgeLogins2, 99).toFixed(0)} ms at the edge, ${percentile(centralLogins2, 99).toFixed(0)} ms at central (10 each)`,
      );
      for (const [name, p] of [
        ['edge', edge],
        ['central', central],
      ] as const) {
        note(
          `  ${name}: ${await metric(p.current, 'stockwire_broker_persistent_sessions')} sessions kept, ${await metric(p.current, 'stockwire_broker_session_queued_messages')} messages queued, ` +
            `${MiB(await metric(p.current, 'stockwire_broker_session_bytes'))} MiB session bytes, ${await metric(p.current, 'stockwire_broker_sessions_ended_total', { reason: 'evicted' })} evicted, ` +
            `${await metric(p.current, 'stockwire_broker_subscriptions_limited_total')} subscriptions refused, ${await metric(p.current, 'stockwire_broker_publish_refusals_total', { reason: 'qos2_inflight' })} QoS 2 publishes refused`,
        );
      }
      assert.equal(edgeSubs, 1_000, 'the edge grants one client 1,000 subscriptions');
      assert.equal(centralSubs, 1_000, 'central grants one client 1,000 subscriptions');
      assert.ok(edgeQos2 <= 100 && centralQos2 <= 100, 'at most 100 unreleased QoS 2 publishes per device');
      for (const p of [edge, central]) {
        // the rounds after the first find the device still holding its 100 unreleased: each is refused at its first publish
        assert.ok(
          (await metric(p.current, 'stockwire_broker_publish_refusals_total', { reason: 'qos2_inflight' })) >=
            QOS2_ROUNDS - 1,
          `${p.name} refused the rounds after the first`,
        );
      }
      assert.ok(
        (await metric(edge.current, 'stockwire_broker_persistent_sessions')) <= 16 + 2,
        'a device keeps at most 16 sessions',
      );
      for (const [name, grown] of [
        ['edge', afterState.edge - before.edge],
        ['central', afterState.central - before.central],
      ] as const) {
        assert.ok(
          grown < RSS_GROWTH_BOUND,
          `${name} RSS grew by ${MiB(grown)} MiB in flood 2 (bound ${MiB(RSS_GROWTH_BOUND)} MiB)`,
        );
      }
      assert.ok(p2.count > 100, 'the scanners kept publishing');
      assert.ok(
        percentile([...edgeLogins2, ...centralLogins2], 99) < LOGIN_BOUND_MS,
        `logins during flood 2 within ${LOGIN_BOUND_MS} ms`,
      );
      assert.ok(
        p2.p99 < ACK_P99_BOUND_MS,
        `PUBACK p99 ${p2.p99.toFixed(0)} ms during flood 2 (bound ${ACK_P99_BOUND_MS} ms)`,
      );

      // ---- flood 3: logins ------------------------------------------------------------------------------------
      const phase3 = Date.now();
      // 700 made-up usernames from the scanners' own address (a warehouse NAT), then a device logs in from there.
      const unknown = flood(edgePort, ['127.0.0.1'], 700, 50, (_a, i) => ({
        clientId: `nobody-${i}`,
        username: `nobody-${i}`,
        password: 'guess',
      }));
      const unknownCentral = flood(centralPort, ['127.0.0.1'], 700, 50, (_a, i) => ({
        clientId: `nobody-${i}`,
        username: `nobody-${i}`,
        password: 'guess',
      }));
      const [edgeLogins3a, centralLogins3a] = await Promise.all([
        probeLogins(5, () => probeLogin(edgePort, probes[0] as TestDevice, '127.0.0.1')),
        probeLogins(5, () => probeLogin(centralPort, display, '127.0.0.1')),
        unknown.done,
        unknownCentral.done,
      ]);
      const natEdge = await login(probeLogin(edgePort, probes[1] as TestDevice, '127.0.0.1'));
      const natCentral = await login({
        port: centralPort,
        clientId: 'disp-nat',
        username: display.id,
        password: display.password,
      });
      note(
        `flood 3a: 2 × 700 unknown usernames from the devices' address: a known device's login p99 ${percentile(edgeLogins3a, 99).toFixed(0)} ms at the edge, ${percentile(centralLogins3a, 99).toFixed(0)} ms at central (5 each, during it); ` +
          `a first login from there after it ${natEdge.ms.toFixed(0)} ms at the edge (CONNACK ${natEdge.rc}), ${natCentral.ms.toFixed(0)} ms at central (CONNACK ${natCentral.rc})`,
      );
      assert.ok(
        percentile([...edgeLogins3a, ...centralLogins3a], 99) < LOGIN_BOUND_MS,
        `logins during flood 3a within ${LOGIN_BOUND_MS} ms`,
      );
      assert.equal(natEdge.rc, 0);
      assert.equal(natCentral.rc, 0);
      assert.ok(natEdge.ms < LOGIN_BOUND_MS && natCentral.ms < LOGIN_BOUND_MS);

      // 4 addresses' wrong passwords of known usernames, at the edge and at central at once, until stopped: a flood
      // of fixed size (590 each, before) could end before the probes log in on a fast machine.
      const attackers = ['127.0.3.1', '127.0.3.2', '127.0.3.3', '127.0.3.4'];
      const bogus = flood(edgePort, attackers, UNTIL_STOPPED, 64, (a, i) => ({
        clientId: `dev-${i % SCANNERS}-${a}-${i}`,
        username: `dev-${i % SCANNERS}`,
        password: 'wrong',
      }));
      const bogusCentral = flood(centralPort, attackers, UNTIL_STOPPED, 64, (a, i) => ({
        clientId: `${gateway.id}-${a}-${i}`,
        username: gateway.id,
        password: 'wrong',
      }));
      await until(() => bogus.sent >= 256 && bogusCentral.sent >= 256, 30_000, 'the login floods to be under way');
      let over = false;
      void Promise.race([bogus.done, bogusCentral.done]).then(() => (over = true));
      const edgeLogins: number[] = [];
      const centralLogins: number[] = [];
      for (let i = 0; i < 10; i++) {
        const [e, c] = await Promise.all([
          login(probeLogin(edgePort, probes[0] as TestDevice, '127.0.0.1')),
          login(probeLogin(centralPort, display, '127.0.0.1')),
        ]);
        assert.equal(e.rc, 0);
        assert.equal(c.rc, 0);
        edgeLogins.push(e.ms);
        centralLogins.push(c.ms);
      }
      const fresh = await login({
        port: edgePort,
        localAddress: '127.0.0.6',
        clientId: `${probes[1]?.id}-x`,
        username: probes[1]?.id,
        password: probes[1]?.password,
      });
      const answered = [...bogus.answers.values()].reduce((a, n) => a + n, 0);
      const underWay = !over; // before stop(), after which the floods do end
      bogus.stop();
      bogusCentral.stop();
      await Promise.all([bogus.done, bogusCentral.done]);
      await sleep(1_000);
      const afterLogins = { edge: await rss(edge), central: await rss(central) };
      const p3 = legit.since(phase3);
      note(
        `flood 3b: 2 × 4 addresses' bogus logins (${answered} answered at the edge when the probes were done): a known device's login p99 ${percentile(edgeLogins, 99).toFixed(0)} ms at the edge, ` +
          `${percentile(centralLogins, 99).toFixed(0)} ms at central (10 each); a device new at its address ${fresh.ms.toFixed(0)} ms; edge RSS ${MiB(afterLogins.edge)} MiB, central ${MiB(afterLogins.central)} MiB; ` +
          `${p3.count} PUBACKs, p99 ${p3.p99.toFixed(0)} ms`,
      );
      assert.ok(
        percentile(edgeLogins, 99) < LOGIN_BOUND_MS && percentile(centralLogins, 99) < LOGIN_BOUND_MS,
        `logins within ${LOGIN_BOUND_MS} ms`,
      );
      assert.equal(fresh.rc, 0);
      assert.ok(fresh.ms < LOGIN_BOUND_MS, `a device new at its address got in within ${LOGIN_BOUND_MS} ms`);
      assert.ok(underWay, 'the flood was still under way while the probes logged in');
      assert.ok(p3.count > 100, 'the scanners kept publishing');
      assert.ok(
        p3.p99 < ACK_P99_BOUND_MS,
        `PUBACK p99 ${p3.p99.toFixed(0)} ms during flood 3 (bound ${ACK_P99_BOUND_MS} ms)`,
      );
      for (const [name, grown] of [
        ['edge', afterLogins.edge - before.edge],
        ['central', afterLogins.central - before.central],
      ] as const) {
        assert.ok(
          grown < RSS_GROWTH_BOUND,
          `${name} RSS grew by ${MiB(grown)} MiB over both floods (bound ${MiB(RSS_GROWTH_BOUND)} MiB)`,
        );
      }

      // ---- nothing acknowledged is lost ---------------------------------------------------------------------------
      await legit.stop();
      const acked = [...legit.acked];
      const inInbox = async () => {
        const { rows } = await s.pool.query<{ key: string }>(
          "SELECT device || '/' || id AS key FROM inbox WHERE wh = $1",
          [wh],
        );
        return new Set(rows.map((r) => r.key));
      };
      await until(
        async () => {
          const keys = await inInbox();
          return acked.every((k) => keys.has(k));
        },
        30_000,
        `central to hold all ${acked.length} acknowledged events`,
      );
      note(`${acked.length} events acknowledged by the edge, all of them in central's inbox`);
    } finally {
      process.stdout.write(`abuse suite numbers:\n${numbers.map((n) => `  ${n}`).join('\n')}\n`);
      await legit.stop();
      await edge.stop();
      await central.stop();
    }
  });
});
