import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { MqttClient } from 'mqtt';
import { topicMatches } from '../../protocol/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { interrupt, startDemo, type Demo } from '../helpers/demo.js';
import { Collector, connect } from '../helpers/mqtt.js';
import { BIN } from '../helpers/process.js';
import { testSeed } from '../helpers/seed.js';
import { extractCommands, type DocCommand } from './doc-commands.js';

// Issue 18: every shell command README.md and docs/operating.md show for the demo is run here against a real
// demo, so a documented command can never be refused again. A command that is not run is listed below with
// the reason; one that is neither fails the first test.
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const COMMANDS = ['README.md', 'docs/operating.md'].flatMap((f) =>
  extractCommands(f, readFileSync(path.join(ROOT, f), 'utf8')),
);

/** Commands that do not target the demo, by their exact text (a changed command is classified again), and why they are not run here. */
const NOT_RUN: Record<string, string> = {
  'npm ci && npm start':
    'installs the packages and starts the demo on its default ports; this file starts the same `stockwire demo` itself (on free ports, since other tests may hold the defaults)',
  'npm test': 'the whole test suite, this file included',
  "stockwire devices add --file devices.json --id gw-wh1 --warehouse WH1 --kind gateway --password 'gateway-secret'":
    'builds its own central and edge ("Run an edge against central"), not the demo; `devices add` is tested in test/cli.test.ts',
  "stockwire devices add --file devices.json --id scanner-1 --warehouse WH1 --kind scanner --password 'scanner-secret'":
    'as above',
  'stockwire central --devices-file devices.json &':
    'a central of its own on the default ports, which the demo or another test may hold; central is tested in test/cli.test.ts and end to end',
  "stockwire edge --warehouse WH1 --devices-file devices.json --central-username gw-wh1 --central-password 'gateway-secret'":
    "an edge on port 1883, where the machine's Mosquitto listens; edges are tested in test/gateway/",
  'mosquitto_pub -p 1883 -u scanner-1 -P \'scanner-secret\' -i scanner-1 -q 1 -t \'wh/WH1/dev/scanner-1/event\' -m \'{"v":1,"id":"scan-1","type":"received","sku":"SKU-1","qty":5}\'':
    'publishes to the edge of the commands above (port 1883), not to the demo',
  'stockwire central --devices-file devices.json --tls-port 8883 --tls-cert central.pem --tls-key central.key --tls-client-ca clients-ca.pem &':
    'a TLS example: its certificate files exist only where an operator made them; mutual TLS is tested in test/security/tls.test.ts',
  "stockwire edge --warehouse WH1 --devices-file devices.json --central-url mqtts://central.example:8883 --central-ca ca.pem --central-cert gw-wh1.pem --central-key gw-wh1.key --central-username gw-wh1 --central-password 'gateway-secret'":
    'a TLS example against central.example, a placeholder host; tested in test/security/tls.test.ts',
  'cp deploy/.env.example deploy/.env':
    'deployment with Docker, which this machine does not run; the compose file is checked by test/deploy/deploy.test.ts',
  'docker compose -f deploy/docker-compose.yml up -d --build': 'as above',
  'open http://localhost:3000': 'opens Grafana of the compose deployment in a browser',
};

/** The demo's default ports (README: the banner example; the edges' count up per warehouse) → where the test's demo listens. */
const DEMO_PORTS: Record<number, { at: string; listener: 'mqtt' | 'ws' | 'http' }> = {
  1884: { at: 'central', listener: 'mqtt' },
  8084: { at: 'central', listener: 'ws' },
  8080: { at: 'central', listener: 'http' },
  1885: { at: 'WH1', listener: 'mqtt' },
  8085: { at: 'WH1', listener: 'ws' },
  9101: { at: 'WH1', listener: 'http' },
  1886: { at: 'WH2', listener: 'mqtt' },
  8086: { at: 'WH2', listener: 'ws' },
  9102: { at: 'WH2', listener: 'http' },
};
const WAREHOUSES = ['WH1', 'WH2'];
const SIM_SECONDS = 5; // a documented `sim --duration 60` is run for 5 s here: the check at its end is the same
const SUB_WAIT_S = 30; // mosquitto_sub's -W: the retained messages it counts arrive within ms

type Kind = 'mosquitto_pub' | 'mosquitto_sub' | 'curl' | 'sim';

