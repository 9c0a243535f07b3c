import { ajv, isIdent, LinkStatus, RETAINED_FILTERS } from '../protocol/index.js';

const validLink = ajv.compile<LinkStatus>(LinkStatus);
const STATUS_FILTER = RETAINED_FILTERS.find((f) => f.endsWith('/status')) as string; // wh/+/status

/** What a retained-message store yields: Aedes persistence's `createRetainedStreamCombi` (memory or Redis alike). */
export interface RetainedStore {
  createRetainedStreamCombi(patterns: string[]): AsyncIterable<{ topic: string; payload: Buffer | string }>;
}

/**
 * Each warehouse's link status as the broker retains it: what a display subscribing to wh/+/status would get.
 * A payload that is not a LinkStatus (a gateway may publish its own warehouse's status topic) is left out,
 * so the warehouse answers `link: null` rather than something a client cannot parse.
 */
export async function retainedLinks(store: RetainedStore): Promise<Map<string, LinkStatus>> {
  const links = new Map<string, LinkStatus>();
  for await (const packet of store.createRetainedStreamCombi([STATUS_FILTER])) {
    const wh = packet.topic.split('/')[1];
    if (!isIdent(wh)) continue;
    let status: unknown;
    try {
      status = JSON.parse(packet.payload.toString());
    } catch {
      continue;
    }
    if (validLink(status)) links.set(wh, status);
  }
  return links;
}
