// Messages between SqliteOutbox (sqlite.ts) and the thread that owns its file (sqlite-worker.ts).

/** One entry to insert; its payload arrives as a Uint8Array (structured clone drops the Buffer class). */
export interface WorkerRow {
  receivedAt: number;
  bytes: number;
  device: string;
  eventId: string | null;
  topic: string;
  payload: Uint8Array;
}

export type WorkerRequest =
  | { op: 'open' }
  | { op: 'totals' }
  | { op: 'insert'; rows: WorkerRow[] }
  | { op: 'confirm'; seqsJson: string }
  | { op: 'read'; afterSeq: number; limit: number }
  | { op: 'pragmas' }
  | { op: 'close' };

export type WorkerReply =
  | { ok: false; message: string; code?: string | undefined }
  | { ok: true; op: 'open' }
  | { ok: true; op: 'close' }
  | { ok: true; op: 'totals'; events: number; bytes: number; oldestReceivedAt: number | null }
  | { ok: true; op: 'insert'; seqs: number[] }
  /** oldestReceivedAt: the new head when something was deleted, undefined when nothing was */
  | { ok: true; op: 'confirm'; deleted: number[]; oldestReceivedAt: number | null | undefined }
  | { ok: true; op: 'read'; rows: (WorkerRow & { seq: number })[] }
  | { ok: true; op: 'pragmas'; journalMode: string; synchronous: number; lockingMode: string };

/** The reply to a request of kind Op. */
export type ReplyTo<Op extends WorkerRequest['op']> = Extract<WorkerReply, { ok: true; op: Op }>;
