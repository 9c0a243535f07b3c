import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import YAML from 'yaml';
import { migrate } from '../../processors/db/migrate.js';
import { createPool } from '../../processors/db/pool.js';
import type { TestDatabase } from '../helpers/db.js';
import {
  expandGrafanaSql,
  goFloat,
  intervalSeconds,
  rfc3339Nano,
  type GrafanaSqlContext,
} from '../helpers/grafana-sql.js';
import { insertEvents, refreshMovements, SEED_EVENTS, type SeedEvent } from '../helpers/ledger-seed.js';
import { TEST_SERVERS } from '../helpers/timescale.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const GRAFANA = path.join(ROOT, 'dashboards/grafana');
const DS_INPUT = 'DS_STOCKWIRE_POSTGRES';
const DS_TYPE = 'grafana-postgresql-datasource';

interface Target {
  refId: string;
  rawSql: string;
  rawQuery?: boolean;
  format: 'time_series' | 'table';
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  description?: string;
  interval?: string;
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
}
interface Variable {
  name: string;
  type: string;
  query: string;
  multi?: boolean;
  includeAll?: boolean;
  datasource?: { type?: string; uid?: string };
}
interface Dashboard {
  __inputs: { name: string; type: string; pluginId: string }[];
  uid: string;
  panels: Panel[];
  templating: { list: Variable[] };
}

/**
 * The seed of ledger-seed.ts plus: WA/S1 ships 5 on 3 November after its count of 12 (7 left: not negative,
 * which a replay that ignored the count before its range would get wrong), and WB/S1 ships 50 then 1 (45 → −5 → −6:
 * one crossing below zero, not two).
 */
const EXTRA: SeedEvent[] = [
  { ts: '2026-11-03T08:00:00Z', wh: 'WA', sku: 'S1', id: 's5', type: 'shipped', qty: 5 },
  { ts: '2026-11-03T09:00:00Z', wh: 'WB', sku: 'S1', id: 's6', type: 'shipped', qty: 50 },
  { ts: '2026-11-03T09:30:00Z', wh: 'WB', sku: 'S1', id: 's7', type: 'shipped', qty: 1 },
];
const DEAD_LETTERS = [
  { at: '2026-11-02T09:10:00Z', wh: 'WA', code: 'schema_violation' },
  { at: '2026-11-02T09:20:00Z', wh: 'WA', code: 'schema_violation' },
  { at: '2026-11-02T12:00:00Z', wh: null, code: 'invalid_topic' },
  { at: '2026-11-03T01:00:00Z', wh: 'WB', code: 'invalid_json' },
];
const TEXT_COLUMNS = new Set(['metric', 'sku', 'warehouse', 'device']);
const RANGE = { from: '2026-11-02T00:00:00Z', to: '2026-11-04T00:00:00Z' };

type Row = Record<string, string | number>;

/** Rows as a reader compares them: the time column as an ISO string (epoch seconds or a timestamp), numbers as numbers. */
function normalise(rows: Record<string, unknown>[]): Row[] {
  return rows.map((r) =>
    Object.fromEntries(
      Object.entries(r).map(([k, v]) => {
        if (k === 'time') return [k, v instanceof Date ? v.toISOString() : new Date(Number(v) * 1000).toISOString()];
        if (TEXT_COLUMNS.has(k)) return [k, String(v)];
        return [k, Number(v)];
      }),
    ),
  );
}

