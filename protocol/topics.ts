import { isIdent } from './ids.js';

/** Topic names of CONTRACT section 2. The same names are used on edge and central brokers. */
export const topics = {
  event: (wh: string, device: string) => `wh/${wh}/dev/${device}/event`,
  ack: (wh: string, device: string) => `wh/${wh}/dev/${device}/ack`,
  warehouseStock: (wh: string, sku: string) => `wh/${wh}/stock/${sku}`,
  globalStock: (sku: string) => `stock/${sku}`,
  shelf: (wh: string, location: string, sku: string) => `wh/${wh}/shelf/${location}/${sku}`,
  status: (wh: string) => `wh/${wh}/status`,
  alert: (wh: string, kind: string) => `alerts/${wh}/${kind}`,
  /** commands over MQTT (reservations, transfers): the requester's own id is the second level */
  request: (device: string) => `requests/${device}`,
  /** default response topic of a requester; any topic below it may be named as `responseTopic` */
  response: (device: string) => `responses/${device}`,
  /** many events in one message, from an edge's own gateway credential (protocol/batch.ts) */
  batch: (wh: string, gateway: string) => `wh/${wh}/gw/${gateway}/batch`,
  /** central's one commit ack per batch, and its hello when the edge subscribes */
  batchAck: (wh: string, gateway: string) => `wh/${wh}/gw/${gateway}/batch-ack`,
} as const;

/** Subscription filter for every command request. */
export const REQUEST_FILTER = 'requests/+';

/** Parses `requests/{device}`; null for anything else. */
export function parseRequestTopic(topic: string): { device: string } | null {
  const parts = topic.split('/');
  if (parts.length !== 2 || parts[0] !== 'requests' || !isIdent(parts[1])) return null;
  return { device: parts[1] };
}

/**
 * Deepest topic or filter the brokers take, in levels; the deepest stockwire topic (`wh/{wh}/shelf/{location}/{sku}`)
 * has 5. Aedes refuses a deeper one everywhere, its own in-process publishes included.
 */
export const MAX_TOPIC_LEVELS = 16;

/** Longest response topic a requester may name, in characters. */
export const MAX_RESPONSE_TOPIC_CHARS = 256;

/**
 * A response topic a requester may name: its own `responses/{device}` or a topic below it, without wildcards, of
 * at most MAX_TOPIC_LEVELS levels (a deeper one could never be published to).
 */
export function isOwnResponseTopic(topic: string, device: string): boolean {
  const base = `responses/${device}`;
  if (topic !== base && !topic.startsWith(`${base}/`)) return false;
  if (topic.length > MAX_RESPONSE_TOPIC_CHARS || topic.split('/').length > MAX_TOPIC_LEVELS) return false;
  return !topic.includes('+') && !topic.includes('#') && !topic.includes('\u0000');
}

/**
 * The retained topics of CONTRACT 2: central's stock and shelf topics and an edge's link status. A retain
 * flag on any other topic is dropped by the brokers, so no client can park payloads in a broker's memory
 * for every later subscriber.
 */
export const RETAINED_FILTERS = ['wh/+/stock/+', 'stock/+', 'wh/+/shelf/+/+', 'wh/+/status'] as const;

/** True for a topic the contract publishes retained. */
export function isRetainedTopic(topic: string): boolean {
  return RETAINED_FILTERS.some((f) => topicMatches(f, topic));
}

/** Subscription filter for every device event, at any warehouse. */
export const EVENT_FILTER = 'wh/+/dev/+/event';

export interface EventTopic {
  wh: string;
  device: string;
}

/** Parses `wh/{wh}/dev/{device}/event`; null for anything else, including bad identifiers. */
export function parseEventTopic(topic: string): EventTopic | null {
  const parts = topic.split('/');
  if (parts.length !== 5 || parts[0] !== 'wh' || parts[2] !== 'dev' || parts[4] !== 'event') return null;
  const [, wh, , device] = parts;
  if (!isIdent(wh) || !isIdent(device)) return null;
  return { wh, device };
}

