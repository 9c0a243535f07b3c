/**
 * One retained topic the edge mirrors from central, as kept on disk so a restarted edge serves it again.
 * `order`: the stock topic's `version`, or a shelf reading's time (epoch ms); null when the payload names neither.
 * An empty payload is MQTT's "no retained message": saving one removes the topic.
 */
export interface RetainedRow {
  topic: string;
  order: number | null;
  payload: Buffer;
}

/**
 * Where the downlink mirror keeps the last known values (the outbox's SQLite file, whose thread owns it).
 * Not fsynced: losing the last writes to a power cut only makes the values served after a restart older.
 */
export interface RetainedStore {
  /**
   * Writes the rows (one transaction); a row whose order is below the stored one's is skipped, so an older version
   * never replaces a newer one on disk either. Resolves with the rows written.
   */
  saveRetained(rows: readonly RetainedRow[]): Promise<number>;
  /** Up to `limit` rows with topic > afterTopic, in topic order (paging through all of them). */
  loadRetained(afterTopic: string, limit: number): Promise<RetainedRow[]>;
}
