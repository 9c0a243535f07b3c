import { parser } from '@prometheus-io/lezer-promql';
import type { SyntaxNode } from '@lezer/common';
import type { Catalogue } from './exported-metrics.js';

/** Labels Prometheus itself attaches to every scraped series. */
export const TARGET_LABELS = ['job', 'instance'];

/** Series Prometheus makes itself, with their labels (`ALERTS` also carries the labels of the alerts). */
export const PROMETHEUS_SERIES: Catalogue = new Map([
  ['up', new Set(TARGET_LABELS)],
  ['ALERTS', new Set(['alertname', 'alertstate', 'severity', 'wh', 'code', 'reason', ...TARGET_LABELS])],
]);

/** Grafana's variables are not PromQL: replace them by something of the same kind before parsing. */
export function substituteGrafanaVariables(expr: string): string {
  return expr.replace(/\$__(rate_interval|interval|range)/g, '5m').replace(/\$\{?[A-Za-z_][A-Za-z0-9_]*\}?/g, 'x');
}

export interface ExprReport {
  metrics: string[];
  problems: string[];
}

/**
 * Parses `expr` with Prometheus's own PromQL grammar and checks that every selector names a metric
 * of `catalogue` (or one Prometheus makes) and matches only labels that metric has, and that every
 * grouping label belongs to one of the metrics the expression selects.
 */
export function checkExpr(expr: string, catalogue: Catalogue): ExprReport {
  const text = substituteGrafanaVariables(expr);
  const tree = parser.parse(text);
  const problems: string[] = [];
  const metrics: string[] = [];
  const grouping: string[] = [];
  const slice = (n: SyntaxNode) => text.slice(n.from, n.to);
  tree.iterate({
    enter: (ref) => {
      if (ref.type.isError)
        problems.push(
          `does not parse at offset ${ref.from}: …${text.slice(Math.max(0, ref.from - 20), ref.from + 20)}…`,
        );
      if (ref.name === 'GroupingLabels') for (const l of ref.node.getChildren('LabelName')) grouping.push(slice(l));
      if (ref.name !== 'VectorSelector') return;
      const id = ref.node.getChild('Identifier');
      if (!id) {
        problems.push(`selector ${slice(ref.node)} names no metric`);
        return;
      }
      const name = slice(id);
      metrics.push(name);
      const labels = catalogue.get(name) ?? PROMETHEUS_SERIES.get(name);
      if (!labels) {
        problems.push(`metric ${name} is not exported by the code`);
        return;
      }
      const matchers = ref.node.getChild('LabelMatchers');
      for (const m of matchers?.getChildren('UnquotedLabelMatcher') ?? []) {
        const label = m.getChild('LabelName');
        if (label && !labels.has(slice(label)) && !TARGET_LABELS.includes(slice(label)))
          problems.push(`metric ${name} has no label ${slice(label)}`);
      }
      if (matchers?.getChildren('QuotedLabelMatcher').length)
        problems.push(`selector ${slice(ref.node)}: use plain label names`);
    },
  });
  const known = new Set([
    ...TARGET_LABELS,
    ...metrics.flatMap((m) => [...(catalogue.get(m) ?? PROMETHEUS_SERIES.get(m) ?? [])]),
  ]);
  for (const l of grouping)
    if (!known.has(l)) problems.push(`grouping label ${l} belongs to none of ${metrics.join(', ')}`);
  if (metrics.length === 0 && problems.length === 0) problems.push('selects no metric');
  return { metrics, problems };
}

/** Every vector selector of `expr` (Grafana variables kept as written): its metric and its label matchers as written. */
export function vectorSelectors(expr: string): { metric: string; matchers: string[] }[] {
  const tree = parser.parse(expr);
  const out: { metric: string; matchers: string[] }[] = [];
  tree.iterate({
    enter: (ref) => {
      if (ref.name !== 'VectorSelector') return;
      const id = ref.node.getChild('Identifier');
      const matchers = ref.node.getChild('LabelMatchers')?.getChildren('UnquotedLabelMatcher') ?? [];
      out.push({
        metric: id ? expr.slice(id.from, id.to) : '',
        matchers: matchers.map((m) => expr.slice(m.from, m.to).replace(/\s+/g, '')),
      });
    },
  });
  return out;
}
