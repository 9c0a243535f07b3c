/** A JSON answer of the HTTP API. */
export interface HttpAnswer<T = Record<string, unknown>> {
  status: number;
  body: T;
  headers: Headers;
}

export interface CallOptions {
  /** a value to send as JSON */
  json?: unknown;
  /** raw body text, sent as application/json (for malformed JSON) */
  raw?: string;
  key?: string;
  /** the API token, sent as `Authorization: Bearer <token>` */
  token?: string;
}

/** Calls the API at `base` (http://host:port); `body` is null when the answer has none. */
export async function call<T = Record<string, unknown>>(
  base: string,
  method: string,
  path: string,
  o: CallOptions = {},
): Promise<HttpAnswer<T>> {
  const hasBody = o.json !== undefined || o.raw !== undefined;
  const res = await fetch(`${base}${path}`, {
    method,
    headers: {
      ...(hasBody && { 'content-type': 'application/json' }),
      ...(o.key !== undefined && { 'idempotency-key': o.key }),
      ...(o.token !== undefined && { authorization: `Bearer ${o.token}` }),
    },
    body: o.raw ?? (o.json === undefined ? undefined : JSON.stringify(o.json)),
  });
  const text = await res.text();
  return { status: res.status, body: (text === '' ? null : JSON.parse(text)) as T, headers: res.headers };
}
