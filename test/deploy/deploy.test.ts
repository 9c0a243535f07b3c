import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { pbkdf2Sync, timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { verifyPassword } from '../../broker/index.js';
import { type ConfigError, parseConfig, type Specs } from '../../runtime/options.js';
import { edgeSpecs } from '../../gateway/config.js';
import { centralSpecs, migrateSpecs, processorSpecs } from '../../processors/config.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DEPLOY = path.join(ROOT, 'deploy');

/** The configuration each `stockwire` command reads; compose may set only these variables. */
const SPECS: Record<string, Specs> = {
  central: centralSpecs,
  processor: processorSpecs,
  edge: edgeSpecs,
  migrate: migrateSpecs,
};
const DEFAULT_HTTP: Record<string, number> = { central: 8080, processor: 9102, edge: 9101 };

interface Service {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  profiles?: string[];
  depends_on?: Record<string, { condition: string }> | string[];
}
interface Compose {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
}

const VARIABLE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}/g;

/** Compose interpolation (`${V}`, `${V:-default}`, `${V:?error}`, `$$` for a literal `$`) with the given values. */
function interpolate(text: string, values: Record<string, string>): string {
  return text
    .replace(VARIABLE, (_m, name: string, op: string | undefined, arg: string | undefined) => {
      const v = values[name];
      if (op?.endsWith('-')) return v === undefined || (op === ':-' && v === '') ? (arg ?? '') : v;
      if (v === undefined) throw new Error(`\${${name}} is not set: ${arg ?? ''}`);
      return v;
    })
    .replace(/\$\$/g, '$');
}

function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) out[m[1] as string] = m[2] as string;
  }
  return out;
}

/** The stockwire command a service runs: its command, or the one its shell entrypoint execs; with the flags it passes. */
function commandOf(s: Service): { command: string; flags: string[] } {
  const shell = s.entrypoint?.join(' ').match(/bin\/stockwire(?:\.js)? (\w+)(.*)$/);
  if (shell)
    return {
      command: shell[1] as string,
      flags: [...(shell[2] as string).matchAll(/--([a-z-]+)/g)].map((m) => m[1] as string),
    };
  return {
    command: s.command?.[0] ?? '',
    flags: (s.command ?? []).filter((a) => a.startsWith('--')).map((a) => a.slice(2)),
  };
}

