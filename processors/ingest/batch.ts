import type pg from 'pg';
import { ErrorCode, ValidationError } from '../../protocol/index.js';
import { isConnectionLost, isDataError, isRetryable } from '../db/pool.js';
import { stockKey } from '../ledger/ledger.js';
import { APPLY_BATCH, batchDocument, emptyResult, toResult, type Answer } from './sql.js';
import type { BatchResult, Parsed } from './types.js';

const MAX_RETRIES = 5; // deadlocks and serialization failures are retried this many times

/**
 * Applies a batch in one statement, one round trip: `stockwire_apply_batch` (migrations/006) dedupes, logs,
 * decides stock and reservations and bumps versions in its own transaction (DESIGN "Batching in the processor").
 * A data error that a row causes is isolated by splitting the batch until the one poison event is alone; it then
 * becomes a dead letter and the rest commits.
 */
export async function applyBatch(pool: pg.Pool, items: Parsed[]): Promise<BatchResult> {
  try {
    return await withRetry(pool, items);
  } catch (err) {
    if (!isDataError(err)) throw err;
    if (items.length === 1) {
      const only = items[0] as Parsed;
      const error = new ValidationError(
        ErrorCode.schemaViolation,
        `database refused the event: ${(err as Error).message}`,
      );
      const poisoned: Parsed = { delivery: only.delivery, ok: false, id: only.ok ? only.event.id : only.id, error };
      return withRetry(pool, [poisoned]);
    }
    const mid = items.length >> 1;
    const a = await applyBatch(pool, items.slice(0, mid));
    const b = await applyBatch(pool, items.slice(mid));
    return mergeResults(a, b);
  }
}

async function withRetry(pool: pg.Pool, items: Parsed[]): Promise<BatchResult> {
  if (items.length === 0) return emptyResult();
  const batch = batchDocument(items);
  for (let attempt = 0; ; attempt++) {
    const client = await pool.connect();
    let lost: Error | undefined; // a dead connection goes back to the pool only to be discarded
    try {
      // Autocommit: the one statement is its own transaction, so BEGIN and COMMIT cost no round trips of their own.
      const { rows } = await client.query<{ answer: Answer }>(APPLY_BATCH, [batch]);
      return toResult(items, (rows[0] as { answer: Answer }).answer);
    } catch (err) {
      if (isConnectionLost(err)) lost = err as Error;
      if (!isRetryable(err) || attempt >= MAX_RETRIES) throw err;
    } finally {
      client.release(lost);
    }
  }
}

function mergeResults(a: BatchResult, b: BatchResult): BatchResult {
  // Later halves hold later row versions; keep the highest version of each topic.
  const latest = <T extends { version: number }>(xs: T[], key: (x: T) => string) => {
    const m = new Map<string, T>();
    for (const x of xs) {
      const k = key(x);
      const prev = m.get(k);
      if (!prev || prev.version < x.version) m.set(k, x);
    }
    return [...m.values()];
  };
  return {
    decisions: [...a.decisions, ...b.decisions],
    warehouseStock: latest([...a.warehouseStock, ...b.warehouseStock], (s) => stockKey(s.warehouse, s.sku)),
    globalStock: latest([...a.globalStock, ...b.globalStock], (s) => s.sku),
    shelves: [...a.shelves, ...b.shelves],
    negative: [...a.negative, ...b.negative],
    deadLetters: [...a.deadLetters, ...b.deadLetters],
    applied: [...a.applied, ...b.applied],
    notices: [...a.notices, ...b.notices],
    transitions: [...a.transitions, ...b.transitions],
  };
}
