import { createHash } from 'node:crypto';

/**
 * A page to read the OpenAPI document by: every operation grouped by tag, with its parameters, body and
 * answers, and every schema. Generated once at start; no script, nothing loaded from elsewhere (the machine
 * may have no internet), so its Content-Security-Policy allows only its own inline style.
 */

type Json = Record<string, unknown>;
const METHODS = ['get', 'head', 'post', 'put', 'patch', 'delete'] as const;

const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
/** Escaped text with `code` spans and paragraphs, the only markdown the document uses. */
const prose = (text: unknown) =>
  typeof text !== 'string'
    ? ''
    : text
        .split('\n\n')
        .map((para) => `<p>${escapeHtml(para).replace(/`([^`]+)`/g, '<code>$1</code>')}</p>`)
        .join('');
const refName = (ref: string) => ref.split('/').at(-1) as string;

/** A one-line account of a schema: its $ref as a link, else its type and constraints. */
function schemaText(schema: unknown): string {
  if (schema === null || typeof schema !== 'object') return '';
  const s = schema as Json;
  if (typeof s.$ref === 'string')
    return `<a href="#schema-${escapeHtml(refName(s.$ref))}">${escapeHtml(refName(s.$ref))}</a>`;
  for (const k of ['anyOf', 'oneOf'] as const)
    if (Array.isArray(s[k])) return (s[k] as unknown[]).map(schemaText).join(' or ');
  const facets = ['pattern', 'format', 'minimum', 'maximum', 'default', 'const']
    .filter((k) => s[k] !== undefined)
    .map((k) => `${k} <code>${escapeHtml(String(s[k]))}</code>`);
  if (Array.isArray(s.enum))
    facets.unshift(`one of ${(s.enum as unknown[]).map((v) => `<code>${escapeHtml(String(v))}</code>`).join(', ')}`);
  return [escapeHtml(String(s.type ?? 'any')), ...facets].join(', ');
}

/** A parameter or response itself, where the operation names one of components/parameters or components/responses. */
const resolver =
  (doc: Json) =>
  (node: Json): Json => {
    if (typeof node.$ref !== 'string') return node;
    const [, , kind, name] = node.$ref.split('/');
    return ((doc.components as Record<string, Record<string, Json>>)[kind as string]?.[name as string] ?? node) as Json;
  };

function operation(path: string, method: string, op: Json, resolve: (node: Json) => Json): string {
  const id = escapeHtml(String(op.operationId));
  const params = ((op.parameters as Json[] | undefined) ?? []).map(resolve);
  const rows = params.map(
    (p) =>
      `<tr><td><code>${escapeHtml(String(p.name))}</code></td><td>${escapeHtml(String(p.in))}${p.required ? ', required' : ''}</td><td>${schemaText(p.schema)}</td><td>${prose(p.description)}</td></tr>`,
  );
  const body = op.requestBody as { content?: Record<string, { schema: unknown }> } | undefined;
  const responses = Object.entries((op.responses as Record<string, Json>) ?? {}).map(([status, shared]) => {
    const r = resolve(shared);
    const content = Object.entries((r.content as Record<string, { schema: unknown }>) ?? {}).map(
      ([type, c]) => `${escapeHtml(type)}: ${schemaText(c.schema)}`,
    );
    return `<tr><td>${escapeHtml(status)}</td><td>${prose(r.description)}</td><td>${content.join('<br>')}</td></tr>`;
  });
  const security = (op.security as object[] | undefined) ?? [];
  const auth =
    security.length === 0
      ? 'open'
      : security.some((s) => Object.keys(s).length === 0)
        ? 'open, or the API token when API_READ_TOKEN is set'
        : 'API token (Bearer)';
  return `<section class="op" id="op-${id}">
<h3><span class="method ${escapeHtml(method)}">${escapeHtml(method.toUpperCase())}</span> <code>${escapeHtml(path)}</code></h3>
<p class="summary">${escapeHtml(String(op.summary ?? ''))} <span class="meta">${id} · ${auth}</span></p>${prose(op.description)}
${rows.length > 0 ? `<table><tr><th>parameter</th><th>in</th><th>schema</th><th></th></tr>${rows.join('')}</table>` : ''}
${
  body?.content
    ? `<p>Body: ${Object.entries(body.content)
        .map(([type, c]) => `${escapeHtml(type)} ${schemaText(c.schema)}`)
        .join(', ')}</p>`
    : ''
}
<table><tr><th>status</th><th>answer</th><th>body</th></tr>${responses.join('')}</table>
</section>`;
}

const STYLE = `body{font:15px/1.45 system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}
code,pre{font:13px ui-monospace,monospace}pre{background:#f5f5f5;padding:.6rem;overflow:auto}
table{border-collapse:collapse;margin:.4rem 0 1rem}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}td p{margin:0}
.op{border-top:1px solid #ccc;padding-top:.3rem}.method{display:inline-block;min-width:4.5rem;font-weight:600}
.get,.head{color:#1a6}.post{color:#16c}.delete{color:#c33}.meta{color:#777;font-size:13px}`;

/** The page, and the Content-Security-Policy that lets exactly its style run. */
export function renderDocsPage(doc: Json): { html: string; csp: string } {
  const info = doc.info as Json;
  const paths = doc.paths as Record<string, Record<string, Json>>;
  const tags = (doc.tags as { name: string; description?: string }[]) ?? [];
  const resolve = resolver(doc);
  const sections = tags.map((tag) => {
    const ops = Object.entries(paths).flatMap(([path, item]) =>
      METHODS.filter((m) => item[m] && ((item[m]?.tags as string[]) ?? []).includes(tag.name)).map((m) =>
        operation(path, m, item[m] as Json, resolve),
      ),
    );
    return `<h2 id="tag-${escapeHtml(tag.name)}">${escapeHtml(tag.name)}</h2>${prose(tag.description)}${ops.join('\n')}`;
  });
  const schemas = Object.entries(((doc.components as Json).schemas as Json) ?? {}).map(
    ([name, s]) =>
      `<h3 id="schema-${escapeHtml(name)}">${escapeHtml(name)}</h3><pre>${escapeHtml(JSON.stringify(s, null, 2))}</pre>`,
  );
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHtml(String(info.title))} ${escapeHtml(String(info.version))}</title><style>${STYLE}</style></head>
<body><h1>${escapeHtml(String(info.title))} <small>${escapeHtml(String(info.version))}</small></h1>
${prose(info.description)}<p>Machine-readable: <a href="openapi.json">openapi.json</a> (OpenAPI 3.1).</p>
<nav>${tags.map((t) => `<a href="#tag-${escapeHtml(t.name)}">${escapeHtml(t.name)}</a>`).join(' · ')} · <a href="#schemas">schemas</a></nav>
${sections.join('\n')}
<h2 id="schemas">schemas</h2>${schemas.join('\n')}
</body></html>
`;
  const hash = createHash('sha256').update(STYLE).digest('base64');
  return {
    html,
    csp: `default-src 'none'; style-src 'sha256-${hash}'; img-src 'none'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'`,
  };
}
