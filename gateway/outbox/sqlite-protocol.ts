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

/** One dead letter to keep; `raw` already cut to DEAD_LETTER_RAW_BYTES, `bytes` the size sent. */
export interface WorkerDeadLetter {
  receivedAt: number;
  bytes: number;
  device: string;
  topic: string;
  code: string;
  reason: string;
  source: string;
  raw: Uint8Array;
}

/** A mirrored retained topic (retained.ts); an empty payload deletes it. */
export interface WorkerRetained {
  topic: string;
  order: number | null;
  payload: Uint8Array;
}

export type WorkerRequest =
  | { op: 'open' }
  | { op: 'totals' }
  | { op: 'insert'; rows: WorkerRow[]; dead: WorkerDeadLetter[] }
  | { op: 'confirm'; seqsJson: string }
  | { op: 'read'; afterSeq: number; limit: number }
  | { op: 'deadLetters'; limit: number }
  | { op: 'saveRetained'; rows: WorkerRetained[] }
  | { op: 'loadRetained'; afterTopic: string; limit: number }
  | { op: 'pragmas' }
  | { op: 'close' };

export type WorkerReply =
  | { ok: false; message: string; code?: string | undefined }
  | { ok: true; op: 'open' }
  | { ok: true; op: 'close' }
  | {
      ok: true;
      op: 'totals';
      events: number;
      bytes: number;
      oldestReceivedAt: number | null;
      devices: { device: string; bytes: number }[];
    }
  | { ok: true; op: 'insert'; seqs: number[] }
  /** oldestReceivedAt: the new head when something was deleted, undefined when nothing was */
  | {
      ok: true;
      op: 'confirm';
      deleted: { device: string; bytes: number }[];
      oldestReceivedAt: number | null | undefined;
    }
  | { ok: true; op: 'read'; rows: (WorkerRow & { seq: number })[] }
  | { ok: true; op: 'deadLetters'; rows: (WorkerDeadLetter & { id: number })[] }
  | { ok: true; op: 'saveRetained'; written: number }
  | { ok: true; op: 'loadRetained'; rows: WorkerRetained[] }
  | { ok: true; op: 'pragmas'; journalMode: string; synchronous: number; lockingMode: string };

/** The reply to a request of kind Op. */
export type ReplyTo<Op extends WorkerRequest['op']> = Extract<WorkerReply, { ok: true; op: Op }>;
