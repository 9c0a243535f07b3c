import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { startDemo, type Demo } from '../helpers/demo.js';
import { connect } from '../helpers/mqtt.js';
import { freePort, startStockwire, type Running } from '../helpers/process.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PROMETHEUS_DIR = path.join(ROOT, 'dashboards/prometheus');
const GRAFANA_DASHBOARDS = path.join(ROOT, 'dashboards/grafana/dashboards');
// The dashboards on Prometheus (stockwire-ledger.json reads the database: test/dashboards/ledger.test.ts).
const PROMQL_DASHBOARDS = ['stockwire-overview.json', 'stockwire-warehouse.json'];

interface ScrapeConfig {
  job_name: string;
  static_configs?: { targets: string[] }[];
  dns_sd_configs?: unknown[];
}

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

interface PromConfig {
  global: Record<string, string>;
  rule_files: string[];
  alerting?: { alertmanagers: { static_configs: { targets: string[] }[] }[] };
  scrape_configs: ScrapeConfig[];
}

/**
 * The committed scrape config, pointed at processes on this machine, scraping and evaluating every second;
 * alerts go to `alertmanager` (host:port) instead of the compose's, or nowhere.
 */
async function localConfig(dir: string, targets: Record<string, string[]>, alertmanager?: string): Promise<string> {
  const config = YAML.parse(await fs.readFile(path.join(PROMETHEUS_DIR, 'prometheus.yml'), 'utf8')) as PromConfig;
  config.global.scrape_interval = '1s';
  config.global.evaluation_interval = '1s';
  config.rule_files = config.rule_files.map((f) => path.join(PROMETHEUS_DIR, f));
  config.scrape_configs = config.scrape_configs
    .filter((c) => targets[c.job_name])
    .map(({ dns_sd_configs: _sd, ...c }) => ({ ...c, static_configs: [{ targets: targets[c.job_name] as string[] }] }));
  assert.equal(config.alerting?.alertmanagers.length, 1, 'prometheus.yml sends alerts to one Alertmanager');
  if (alertmanager)
    config.alerting = {
      alertmanagers: [{ ...config.alerting?.alertmanagers[0], static_configs: [{ targets: [alertmanager] }] }],
    };
  else delete config.alerting;
  const file = path.join(dir, 'prometheus.yml');
  await fs.writeFile(file, YAML.stringify(config));
  return file;
}

type Server = { child: ChildProcess; url: string; port: number; logs: string[] };

