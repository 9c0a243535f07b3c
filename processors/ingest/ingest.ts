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

/**
 * One unit of the queue: a single event, or a gateway's batch whose events commit in one transaction (a batch is
 * never split across two, so its one batch-ack answers one commit) and are answered by `answer`, not per device.
 */
interface Waiting {
  items: Parsed[];
  resolve: (d: Decision[]) => void;
  reject: (err: Error) => void;
  /** the message answering the whole unit after its commit (a batch-ack); absent: one ack per device */
  answer?: (decisions: Decision[]) => Answer;
}

/** A message published after the commit, in place of the per-device acks of its events. */
export interface Answer {
  topic: string;
  payload: string;
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
  private queued = 0; // events in the queue
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
    return this.queued;
  }

  submit(delivery: Delivery): Promise<Decision> {
    if (this.closing) return Promise.reject(new Error('ingest is stopping'));
    return this.enqueue([this.parse(delivery)]).then((d) => d[0] as Decision);
  }

  /**
   * A gateway's batch: each delivery is validated, deduped and applied exactly as `submit` would, all in one commit;
   * resolves after it with the decisions in order. `answer` makes the one message published after the commit
   * instead of the per-device acks. `parsed` lets a caller hand in input it already refused (an unreadable batch).
   */
  submitBatch(deliveries: (Delivery | Parsed)[], answer: (decisions: Decision[]) => Answer): Promise<Decision[]> {
    if (this.closing) return Promise.reject(new Error('ingest is stopping'));
    return this.enqueue(
      deliveries.map((d) => ('ok' in d ? d : this.parse(d))),
      answer,
    );
  }

  private parse(delivery: Delivery): Parsed {
    // Behind an edge: an event of 8 KiB may carry the edge's receipt time on top (the edge checked the 8 KiB).
    const r = parseEvent(delivery.payload, {
      wh: delivery.wh,
      device: delivery.device,
      receivedAt: delivery.receivedAt,
      maxBytes: STAMPED_EVENT_MAX_BYTES,
      tsDecidedByEdge: delivery.viaEdge === true,
    });
    return r.ok ? { delivery, ok: true, event: r.event } : { delivery, ok: false, error: r.error, id: r.id };
  }

  private enqueue(items: Parsed[], answer?: Waiting['answer']): Promise<Decision[]> {
    return new Promise<Decision[]>((resolve, reject) => {
      this.queue.push({ items, resolve, reject, ...(answer && { answer }) });
      this.queued += items.length;
      this.o.metrics.pending.set(this.queued);
      this.schedule();
    });
  }

  /** The next units to commit together: up to maxBatch events, never splitting a unit (one too large goes alone). */
  private take(): Waiting[] {
    let n = 0;
    let i = 0;
    while (i < this.queue.length) {
      const size = (this.queue[i] as Waiting).items.length;
      if (i > 0 && n + size > this.o.maxBatch) break;
      n += size;
      i++;
    }
    this.queued -= n;
    return this.queue.splice(0, i);
  }

  private schedule(): void {
    if (this.inFlight.size >= MAX_IN_FLIGHT) return; // a batch that commits schedules the queue again
    if (this.queued >= this.o.maxBatch) this.kick();
    // Under a steady trickle, wait for company rather than committing batches of one.
    else if (!this.timer) this.timer = setTimeout(() => this.kick(), this.o.maxWaitMs);
  }

  private kick(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    while (this.inFlight.size < MAX_IN_FLIGHT && this.queue.length > 0) {
      const batch = this.take();
      this.o.metrics.pending.set(this.queued);
      const done: Promise<void> = this.run(batch).finally(() => {
        this.inFlight.delete(done);
        if (this.queue.length > 0) this.schedule();
      });
      this.inFlight.add(done);
      if (this.queued < this.o.maxBatch && !this.closing) break; // the rest waits for company
    }
    if (this.queue.length > 0) this.schedule();
  }

  private async run(batch: Waiting[]): Promise<void> {
    const items = batch.flatMap((w) => w.items);
    const result = await this.commit(items);
    if (!result) {
      for (const w of batch) w.reject(new Error('ingest stopped before the batch committed'));
      return;
    }
    const answers: Answer[] = [];
    const answered = new Set<Parsed>(); // events whose unit has its own answer: no per-device ack
    let at = 0;
    for (const w of batch) {
      const decisions = result.decisions.slice(at, at + w.items.length);
      at += w.items.length;
      w.resolve(decisions);
      if (w.answer) {
        answers.push(w.answer(decisions));
        for (const item of w.items) answered.add(item);
      }
    }
    this.record(items, result);
    // Publishing overlaps the next commit; publishes leave in commit order, one batch after another
    // (the monotonic publisher keeps each stock topic's versions increasing whatever the order).
    this.published = this.published.then(() => this.publish(items, result, answers, answered));
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

  private async publish(items: Parsed[], result: BatchResult, answers: Answer[], answered: Set<Parsed>): Promise<void> {
    // Batch-acks first, like acks: they release the edges' outboxes.
    const sent = Promise.allSettled(answers.map((a) => this.o.publisher.publish(a.topic, a.payload, false)));
    await publishBatch(this.o.publisher, items, result, (item) => !answered.has(item)).catch((err: Error) => {
      this.o.metrics.publishErrors.inc();
      this.o.log.warn({ err: err.message }, 'publishing after commit failed; edges resend unacknowledged events');
    });
    const failed = (await sent).filter((r) => r.status === 'rejected').length;
    if (failed > 0) {
      this.o.metrics.publishErrors.inc(failed);
      this.o.log.warn({ failed }, 'publishing batch-acks after commit failed; edges resend unacknowledged batches');
    }
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
    this.queued = 0;
    // Publishes over a dead link never settle: wait a while, not forever (edges resend what was not acked).
    await waitAtMost(this.published, STOP_PUBLISH_WAIT_MS);
  }
}