/** Files a TypeScript module imports, statically or dynamically, by relative path. */
async function relativeImports(file: string): Promise<string[]> {
  const text = await fs.readFile(file, 'utf8');
  const specs = [...text.matchAll(/(?:from\s+|import\s*\(\s*)'(\.{1,2}\/[^']+)'/g)].map((m) => m[1] as string);
  return specs.map((s) => path.resolve(path.dirname(file), s.replace(/\.js$/, '.ts')));
}

describe('deployment files (docker compose and Dockerfile), validated without Docker', () => {
  let compose: Compose;
  let raw: string;
  let env: Record<string, string>;
  const ours = () => Object.entries(compose.services).filter(([, s]) => s.image === 'stockwire:local');

  before(async () => {
    raw = await fs.readFile(path.join(DEPLOY, 'docker-compose.yml'), 'utf8');
    env = parseEnvFile(await fs.readFile(path.join(DEPLOY, '.env.example'), 'utf8'));
    compose = YAML.parse(interpolate(raw, env), { merge: true }) as Compose;
  });

  it('every variable compose reads without a default is in .env.example, and .env.example holds nothing unused', () => {
    const used = new Map<string, boolean>(); // name → has a default
    for (const m of raw.matchAll(VARIABLE))
      used.set(m[1] as string, (used.get(m[1] as string) ?? false) || (m[2]?.endsWith('-') ?? false));
    for (const [name, hasDefault] of used)
      if (!hasDefault) assert.ok(name in env, `${name} is required by compose but missing from .env.example`);
    for (const name of Object.keys(env))
      assert.ok(used.has(name), `.env.example sets ${name}, which compose never reads`);
    assert.throws(() => interpolate(raw, {}), /POSTGRES_PASSWORD/, 'a missing password stops compose with a message');
  });

  it('the services of the issue are there: TimescaleDB, Redis, Prometheus, Grafana, central and two edges', () => {
    const names = Object.keys(compose.services);
    for (const s of [
      'timescaledb',
      'redis',
      'prometheus',
      'alertmanager',
      'grafana',
      'central',
      'edge-wh1',
      'edge-wh2',
    ])
      assert.ok(names.includes(s), s);
    assert.match(compose.services.timescaledb?.image ?? '', /^timescale\/timescaledb:/);
    const edges = ours().filter(([, s]) => commandOf(s).command === 'edge');
    assert.deepEqual(edges.map(([, s]) => s.environment?.WAREHOUSE_ID).sort(), ['WH1', 'WH2']);
  });

  it('stockwire services set only variables their command reads, with values it accepts', () => {
    assert.ok(ours().length >= 5);
    for (const [name, s] of ours()) {
      const { command, flags } = commandOf(s);
      const specs = SPECS[command];
      assert.ok(specs, `${name}: runs a known long-running command (${command})`);
      const known = new Set(
        Object.values(specs)
          .map((o) => o.env)
          .filter(Boolean),
      );
      for (const key of Object.keys(s.environment ?? {}))
        assert.ok(known.has(key), `${name}: stockwire ${command} has no variable ${key}`);
      const flagNames = new Set(Object.values(specs).map((o) => o.flag));
      for (const f of flags) assert.ok(flagNames.has(f), `${name}: stockwire ${command} has no flag --${f}`);
      try {
        parseConfig(specs, [], { ...s.environment });
      } catch (err) {
        assert.fail(
          `${name}: stockwire ${command} would refuse its configuration:\n${(err as ConfigError).problems.join('\n')}`,
        );
      }
      assert.ok(
        s.build && existsSync(path.resolve(DEPLOY, s.build.context, s.build.dockerfile)),
        `${name}: its Dockerfile exists`,
      );
    }
  });

  it('every bind-mounted file exists, every named volume is declared, every dependency is a service, host ports do not clash', () => {
    const hostPorts = new Map<string, string>();
    for (const [name, s] of Object.entries(compose.services)) {
      for (const v of s.volumes ?? []) {
        const source = v.split(':')[0] as string;
        if (source.startsWith('.') || source.startsWith('/'))
          assert.ok(existsSync(path.resolve(DEPLOY, source)), `${name}: ${source} exists`);
        else assert.ok(source in compose.volumes, `${name}: volume ${source} is declared`);
      }
      const deps = Array.isArray(s.depends_on) ? s.depends_on : Object.keys(s.depends_on ?? {});
      for (const d of deps) assert.ok(d in compose.services, `${name} depends on ${d}, a service`);
      for (const p of s.ports ?? []) {
        const host = p.split(':')[0] as string;
        assert.ok(!hostPorts.has(host), `${name} and ${hostPorts.get(host)} both publish host port ${host}`);
        hostPorts.set(host, name);
      }
    }
  });

  it('Prometheus scrapes each stockwire service on the HTTP port it listens on, and Grafana finds Prometheus', async () => {
    const prom = YAML.parse(await fs.readFile(path.join(ROOT, 'dashboards/prometheus/prometheus.yml'), 'utf8')) as {
      scrape_configs: {
        job_name: string;
        static_configs?: { targets: string[] }[];
        dns_sd_configs?: { names: string[]; port: number }[];
      }[];
    };
    const httpPort = (service: string): number => {
      const s = compose.services[service];
      assert.ok(s, `scrape target ${service} is a compose service`);
      const { command } = commandOf(s);
      return Number(s.environment?.HTTP_PORT ?? DEFAULT_HTTP[command]);
    };
    const scraped = new Set<string>();
    for (const job of prom.scrape_configs) {
      for (const t of job.static_configs?.flatMap((c) => c.targets) ?? []) {
        const [host, port] = t.split(':');
        assert.equal(Number(port), httpPort(host as string), `${job.job_name}: ${t}`);
        scraped.add(host as string);
      }
      for (const sd of job.dns_sd_configs ?? [])
        for (const n of sd.names) {
          assert.equal(sd.port, httpPort(n), `${job.job_name}: ${n}`);
          scraped.add(n);
        }
    }
    for (const [name, s] of ours())
      if (commandOf(s).command !== 'migrate') assert.ok(scraped.has(name), `Prometheus scrapes ${name}`);
    const grafana = YAML.parse(
      await fs.readFile(path.join(ROOT, 'dashboards/grafana/provisioning/datasources/prometheus.yml'), 'utf8'),
    ) as { datasources: { url: string }[] };
    const url = new URL(grafana.datasources[0]?.url as string);
    assert.ok(url.hostname in compose.services, 'the datasource is the compose service');
    assert.ok(
      compose.services.prometheus?.volumes?.some((v) => v.startsWith('../dashboards/prometheus/rules:')),
      'the rules are mounted next to the config',
    );
  });

  it('Alertmanager: a compose service with the committed config, which amtool accepts, and Prometheus sends alerts to it', async () => {
    const am = compose.services.alertmanager;
    assert.ok(am, 'compose runs an Alertmanager');
    assert.match(am.image ?? '', /^prom\/alertmanager:/);
    const mount = am.volumes?.find((v) => v.split(':')[1] === '/etc/alertmanager/alertmanager.yml');
    assert.ok(mount, `the config is mounted where --config.file reads it: ${am.volumes?.join(', ')}`);
    assert.ok(am.command?.includes('--config.file=/etc/alertmanager/alertmanager.yml'), 'and --config.file names it');
    const file = path.resolve(DEPLOY, mount.split(':')[0] as string);
    const prom = YAML.parse(await fs.readFile(path.join(ROOT, 'dashboards/prometheus/prometheus.yml'), 'utf8')) as {
      alerting?: { alertmanagers: { static_configs: { targets: string[] }[] }[] };
    };
    const targets = prom.alerting?.alertmanagers.flatMap((a) => a.static_configs.flatMap((c) => c.targets)) ?? [];
    // no --web.listen-address: Alertmanager listens on 9093
    assert.deepEqual(targets, ['alertmanager:9093'], "Prometheus's alerting section points at the compose service");
    assert.ok(!am.command?.some((a) => a.startsWith('--web.listen-address')));
    let out: string;
    try {
      const r = await promisify(execFile)('amtool', ['check-config', file], { timeout: 30_000 });
      out = r.stdout + r.stderr;
    } catch (err) {
      const e = err as { code?: string | number; stdout?: string; stderr?: string };
      if (e.code === 'ENOENT')
        throw new Error(
          'amtool is missing: install the Debian package `prometheus-alertmanager` (apt-get install prometheus-alertmanager; .ci/run does it)',
        );
      throw new Error(`amtool check-config ${file} refused it:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
    }
    assert.match(out, /SUCCESS/);
  });

  it("the example credentials work: each edge's and processor's password matches its entry in the devices file and in Mosquitto's", async () => {
    const devices = JSON.parse(await fs.readFile(path.join(DEPLOY, 'devices.example.json'), 'utf8')) as {
      devices: { id: string; warehouse: string; kind: string; passwordHash: string }[];
    };
    const passwd = new Map(
      (await fs.readFile(path.join(DEPLOY, 'mosquitto/passwd'), 'utf8'))
        .trim()
        .split('\n')
        .map((l) => l.split(':') as [string, string]),
    );
    // mosquitto_passwd format: $7$iterations$salt$hash, PBKDF2-SHA512 (Mosquitto 2.0).
    const mosquittoAccepts = (user: string, password: string): boolean => {
      const [, seven, iterations, salt, hash] = (passwd.get(user) ?? '').split('$');
      if (seven !== '7') return false;
      const expected = Buffer.from(hash as string, 'base64');
      return timingSafeEqual(
        pbkdf2Sync(password, Buffer.from(salt as string, 'base64'), Number(iterations), expected.length, 'sha512'),
        expected,
      );
    };
    for (const [name, s] of ours()) {
      const e = s.environment ?? {};
      if (!e.CENTRAL_USERNAME) continue;
      const device = devices.devices.find((d) => d.id === e.CENTRAL_USERNAME);
      assert.ok(device, `${name}: ${e.CENTRAL_USERNAME} is in the devices file`);
      assert.ok(
        await verifyPassword(e.CENTRAL_PASSWORD as string, device.passwordHash),
        `${name}: its password matches the devices file`,
      );
      const { command } = commandOf(s);
      assert.equal(device.kind, command === 'edge' ? 'gateway' : 'processor', `${name}: credential kind`);
      if (command === 'edge') assert.equal(device.warehouse, e.WAREHOUSE_ID, `${name}: gateway of its own warehouse`);
      assert.ok(
        mosquittoAccepts(e.CENTRAL_USERNAME, e.CENTRAL_PASSWORD as string),
        `${name}: Mosquitto (scale-out) accepts it too`,
      );
    }
    assert.ok(!mosquittoAccepts('processor', 'wrong-password'), 'the Mosquitto check can fail');
  });

  describe('Dockerfile', () => {
    let copies: string[];
    before(async () => {
      const text = await fs.readFile(path.join(ROOT, 'Dockerfile'), 'utf8');
      copies = text
        .split('\n')
        .filter((l) => /^COPY\s/.test(l) && !l.includes('--from'))
        .flatMap((l) => l.trim().split(/\s+/).slice(1, -1));
    });

    it('copies sources that exist and that .dockerignore does not exclude', async () => {
      assert.ok(copies.length > 0);
      const ignored = (await fs.readFile(path.join(ROOT, '.dockerignore'), 'utf8'))
        .split('\n')
        .map((l) => l.trim())
        .filter(Boolean);
      for (const c of copies) {
        assert.ok(existsSync(path.join(ROOT, c)), `COPY ${c}: exists`);
        assert.ok(!ignored.includes(c), `COPY ${c}: not excluded by .dockerignore`);
      }
    });

    it('copies every module the CLI can load', async () => {
      const seen = new Set<string>();
      const queue = [path.join(ROOT, 'cli/stockwire.ts')];
      while (queue.length > 0) {
        const file = queue.pop() as string;
        if (seen.has(file)) continue;
        seen.add(file);
        assert.ok(existsSync(file), `${path.relative(ROOT, file)} exists`);
        queue.push(...(await relativeImports(file)));
      }
      assert.ok(seen.size > 20, `walked ${seen.size} modules`);
      for (const file of seen) {
        const rel = path.relative(ROOT, file);
        assert.ok(
          copies.some((c) => rel === c || rel.startsWith(`${c}/`)),
          `${rel} is loaded by the CLI but is not copied into the image`,
        );
      }
    });
  });

  it('the README\'s "Operating stockwire" section and docs/operating.md link only to files and sections that exist', async () => {
    const readme = await fs.readFile(path.join(ROOT, 'README.md'), 'utf8');
    const section = /## Operating stockwire\n([\s\S]*?)\n## /.exec(readme)?.[1];
    assert.ok(section, 'README has an "Operating stockwire" section');
    const guide = await fs.readFile(path.join(ROOT, 'docs/operating.md'), 'utf8');
    const anchors = new Set(
      [...guide.matchAll(/^#+ (.+)$/gm)].map((m) =>
        (m[1] as string)
          .toLowerCase()
          .replace(/[^a-z0-9 -]/g, '')
          .replace(/ /g, '-'),
      ),
    );
    const rules = await fs.readFile(path.join(ROOT, 'dashboards/prometheus/rules/stockwire.rules.yml'), 'utf8');
    const links = [
      ...[...section.matchAll(/\]\(([^)]+)\)/g)].map((m) => ({ from: ROOT, link: m[1] as string })),
      ...[...guide.matchAll(/\]\(([^)]+)\)/g)].map((m) => ({ from: path.join(ROOT, 'docs'), link: m[1] as string })),
      ...[...rules.matchAll(/(docs\/operating\.md#[a-z-]+)/g)].map((m) => ({ from: ROOT, link: m[1] as string })),
    ];
    assert.ok(links.length > 15, `${links.length} links`);
    for (const { from, link } of links) {
      const [file, anchor] = link.split('#');
      const target = file ? path.resolve(from, file) : path.join(ROOT, 'docs/operating.md');
      assert.ok(existsSync(target), `${link} exists`);
      if (anchor && target.endsWith('operating.md'))
        assert.ok(anchors.has(anchor), `section #${anchor} exists in docs/operating.md`);
    }
    for (const topic of [
      'deploy/docker-compose.yml',
      'dashboards/grafana',
      'dashboards/prometheus',
      'docs/asyncapi.yaml',
      'docs/openapi.yaml',
      'dashboards/node-red',
      'scale-out',
      'replay',
    ])
      assert.ok(section.includes(topic), `the section covers ${topic}`);
  });
});
