import type pg from 'pg';
import type { Logger } from 'pino';
import { parseEvent, STAMPED_EVENT_MAX_BYTES } from '../../protocol/index.js';
import type { IngestMetrics } from '../metrics.js';
import { currentStock, latestShelves } from '../db/stock.js';
import type { ReadModel } from '../publish/read-model.js';
import { applyBatch } from './batch.js';
import type { Publisher } from '../publish/publisher.js';
import { publishBatch } from './publish.js';
import type { BatchResult, Decision, Delivery, Parsed } from './types.js';
import { waitAtMost } from '../../runtime/wait.js';

export interface IngestOptions {
  pool: pg.Pool;
  publisher: Publisher;
  readModel: ReadModel;
  metrics: IngestMetrics;
  log: Logger;
  /** events per batch at most */
  maxBatch: number;
  /** ms a batch waits for more events once the first one arrived */
  maxWaitMs: number;
}

interface Waiting {
  parsed: Parsed;
  resolve: (d: Decision) => void;
  reject: (err: Error) => void;
}

const BACKOFF_MAX = 5_000; // ms between retries while the database is down
// Batches committing at once. With one, central idles while PostgreSQL commits (17% of a saturated
// profile); a second batch overlaps it. Two batches are as safe as two processors on one database:
// rows are locked in key order, and a key in both waits on the inbox's unique index.
const MAX_IN_FLIGHT = 2;
const STOP_PUBLISH_WAIT_MS = 5_000; // how long stop() waits for the last publishes

/**
 * Collects deliveries into batches and commits each batch in one transaction.
 * `submit` resolves only after the commit that decided the event (and before its ack is published),
 * so callers can hold the broker's PUBACK until then.
 */
export class Ingest {
  private queue: Waiting[] = [];
  private timer: NodeJS.Timeout | null = null;
  private readonly inFlight = new Set<Promise<void>>();
  private closing = false; // refuses new events
  private stopping = false; // abandons a batch stuck retrying
  private readonly backoffWakes = new Set<() => void>();
  private published: Promise<void> = Promise.resolve(); // the chain of post-commit publishes
  /** false while the last batch failed on the database */
  databaseHealthy = true;

  constructor(private readonly o: IngestOptions) {}

  get pending(): number {
    return this.queue.length;
  }

