import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { exportedMetrics, type Catalogue } from '../helpers/exported-metrics.js';
import { checkExpr, vectorSelectors } from '../helpers/promql.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const GRAFANA = path.join(ROOT, 'dashboards/grafana');
const PROMETHEUS = path.join(ROOT, 'dashboards/prometheus');
const exec = promisify(execFile);
// The dashboards on Prometheus; stockwire-ledger.json queries the database, its SQL is tested in ledger.test.ts.
const PROMQL_DASHBOARDS = ['stockwire-overview.json', 'stockwire-warehouse.json'];
const DS_INPUT = 'DS_PROMETHEUS';
const DS_REF = { type: 'prometheus', uid: `\${${DS_INPUT}}` };
const JOB_QUERY = 'label_values({__name__=~"stockwire_.+"}, job)';

interface Target {
  expr: string;
  refId: string;
  datasource?: { uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
  panels?: Panel[];
}
interface Dashboard {
  __inputs?: { name: string; type: string; pluginId: string }[];
  __requires?: { type: string; id: string }[];
  uid: string;
  title: string;
  schemaVersion: number;
  panels: Panel[];
  templating: {
    list: {
      name: string;
      type: string;
      multi?: boolean;
      includeAll?: boolean;
      datasource?: { type?: string; uid?: string };
      query?: { query?: string } | string;
    }[];
  };
}
interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

async function promtool(args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await exec('promtool', args, { cwd: PROMETHEUS, timeout: 60_000 });
    return stdout + stderr;
  } catch (err) {
    const e = err as { code?: string | number; stdout?: string; stderr?: string };
    if (e.code === 'ENOENT')
      throw new Error(
        'promtool is missing: install the Debian package `prometheus` (apt-get install prometheus; .ci/run does it)',
      );
    throw new Error(`promtool ${args.join(' ')} failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}

function assertExprs(exprs: { where: string; expr: string }[], catalogue: Catalogue): Set<string> {
  const used = new Set<string>();
  const problems: string[] = [];
  for (const { where, expr } of exprs) {
    const r = checkExpr(expr, catalogue);
    r.metrics.forEach((m) => {
      used.add(m);
    });
    problems.push(...r.problems.map((p) => `${where}: ${p}\n    ${expr}`));
  }
  assert.deepEqual(problems, [], problems.join('\n'));
  return used;
}

describe('dashboards and alert rules against the metrics the code exports', () => {
  let catalogue: Catalogue;
  before(async () => {
    catalogue = await exportedMetrics();
  });

  it('the catalogue is read from a running central and edge, with the warehouse labels dashboards group by', () => {
    for (const name of [
      'stockwire_events_total',
      'stockwire_edge_link_up',
      'stockwire_broker_connected_clients',
      'process_resident_memory_bytes',
    ])
      assert.ok(catalogue.has(name), `${name} exported`);
    assert.ok(catalogue.get('stockwire_ingest_lag_seconds_bucket')?.has('wh'), 'ingest lag by warehouse');
    assert.ok(catalogue.get('stockwire_ingest_lag_seconds_bucket')?.has('le'), 'histogram buckets');
    assert.ok(
      catalogue.has('stockwire_commit_seconds_count') && catalogue.has('stockwire_commit_seconds_sum'),
      'histogram _sum and _count',
    );
    assert.ok(catalogue.get('stockwire_negative_stock_total')?.has('wh'), 'negative stock by warehouse');
    assert.ok(
      catalogue.get('stockwire_edge_oldest_unconfirmed_seconds')?.has('wh'),
      'every edge series carries its warehouse',
    );
    assert.ok(!catalogue.has('stockwire_edge_link_up_bucket'), 'a gauge has no buckets');
  });

  it('the PromQL check fails on unknown metrics, unknown labels, bad grouping and bad syntax', () => {
    assert.deepEqual(
      checkExpr('sum by (wh) (rate(stockwire_events_total{outcome="applied"}[$__rate_interval]))', catalogue).problems,
      [],
    );
    assert.match(
      checkExpr('rate(stockwire_events_applied_total[5m])', catalogue).problems.join(),
      /stockwire_events_applied_total is not exported/,
    );
    assert.match(
      checkExpr('stockwire_commit_seconds > 1', catalogue).problems.join(),
      /stockwire_commit_seconds is not exported/,
    );
    assert.match(checkExpr('stockwire_dead_letters_total{wh="x"}', catalogue).problems.join(), /has no label wh/);
    assert.match(
      checkExpr('sum by (device) (stockwire_events_total)', catalogue).problems.join(),
      /grouping label device/,
    );
    assert.match(checkExpr('sum(rate(stockwire_events_total[5m])', catalogue).problems.join(), /does not parse/);
    assert.match(checkExpr('{__name__="stockwire_events_total"}', catalogue).problems.join(), /names no metric/);
  });

  describe('Grafana', () => {
    let datasourceUid: string;
    let dashboards: { file: string; d: Dashboard }[];
    before(async () => {
      const ds = YAML.parse(
        await fs.readFile(path.join(GRAFANA, 'provisioning/datasources/prometheus.yml'), 'utf8'),
      ) as { datasources: { uid: string; type: string }[] };
      assert.equal(ds.datasources.length, 1);
      assert.equal(ds.datasources[0]?.type, 'prometheus');
      datasourceUid = ds.datasources[0]?.uid as string;
      const files = (await fs.readdir(path.join(GRAFANA, 'dashboards'))).filter((f) => f.endsWith('.json'));
      dashboards = await Promise.all(
        files.map(async (file) => ({
          file,
          d: JSON.parse(await fs.readFile(path.join(GRAFANA, 'dashboards', file), 'utf8')) as Dashboard,
        })),
      );
    });

    it('dashboards are valid JSON with unique uids, unique panel ids and panels that do not overlap', () => {
      assert.deepEqual(dashboards.map((x) => x.file).sort(), ['stockwire-ledger.json', ...PROMQL_DASHBOARDS]);
      assert.equal(new Set(dashboards.map((x) => x.d.uid)).size, dashboards.length);
      for (const { file, d } of dashboards) {
        assert.ok(d.schemaVersion >= 36, `${file}: schemaVersion`);
        assert.ok(d.title && d.uid, `${file}: title and uid`);
        const ids = d.panels.map((p) => p.id);
        assert.equal(new Set(ids).size, ids.length, `${file}: panel ids unique`);
        const cells = new Set<string>();
        for (const p of d.panels) {
          const g = p.gridPos;
          assert.ok(
            g.x >= 0 && g.w > 0 && g.x + g.w <= 24 && g.h > 0,
            `${file}: panel ${p.title} fits the 24-column grid`,
          );
          for (let x = g.x; x < g.x + g.w; x++)
            for (let y = g.y; y < g.y + g.h; y++) {
              assert.ok(!cells.has(`${x},${y}`), `${file}: panel ${p.title} overlaps another at ${x},${y}`);
              cells.add(`${x},${y}`);
            }
        }
      }
    });

    it('importable into any Grafana: a datasource input and variable, a job variable, no provisioned uid or job name hard-wired', () => {
      for (const { file, d } of dashboards.filter((x) => PROMQL_DASHBOARDS.includes(x.file))) {
        // An import asks for the datasource (__inputs); a provisioned dashboard resolves ${DS_PROMETHEUS} through the
        // datasource variable of that name (grafana/grafana#10786), which defaults to the provisioned (default) Prometheus.
        assert.deepEqual(
          d.__inputs?.map((i) => [i.name, i.type, i.pluginId]),
          [[DS_INPUT, 'datasource', 'prometheus']],
          `${file}: __inputs`,
        );
        assert.ok(
          d.__requires?.some((r) => r.type === 'datasource' && r.id === 'prometheus'),
          `${file}: __requires names the datasource plugin`,
        );
        const ds = d.templating.list.find((v) => v.name === DS_INPUT);
        assert.deepEqual([ds?.type, ds?.query], ['datasource', 'prometheus'], `${file}: datasource variable`);
        const job = d.templating.list.find((v) => v.name === 'job');
        assert.deepEqual(
          [job?.type, job?.multi, job?.includeAll],
          ['query', true, true],
          `${file}: a job variable, all jobs by default`,
        );
        const text = JSON.stringify(d);
        assert.ok(!text.includes(datasourceUid), `${file}: the provisioned uid ${datasourceUid} is not hard-wired`);
        assert.doesNotMatch(text, /job=~?\\"stockwire/, `${file}: no job name hard-wired`);
        for (const p of d.panels) {
          if (p.type === 'row') continue;
          assert.ok((p.targets ?? []).length > 0, `${file}: panel ${p.title} has queries`);
          assert.deepEqual(p.datasource, DS_REF, `${file}: panel ${p.title} datasource`);
          for (const t of p.targets ?? []) {
            assert.deepEqual(t.datasource, DS_REF, `${file}: ${p.title} ${t.refId} datasource`);
            for (const sel of vectorSelectors(t.expr)) {
              if (sel.metric === '') continue; // vector(0) and the like
              assert.ok(
                sel.matchers.includes('job=~"$job"'),
                `${file}: ${p.title} ${t.refId}: ${sel.metric} is filtered by the job variable`,
              );
            }
          }
        }
        for (const v of d.templating.list.filter((x) => x.type === 'query'))
          assert.deepEqual(v.datasource, DS_REF, `${file}: variable ${v.name}`);
      }
    });

    it('every panel expression and variable names only exported metrics and labels', () => {
      for (const { file, d } of dashboards.filter((x) => PROMQL_DASHBOARDS.includes(x.file))) {
        const exprs: { where: string; expr: string }[] = [];
        for (const p of d.panels)
          for (const t of p.targets ?? []) exprs.push({ where: `${file} "${p.title}" ${t.refId}`, expr: t.expr });
        for (const v of d.templating.list.filter((x) => x.type === 'query')) {
          const q = typeof v.query === 'string' ? v.query : (v.query?.query ?? '');
          const m = /^label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)$/.exec(q);
          assert.ok(m, `${file}: variable ${v.name} is label_values(selector, label): ${q}`);
          // The job variable selects by name pattern (every stockwire_ series); the end-to-end test checks what it finds.
          if (v.name === 'job') assert.equal(q, JOB_QUERY, `${file}: job variable`);
          else exprs.push({ where: `${file} variable ${v.name}`, expr: `group by (${m[2]}) (${m[1]})` });
        }
        assertExprs(exprs, catalogue);
      }
    });

    it('the overview shows throughput, lag, backlog, oldest age, link state, dedupe hits, dead letters, negative stock and commit latency', () => {
      const overview = dashboards.find((x) => x.file === 'stockwire-overview.json')?.d as Dashboard;
      // read without the job filter every selector carries (checked above)
      const exprs = overview.panels.flatMap((p) =>
        (p.targets ?? []).map((t) => t.expr.replace(/\{job=~"\$job"\}/g, '').replace(/job=~"\$job", /g, '')),
      );
      const uses = (re: RegExp) => exprs.some((e) => re.test(e));
      assert.ok(uses(/sum by \(wh\) \(rate\(stockwire_events_total/), 'throughput by warehouse');
      assert.ok(uses(/sum by \(type\) \(rate\(stockwire_events_total/), 'throughput by type');
      assert.ok(uses(/stockwire_ingest_lag_seconds_bucket/), 'ingest lag');
      assert.ok(uses(/by \(wh\) \(stockwire_edge_backlog_events\)/), 'outbox backlog per warehouse');
      assert.ok(
        uses(/by \(wh\) \(stockwire_edge_oldest_unconfirmed_seconds\)/),
        'oldest unconfirmed age per warehouse',
      );
      assert.ok(uses(/by \(wh\) \(stockwire_edge_link_up\)/), 'link state per warehouse');
      assert.ok(uses(/stockwire_events_total\{outcome="duplicate"\}/), 'dedupe hits');
      assert.ok(uses(/stockwire_dead_letters_total/), 'dead letters');
      assert.ok(uses(/stockwire_negative_stock_total/), 'negative-stock alerts');
      assert.ok(uses(/stockwire_commit_seconds_bucket/), 'commit latency');
    });

    it('the warehouse dashboard filters every query by its warehouse variable', () => {
      const wh = dashboards.find((x) => x.file === 'stockwire-warehouse.json')?.d as Dashboard;
      assert.ok(wh.templating.list.some((v) => v.name === 'wh'));
      for (const p of wh.panels) for (const t of p.targets ?? []) assert.match(t.expr, /wh="\$wh"/, `panel ${p.title}`);
    });

    it('the dashboard provider loads the folder the deployment mounts the dashboards into', async () => {
      const prov = YAML.parse(
        await fs.readFile(path.join(GRAFANA, 'provisioning/dashboards/stockwire.yml'), 'utf8'),
      ) as { providers: { type: string; options: { path: string } }[] };
      const compose = YAML.parse(await fs.readFile(path.join(ROOT, 'deploy/docker-compose.yml'), 'utf8')) as {
        services: Record<string, { volumes?: string[] }>;
      };
      const mounts = compose.services.grafana?.volumes ?? [];
      const dashboardsMount = mounts.find((v) => v.startsWith('../dashboards/grafana/dashboards:'));
      assert.ok(dashboardsMount, `grafana mounts the dashboards: ${mounts.join(', ')}`);
      assert.equal(dashboardsMount.split(':')[1], prov.providers[0]?.options.path);
    });
  });

  describe('Prometheus', () => {
    let rules: Rule[];
    before(async () => {
      const doc = YAML.parse(await fs.readFile(path.join(PROMETHEUS, 'rules/stockwire.rules.yml'), 'utf8')) as {
        groups: { name: string; rules: Rule[] }[];
      };
      rules = doc.groups.flatMap((g) => g.rules);
    });

    it('promtool accepts the scrape config and the rules', async () => {
      assert.match(await promtool(['check', 'config', 'prometheus.yml']), /SUCCESS: prometheus.yml is valid/);
      assert.match(
        await promtool(['check', 'rules', 'rules/stockwire.rules.yml']),
        new RegExp(`SUCCESS: ${rules.length} rules found`),
      );
    });

    it('alert rules pass their unit tests (promtool test rules)', async () => {
      assert.match(await promtool(['test', 'rules', 'tests/stockwire.rules.test.yml']), /SUCCESS/);
    });

    it('alerts cover link down, backlog age, dead letters, negative stock, processor lag and a nearly full outbox, each unit-tested', async () => {
      const names = rules.map((r) => r.alert);
      for (const a of [
        'StockwireLinkDown',
        'StockwireBacklogOld',
        'StockwireDeadLetters',
        'StockwireNegativeStock',
        'StockwireIngestLagHigh',
        'StockwireProcessorBacklog',
        'StockwireOutboxNearFull',
      ])
        assert.ok(names.includes(a), `alert ${a}`);
      const tests = YAML.parse(await fs.readFile(path.join(PROMETHEUS, 'tests/stockwire.rules.test.yml'), 'utf8')) as {
        tests: { alert_rule_test?: { alertname: string; exp_alerts: unknown[] }[] }[];
      };
      const fired = new Set(
        tests.tests.flatMap((t) =>
          (t.alert_rule_test ?? []).filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname),
        ),
      );
      for (const r of rules) {
        assert.ok(r.alert, 'only alerting rules');
        assert.ok(['warning', 'critical'].includes(r.labels?.severity ?? ''), `${r.alert}: severity`);
        assert.ok(r.annotations?.summary && r.annotations.description, `${r.alert}: summary and description`);
        assert.ok(fired.has(r.alert), `${r.alert} has a unit test in which it fires`);
      }
    });

    it('every alert has a runbook_url: its own section of docs/operating.md, which names it', async () => {
      const guide = await fs.readFile(path.join(ROOT, 'docs/operating.md'), 'utf8');
      // GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens.
      const sections = new Map(
        [...guide.matchAll(/^#+ (.+)\n([\s\S]*?)(?=^#+ |(?![\s\S]))/gm)].map((m) => [
          (m[1] as string)
            .toLowerCase()
            .replace(/[^a-z0-9 -]/g, '')
            .replace(/ /g, '-'),
          `${m[1]}\n${m[2]}`,
        ]),
      );
      for (const r of rules) {
        const url = r.annotations?.runbook_url ?? '';
        const m = /^docs\/operating\.md#([a-z0-9-]+)$/.exec(url);
        assert.ok(m, `${r.alert}: runbook_url ${url || '(none)'} is docs/operating.md#<section>`);
        const section = sections.get(m[1] as string);
        assert.ok(section, `${r.alert}: docs/operating.md has a section #${m[1]}`);
        assert.ok(section.includes(r.alert as string), `${r.alert}: its runbook section names it`);
      }
    });

    it('every rule expression names only exported metrics and labels', () => {
      assertExprs(
        rules.map((r) => ({ where: `rule ${r.alert}`, expr: r.expr })),
        catalogue,
      );
    });
  });
});