/** Starts a Prometheus-style server (`binary` with `args(port)`) on a free port and waits for its /-/ready. */
async function startServer(binary: string, pkg: string, args: (port: number) => string[]): Promise<Server> {
  const logs: string[] = [];
  for (let attempt = 1; ; attempt++) {
    const port = await freePort(); // neither Prometheus nor Alertmanager can listen on port 0
    const child = spawn(binary, args(port), { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr?.on('data', (b: Buffer) => logs.push(b.toString()));
    const url = `http://127.0.0.1:${port}`;
    const exited = new Promise<string>((resolve) => {
      child.once('error', (err) =>
        resolve(
          (err as NodeJS.ErrnoException).code === 'ENOENT'
            ? `${binary} is missing: install the Debian package \`${pkg}\` (apt-get install ${pkg}; .ci/run does it)`
            : err.message,
        ),
      );
      child.once('exit', (code) => resolve(`${binary} exited with ${code}: ${logs.join('').slice(-2000)}`));
    });
    const deadline = Date.now() + 30_000;
    let ready = false;
    let failure: string | null = null;
    void exited.then((why) => (failure = why));
    while (!ready && failure === null && Date.now() < deadline) {
      ready = await fetch(`${url}/-/ready`).then(
        (r) => r.ok,
        () => false,
      );
      if (!ready) await new Promise((r) => setTimeout(r, 200));
    }
    if (ready) return { child, url, port, logs };
    child.kill('SIGKILL');
    // Another process may have taken the free port between the check and the bind: try another.
    if (attempt >= 3 || !/address already in use/.test(failure ?? ''))
      throw new Error(failure ?? `${binary} not ready after 30 s: ${logs.join('').slice(-2000)}`);
  }
}

const startPrometheus = (dir: string, configFile: string): Promise<Server> =>
  startServer('prometheus', 'prometheus', (port) => [
    `--config.file=${configFile}`,
    `--storage.tsdb.path=${path.join(dir, 'tsdb')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn',
  ]);

/** Debian's Alertmanager (package prometheus-alertmanager) with the committed config; no cluster. */
const startAlertmanager = (dir: string): Promise<Server> =>
  startServer('prometheus-alertmanager', 'prometheus-alertmanager', (port) => [
    `--config.file=${path.join(PROMETHEUS_DIR, 'alertmanager.yml')}`,
    `--storage.path=${path.join(dir, 'alertmanager')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--cluster.listen-address=',
    '--log.level=warn',
  ]);

/** Instant queries against a Prometheus, and polling one until it holds. */
function promApi(url: () => string) {
  const query = async (q: string): Promise<Sample[]> => {
    const res = await fetch(`${url()}/api/v1/query?query=${encodeURIComponent(q)}`);
    const body = (await res.json()) as { status: string; data: { result: Sample[] }; error?: string };
    assert.equal(body.status, 'success', `${q}: ${body.error}`);
    return body.data.result;
  };
  /** Polls a query until `ok` holds (scrapes and rule evaluations run every second). */
  const until = async (q: string, ok: (r: Sample[]) => boolean, timeoutMs = 30_000): Promise<Sample[]> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await query(q);
      if (ok(r)) return r;
      if (Date.now() > deadline) throw new Error(`${q} did not hold after ${timeoutMs} ms: ${JSON.stringify(r)}`);
      await new Promise((res) => setTimeout(res, 250));
    }
  };
  /** What Grafana's label_values(selector, label) lists: the label API with the selector as match[]. */
  const labelValues = async (selector: string, label: string): Promise<string[]> => {
    const res = await fetch(`${url()}/api/v1/label/${label}/values?match[]=${encodeURIComponent(selector)}`);
    const body = (await res.json()) as { status: string; data: string[]; error?: string };
    assert.equal(body.status, 'success', `label_values(${selector}, ${label}): ${body.error}`);
    return body.data.sort();
  };
  return { query, until, labelValues };
}

describe('a real Prometheus scraping a running central and edge', () => {
  let db: TestDatabase;
  let dir: string;
  let central: Running;
  let edge: Running;
  let prometheus: Server;
  let alertmanager: Server;
  const wh = `WP${randomBytes(3).toString('hex')}`;

  const { query, until } = promApi(() => prometheus.url);

  before(async () => {
    db = await createTestDatabase('prometheus');
    const devices = await writeDevices([
      { id: `gw-${wh}`, warehouse: wh, kind: 'gateway', password: 'pw-gateway-prom' },
      { id: 'scan-prom', warehouse: wh, kind: 'scanner', password: 'pw-scanner-prom' },
    ]);
    dir = devices.dir;
    const env = { DATABASE_URL: db.url, LOG_LEVEL: 'warn' };
    const common = ['--ws-port', '0', '--http-port', '0', '--host', '127.0.0.1', '--devices-file', devices.file];
    central = await startStockwire(['central', '--mqtt-port', '0', '--data-dir', dir, ...common], env);
    edge = await startStockwire(
      [
        'edge',
        '--warehouse',
        wh,
        '--mqtt-port',
        '0',
        '--data-dir',
        path.join(dir, 'edge'),
        '--central-url',
        `mqtt://127.0.0.1:${central.ports.mqtt}`,
        '--central-username',
        `gw-${wh}`,
        '--central-password',
        'pw-gateway-prom',
        ...common,
      ],
      env,
    );
    alertmanager = await startAlertmanager(dir);
    const config = await localConfig(
      dir,
      { 'stockwire-central': [`127.0.0.1:${central.ports.http}`], 'stockwire-edge': [`127.0.0.1:${edge.ports.http}`] },
      `127.0.0.1:${alertmanager.port}`,
    );
    prometheus = await startPrometheus(dir, config);
  });

  after(async () => {
    prometheus?.child.kill('SIGTERM');
    alertmanager?.child.kill('SIGTERM');
    for (const r of [edge, central]) r?.child.kill('SIGTERM');
    await Promise.all([edge?.exited, central?.exited]);
    await db?.drop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it('scrapes both targets and answers queries on the metrics an event moves', { timeout: 90_000 }, async () => {
    await until(
      'up{job=~"stockwire-central|stockwire-edge"}',
      (r) => r.length === 2 && r.every((s) => s.value[1] === '1'),
    );
    await until(`stockwire_edge_link_up{job="stockwire-edge", wh="${wh}"}`, (r) => r[0]?.value[1] === '1');
    // Refusal reasons exist at 0 from the start, so increase() sees the first refusal (StockwireOutboxRefusing).
    const refused = await until(`stockwire_edge_events_refused_total{wh="${wh}"}`, (r) => r.length === 3);
    assert.deepEqual(refused.map((r) => `${r.metric.reason}=${r.value[1]}`).sort(), [
      'device_share=0',
      'outbox_error=0',
      'outbox_full=0',
    ]);

    // A scanner at the edge ships more than there is: two events applied, stock below zero.
    const scanner = await connect(`mqtt://127.0.0.1:${edge.ports.mqtt}`, 'scan-prom', 'pw-scanner-prom', {
      clientId: 'scan-prom',
    });
    await scanner.publishAsync(
      `wh/${wh}/dev/scan-prom/event`,
      JSON.stringify({ v: 1, id: 'p-1', type: 'received', sku: 'SKU-P', qty: 2 }),
      { qos: 1 },
    );
    await scanner.publishAsync(
      `wh/${wh}/dev/scan-prom/event`,
      JSON.stringify({ v: 1, id: 'p-2', type: 'shipped', sku: 'SKU-P', qty: 5 }),
      { qos: 1 },
    );
    await scanner.endAsync();

    const applied = await until(
      `sum by (wh) (stockwire_events_total{job="stockwire-central", wh="${wh}", outcome="applied"})`,
      (r) => r[0]?.value[1] === '2',
    );
    assert.equal(applied[0]?.metric.wh, wh);
    await until(`stockwire_edge_events_confirmed_total{wh="${wh}"}`, (r) => r[0]?.value[1] === '2');
    await until(`stockwire_edge_backlog_events{wh="${wh}"}`, (r) => r[0]?.value[1] === '0');
    await until(`stockwire_ingest_lag_seconds_count{wh="${wh}"}`, (r) => r[0]?.value[1] === '2');
    await until(`stockwire_negative_stock_total{wh="${wh}"}`, (r) => r[0]?.value[1] === '1');
  });

  it('evaluates every alert rule on the real series without error, and the negative-stock alert fires for the warehouse', {
    timeout: 60_000,
  }, async () => {
    const alert = await until(`ALERTS{alertname="StockwireNegativeStock", alertstate="firing"}`, (r) => r.length > 0);
    assert.equal(alert[0]?.metric.wh, wh);
    assert.equal(alert[0]?.metric.severity, 'warning');
    type Rules = { data: { groups: { rules: { name: string; health: string; lastError?: string }[] }[] } };
    const rulesNow = async () =>
      ((await (await fetch(`${prometheus.url}/api/v1/rules`)).json()) as Rules).data.groups.flatMap((g) => g.rules);
    let rules = await rulesNow();
    for (let i = 0; i < 40 && rules.some((r) => r.health === 'unknown'); i++) {
      await new Promise((r) => setTimeout(r, 250));
      rules = await rulesNow();
    }
    assert.ok(rules.length >= 10, `${rules.length} rules loaded`);
    const unhealthy = rules.filter((r) => r.health !== 'ok').map((r) => `${r.name}: ${r.health} ${r.lastError ?? ''}`);
    assert.deepEqual(unhealthy, []);
    // Nothing else is wrong on a healthy pair: no other alert fires.
    const others = await query('ALERTS{alertstate="firing", alertname!="StockwireNegativeStock"}');
    assert.deepEqual(
      others.map((s) => s.metric.alertname),
      [],
    );
  });

  it('Prometheus sends the firing alert to the Alertmanager of the committed config, with its labels and runbook_url', {
    timeout: 60_000,
  }, async () => {
    type Alert = { labels: Record<string, string>; annotations: Record<string, string>; status: { state: string } };
    const deadline = Date.now() + 45_000;
    let received: Alert[] = [];
    while (Date.now() < deadline) {
      received = ((await (await fetch(`${alertmanager.url}/api/v2/alerts`)).json()) as Alert[]).filter(
        (a) => a.labels.alertname === 'StockwireNegativeStock',
      );
      if (received.length > 0) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(received.length, 1, `Alertmanager received the alert: ${alertmanager.logs.join('').slice(-1000)}`);
    const a = received[0] as Alert;
    assert.deepEqual([a.labels.wh, a.labels.severity, a.status.state], [wh, 'warning', 'active']);
    assert.equal(a.annotations.runbook_url, 'docs/operating.md#stockwirenegativestock');
  });
});

interface Target {
  refId: string;
  expr: string;
}
interface Dashboard {
  panels: { type: string; title: string; targets?: Target[] }[];
  templating: { list: { name: string; type: string; query?: { query: string } }[] };
}

/** Grafana's interpolation of the variables the dashboards use; a variable left over fails the test. */
function interpolate(expr: string, values: Record<string, string>): string {
  const out = expr.replace(
    /\$(__rate_interval|[A-Za-z_][A-Za-z0-9_]*)/g,
    (whole, name: string) => values[name] ?? whole,
  );
  assert.doesNotMatch(out, /\$/, `a variable the test does not set: ${out}`);
  return out;
}

describe('every panel of every Prometheus dashboard has data on a running demo (stockwire demo scraped by a real Prometheus)', () => {
  let db: TestDatabase;
  let demo: Demo;
  let dir: string;
  let prometheus: Server;
  const { query, until, labelValues } = promApi(() => prometheus.url);

  before(async () => {
    db = await createTestDatabase('promdemo');
    // What `npm start` runs, on free ports and a test database; its simulator at its default rate.
    demo = await startDemo([], { DATABASE_URL: db.url, LOG_LEVEL: 'warn' });
    dir = demo.dataDir;
    const edges = Object.values(demo.edges).map((p) => `127.0.0.1:${p.http}`);
    const config = await localConfig(dir, {
      'stockwire-central': [`127.0.0.1:${demo.central.http}`],
      'stockwire-edge': edges,
    });
    prometheus = await startPrometheus(dir, config);
  });

  after(async () => {
    prometheus?.child.kill('SIGTERM');
    demo?.run.child.kill('SIGTERM');
    await demo?.run.exited;
    await db?.drop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it("the job and warehouse variables list the demo's jobs and warehouses; every panel expression, with every warehouse, returns a result", {
    timeout: 150_000,
  }, async () => {
    const dashboards = await Promise.all(
      PROMQL_DASHBOARDS.map(async (file) => ({
        file,
        d: JSON.parse(await fs.readFile(path.join(GRAFANA_DASHBOARDS, file), 'utf8')) as Dashboard,
      })),
    );
    const variable = (d: Dashboard, name: string) => {
      const q = d.templating.list.find((v) => v.name === name)?.query?.query ?? '';
      const m = /^label_values\((.+),\s*(\w+)\)$/.exec(q);
      assert.ok(m, `variable ${name}: ${q}`);
      return { selector: m[1] as string, label: m[2] as string };
    };
    const deadline = Date.now() + 60_000;
    const targets = 1 + Object.keys(demo.edges).length;
    await until('up', (r) => r.length === targets && r.every((s) => s.value[1] === '1'), 60_000);
    const jobOf = variable(dashboards[0]?.d as Dashboard, 'job');
    const jobs = await labelValues(jobOf.selector, jobOf.label);
    assert.deepEqual(
      jobs,
      ['stockwire-central', 'stockwire-edge'],
      'the job variable lists the jobs that export stockwire series',
    );
    // "All" of a multi-value variable: Grafana joins the values into one regex.
    const values: Record<string, string> = { job: `(${jobs.join('|')})`, __rate_interval: '15s' };

    const cases: { where: string; expr: string }[] = [];
    for (const { file, d } of dashboards) {
      const whVar = d.templating.list.some((v) => v.name === 'wh') ? variable(d, 'wh') : null;
      let warehouses: (string | null)[] = [null];
      if (whVar) {
        warehouses = await labelValues(interpolate(whVar.selector, values), whVar.label);
        assert.deepEqual(
          warehouses,
          Object.keys(demo.edges).sort(),
          `${file}: the warehouse variable lists the demo's warehouses`,
        );
      }
      for (const wh of warehouses)
        for (const p of d.panels)
          for (const t of p.targets ?? [])
            cases.push({
              where: `${file}${wh ? ` (wh=${wh})` : ''} "${p.title}" ${t.refId}`,
              expr: interpolate(t.expr, { ...values, ...(wh && { wh }) }),
            });
    }
    assert.ok(cases.length > 60, `${cases.length} panel expressions`);

    // The demo runs briefly: each expression is asked until it answers (a rate needs two scrapes in its window).
    let empty = cases;
    while (empty.length > 0 && Date.now() < deadline + 30_000) {
      const answers = await Promise.all(empty.map(async (c) => ({ c, n: (await query(c.expr)).length })));
      empty = answers.filter((a) => a.n === 0).map((a) => a.c);
      if (empty.length > 0) await new Promise((r) => setTimeout(r, 1_000));
    }
    assert.deepEqual(
      empty.map((c) => `${c.where}: ${c.expr}`),
      [],
      'every panel expression has data',
    );
  });
});
