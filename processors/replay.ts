import type { MqttClient } from 'mqtt';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { ReplayedEvent } from '../protocol/index.js';

/** Placeholders a replay topic template may use; each is filled from the event. */
export const REPLAY_PLACEHOLDERS = ['wh', 'device', 'sku', 'type', 'id'] as const;
type Placeholder = (typeof REPLAY_PLACEHOLDERS)[number];

/** The topics of CONTRACT section 2: a replay must never publish where live consumers (or the processor) listen. */
const LIVE_TOPICS = [
  'wh/+/dev/+/event',
  'wh/+/dev/+/ack',
  'wh/+/stock/+',
  'stock/+',
  'wh/+/shelf/+/+',
  'wh/+/status',
  'alerts/+/+',
];

/**
 * Parses a topic template such as `wh/{wh}/replay/{sku}`; throws an Error naming the problem.
 * A level holding a placeholder can take any value, so it counts as `+` when checking that no
 * filled-in topic can be a live topic.
 */
export function parseTopicTemplate(raw: string): string {
  if (raw.startsWith('$')) throw new Error('must not start with $ (broker topics)');
  // biome-ignore lint/suspicious/noControlCharactersInRegex: MQTT forbids U+0000 in a topic name; this refuses it
  if (/[+#\u0000]/.test(raw)) throw new Error('must be a topic name, without + or #');
  const unknown = [...raw.matchAll(/\{([^}]*)\}/g)]
    .map((m) => m[1] as string)
    .filter((p) => !(REPLAY_PLACEHOLDERS as readonly string[]).includes(p));
  if (unknown.length > 0)
    throw new Error(
      `has unknown placeholders ${unknown.map((p) => `{${p}}`).join(', ')}; use ${REPLAY_PLACEHOLDERS.map((p) => `{${p}}`).join(', ')}`,
    );
  if (/[{}]/.test(raw.replace(/\{[a-z]+\}/g, ''))) throw new Error('has an unbalanced { or }');
  const asFilter = raw.split('/').map((level) => (level.includes('{') ? '+' : level));
  if (asFilter.some((l) => l === '')) throw new Error('must not have empty levels');
  const live = LIVE_TOPICS.find((f) => overlaps(f.split('/'), asFilter));
  if (live) throw new Error(`could publish to the live topic ${live}; choose another, such as wh/{wh}/replay/{sku}`);
  return raw;
}

/** Could one topic match both filters (made of plain levels and `+`)? */
function overlaps(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((level, i) => level === '+' || b[i] === '+' || level === b[i]);
}

export function fillTopic(template: string, e: Record<Placeholder, string>): string {
  return template.replace(/\{([a-z]+)\}/g, (_m, p: Placeholder) => e[p]);
}

export interface ReplayOptions {
  pool: pg.Pool;
  client: MqttClient;
  log: Logger;
  from: number; // epoch ms, inclusive
  to: number; // epoch ms, exclusive
  topic: string;
  /** only these warehouses; empty: all */
  warehouses: string[];
  qos: 0 | 1;
  /** events per second at most; 0: as fast as the broker acknowledges */
  rate: number;
  /** aborting stops after the events already sent are acknowledged */
  signal: AbortSignal;
}

export interface ReplayReport {
  replayed: number;
  from: string;
  to: string;
  /** false when stopped by a signal before the end of the range */
  complete: boolean;
  /** the ledger position of the last event published: rerun with --from its ts to continue */
  last?: { ts: string; wh: string; device: string; id: string };
}

const PAGE = 500; // events fetched per round trip and published before their PUBACKs are awaited

interface Row {
  ts: Date;
  wh: string;
  device: string;
  id: string;
  type: ReplayedEvent['type'];
  sku: string;
  qty: string;
  delta: string;
  location: string | null;
  reservation: string | null;
  reason: string | null;
  payload: Record<string, unknown>;
  received_at: Date;
  committed_at: Date;
}

function toMessage(r: Row): ReplayedEvent {
  return {
    wh: r.wh,
    device: r.device,
    id: r.id,
    type: r.type,
    sku: r.sku,
    qty: Number(r.qty),
    delta: Number(r.delta),
    ts: r.ts.toISOString(),
    ...(r.location !== null && { location: r.location }),
    ...(r.reservation !== null && { reservation: r.reservation }),
    ...(r.reason !== null && { reason: r.reason }),
    receivedAt: r.received_at.toISOString(),
    committedAt: r.committed_at.toISOString(),
    payload: r.payload,
  };
}

/**
 * Republishes the events of [from, to) in ledger order (ts, id, device), the order in which the
 * stock they produce is defined. One read-only snapshot and one server-side cursor: the sort runs
 * once and memory stays at one page however long the range.
 */
export async function replay(o: ReplayOptions): Promise<ReplayReport> {
  const report: ReplayReport = {
    replayed: 0,
    from: new Date(o.from).toISOString(),
    to: new Date(o.to).toISOString(),
    complete: false,
  };
  // A refused publish makes a broker close the connection, and MQTT.js then never settles pending QoS 1 publishes.
  let lost = false;
  let onClose: () => void = () => {};
  const closed = new Promise<never>((_resolve, reject) => {
    onClose = () => {
      lost = true;
      reject(
        new Error('the broker closed the connection during the replay (may this credential publish to the topic?)'),
      );
    };
  });
  closed.catch(() => {});
  o.client.once('close', onClose);
  const db = await o.pool.connect();
  const started = Date.now();
  try {
    await db.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await db.query(
      `DECLARE replay NO SCROLL CURSOR FOR
       SELECT ts, wh, device, id, type, sku, qty, delta, location, reservation, reason, payload, received_at, committed_at
       FROM events
       WHERE ts >= $1 AND ts < $2 AND (cardinality($3::text[]) = 0 OR wh = ANY($3::text[]))
       ORDER BY ts, id, device, wh`,
      [new Date(o.from), new Date(o.to), o.warehouses],
    );
    for (;;) {
      if (o.signal.aborted) break;
      const { rows } = await db.query<Row>(`FETCH ${PAGE} FROM replay`);
      if (rows.length === 0) {
        report.complete = true;
        break;
      }
      const acks: Promise<unknown>[] = [];
      for (const r of rows) {
        if (o.signal.aborted || lost) break;
        if (o.rate > 0) {
          const due = started + (report.replayed * 1000) / o.rate; // ms
          if (due > Date.now()) await new Promise((res) => setTimeout(res, due - Date.now()));
          if (o.signal.aborted) break;
        }
        const message = toMessage(r);
        // MQTT.js sends in call order on one connection; brokers keep that order per topic (MQTT-4.6.0-6).
        acks.push(o.client.publishAsync(fillTopic(o.topic, message), JSON.stringify(message), { qos: o.qos }));
        report.replayed++;
        report.last = { ts: message.ts, wh: r.wh, device: r.device, id: r.id };
      }
      const acknowledged = Promise.all(acks);
      acknowledged.catch(() => {}); // when the link is lost, `closed` carries the reason
      await Promise.race([acknowledged, closed]);
      o.log.debug({ replayed: report.replayed }, 'page published');
    }
    await db.query('COMMIT');
  } catch (err) {
    await db.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    o.client.off('close', onClose);
    db.release();
  }
  return report;
}
