import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { interrupt, startDemo, type Demo } from './helpers/demo.js';

/** A `mosquitto_sub -v` that reports SUBACK and every message line with its arrival time. */
class MosquittoSub {
  readonly lines: { at: number; topic: string; payload: string }[] = [];
  private readonly child: ChildProcess;
  private buf = '';
  private subscribed = false;
  private waiters: (() => void)[] = [];

  constructor(port: number, user: string, password: string, topics: string[]) {
    const args = [
      '-h',
      '127.0.0.1',
      '-p',
      String(port),
      '-u',
      user,
      '-P',
      password,
      '-i',
      `${user}-test-${randomBytes(3).toString('hex')}`,
      '-q',
      '1',
      '-v',
      '-d',
      ...topics.flatMap((t) => ['-t', t]),
    ];
    // stdbuf: into a pipe, mosquitto_sub's stdout is block-buffered, which would hold back SUBACK and delay lines
    this.child = spawn('stdbuf', ['-oL', 'mosquitto_sub', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout?.on('data', (b: Buffer) => {
      const at = Date.now();
      this.buf += b.toString();
      const lines = this.buf.split('\n');
      this.buf = lines.pop() ?? '';
      for (const line of lines) {
        if (line.startsWith('Client ')) {
          if (line.includes('received SUBACK')) this.subscribed = true;
          continue;
        }
        const space = line.indexOf(' ');
        if (space > 0) this.lines.push({ at, topic: line.slice(0, space), payload: line.slice(space + 1) });
      }
      for (const w of this.waiters.splice(0)) w();
    });
  }

  async waitFor<T>(what: string, find: () => T | undefined, timeoutMs = 15_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = find();
      if (found !== undefined) return found;
      if (Date.now() > deadline)
        throw new Error(
          `mosquitto_sub: no ${what} within ${timeoutMs} ms; got ${this.lines.length} lines: ${this.lines
            .slice(-5)
            .map((l) => l.topic)
            .join(', ')}`,
        );
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 200);
      });
    }
  }

  ready(): Promise<true> {
    return this.waitFor('SUBACK', () => (this.subscribed ? true : undefined));
  }

  stop(): void {
    this.child.kill('SIGTERM');
  }
}

function mosquittoPub(
  port: number,
  user: string,
  password: string,
  topic: string,
  message: string,
): Promise<number | null> {
  return new Promise((resolve) => {
    const child = spawn(
      'mosquitto_pub',
      [
        '-h',
        '127.0.0.1',
        '-p',
        String(port),
        '-u',
        user,
        '-P',
        password,
        '-i',
        `${user}-test`,
        '-q',
        '1',
        '-t',
        topic,
        '-m',
        message,
      ],
      { stdio: 'ignore' },
    );
    child.once('exit', resolve);
  });
}

