export {
  DEAD_LETTER_RAW_BYTES,
  DEAD_LETTERS_KEPT,
  entryBytes,
  invalidEntry,
  OutboxClosedError,
  OutboxDeviceShareError,
  OutboxFullError,
  type DeadLetter,
  type NewEntry,
  type Outbox,
  type OutboxEntry,
  type OutboxStats,
  type StoredDeadLetter,
} from './outbox.js';
export type { RetainedRow, RetainedStore } from './retained.js';
export { SqliteOutbox, type SqliteOutboxOptions } from './sqlite.js';
export { MemoryOutbox } from './memory.js';
