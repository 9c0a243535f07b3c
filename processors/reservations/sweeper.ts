import type { Logger } from 'pino';
import { freeLapsed } from './holds.js';
import { purgeKeys } from './idempotency.js';
import type { ReservationMetrics } from './metrics.js';
import type { Runner } from './runner.js';
import { applyReserved, lockSku, NOW, param } from './sql.js';
import { compensate } from './transfers.js';

const PER_TICK = 500; // holds or transfers looked at per tick, at most
const PURGE_EVERY_MS = 10 * 60_000; // ms between purges of old idempotency keys

export interface SweepResult {
  expired: number;
  compensated: number;
  purged: number;
}

/**
 * Releases expired reservations and compensates timed-out transfers, then republishes the stock
 * topics. Safe with several instances against one database: each change is made under the stock
 * row's lock and re-checks the hold's state, so two sweepers never release one hold twice.
 */
export class Sweeper {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;
  private lastPurge = 0;

  constructor(
    private readonly runner: Runner,
    private readonly o: {
      intervalMs: number;
      idempotencyRetentionHours: number;
      metrics: ReservationMetrics;
      log: Logger;
    },
  ) {}

  start(): void {
    if (this.o.intervalMs <= 0 || this.timer) return;
    this.timer = setInterval(() => {
      if (this.running) return; // never two ticks at once in one process
      this.running = this.tick()
        .catch((err: Error) =>
          this.o.log.warn(
            { err: err.message, code: (err as { code?: string }).code },
            'reservation sweep failed; next tick retries',
          ),
        )
        .finally(() => (this.running = null));
    }, this.o.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  async tick(): Promise<SweepResult> {
    const expired = await this.expireDue();
    const compensated = await this.compensateDue();
    let purged = 0;
    if (Date.now() - this.lastPurge >= PURGE_EVERY_MS) {
      purged = await purgeKeys(this.runner.o.pool, this.o.idempotencyRetentionHours);
      this.lastPurge = Date.now();
    }
    return { expired, compensated, purged };
  }

  /** Ends every reservation past its expiry, one transaction per sku. */
  async expireDue(): Promise<number> {
    const { rows } = await this.runner.o.pool.query<{ sku: string; whs: string[] }>(
      `SELECT sku, array_agg(DISTINCT wh) AS whs FROM (
         SELECT sku, wh FROM reservations WHERE state = 'active' AND transfer IS NULL AND expires_at <= ${NOW(1)}
         ORDER BY expires_at LIMIT ${PER_TICK}) due
       GROUP BY sku`,
      [param(this.runner.now())],
    );
    let count = 0;
    for (const { sku, whs } of rows) {
      let freedNow = 0; // set by the attempt that committed (a retried attempt overwrites it)
      await this.runner.tx(async (client, now) => {
        const levels = await lockSku(client, sku, whs.sort(), now);
        const { deltas, expired } = await freeLapsed(client, sku, levels, now);
        freedNow = expired;
        return {
          answer: { status: 200, body: null },
          change: await applyReserved(
            client,
            [...deltas].map(([wh, delta]) => ({ wh, sku, delta })),
          ),
        };
      });
      count += freedNow;
    }
    if (count > 0) this.o.metrics.expired.inc(count);
    return count;
  }

  async compensateDue(): Promise<number> {
    const { rows } = await this.runner.o.pool.query<{ id: string }>(
      `SELECT id FROM transfers WHERE state IN ('reserved', 'in_transit') AND deadline <= ${NOW(1)} ORDER BY deadline LIMIT ${PER_TICK}`,
      [param(this.runner.now())],
    );
    let count = 0;
    for (const { id } of rows) {
      let done = false;
      await this.runner.tx(async (client, now) => {
        const outcome = await compensate(client, now, id);
        done = outcome !== null;
        return outcome ?? { answer: { status: 200, body: null } };
      });
      if (done) count++;
    }
    if (count > 0) this.o.metrics.compensated.inc(count);
    if (count > 0) this.o.log.info({ count }, 'transfers compensated after their deadline');
    return count;
  }
}
