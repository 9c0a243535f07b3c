import { ajv, isIdent, LinkStatus, RETAINED_FILTERS } from '../protocol/index.js';

const validLink = ajv.compile<LinkStatus>(LinkStatus);
const STATUS_FILTER = RETAINED_FILTERS.find((f) => f.endsWith('/status')) as string; // wh/+/status

/** A message as Aedes hands it over: its 'publish' event, and its persistence's retained stream (memory or Redis alike). */
export interface Message {
  topic: string;
  payload: Buffer | string;
  retain?: boolean;
}
export interface RetainedStore {
  createRetainedStreamCombi(patterns: string[]): AsyncIterable<Message>;
}

/** The warehouse of `wh/{wh}/status`; undefined for any other topic. */
function warehouseOf(topic: string): string | undefined {
  const parts = topic.split('/');
  return parts.length === 3 && parts[0] === 'wh' && parts[2] === 'status' && isIdent(parts[1]) ? parts[1] : undefined;
}

/**
 * Each warehouse's link status as central's broker retains it: what a display subscribing to wh/+/status gets.
 * Read once from the retained store at start, then kept from the broker's publishes (the edges' statuses and
 * their wills), so a request never scans every retained message. A payload that is not a LinkStatus (a
 * gateway may publish its own warehouse's status topic) replaces the entry with nothing, as it replaces the
 * retained message: the warehouse answers `link: null`, never something a client cannot parse.
 */
export class LinkStatuses {
  private readonly links = new Map<string, LinkStatus>();

  async load(store: RetainedStore): Promise<void> {
    for await (const message of store.createRetainedStreamCombi([STATUS_FILTER])) this.take(message, true);
  }

  /** A message the broker published; only retained status messages change what is kept. */
  onPublish(message: Message): void {
    if (message.retain === true) this.take(message, false);
  }

  snapshot(): Map<string, LinkStatus> {
    return new Map(this.links);
  }

  private take(message: Message, loading: boolean): void {
    const wh = warehouseOf(message.topic);
    if (wh === undefined) return;
    let status: unknown = null;
    try {
      status = JSON.parse(message.payload.toString());
    } catch {
      // not JSON: no status (an empty payload clears a retained message too)
    }
    if (validLink(status)) this.links.set(wh, status);
    else if (!loading) this.links.delete(wh);
  }
}
