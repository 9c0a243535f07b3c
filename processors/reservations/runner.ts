import type pg from 'pg';
import type { Logger } from 'pino';
import { ErrorCode, ValidationError, topics } from '../../protocol/index.js';
import { isConnectionLost, isRetryable } from '../db/pool.js';
import { alert, stockSends, type Publisher } from '../publish/publisher.js';
import type { ReadModel } from '../publish/read-model.js';
import type { Notice } from '../publish/publisher.js';
import type { Answer } from './idempotency.js';
import type { ReservationMetrics } from './metrics.js';
import { noChange, type StockChange } from './sql.js';
import { waitAtMost } from '../../runtime/wait.js';

const MAX_RETRIES = 5; // deadlocks and serialization failures are retried this many times
const LOCK_TIMEOUT_MS = 10_000; // a command waits this long for a row lock, then answers 503
// A command's answer waits at most this long for its stock publishes: behind a broker that is away, MQTT.js
// keeps a QoS 1 publish until it is back, and the answer, with every later command of the sku, would wait too.
const PUBLISH_WAIT_MS = 1_000;

/** What to publish after a commit. */
export interface Effects {
  change?: StockChange;
  notices?: Notice[];
}

/** What a command's transaction decided: the answer, and what to publish after the commit. */
export interface Outcome extends Effects {
  answer: Answer;
}

export interface RunnerOptions {
  pool: pg.Pool;
  publisher: Publisher;
  readModel: ReadModel;
  log: Logger;
  metrics: ReservationMetrics;
  /** transactions at once; keep below the pool size so the event ingest always finds a connection */
  concurrency: number;
  /** commands waiting for a slot, at most; more are answered 503 at once */
  maxQueue: number;
  /** epoch ms, for tests; unset: the database clock decides expiry */
  clock?: () => number;
}

/**
 * Runs command transactions: bounded concurrency, retry on deadlock or serialization failure, the
 * Idempotency-Key claimed in the same transaction as the decision, and the stock topics published
 * (and the read model written) after the commit, before the answer goes out — so a GET that follows
 * the answer sees the change.
 */
export class Runner {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(readonly o: RunnerOptions) {}

  private async acquire(): Promise<void> {
    if (this.active < this.o.concurrency) {
      this.active++;
      return;
    }
    if (this.waiting.length >= this.o.maxQueue)
      throw new ValidationError(ErrorCode.unavailable, 'too many commands in flight; try again shortly');
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  private releaseSlot(): void {
    const next = this.waiting.shift();
    if (next)
      next(); // the slot passes straight to the next in line
    else this.active--;
  }

  now(): Date | null {
    return this.o.clock ? new Date(this.o.clock()) : null;
  }

  /**
   * One transaction, then its effects published. `fn` may run more than once (retries), so it must
   * not have effects outside the transaction.
   */
  async transaction<T extends Effects>(fn: (client: pg.PoolClient, now: Date | null) => Promise<T>): Promise<T> {
    await this.acquire();
    let result: T;
    try {
      result = await this.attempt(fn);
    } finally {
      this.releaseSlot();
    }
    await this.publish(result);
    return result;
  }

  /** A read outside any transaction, in a slot like a transaction (a flood never crowds the pool the event ingest needs). */
  async read<T>(fn: (pool: pg.Pool) => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await fn(this.o.pool);
    } finally {
      this.releaseSlot();
    }
  }

  /** A transaction deciding one answer. */
  async tx(fn: (client: pg.PoolClient, now: Date | null) => Promise<Outcome>): Promise<Answer> {
    return (await this.transaction(fn)).answer;
  }

  private async attempt<T>(fn: (client: pg.PoolClient, now: Date | null) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const client = await this.o.pool.connect();
      let lost: Error | undefined; // a dead connection goes back to the pool only to be discarded
      try {
        await client.query(`BEGIN; SET LOCAL lock_timeout = ${LOCK_TIMEOUT_MS}`);
        const outcome = await fn(client, this.now());
        await client.query('COMMIT');
        return outcome;
      } catch (err) {
        if (isConnectionLost(err)) lost = err as Error;
        else await client.query('ROLLBACK').catch(() => {});
        if ((err as { code?: string }).code === '55P03')
          throw new ValidationError(ErrorCode.unavailable, 'stock is locked by other work; try again shortly');
        if (!isRetryable(err) || attempt >= MAX_RETRIES) throw err;
        this.o.metrics.retries.inc();
      } finally {
        client.release(lost);
      }
    }
  }

  /**
   * Publishes after the commit; a failure is logged and counted, never turned into a failed answer. The read
   * model goes first (a GET after the answer sees the change); the broker is waited for PUBLISH_WAIT_MS at most.
   */
  async publish(outcome: Effects): Promise<void> {
    const change = outcome.change ?? noChange();
    await this.o.readModel.write(change.warehouseStock, change.globalStock);
    const sends = stockSends(this.o.publisher, change.warehouseStock, change.globalStock);
    for (const n of outcome.notices ?? [])
      sends.push(
        this.o.publisher.publish(
          topics.alert(n.wh, n.kind),
          JSON.stringify(alert(n.kind, n.wh, n.message, n.sku)),
          false,
        ),
      );
    if (sends.length === 0) return;
    let settled = 0;
    let failed = 0;
    await waitAtMost(
      Promise.all(
        sends.map((p) =>
          p.then(
            () => void settled++,
            () => {
              settled++;
              failed++;
            },
          ),
        ),
      ),
      PUBLISH_WAIT_MS,
    );
    const late = sends.length - settled; // still waiting for the broker: go on without them
    if (failed + late > 0) {
      this.o.metrics.publishErrors.inc(failed + late);
      this.o.log.warn(
        { failed, late },
        'publishing after a command failed or waits for the broker; the next change of the sku republishes it',
      );
    }
  }
}