describe('stockwire demo (what npm start runs), with DATABASE_URL and REDIS_URL unset', () => {
  const cleanup: (() => Promise<void>)[] = [];
  after(async () => {
    for (const fn of cleanup.reverse()) await fn().catch(() => {});
  });

  it('brings up central, two edges, simulated devices and the live display; a scan reaches mosquitto_sub; Ctrl-C stops it; a second start keeps the data', {
    timeout: 240_000,
  }, async (t) => {
    const env = { DATABASE_URL: undefined, REDIS_URL: undefined };
    // A port already taken (as Mosquitto takes 1883 on this machine) is reported and replaced.
    const blocker = net.createServer();
    const taken = await new Promise<number>((resolve) =>
      blocker.listen(0, '127.0.0.1', () => resolve((blocker.address() as net.AddressInfo).port)),
    );
    cleanup.push(() => new Promise((resolve) => blocker.close(() => resolve())));

    const began = Date.now();
    const demo: Demo = await startDemo(['--mqtt-port', String(taken)], env);
    const startMs = Date.now() - began;
    cleanup.push(async () => {
      demo.run.child.kill('SIGKILL');
      if (process.getuid?.() === 0 && existsSync(path.join(demo.dataDir, 'postgres'))) {
        // as root the embedded cluster lives outside DATA_DIR (processors/db/embedded.ts)
        const cluster = await fs.realpath(path.join(demo.dataDir, 'postgres'));
        if (cluster !== path.join(demo.dataDir, 'postgres'))
          await fs.rm(path.dirname(cluster), { recursive: true, force: true });
      }
      await fs.rm(demo.dataDir, { recursive: true, force: true });
    });
    t.diagnostic(`demo ready in ${startMs} ms (first start: initdb of the embedded PostgreSQL included)`);
    const logs = () => demo.run.logs.join('\n');
    assert.match(
      logs(),
      new RegExp(
        `port ${taken} \\(central MQTT\\) is already in use on this machine; the demo takes a free port instead`,
      ),
    );
    assert.notEqual(demo.central.mqtt, taken);
    assert.deepEqual(Object.keys(demo.edges).sort(), ['WH1', 'WH2']);
    assert.ok(
      existsSync(path.join(demo.dataDir, 'postgres', 'PG_VERSION')),
      'the embedded PostgreSQL runs under DATA_DIR',
    );
    assert.ok(
      existsSync(path.join(demo.dataDir, 'outbox-WH1.db')) && existsSync(path.join(demo.dataDir, 'outbox-WH2.db')),
      'each edge has its outbox',
    );

    // What a person needs is printed: the display's URLs, every port, credentials, a mosquitto_sub line.
    const display = demo.cred('display');
    assert.ok(logs().includes(`http://127.0.0.1:${demo.central.http}/display/`));
    for (const wh of ['WH1', 'WH2'])
      assert.ok(logs().includes(`http://127.0.0.1:${demo.edges[wh]?.http}/display/`), wh);
    assert.ok(
      logs().includes(`mosquitto_sub -h 127.0.0.1 -p ${demo.central.mqtt} -u display -P '${display.password}'`),
    );
    assert.ok(logs().includes(`MQTT mqtt://127.0.0.1:${demo.edges.WH2?.mqtt}`));
    // The page served in demo mode carries the display credential, so it connects with no login.
    const config = (await (await fetch(`http://127.0.0.1:${demo.central.http}/display/config.json`)).json()) as {
      credential?: { username: string };
    };
    assert.equal(config.credential?.username, 'display');
    // The API token is printed with the credentials and kept in DATA_DIR/api-token (0600); writes need it.
    const tokenFile = path.join(demo.dataDir, 'api-token');
    const token = (await fs.readFile(tokenFile, 'utf8')).trim();
    assert.equal((await fs.stat(tokenFile)).mode & 0o777, 0o600);
    assert.ok(logs().includes(`Authorization: Bearer ${token}`), 'the banner shows the API token');
    const reserve = (headers: Record<string, string>) =>
      fetch(`http://127.0.0.1:${demo.central.http}/v1/reservations`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'idempotency-key': `demo-${randomBytes(4).toString('hex')}`,
          ...headers,
        },
        body: JSON.stringify({ sku: 'SKU-001', qty: 1 }),
      });
    assert.equal((await reserve({})).status, 401);
    assert.ok(
      [201, 404, 409].includes((await reserve({ authorization: `Bearer ${token}` })).status),
      'with the token the request is decided',
    );
    const page = await fetch(`http://127.0.0.1:${demo.edges.WH1?.http}/display/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<script src="mqtt\.min\.js"><\/script>/);

    // The built-in simulator moves stock in both warehouses: a mosquitto_sub at central sees it.
    const central = new MosquittoSub(demo.central.mqtt, display.id, display.password, ['wh/+/stock/#']);
    cleanup.push(async () => central.stop());
    await central.ready();
    for (const wh of ['WH1', 'WH2'])
      await central.waitFor(`a simulated change at ${wh}`, () =>
        central.lines.find((l) => l.topic.startsWith(`wh/${wh}/stock/SKU-`)),
      );

    // One scan at the WH1 edge, as a scanner: how long until mosquitto_sub at central and at the edge see it?
    const sku = `PROBE-${randomBytes(3).toString('hex')}`;
    const edgeDisplay = demo.cred('display-wh1');
    const atEdge = new MosquittoSub(demo.edges.WH1?.mqtt as number, edgeDisplay.id, edgeDisplay.password, [
      `wh/WH1/stock/${sku}`,
    ]);
    cleanup.push(async () => atEdge.stop());
    await atEdge.ready();
    const scanner = demo.cred('scan-wh1-1');
    const sentAt = Date.now();
    const pub = await mosquittoPub(
      demo.edges.WH1?.mqtt as number,
      scanner.id,
      scanner.password,
      `wh/WH1/dev/${scanner.id}/event`,
      JSON.stringify({ v: 1, id: `probe-${sku}`, type: 'received', sku, qty: 5 }),
    );
    assert.equal(pub, 0, 'mosquitto_pub exit code');
    const seenCentral = await central.waitFor(`wh/WH1/stock/${sku}`, () =>
      central.lines.find((l) => l.topic === `wh/WH1/stock/${sku}`),
    );
    const seenEdge = await atEdge.waitFor(`wh/WH1/stock/${sku}`, () =>
      atEdge.lines.find((l) => l.topic === `wh/WH1/stock/${sku}`),
    );
    assert.equal((JSON.parse(seenCentral.payload) as { onHand: number }).onHand, 5);
    assert.equal((JSON.parse(seenEdge.payload) as { onHand: number }).onHand, 5);
    t.diagnostic(
      `scan → mosquitto_sub: ${seenCentral.at - sentAt} ms at central, ${seenEdge.at - sentAt} ms at the edge (includes starting mosquitto_pub)`,
    );
    central.stop();
    atEdge.stop();

    // Ctrl-C stops everything cleanly.
    assert.equal(await interrupt(demo.run), 0, demo.run.logs.slice(-20).join('\n'));
    assert.deepEqual(
      demo.run.logs.filter((l) => l.includes('link to central lost')),
      [],
      'a clean stop is not reported as a lost link',
    );
    assert.equal(
      existsSync(path.join(demo.dataDir, 'demo-endpoints.json')),
      false,
      'the endpoints file goes with the demo',
    );
    const credentials = await fs.readFile(path.join(demo.dataDir, 'demo-credentials.json'), 'utf8');

    // A second start on the same DATA_DIR: the same credentials, the data of the first; a scanner more per
    // warehouse is added to them.
    const again = await startDemo(['--sim-rate', '0', '--scanners', '4'], env, demo.dataDir);
    cleanup.push(async () => void again.run.child.kill('SIGKILL'));
    const first = JSON.parse(credentials) as { id: string }[];
    assert.deepEqual(again.creds.slice(0, first.length), first);
    assert.deepEqual(
      again.creds.slice(first.length).map((c) => c.id),
      ['scan-wh1-4', 'scan-wh2-4'],
    );
    const newScanner = again.cred('scan-wh2-4');
    assert.equal(
      await mosquittoPub(
        again.edges.WH2?.mqtt as number,
        newScanner.id,
        newScanner.password,
        `wh/WH2/dev/${newScanner.id}/event`,
        JSON.stringify({ v: 1, id: 'n1', type: 'received', sku, qty: 1 }),
      ),
      0,
      'the new credential works',
    );
    assert.equal((await fs.readFile(path.join(demo.dataDir, 'api-token'), 'utf8')).trim(), token, 'the same API token');
    assert.ok(again.run.logs.join('\n').includes(`Authorization: Bearer ${token}`));
    const stock = (await (
      await fetch(`http://127.0.0.1:${again.central.http}/v1/warehouses/WH1/stock/${sku}`)
    ).json()) as { onHand: number };
    assert.equal(stock.onHand, 5);
    assert.equal(await interrupt(again.run), 0, again.run.logs.slice(-20).join('\n'));
  });
});