const flag = (words: string[], f: string): string | undefined => {
  const i = words.indexOf(f);
  return i < 0 ? undefined : words[i + 1];
};
const urlPort = (w: string): number | undefined => {
  const m = w.match(/^https?:\/\/(?:127\.0\.0\.1|localhost)(?::(\d+))?\//);
  return m ? Number(m[1] ?? 80) : undefined;
};

/** How this test runs a command that targets the demo; `null` for one that does not; throws for a demo command it cannot run. */
function demoKind(c: DocCommand): Kind | null {
  const [program, sub] = c.words;
  if ((program === 'bin/stockwire' || program === 'stockwire') && sub === 'sim') return 'sim';
  if ((program === 'mosquitto_pub' || program === 'mosquitto_sub') && DEMO_PORTS[Number(flag(c.words, '-p') ?? 1883)])
    return program;
  if (program === 'curl' && c.words.some((w) => DEMO_PORTS[urlPort(w) ?? -1])) return 'curl';
  if (
    /(?<![\d.:])(1884|1885|1886|8080|8084|8085|8086|9101|9102)(?!\d)|:(1884|1885|1886|8080|8084|8085|8086|9101|9102)\b/.test(
      c.text,
    )
  ) {
    throw new Error(`${c.file}:${c.line} names a demo port but this test has no way to run it: ${c.text}`);
  }
  return null;
}

/** The edge or central a port of the docs means, and the port the test's demo has there. */
function mapped(demo: Demo, port: number): { at: string; port: number } {
  const p = DEMO_PORTS[port];
  if (!p) throw new Error(`port ${port} is not one of the demo's`);
  const ports = p.at === 'central' ? demo.central : demo.edges[p.at];
  if (!ports) throw new Error(`the demo has no ${p.at}`);
  return { at: p.at, port: ports[p.listener] };
}

const PLACEHOLDER = /^(…|<[^>]* password>)$/;

/** The command's words as run against the test's demo: its ports, and the password of `-u` for a placeholder. */
function forDemo(demo: Demo, c: DocCommand): string[] {
  const words = c.words.map((w, i) => {
    const prev = c.words[i - 1];
    if (prev === '-p') return String(mapped(demo, Number(w)).port);
    if (prev === '-P' && PLACEHOLDER.test(w)) return demo.cred(flag(c.words, '-u') as string).password;
    const port = urlPort(w);
    return port !== undefined && DEMO_PORTS[port] ? w.replace(`:${port}/`, `:${mapped(demo, port).port}/`) : w;
  });
  const left = words.find((w) => w.includes('…') || /<[^>]+>/.test(w));
  assert.equal(left, undefined, `${c.file}:${c.line}: a placeholder this test cannot fill: ${left}`);
  return words;
}

function run(
  argv: string[],
  env: Record<string, string> = {},
  timeoutMs = 60_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      argv[0] as string,
      argv.slice(1),
      { cwd: ROOT, env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (err as { code?: unknown }).code : 0;
        resolve({ code: typeof code === 'number' ? code : null, stdout, stderr });
      },
    );
  });
}

/** Retained topics on each broker once the documented scans are committed and mirrored (CONTRACT 2 and 4). */
function retainedAfter(pubs: DocCommand[]): Record<string, Set<string>> {
  const at: Record<string, Set<string>> = { central: new Set(WAREHOUSES.map((wh) => `wh/${wh}/status`)) };
  for (const wh of WAREHOUSES) at[wh] = new Set([`wh/${wh}/status`]);
  for (const c of pubs) {
    const m = flag(c.words, '-t')?.match(/^wh\/([^/]+)\/dev\/[^/]+\/event$/);
    assert.ok(m, `${c.file}:${c.line}: this test knows what an event publish leaves retained, nothing else`);
    const wh = m[1] as string;
    const e = JSON.parse(flag(c.words, '-m') as string) as { type: string; sku: string; location?: string };
    const own =
      e.type === 'level' ? [`wh/${wh}/shelf/${e.location}/${e.sku}`] : [`wh/${wh}/stock/${e.sku}`, `stock/${e.sku}`];
    for (const t of own) at.central?.add(t);
    for (const edge of WAREHOUSES) for (const t of own) if (t.startsWith('stock/') || edge === wh) at[edge]?.add(t);
  }
  return at;
}

/** The display credential that may watch a broker's retained topics (the demo's: `display` at central, `display-wh1`… at edges). */
const displayAt = (at: string) => (at === 'central' ? 'display' : `display-${at.toLowerCase()}`);