export interface AckTopic {
  wh: string;
  device: string;
}

/** Parses `wh/{wh}/dev/{device}/ack`; null for anything else, including bad identifiers. */
export function parseAckTopic(topic: string): AckTopic | null {
  const parts = topic.split('/');
  if (parts.length !== 5 || parts[0] !== 'wh' || parts[2] !== 'dev' || parts[4] !== 'ack') return null;
  const [, wh, , device] = parts;
  if (!isIdent(wh) || !isIdent(device)) return null;
  return { wh, device };
}

/** A retained stock topic: `wh/{wh}/stock/{sku}` (one warehouse) or `stock/{sku}` (every warehouse, wh null). */
export interface StockTopic {
  wh: string | null;
  sku: string;
}

/** Parses `wh/{wh}/stock/{sku}` and `stock/{sku}`; null for anything else (a level missing or too many). */
export function parseStockTopic(topic: string): StockTopic | null {
  const parts = topic.split('/');
  if (parts.length === 2 && parts[0] === 'stock' && parts[1] !== '') return { wh: null, sku: parts[1] as string };
  if (parts.length === 4 && parts[0] === 'wh' && parts[2] === 'stock' && parts[1] !== '' && parts[3] !== '')
    return { wh: parts[1] as string, sku: parts[3] as string };
  return null;
}

/** Subscription filter for every gateway batch, at any warehouse. */
export const BATCH_FILTER = 'wh/+/gw/+/batch';

export interface GatewayTopic {
  wh: string;
  gateway: string;
}

function parseGatewayTopic(topic: string, last: 'batch' | 'batch-ack'): GatewayTopic | null {
  const parts = topic.split('/');
  if (parts.length !== 5 || parts[0] !== 'wh' || parts[2] !== 'gw' || parts[4] !== last) return null;
  const [, wh, , gateway] = parts;
  if (!isIdent(wh) || !isIdent(gateway)) return null;
  return { wh, gateway };
}

/** Parses `wh/{wh}/gw/{gateway}/batch`; null for anything else, including bad identifiers. */
export const parseBatchTopic = (topic: string): GatewayTopic | null => parseGatewayTopic(topic, 'batch');

/** Parses `wh/{wh}/gw/{gateway}/batch-ack`; null for anything else. */
export const parseBatchAckTopic = (topic: string): GatewayTopic | null => parseGatewayTopic(topic, 'batch-ack');

/**
 * MQTT topic filter match (MQTT-4.7.1): `+` one level, `#` the rest (including the parent level).
 * Topics starting with `$` never match a filter starting with a wildcard (MQTT-4.7.2-1).
 */
export function topicMatches(filter: string, topic: string): boolean {
  if (topic.startsWith('$') && (filter.startsWith('+') || filter.startsWith('#'))) return false;
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    const level = f[i];
    if (level === '#') return i === f.length - 1;
    if (i >= t.length) return false;
    if (level !== '+' && level !== t[i]) return false;
  }
  return f.length === t.length;
}

/**
 * True when every topic that `filter` can match is also matched by `allowed`
 * (the subscription is no wider than what the ACL grants).
 */
export function filterWithin(filter: string, allowed: string): boolean {
  const f = filter.split('/');
  const a = allowed.split('/');
  for (let i = 0; i < f.length; i++) {
    const al = a[i];
    const fl = f[i];
    if (al === '#') return true;
    if (al === undefined) return false;
    if (fl === '#') return false; // filter is wider than a non-# grant
    if (al === '+') continue;
    if (fl === '+' || fl !== al) return false;
  }
  // a grant `x/#` also matches `x` itself (MQTT-4.7.1-2)
  if (a.length === f.length + 1 && a[a.length - 1] === '#') return true;
  return a.length === f.length;
}
