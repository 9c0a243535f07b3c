import { ErrorCode, ValidationError } from '../../protocol/index.js';
import type { AllocationPolicy } from '../ledger/reservations.js';
import { reserveBatch, type ReserveRequest } from './holds.js';
import type { Answer } from './idempotency.js';
import type { Runner } from './runner.js';

interface Waiting extends ReserveRequest {
  resolve: (a: Answer) => void;
  reject: (err: Error) => void;
}

const MAX_BATCH = 200; // requests decided in one transaction, at most

/**
 * Group commit for reservations. Every hold on a sku waits for that sku's row locks, and each
 * transaction holds them through its COMMIT (a WAL flush), so one sku alone would be decided one
 * commit at a time. Instead, requests for a sku that arrive while a transaction for it is in flight
 * wait and are then decided together, in arrival order, in one transaction. Nothing waits when the
 * sku is idle: a lone request is decided at once.
 */
export class ReservationBatcher {
  private readonly queues = new Map<string, Waiting[]>();
  private pending = 0;

  constructor(
    private readonly runner: Runner,
    private readonly policy: AllocationPolicy,
    /** requests waiting in this process, at most; more are answered 503 */
    private readonly maxPending: number,
  ) {}

  submit(r: ReserveRequest): Promise<Answer> {
    if (this.pending >= this.maxPending)
      return Promise.reject(
        new ValidationError(ErrorCode.unavailable, 'too many reservations in flight; try again shortly'),
      );
    return new Promise<Answer>((resolve, reject) => {
      this.pending++;
      const sku = r.req.sku;
      const queue = this.queues.get(sku);
      const waiting = { ...r, resolve, reject };
      if (queue) return void queue.push(waiting); // a transaction for this sku is in flight: join the next one
      this.queues.set(sku, [waiting]);
      void this.drain(sku);
    });
  }

  /** Decides the sku's queue, batch after batch, until it is empty. The queue's presence marks the sku busy. */
  private async drain(sku: string): Promise<void> {
    const queue = this.queues.get(sku) as Waiting[];
    while (queue.length > 0) {
      const batch = queue.splice(0, MAX_BATCH);
      try {
        const { answers } = await this.runner.transaction((client, now) =>
          reserveBatch(client, now, sku, batch, this.policy),
        );
        batch.forEach((w, i) => {
          const a = answers[i] as Answer | ValidationError;
          if (a instanceof ValidationError) w.reject(a);
          else w.resolve(a);
        });
      } catch (err) {
        for (const w of batch) w.reject(err as Error);
      } finally {
        this.pending -= batch.length;
      }
    }
    this.queues.delete(sku);
  }
}