describe('the shell commands of README.md and docs/operating.md', () => {
  it('are read as sh reads them: a quoted # is no comment, \\ continues a line, and only ```sh fences hold commands', () => {
    const md = [
      '```sh',
      '# a comment line',
      "mosquitto_sub -t 'stock/#' \\",
      '  -v    # prints "topic payload"',
      '```',
      '```json',
      '{"v":1}',
      '```',
    ].join('\n');
    const [c, ...rest] = extractCommands('x.md', md);
    assert.deepEqual(rest, []);
    assert.deepEqual(
      [c?.line, c?.text, c?.words, c?.comment],
      [3, "mosquitto_sub -t 'stock/#' -v", ['mosquitto_sub', '-t', 'stock/#', '-v'], 'prints "topic payload"'],
    );
    assert.throws(() => extractCommands('x.md', '```bash\nnpm test\n```'), /fence commands as ```sh/);
  });

  it('each one is run against a demo below, or listed with the reason it is not', () => {
    const problems: string[] = [];
    for (const c of COMMANDS) {
      let kind: Kind | null = null;
      try {
        kind = demoKind(c);
      } catch (err) {
        problems.push((err as Error).message);
        continue;
      }
      if (kind && NOT_RUN[c.text])
        problems.push(`${c.file}:${c.line} targets the demo, so it must be run, not excused: ${c.text}`);
      if (kind && c.shellSyntax)
        problems.push(`${c.file}:${c.line} targets the demo with shell syntax this test does not run: ${c.text}`);
      if (!kind && !NOT_RUN[c.text])
        problems.push(`${c.file}:${c.line} is neither a demo command nor listed in NOT_RUN with a reason: ${c.text}`);
    }
    for (const text of Object.keys(NOT_RUN))
      if (!COMMANDS.some((c) => c.text === text))
        problems.push(`NOT_RUN lists a command the docs no longer show: ${text}`);
    assert.deepEqual(problems, []);
  });
});

describe('the demo commands of README.md and docs/operating.md, against a running demo', { timeout: 150_000 }, () => {
  const demoCommands = COMMANDS.flatMap((c) => {
    try {
      const kind = demoKind(c);
      return kind ? [{ c, kind }] : [];
    } catch {
      return []; // reported by the test above
    }
  });
  const of = (k: Kind) => demoCommands.filter((d) => d.kind === k).map((d) => d.c);
  let db: TestDatabase;
  let demo: Demo;
  const observers: MqttClient[] = [];

  before(async () => {
    db = await createTestDatabase('doc_commands');
    // Simulator off: the retained topics are then exactly what the documented commands leave, so each
    // mosquitto_sub can be told how many messages to wait for.
    demo = await startDemo(['--sim-rate', '0'], { DATABASE_URL: db.url, REDIS_URL: undefined });
    // One run here left its demo running (the hook below never stopped it; cause not found): the file's exit kills it.
    const child = demo.run.child;
    process.once('exit', () => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL'));
  });
  after(async () => {
    for (const o of observers) o.end(true);
    try {
      if (demo) {
        const code = await Promise.race([
          interrupt(demo.run),
          new Promise<'hung'>((resolve) => setTimeout(resolve, 30_000, 'hung').unref()),
        ]);
        if (code === 'hung') demo.run.child.kill('SIGKILL');
        assert.equal(code, 0, `Ctrl-C stops the demo: ${demo.run.logs.slice(-20).join('\n')}`);
      }
    } finally {
      if (db) await db.drop();
      if (demo) await fs.rm(demo.dataDir, { recursive: true, force: true });
    }
  });

  it('the banner example in the README shows commands the demo really prints', () => {
    const banner = demo.run.logs.join('\n');
    for (const c of COMMANDS.filter((x) => x.source === 'banner')) {
      const real = c.text
        .replace(/-p (\d+)/g, (_, p: string) => `-p ${mapped(demo, Number(p)).port}`)
        .replace(
          /(127\.0\.0\.1|localhost):(\d+)\//g,
          (_, h: string, p: string) => `${h}:${mapped(demo, Number(p)).port}/`,
        )
        .replace(/-P '([^']*)'/, (m, w: string) =>
          PLACEHOLDER.test(w) ? `-P '${demo.cred(flag(c.words, '-u') as string).password}'` : m,
        );
      assert.ok(
        banner.includes(`    ${real}`),
        `${c.file}:${c.line}: the demo's banner has no line\n    ${real}\n${banner.slice(-3000)}`,
      );
    }
  });

  for (const c of of('mosquitto_pub')) {
    it(`${c.file}:${c.line} ${c.text}`, async () => {
      const r = await run(forDemo(demo, c));
      assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}${r.stdout}`);
    });
  }

  const retained = retainedAfter(of('mosquitto_pub'));
  it('(wait) the scans published above are committed at central and mirrored to the edges', {
    timeout: 60_000,
  }, async () => {
    for (const [at, wanted] of Object.entries(retained)) {
      const ports = at === 'central' ? demo.central : (demo.edges[at] as Demo['central']);
      const client = await connect(`mqtt://127.0.0.1:${ports.mqtt}`, displayAt(at), demo.cred(displayAt(at)).password);
      observers.push(client);
      const seen = new Collector(client, [...wanted]);
      await client.subscribeAsync([...wanted], { qos: 1 });
      await seen.waitFor(
        () => [...wanted].every((t) => seen.messages.some((m) => m.topic === t)),
        45_000,
        `${[...wanted].join(', ')} at ${at}`,
      );
    }
  });

  for (const { c, kind } of demoCommands.filter((d) => d.kind === 'mosquitto_sub' || d.kind === 'curl')) {
    it(`${c.file}:${c.line} ${c.text}`, { timeout: 60_000 }, async () => {
      const argv = forDemo(demo, c);
      if (kind === 'curl') {
        // -fsS: a status other than 2xx is a failure (exit 22) with the reason on stderr
        const r = await run(['curl', '-fsS', ...argv.slice(1)]);
        assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}`);
        const url = argv.find((w) => urlPort(w) !== undefined) as string;
        if (new URL(url).pathname === '/metrics')
          return assert.match(r.stdout, /^stockwire_\w+/m, 'Prometheus text with stockwire series');
        const body = JSON.parse(r.stdout) as Record<string, unknown>; // every other answer of central and the edges is JSON
        const sku = new URL(url).pathname.match(/^\/v1\/stock\/([^/]+)$/)?.[1];
        if (sku) assert.equal(body.sku, decodeURIComponent(sku), r.stdout);
        return;
      }
      // -C n -W s make it end: n is the number of retained topics its filters match on that broker (one more
      // for an edge's status, which the edge refreshes every 5 s and may slip in between); -d shows the SUBACK.
      const at = mapped(demo, Number(flag(c.words, '-p'))).at;
      const filters = c.words.flatMap((w, i) => (c.words[i - 1] === '-t' ? [w] : []));
      const expected = [...(retained[at] as Set<string>)].filter((t) => filters.some((f) => topicMatches(f, t)));
      assert.ok(expected.length > 0, `${c.file}:${c.line} subscribes to nothing the demo has at ${at}`);
      const count = expected.length + (at !== 'central' && expected.some((t) => t.endsWith('/status')) ? 1 : 0);
      const r = await run([...argv, '-d', '-C', String(count), '-W', String(SUB_WAIT_S)], {}, (SUB_WAIT_S + 15) * 1000);
      const out = `exit ${r.code}\n${r.stdout}${r.stderr}`;
      assert.doesNotMatch(out, /denied/i, out);
      assert.equal(r.code, 0, out);
      const granted =
        r.stdout
          .match(/^Subscribed \(mid: \d+\): (.*)$/m)?.[1]
          ?.split(', ')
          .map(Number) ?? [];
      assert.equal(granted.length, filters.length, `one SUBACK code per filter: ${out}`);
      assert.ok(
        granted.every((q) => q < 0x80),
        `every subscription granted (0x80: refused): ${granted.join(', ')}`,
      );
      const lines = r.stdout
        .split('\n')
        .filter((l) => l !== '' && !l.startsWith('Client ') && !l.startsWith('Subscribed ('));
      const got = lines.map((l) => ({
        topic: l.slice(0, l.indexOf(' ')),
        payload: JSON.parse(l.slice(l.indexOf(' ') + 1)) as Record<string, unknown>,
      }));
      assert.equal(got.length, count, out);
      for (const m of got)
        assert.ok(
          filters.some((f) => topicMatches(f, m.topic)),
          `${m.topic} matches a filter of the command`,
        );
      for (const t of expected)
        assert.ok(
          got.some((m) => m.topic === t),
          `${t} at ${at}: ${out}`,
        );
      const stock = got.filter((m) => /^(stock\/|wh\/[^/]+\/stock\/)/.test(m.topic));
      assert.ok(stock.length > 0, `a stock topic, what a display is for: ${out}`);
      for (const m of stock)
        assert.ok(typeof m.payload.sku === 'string' && typeof m.payload.onHand === 'number', JSON.stringify(m));
    });
  }

  for (const c of of('sim')) {
    it(`${c.file}:${c.line} ${c.text}`, { timeout: 120_000 }, async () => {
      const argv = forDemo(demo, c).map((w, i, all) =>
        all[i - 1] === '--duration' && Number(w) > SIM_SECONDS ? String(SIM_SECONDS) : w,
      );
      // The docs run it in a checkout whose ./data is the demo's DATA_DIR; the test's demo has a DATA_DIR of its
      // own. SIM_SEED (the environment form of --seed) fixes its random choices in CI and prints them for a replay.
      const r = await run(
        [BIN, ...argv.slice(1)],
        { DATA_DIR: demo.dataDir, SIM_SEED: String(testSeed('docs/commands')) },
        110_000,
      );
      assert.equal(r.code, 0, `exit ${r.code}\n${r.stdout}\n${r.stderr.slice(-3000)}`);
      if (c.words.includes('--verify')) assert.match(r.stdout, /^verify: 0 differences$/m, r.stdout);
    });
  }
});
