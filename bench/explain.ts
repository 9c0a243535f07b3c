import type pg from 'pg';

/** `EXPLAIN (ANALYZE, BUFFERS)` of a query with its parameters, as text lines. */
export async function explainAnalyze(client: pg.Pool | pg.PoolClient, query: pg.QueryConfig): Promise<string[]> {
  const { rows } = await client.query<{ 'QUERY PLAN': string }>({
    text: `EXPLAIN (ANALYZE, BUFFERS) ${query.text}`,
    values: query.values ?? [],
  });
  return rows.map((r) => r['QUERY PLAN']);
}

interface PlanNode {
  lines: string[]; // its own line and its detail lines
  kids: PlanNode[];
}

const NODE = /^(\s*)->\s/;
// What differs between the scans of two chunks: numbers and chunk names.
const signature = (lines: string[]) =>
  lines
    .join('\n')
    .replace(/\d+(\.\d+)?/g, '#')
    .replace(/_hyper_[#_]+chunk/g, 'CHUNK');

/**
 * A text plan with each run of sibling subtrees that differ only in numbers and chunk names (a hypertable's
 * chunks) shown once, followed by a line counting the others: a plan over 120 chunks fits on a screen.
 */
export function condensePlan(plan: string[]): string[] {
  const root: PlanNode = { lines: [plan[0] ?? ''], kids: [] };
  const stack: { node: PlanNode; indent: number }[] = [{ node: root, indent: -1 }];
  const footer: string[] = [];
  for (const line of plan.slice(1)) {
    if (footer.length > 0 || /^\S/.test(line)) {
      footer.push(line); // Planning / Execution Time, JIT: after the tree
      continue;
    }
    const m = NODE.exec(line);
    if (!m) {
      (stack[stack.length - 1] as { node: PlanNode }).node.lines.push(line);
      continue;
    }
    const indent = (m[1] as string).length;
    while (stack.length > 1 && (stack[stack.length - 1] as { indent: number }).indent >= indent) stack.pop();
    const node: PlanNode = { lines: [line], kids: [] };
    (stack[stack.length - 1] as { node: PlanNode }).node.kids.push(node);
    stack.push({ node, indent });
  }
  return [...render(root), ...footer];
}

function render(node: PlanNode): string[] {
  const out = [...node.lines];
  let i = 0;
  while (i < node.kids.length) {
    const first = render(node.kids[i] as PlanNode);
    let j = i + 1;
    while (j < node.kids.length && signature(render(node.kids[j] as PlanNode)) === signature(first)) j++;
    out.push(...first);
    if (j - i > 1)
      out.push(
        `${' '.repeat((NODE.exec(first[0] ?? '')?.[1] ?? '').length)}   … and ${j - i - 1} more like the one above`,
      );
    i = j;
  }
  return out;
}