  submit(delivery: Delivery): Promise<Decision> {
    if (this.closing) return Promise.reject(new Error('ingest is stopping'));
    // Behind an edge: an event of 8 KiB may carry the edge's receipt time on top (the edge checked the 8 KiB).
    const r = parseEvent(delivery.payload, {
      wh: delivery.wh,
      device: delivery.device,
      receivedAt: delivery.receivedAt,
      maxBytes: STAMPED_EVENT_MAX_BYTES,
      tsDecidedByEdge: delivery.viaEdge === true,
    });
    const parsed: Parsed = r.ok
      ? { delivery, ok: true, event: r.event }
      : { delivery, ok: false, error: r.error, id: r.id };
    return new Promise<Decision>((resolve, reject) => {
      this.queue.push({ parsed, resolve, reject });
      this.o.metrics.pending.set(this.queue.length);
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.inFlight.size >= MAX_IN_FLIGHT) return; // a batch that commits schedules the queue again
    if (this.queue.length >= this.o.maxBatch) this.kick();
    // Under a steady trickle, wait for company rather than committing batches of one.
    else if (!this.timer) this.timer = setTimeout(() => this.kick(), this.o.maxWaitMs);
  }

  private kick(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    while (this.inFlight.size < MAX_IN_FLIGHT && this.queue.length > 0) {
      const batch = this.queue.splice(0, this.o.maxBatch);
      this.o.metrics.pending.set(this.queue.length);
      const done: Promise<void> = this.run(batch).finally(() => {
        this.inFlight.delete(done);
        if (this.queue.length > 0) this.schedule();
      });
      this.inFlight.add(done);
      if (this.queue.length < this.o.maxBatch && !this.closing) break; // the rest waits for company
    }
    if (this.queue.length > 0) this.schedule();
  }

  private async run(batch: Waiting[]): Promise<void> {
    const items = batch.map((w) => w.parsed);
    const result = await this.commit(items);
    if (!result) {
      for (const w of batch) w.reject(new Error('ingest stopped before the batch committed'));
      return;
    }
    batch.forEach((w, i) => {
      w.resolve(result.decisions[i] as Decision);
    });
    this.record(items, result);
    // Publishing overlaps the next commit; publishes leave in commit order, one batch after another
    // (the monotonic publisher keeps each stock topic's versions increasing whatever the order).
    this.published = this.published.then(() => this.publish(items, result));
  }

  /** Commits a batch, retrying through database outages; null only when stopping. */
  private async commit(items: Parsed[]): Promise<BatchResult | null> {
    for (let attempt = 0; ; attempt++) {
      const end = this.o.metrics.commitSeconds.startTimer();
      try {
        const result = await applyBatch(this.o.pool, items);
        end();
        this.databaseHealthy = true;
        // A failed attempt may have committed part of the batch (a split, or a COMMIT whose reply was
        // lost): those events now count as duplicates and carry no stock change, so publish the
        // current stock of every row the batch touches.
        if (attempt > 0) await this.addCurrentStock(items, result);
        return result;
      } catch (err) {
        this.databaseHealthy = false;
        this.o.metrics.dbErrors.inc();
        const wait = Math.min(100 * 2 ** attempt, BACKOFF_MAX);
        // Stopping: no retries. The database failed now (it may have looked healthy when stop() began), and a
        // stop must not wait for it: this batch and the queue are handed back, their senders resend them.
        if (this.closing) this.stopping = true;
        if (this.stopping) {
          this.o.log.warn(
            { err: (err as Error).message, events: items.length },
            'batch failed while stopping; handed back to its senders',
          );
          return null;
        }
        this.o.log.error(
          { err: (err as Error).message, code: (err as { code?: string }).code, events: items.length, retryInMs: wait },
          'batch failed; retrying',
        );
        await new Promise<void>((resolve) => {
          const wake = () => {
            clearTimeout(t);
            this.backoffWakes.delete(wake);
            resolve();
          };
          const t = setTimeout(wake, wait);
          this.backoffWakes.add(wake);
        });
        if (this.stopping) return null;
      }
    }
  }

  private async publish(items: Parsed[], result: BatchResult): Promise<void> {
    await publishBatch(this.o.publisher, items, result).catch((err: Error) => {
      this.o.metrics.publishErrors.inc();
      this.o.log.warn({ err: err.message }, 'publishing after commit failed; edges resend unacknowledged events');
    });
    await this.o.readModel.write(result.warehouseStock, result.globalStock);
  }

  private async addCurrentStock(items: Parsed[], result: BatchResult): Promise<void> {
    await this.addCurrentShelves(items, result);
    const keys = new Map<string, { wh: string; sku: string }>();
    for (const item of items)
      if (item.ok && item.event.type !== 'level')
        keys.set(`${item.event.wh}/${item.event.sku}`, { wh: item.event.wh, sku: item.event.sku });
    if (keys.size === 0) return;
    const current = await currentStock(this.o.pool, [...keys.values()]);
    const have = new Set(result.warehouseStock.map((s) => `${s.warehouse}/${s.sku}`));
    result.warehouseStock.push(...current.warehouse.filter((s) => !have.has(`${s.warehouse}/${s.sku}`)));
    const haveGlobal = new Set(result.globalStock.map((g) => g.sku));
    result.globalStock.push(...current.global.filter((g) => !haveGlobal.has(g.sku)));
  }

  /** The same for shelf readings: the latest reading of every shelf a `level` event of the batch names. */
  private async addCurrentShelves(items: Parsed[], result: BatchResult): Promise<void> {
    const have = new Set(result.shelves.map((r) => `${r.warehouse}/${r.location}/${r.sku}`));
    const keys = new Map<string, [string, string, string]>();
    for (const item of items) {
      if (!item.ok || item.event.type !== 'level') continue;
      const { wh, location, sku } = item.event;
      if (!have.has(`${wh}/${location}/${sku}`)) keys.set(`${wh}/${location}/${sku}`, [wh, location, sku]);
    }
    if (keys.size === 0) return;
    result.shelves.push(...(await latestShelves(this.o.pool, [...keys.values()])));
  }

  private record(items: Parsed[], result: BatchResult): void {
    const m = this.o.metrics;
    m.batchSize.observe(items.length);
    result.decisions.forEach((d, i) => {
      const item = items[i] as Parsed;
      m.events.inc({ type: item.ok ? item.event.type : 'invalid', wh: item.delivery.wh, outcome: d.status });
    });
    // One labelled child per warehouse and batch: the label lookup is paid per warehouse, not per event.
    const lag = new Map<string, ReturnType<typeof m.lagSeconds.labels>>();
    for (const a of result.applied) {
      let child = lag.get(a.wh);
      if (!child) {
        child = m.lagSeconds.labels({ wh: a.wh });
        lag.set(a.wh, child);
      }
      child.observe(Math.max(0, a.lagMs) / 1000);
    }
    for (const d of result.deadLetters) m.deadLetters.inc({ code: d.code });
    for (const n of result.negative) m.negativeStock.inc({ wh: n.wh });
  }

  /** Commits what is queued (unless the database is down), then refuses new events. */
  async stop(): Promise<void> {
    this.closing = true;
    while (this.inFlight.size > 0 || this.queue.length > 0) {
      // A batch stuck retrying against a dead database is abandoned: its senders resend.
      if (!this.databaseHealthy) {
        this.stopping = true;
        for (const wake of [...this.backoffWakes]) wake();
      }
      this.kick();
      await Promise.all(this.inFlight);
      if (this.stopping) break;
    }
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    for (const w of this.queue.splice(0)) w.reject(new Error('ingest stopped'));
    // Publishes over a dead link never settle: wait a while, not forever (edges resend what was not acked).
    await waitAtMost(this.published, STOP_PUBLISH_WAIT_MS);
  }
}
