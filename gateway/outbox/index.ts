export { entryBytes, invalidEntry, OutboxClosedError, OutboxFullError, type NewEntry, type Outbox, type OutboxEntry, type OutboxStats } from './outbox.js';
export { SqliteOutbox, type SqliteOutboxOptions } from './sqlite.js';
export { MemoryOutbox } from './memory.js';
