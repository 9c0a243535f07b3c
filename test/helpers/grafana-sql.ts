/**
 * What Grafana does to a PostgreSQL panel's rawSql before it reaches the database, for the parts our dashboards
 * use: the frontend replaces template variables (SqlDatasource.interpolateVariable: a multi-value or include-All
 * variable becomes a list of quoted literals, a single-value one its raw text with quotes doubled), then the
 * backend expands the macros (pkg/tsdb/grafana-postgresql-datasource/macros.go). Anything else it meets is an
 * error, so a dashboard cannot use a macro or variable this test does not understand.
 */

export interface TemplateVariable {
  values: string[];
  /** multi-value or include-All: values are quoted and joined with commas */
  multi: boolean;
}

export interface GrafanaSqlContext {
  from: Date;
  to: Date;
  /** what $__interval is for this panel, such as '1h' or '1d' */
  interval: string;
  /** the datasource's TimescaleDB option: $__timeGroup becomes time_bucket */
  timescaledb: boolean;
  variables: Record<string, TemplateVariable>;
}

const UNIT_SECONDS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3_600, d: 86_400, w: 604_800 };

/** Seconds of a Grafana interval ('5m', '1h', '1d'), as gtime.ParseInterval reads them. */
export function intervalSeconds(text: string): number {
  const m = /^(\d+)(ms|s|m|h|d|w)$/.exec(text.trim().replace(/^'|'$/g, ''));
  if (!m) throw new Error(`interval ${text} is not one this expander knows (ms, s, m, h, d, w)`);
  return Number(m[1]) * (UNIT_SECONDS[m[2] as string] as number);
}

/** Go's time.RFC3339Nano in UTC: no fraction when it is zero, trailing zeros of a fraction dropped. */
export function rfc3339Nano(d: Date): string {
  const [whole, fraction] = d.toISOString().replace('Z', '').split('.');
  const digits = (fraction ?? '').replace(/0+$/, '');
  return `${whole}${digits ? `.${digits}` : ''}Z`;
}

/** Go's %v of a float64: %g with the shortest digits, exponent form from 1e+06 on (and below 1e-04). */
export function goFloat(v: number): string {
  if (v === 0) return '0';
  const exponent = Math.floor(Math.log10(Math.abs(v)));
  if (exponent < -4 || exponent >= 6) return v.toExponential().replace(/e([+-])(\d)$/, 'e$10$2');
  return String(v);
}

const quoteLiteral = (v: string) => `'${v.replace(/'/g, "''")}'`;

function replaceVariables(sql: string, ctx: GrafanaSqlContext): string {
  // $name, ${name} and [[name]], as Grafana's template service finds them
  return sql.replace(
    /\$(\w+)(?=(\()?)|\$\{(\w+)\}|\[\[(\w+)\]\]/g,
    (
      match,
      bare: string | undefined,
      call: string | undefined,
      braced: string | undefined,
      brackets: string | undefined,
    ) => {
      const name = (bare ?? braced ?? brackets) as string;
      if (bare !== undefined && call !== undefined) return match; // a macro call: the backend's
      if (name === '__interval') return ctx.interval;
      if (name === '__interval_ms') return String(intervalSeconds(ctx.interval) * 1000);
      const variable = ctx.variables[name];
      if (!variable) throw new Error(`unknown template variable ${match}`);
      if (variable.multi) return variable.values.map(quoteLiteral).join(',');
      if (variable.values.length !== 1)
        throw new Error(`single-value variable ${name} has ${variable.values.length} values`);
      return (variable.values[0] as string).replace(/'/g, "''");
    },
  );
}

function timeGroup(args: string[], ctx: GrafanaSqlContext): string {
  if (args.length < 2) throw new Error('$__timeGroup needs a column and an interval');
  if (args.length > 2) throw new Error('fill modes of $__timeGroup are not supported here');
  const seconds = intervalSeconds(args[1] as string);
  if (ctx.timescaledb) return `time_bucket('${seconds.toFixed(3)}s',${args[0]})`;
  return `floor(extract(epoch from ${args[0]})/${goFloat(seconds)})*${goFloat(seconds)}`;
}

function macro(name: string, args: string[], ctx: GrafanaSqlContext): string {
  const column = () => {
    if (!args[0]) throw new Error(`missing time column argument for macro ${name}`);
    return args[0];
  };
  switch (name) {
    case '__timeFilter':
      return `${column()} BETWEEN '${rfc3339Nano(ctx.from)}' AND '${rfc3339Nano(ctx.to)}'`;
    case '__timeFrom':
      return `'${rfc3339Nano(ctx.from)}'`;
    case '__timeTo':
      return `'${rfc3339Nano(ctx.to)}'`;
    case '__timeGroup':
      return timeGroup(args, ctx);
    case '__timeGroupAlias':
      return `${timeGroup(args, ctx)} AS "time"`;
    default:
      throw new Error(`macro $${name} is not one this expander knows`);
  }
}

/** The SQL Grafana would send to PostgreSQL for `rawSql` in this context. */
export function expandGrafanaSql(rawSql: string, ctx: GrafanaSqlContext): string {
  // Newer Grafana strips SQL comments before expanding macros; keeping them out keeps every version alike.
  if (/--|\/\*/.test(rawSql))
    throw new Error('keep SQL comments out of panel queries: explain in the panel description');
  const withVariables = replaceVariables(rawSql, ctx);
  const expanded = withVariables.replace(
    /\$(\w+)\(([^)]*)\)/g,
    (match, name: string, argText: string, offset: number) => {
      const args = argText === '' ? [] : argText.split(',').map((a) => a.trim());
      // macros.go: a $__timeGroup directly followed by a comma is the pre-5.3 spelling of $__timeGroupAlias
      const effective =
        name === '__timeGroup' && withVariables[offset + match.length] === ',' ? '__timeGroupAlias' : name;
      return macro(effective, args, ctx);
    },
  );
  const left = /\$\w+|\[\[\w+\]\]/.exec(expanded);
  if (left) throw new Error(`${left[0]} is left after expansion`);
  return expanded;
}
