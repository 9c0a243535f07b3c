import type { Expectation } from './ledger.js';

export interface Difference {
  wh: string;
  sku: string;
  expected: number;
  /** central's onHand, or null when central has no stock row */
  actual: number | null;
}

const PARALLEL = 8; // requests in flight to central's API
const POLL_MS = 250;

/** Central's onHand of one (warehouse, sku) over HTTP (CONTRACT 6); null for 404. `token`: for a central that sets API_READ_TOKEN. */
export async function centralOnHand(
  centralHttp: string,
  wh: string,
  sku: string,
  token?: string,
): Promise<number | null> {
  const url = new URL(`/v1/warehouses/${encodeURIComponent(wh)}/stock/${encodeURIComponent(sku)}`, centralHttp);
  let res: Response;
  try {
    res = await fetch(url, {
      signal: AbortSignal.timeout(10_000),
      ...(token !== undefined && { headers: { authorization: `Bearer ${token}` } }),
    });
  } catch (err) {
    throw new Error(`central's API at ${centralHttp} did not answer: ${(err as Error).message}`);
  }
  if (res.status === 404) return null;
  if (!res.ok) throw new Error(`GET ${url.pathname}: HTTP ${res.status} ${await res.text()}`);
  const body = (await res.json()) as { onHand?: unknown };
  if (typeof body.onHand !== 'number') throw new Error(`GET ${url.pathname}: no onHand in ${JSON.stringify(body)}`);
  return body.onHand;
}

async function inBatches<T, R>(items: readonly T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += PARALLEL)
    out.push(...(await Promise.all(items.slice(i, i + PARALLEL).map(fn))));
  return out;
}

/** The rows that already have stock at central: a verifying run must write rows nobody else writes. */
export async function existingRows(
  centralHttp: string,
  rows: readonly { wh: string; sku: string }[],
  token?: string,
): Promise<{ wh: string; sku: string; onHand: number }[]> {
  const found = await inBatches(rows, async (r) => ({
    ...r,
    onHand: await centralOnHand(centralHttp, r.wh, r.sku, token),
  }));
  return found.filter((r): r is { wh: string; sku: string; onHand: number } => r.onHand !== null);
}

/**
 * Compares central's stock with the ledger's expectations. Central applies commits a moment before
 * its read model shows them, so differences are read again until none is left or `settleMs` passes;
 * whatever remains is reported.
 */
export async function compare(
  centralHttp: string,
  expected: readonly Expectation[],
  settleMs: number,
  token?: string,
): Promise<Difference[]> {
  const deadline = Date.now() + settleMs;
  let open: readonly Expectation[] = expected;
  let differences: Difference[] = [];
  for (;;) {
    const actual = await inBatches(open, (e) => centralOnHand(centralHttp, e.wh, e.sku, token));
    differences = open.flatMap((e, i) =>
      actual[i] === e.onHand ? [] : [{ wh: e.wh, sku: e.sku, expected: e.onHand, actual: actual[i] ?? null }],
    );
    if (differences.length === 0 || Date.now() >= deadline) return differences;
    open = open.filter((_e, i) => actual[i] !== open[i]?.onHand);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}
