/**
 * The rules of Redocly's `recommended` ruleset that concern this document, written out (@redocly/cli is not
 * installed): each returns the problems it finds, as `rule: where: what`. `exempt` maps a rule to the
 * operations or paths it does not apply to, each with its reason, so an exemption is visible in the test.
 */

type Json = Record<string, unknown>;
export type Exemptions = Record<string, Record<string, string>>;

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

function resolvePointer(doc: Json, ref: string): unknown {
  if (!ref.startsWith('#/')) return undefined;
  let node: unknown = doc;
  for (const part of ref.slice(2).split('/'))
    node = (node as Json | undefined)?.[part.replaceAll('~1', '/').replaceAll('~0', '~')];
  return node;
}

function* refs(node: unknown): Generator<string> {
  if (Array.isArray(node)) for (const n of node) yield* refs(n);
  else if (node !== null && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === '$ref' && typeof v === 'string') yield v;
      else yield* refs(v);
    }
  }
}

export function lint(doc: Json, exempt: Exemptions = {}): string[] {
  const problems: string[] = [];
  const report = (rule: string, where: string, what: string) => {
    if (exempt[rule]?.[where] === undefined) problems.push(`${rule}: ${where}: ${what}`);
  };
  const deref = (n: unknown) =>
    (n !== null && typeof n === 'object' && typeof (n as Json).$ref === 'string'
      ? resolvePointer(doc, (n as Json).$ref as string)
      : n) as Json;
  const schemes = Object.keys(((doc.components as Json)?.securitySchemes as Json) ?? {});
  const tags = new Map(((doc.tags as Json[]) ?? []).map((t) => [t.name as string, t]));
  const ids = new Map<string, string>();

  const servers = (doc.servers as Json[]) ?? [];
  if (servers.length === 0) report('no-empty-servers', 'servers', 'no server');
  for (const s of servers)
    if (String(s.url).endsWith('/') && s.url !== '/') report('no-server-trailing-slash', String(s.url), 'ends with /');
  if ((doc.info as Json)?.license === undefined) report('info-license', 'info', 'no license');
  for (const [name, t] of tags)
    if (typeof t.description !== 'string' || t.description === '') report('tag-description', name, 'no description');

  for (const [path, item] of Object.entries((doc.paths as Record<string, Json>) ?? {})) {
    if (path.includes('?')) report('path-not-include-query', path, 'a query in the path');
    if (path.length > 1 && path.endsWith('/')) report('no-path-trailing-slash', path, 'ends with /');
    const templated = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1] as string);
    for (const method of METHODS.filter((m) => item[m] !== undefined)) {
      const op = item[method] as Json;
      const where = `${method.toUpperCase()} ${path}`;
      const id = op.operationId;
      if (typeof id !== 'string' || id === '') report('operation-operationId', where, 'no operationId');
      else {
        if (ids.has(id)) report('operation-operationId-unique', where, `${id} is also ${ids.get(id)}`);
        ids.set(id, where);
        if (!/^[A-Za-z0-9\-._~:@!$&'()*+,;=]+$/.test(id)) report('operation-operationId-url-safe', where, id);
      }
      if (typeof op.summary !== 'string' || op.summary === '') report('operation-summary', where, 'no summary');
      const security = op.security ?? doc.security;
      if (!Array.isArray(security))
        report('security-defined', where, 'no security (an open operation says `security: []`)');
      else
        for (const req of security as Json[])
          for (const name of Object.keys(req))
            if (!schemes.includes(name)) report('security-defined', where, `unknown scheme ${name}`);
      for (const tag of (op.tags as string[]) ?? [])
        if (!tags.has(tag)) report('operation-tag-defined', where, `tag ${tag} is not defined`);
      const codes = Object.keys((op.responses as Json) ?? {});
      if (!codes.some((c) => /^2(\d\d|XX)$/.test(c) || c === 'default'))
        report('operation-2xx-response', where, `no 2xx among ${codes.join(', ')}`);
      if (!codes.some((c) => /^4(\d\d|XX)$/.test(c)))
        report('operation-4xx-response', where, `no 4xx among ${codes.join(', ')}`);
      for (const [code, r] of Object.entries((op.responses as Json) ?? {}))
        if (typeof deref(r)?.description !== 'string')
          report('response-description', where, `${code} has no description`);
      const params = [...((item.parameters as Json[]) ?? []), ...((op.parameters as Json[]) ?? [])].map(deref);
      const keys = params.map((p) => `${String(p.in)}:${String(p.name)}`);
      for (const k of new Set(keys))
        if (keys.filter((x) => x === k).length > 1) report('operation-parameters-unique', where, k);
      const inPath = params.filter((p) => p.in === 'path').map((p) => p.name as string);
      for (const t of templated)
        if (!inPath.includes(t)) report('path-parameters-defined', where, `{${t}} is not a parameter`);
      for (const p of inPath)
        if (!templated.includes(p)) report('path-declaration-must-exist', where, `parameter ${p} is not in the path`);
      for (const p of params) {
        const enumValues = (p.schema as Json | undefined)?.enum as unknown[] | undefined;
        const type = (p.schema as Json | undefined)?.type;
        if (enumValues && type === 'string' && enumValues.some((v) => typeof v !== 'string'))
          report('no-enum-type-mismatch', where, `${String(p.name)}`);
      }
    }
  }

  const all = [...refs(doc)];
  for (const r of new Set(all))
    if (resolvePointer(doc, r) === undefined) report('no-unresolved-refs', r, 'does not resolve');
  for (const [kind, entries] of Object.entries(((doc.components as Json) ?? {}) as Record<string, Json>)) {
    if (kind === 'securitySchemes') continue;
    for (const name of Object.keys(entries))
      if (!all.includes(`#/components/${kind}/${name}`))
        report('no-unused-components', `#/components/${kind}/${name}`, 'never referred to');
  }
  return problems;
}