describe('the ledger dashboard (stockwire-ledger.json) on the PostgreSQL datasource', () => {
  let dashboard: Dashboard;
  before(async () => {
    dashboard = JSON.parse(
      await fs.readFile(path.join(GRAFANA, 'dashboards/stockwire-ledger.json'), 'utf8'),
    ) as Dashboard;
  });
  const panels = () => dashboard.panels.filter((p) => p.type !== 'row');

  it('is importable (a datasource input) and provisionable (a datasource variable of the same name), every query on it', () => {
    assert.deepEqual(
      dashboard.__inputs.map((i) => [i.name, i.type, i.pluginId]),
      [[DS_INPUT, 'datasource', DS_TYPE]],
    );
    // A provisioned dashboard keeps ${DS_…} as it is: a datasource variable of that name resolves it (grafana/grafana#10786).
    const dsVariable = dashboard.templating.list.find((v) => v.name === DS_INPUT);
    assert.deepEqual([dsVariable?.type, dsVariable?.query], ['datasource', DS_TYPE]);
    const reference = { type: DS_TYPE, uid: `\${${DS_INPUT}}` };
    for (const p of panels()) {
      assert.deepEqual(p.datasource, reference, `${p.title}: panel datasource`);
      assert.ok(p.description && p.description.length > 40, `${p.title}: says what it shows`);
      assert.ok((p.targets ?? []).length > 0, `${p.title}: has queries`);
      for (const t of p.targets ?? []) {
        assert.deepEqual(t.datasource, reference, `${p.title} ${t.refId}`);
        assert.equal(t.rawQuery, true, `${p.title}: raw SQL`);
      }
    }
    for (const v of dashboard.templating.list.filter((x) => x.type === 'query'))
      assert.deepEqual(v.datasource, reference, `variable ${v.name}`);
    assert.ok(
      !JSON.stringify(dashboard).includes('stockwire-postgres'),
      'no provisioned uid hard-wired: an import picks the datasource',
    );
  });

  it('reads movements from movements_hourly and shows movements, top movers, count corrections, negative stock and dead letters', () => {
    const sql = (title: string) =>
      panels().find((p) => p.title === title)?.targets?.[0]?.rawSql ?? assert.fail(`a panel ${title}`);
    assert.match(sql('Stock movements per warehouse'), /FROM movements_hourly/);
    assert.match(sql('Top movers'), /FROM movements_hourly/);
    assert.match(sql('Count corrections (largest shrinkage first)'), /type = 'counted'/);
    assert.match(sql('Stock went negative'), /on_hand < 0 AND before >= 0/);
    assert.match(sql('Dead letters'), /FROM dead_letters/);
    for (const p of panels())
      for (const t of p.targets ?? [])
        if (/\$__timeGroup/.test(t.rawSql)) assert.equal(t.format, 'time_series', p.title);
  });

  it('the provisioned datasource is the compose database, with every value Grafana expands set on the grafana service', async () => {
    const ds = YAML.parse(await fs.readFile(path.join(GRAFANA, 'provisioning/datasources/postgres.yml'), 'utf8')) as {
      datasources: {
        uid: string;
        type: string;
        url: string;
        user: string;
        jsonData: { database: string };
        secureJsonData: { password: string };
      }[];
    };
    assert.equal(ds.datasources.length, 1);
    const pg = ds.datasources[0] as (typeof ds.datasources)[number];
    assert.deepEqual([pg.uid, pg.type], ['stockwire-postgres', DS_TYPE]);
    const compose = YAML.parse(await fs.readFile(path.join(ROOT, 'deploy/docker-compose.yml'), 'utf8')) as {
      services: Record<string, { environment?: Record<string, string>; depends_on?: string[] }>;
    };
    const env = compose.services.grafana?.environment ?? {};
    const expand = (v: string) =>
      v.replace(/\$\{(\w+)\}/g, (_m, name: string) => env[name] ?? assert.fail(`grafana's environment has no ${name}`));
    const [host, port] = expand(pg.url).split(':');
    assert.ok(host && host in compose.services, `${host} is a compose service`);
    assert.equal(port, '5432');
    const db = compose.services[host]?.environment ?? {};
    assert.equal(expand(pg.jsonData.database), db.POSTGRES_DB);
    assert.equal(expand(pg.user), db.POSTGRES_USER);
    // The same compose variable (.env) on both sides; compose fills it in.
    const composeVariable = (v: string | undefined) =>
      /^\$\{(\w+)/.exec(v ?? '')?.[1] ?? assert.fail(`${v} is not a compose variable`);
    assert.equal(composeVariable(expand(pg.secureJsonData.password)), composeVariable(db.POSTGRES_PASSWORD));
    assert.ok(compose.services.grafana?.depends_on?.includes(host), 'grafana starts after the database');
  });

  it('the macro expander says what Grafana says (its macros_test.go) and refuses what it does not know', () => {
    const ctx: GrafanaSqlContext = {
      from: new Date('2018-04-12T18:00:00Z'),
      to: new Date('2018-04-12T18:05:00Z'),
      interval: '5m',
      timescaledb: false,
      variables: { wh: { values: ["W'1", 'W2'], multi: true }, one: { values: ["it's"], multi: false } },
    };
    assert.equal(
      expandGrafanaSql('WHERE $__timeFilter(time_column)', ctx),
      "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'",
    );
    assert.equal(expandGrafanaSql('select $__timeFrom()', ctx), "select '2018-04-12T18:00:00Z'");
    assert.equal(
      expandGrafanaSql("SELECT $__timeGroup(time_column,'5m')", ctx),
      'SELECT floor(extract(epoch from time_column)/300)*300',
    );
    assert.equal(
      expandGrafanaSql("SELECT $__timeGroup(time_column,'5m'), value", ctx),
      'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value',
    );
    assert.equal(
      expandGrafanaSql('$__timeGroupAlias(time_column , $__interval)', ctx),
      'floor(extract(epoch from time_column)/300)*300 AS "time"',
    );
    assert.equal(
      expandGrafanaSql("GROUP BY $__timeGroup(time_column , '12d')", { ...ctx, timescaledb: true }),
      "GROUP BY time_bucket('1036800.000s',time_column)",
    );
    assert.equal(
      expandGrafanaSql("GROUP BY $__timeGroup(time_column , '20ms')", { ...ctx, timescaledb: true }),
      "GROUP BY time_bucket('0.020s',time_column)",
    );
    // biome-ignore lint/suspicious/noTemplateCurlyInString: ${one} is Grafana's variable syntax, the text under test
    assert.equal(expandGrafanaSql("wh IN ($wh) AND x = '${one}'", ctx), "wh IN ('W''1','W2') AND x = 'it''s'");
    assert.equal(rfc3339Nano(new Date('1980-02-03T08:00:00.500Z')), '1980-02-03T08:00:00.5Z');
    assert.deepEqual(
      [goFloat(3600), goFloat(86400), goFloat(1036800), goFloat(0.02)],
      ['3600', '86400', '1.0368e+06', '0.02'],
    );
    assert.equal(intervalSeconds("'1d'"), 86400);
    assert.throws(() => expandGrafanaSql('WHERE $__unixEpochFilter(t)', ctx), /not one this expander knows/);
    assert.throws(() => expandGrafanaSql('WHERE wh = $warehouse', ctx), /unknown template variable/);
    assert.throws(() => expandGrafanaSql("SELECT $__timeGroup(t, '5m', 0)", ctx), /fill modes/);
    assert.throws(() => expandGrafanaSql('SELECT 1 -- a note', ctx), /comments/);
    assert.throws(() => expandGrafanaSql('$__timeGroupAlias(t, 1M)', ctx), /interval 1M/);
  });

  for (const server of TEST_SERVERS) {
    describe(`its SQL on ${server.name}, against a seeded ledger`, () => {
      let db: TestDatabase;
      let pool: pg.Pool;
      let warehouses: string[];
      before(async () => {
        db = await server.createDatabase('ledger_dashboard');
        pool = createPool({ url: db.url, max: 2 });
        assert.equal(
          (await migrate(pool)).timescale,
          server.timescale,
          `${server.name}: migrate ${server.timescale ? 'finds' : 'does not find'} TimescaleDB`,
        );
        await insertEvents(pool, [...SEED_EVENTS, ...EXTRA]);
        await pool.query(
          `INSERT INTO stock (wh, sku, on_hand, version) VALUES ('WA', 'S1', 7, 1), ('WA', 'S2', 6, 1), ('WB', 'S1', -6, 1)`,
        );
        for (const d of DEAD_LETTERS) {
          await pool.query(
            `INSERT INTO dead_letters (received_at, wh, device, topic, code, reason, raw, source) VALUES ($1, $2, 'scan-1', 'wh/x/dev/scan-1/event', $3, 'seeded', '\\x00', 'gw')`,
            [d.at, d.wh, d.code],
          );
        }
        await refreshMovements(pool, server.timescale);
        const variable = dashboard.templating.list.find((v) => v.name === 'wh') as Variable;
        warehouses = (await pool.query<{ wh: string }>(variable.query)).rows.map((r) => r.wh);
      });
      after(async () => {
        await pool?.end();
        await db?.drop();
      });

      const run = async (
        title: string,
        o: { from?: string; to?: string; interval?: string; wh?: string[]; timescaledb?: boolean } = {},
      ) => {
        const panel = dashboard.panels.find((p) => p.title === title) ?? assert.fail(`no panel ${title}`);
        const target = panel.targets?.[0] ?? assert.fail(`${title} has no query`);
        const sql = expandGrafanaSql(target.rawSql, {
          from: new Date(o.from ?? RANGE.from),
          to: new Date(o.to ?? RANGE.to),
          interval: o.interval ?? panel.interval ?? '1h',
          timescaledb: o.timescaledb ?? server.timescale,
          variables: { wh: { values: o.wh ?? warehouses, multi: true } },
        });
        return normalise((await pool.query(sql)).rows as Record<string, unknown>[]);
      };

      it('the warehouse variable lists the warehouses with stock', () => {
        assert.deepEqual(warehouses, ['WA', 'WB']);
      });

      it("every query runs with either setting of the datasource's TimescaleDB option that the server allows, to the same answer", async () => {
        for (const p of panels()) {
          const plain = await run(p.title, { timescaledb: false, interval: '1d' });
          if (!server.timescale) continue;
          assert.deepEqual(
            await run(p.title, { timescaledb: true, interval: '1d' }),
            plain,
            `${p.title}: time_bucket and floor(epoch) group alike`,
          );
        }
      });

      it('stock movements per warehouse: hourly rows, rolled up by the interval, filtered by warehouse', async () => {
        const zero = { received: 0, shipped: 0, returned: 0, adjusted: 0 };
        assert.deepEqual(await run('Stock movements per warehouse', { interval: '1d' }), [
          {
            time: '2026-11-02T00:00:00.000Z',
            metric: 'WA',
            received: 110,
            shipped: 113,
            returned: 5,
            adjusted: -1,
            net: 1,
          },
          { time: '2026-11-02T00:00:00.000Z', metric: 'WB', ...zero, received: 50, net: 50 },
          { time: '2026-11-03T00:00:00.000Z', metric: 'WA', ...zero, received: 20, shipped: 9, net: 11 },
          { time: '2026-11-03T00:00:00.000Z', metric: 'WB', ...zero, shipped: 51, net: -51 },
        ]);
        const hourly = await run('Stock movements per warehouse', {
          wh: ['WA'],
          from: '2026-11-02T09:00:00Z',
          to: '2026-11-02T10:00:00Z',
        });
        // $__timeFilter is inclusive at both ends: the 10:00 bucket starts at `to`
        assert.deepEqual(hourly, [
          {
            time: '2026-11-02T09:00:00.000Z',
            metric: 'WA',
            received: 10,
            shipped: 3,
            returned: 5,
            adjusted: -1,
            net: 11,
          },
          { time: '2026-11-02T10:00:00.000Z', metric: 'WA', ...zero, shipped: 80, net: -80 },
        ]);
      });

      it('top movers: by units shipped + received in the range', async () => {
        assert.deepEqual(await run('Top movers'), [
          { sku: 'S1', warehouse: 'WA', shipped: 118, received: 120, moved: 238 },
          { sku: 'S1', warehouse: 'WB', shipped: 51, received: 50, moved: 101 },
          { sku: 'S2', warehouse: 'WA', shipped: 4, received: 10, moved: 14 },
        ]);
        assert.deepEqual(await run('Top movers', { wh: ['WA'], from: '2026-11-03T00:00:00Z' }), [
          { sku: 'S1', warehouse: 'WA', shipped: 5, received: 20, moved: 25 },
          { sku: 'S2', warehouse: 'WA', shipped: 4, received: 0, moved: 4 },
        ]);
      });

      it('count corrections: counted − book onHand just before the count, in ledger order', async () => {
        assert.deepEqual(await run('Count corrections (largest shrinkage first)'), [
          {
            time: '2026-11-02T10:30:00.000Z',
            warehouse: 'WB',
            sku: 'S1',
            device: 'scan-1',
            counted: 45,
            book: 50,
            correction: -5,
          },
          // 100 − 30 + 5 − 2 + 1 (a0, ordered before k1 at the same instant); s2 at that instant is ordered after it
          {
            time: '2026-11-02T09:45:00.000Z',
            warehouse: 'WA',
            sku: 'S1',
            device: 'scan-1',
            counted: 70,
            book: 74,
            correction: -4,
          },
          {
            time: '2026-11-03T07:30:00.000Z',
            warehouse: 'WA',
            sku: 'S1',
            device: 'scan-1',
            counted: 12,
            book: 7,
            correction: 5,
          },
        ]);
        assert.deepEqual(await run('Net count correction per warehouse'), [
          { time: '2026-11-02T09:00:00.000Z', metric: 'WA', correction: -4 },
          { time: '2026-11-02T10:00:00.000Z', metric: 'WB', correction: -5 },
          { time: '2026-11-03T07:00:00.000Z', metric: 'WA', correction: 5 },
        ]);
        assert.deepEqual(await run('Net count correction per warehouse', { interval: '1d', wh: ['WA'] }), [
          { time: '2026-11-02T00:00:00.000Z', metric: 'WA', correction: -4 },
          { time: '2026-11-03T00:00:00.000Z', metric: 'WA', correction: 5 },
        ]);
      });

      it('stock went negative: once per crossing below zero, replayed from the count before the range', async () => {
        assert.deepEqual(await run('Stock went negative'), [
          { time: '2026-11-02T10:00:00.000Z', metric: 'WA', went_negative: 1 },
          { time: '2026-11-03T09:00:00.000Z', metric: 'WB', went_negative: 1 },
        ]);
        // From after WA/S1's count of 12: shipping 5 leaves 7, not −5; WB/S1 starts from its count of 45.
        assert.deepEqual(await run('Stock went negative', { from: '2026-11-03T07:45:00Z' }), [
          { time: '2026-11-03T09:00:00.000Z', metric: 'WB', went_negative: 1 },
        ]);
        assert.deepEqual(
          await run('Stock went negative', { wh: ['WA'], from: '2026-11-02T09:50:00Z', to: '2026-11-02T11:00:00Z' }),
          [{ time: '2026-11-02T10:00:00.000Z', metric: 'WA', went_negative: 1 }],
        );
        assert.deepEqual(await run('Rows below zero now'), [{ below_zero: 1 }]);
        assert.deepEqual(await run('Rows below zero now', { wh: ['WA'] }), [{ below_zero: 0 }]);
      });

      it('dead letters per warehouse and code; those without a warehouse whatever the selection', async () => {
        assert.deepEqual(await run('Dead letters', { interval: '1h' }), [
          { time: '2026-11-02T09:00:00.000Z', metric: 'WA schema_violation', dead_letters: 2 },
          { time: '2026-11-02T12:00:00.000Z', metric: '(no warehouse) invalid_topic', dead_letters: 1 },
          { time: '2026-11-03T01:00:00.000Z', metric: 'WB invalid_json', dead_letters: 1 },
        ]);
        assert.deepEqual(await run('Dead letters', { interval: '1d', wh: ['WB'] }), [
          { time: '2026-11-02T00:00:00.000Z', metric: '(no warehouse) invalid_topic', dead_letters: 1 },
          { time: '2026-11-03T00:00:00.000Z', metric: 'WB invalid_json', dead_letters: 1 },
        ]);
      });
    });
  }
});
