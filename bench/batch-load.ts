import {
  batchEnvelopeBytes,
  encodeBatch,
  encodeBatchEvent,
  parseBatchAckMessage,
  topics,
  type BatchHello,
} from '../protocol/index.js';
import { LeanClient } from './lean-client.js';
import { loadResult, type LoadOptions, type LoadResult } from './load.js';

const STALL_MS = 20_000; // ms: no batch-ack for this long fails the run, as drive's watchdog does
const HELLO_MS = 10_000; // ms: central answers the batch-ack subscription with its hello at once
const TICK_MS = 5; // ms: at a fixed rate, each tick sends what is due as one batch

export interface BatchLoadOptions extends Omit<LoadOptions, 'window' | 'credentials'> {
  /** a gateway credential per warehouse: the batch topics belong to that gateway alone (CONTRACT 2) */
  credentials: (wh: string) => { username: string; password: string; clientId: string };
  /** events per batch at most; central's hello (events and bytes) may lower it */
  batchEvents: number;
  /** batches in flight per client, waiting for their batch-ack */
  window: number;
}

export interface BatchLoadResult extends LoadResult {
  batches: number;
  /** events per batch central's hello allowed, and what this run used */
  batchLimit: { maxEvents: number; maxBytes: number; used: number };
}

interface InFlight {
  sentAt: number; // ms, performance.now()
  ids: string[]; // event ids in batch order: acks[i] answers ids[i]
}

/** Subscribes to the batch-ack topic and resolves with central's hello; refuses when none comes. */
function helloFrom(client: LeanClient, ackTopic: string): Promise<BatchHello['hello']> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no batch hello on ${ackTopic} within ${HELLO_MS} ms: is this stockwire central?`)),
      HELLO_MS,
    );
    // The hello may come before the SUBACK: listen first.
    client.onMessage = (topic, payload) => {
      const m = topic === ackTopic ? parseBatchAckMessage(payload) : null;
      if (m === null || !('hello' in m)) return;
      clearTimeout(timer);
      resolve(m.hello);
    };
    client.subscribe(ackTopic, 1).catch((err: Error) => {
      clearTimeout(timer);
      reject(new Error(`${ackTopic}: ${err.message}`));
    });
  });
}

/**
 * Drives gateway clients on the batched link (protocol/batch.ts): one QoS-1 batch of events on
 * `wh/{wh}/gw/{gateway}/batch`, one batch-ack after central's commit. Same events as `drive`; an event's latency is
 * from its batch's publish to that batch's ack. At a fixed rate every 5 ms tick sends the events due as one batch,
 * as an edge sends what its outbox holds, so batches stay small there.
 */
export async function driveBatches(o: BatchLoadOptions): Promise<BatchLoadResult> {
  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  const clients: LeanClient[] = [];
  const target = new URL(o.url);
  const perClientRate = o.rate / o.warehouses.length;
  let batches = 0;
  let limit = { maxEvents: 0, maxBytes: 0, used: 0 };
  let started = 0;
  let finished = 0;
  try {
    const links = await Promise.all(
      o.warehouses.map(async (wh) => {
        const creds = o.credentials(wh);
        const client = new LeanClient({ host: target.hostname, port: Number(target.port || 1883), ...creds });
        await client.connect();
        clients.push(client);
        const ackTopic = topics.batchAck(wh, creds.username);
        return { wh, client, ackTopic, hello: await helloFrom(client, ackTopic) };
      }),
    );
    const hello = links[0]?.hello ?? { maxEvents: 0, maxBytes: 0 };
    const perBatch = Math.min(o.batchEvents, hello.maxEvents);
    limit = { maxEvents: hello.maxEvents, maxBytes: hello.maxBytes, used: perBatch };
    if (perBatch < 1) throw new Error(`central's hello allows ${hello.maxEvents} events per batch`);
    started = performance.now();
    await Promise.all(
      links.map(
        ({ wh, client, ackTopic }, w) =>
          new Promise<void>((resolve, reject) => {
            const inFlight = new Map<string, InFlight>();
            const batchTopic = topics.batch(wh, o.credentials(wh).username);
            let sent = 0;
            let acked = 0;
            let count = 0;
            let lastProgress = performance.now();
            const t0 = performance.now();
            const fail = (err: Error) => {
              clearInterval(watchdog);
              if (ticker) clearInterval(ticker);
              reject(err);
            };
            // A benchmark stops by itself: no batch-ack for this long means a batch was lost on the way.
            const watchdog = setInterval(() => {
              if (performance.now() - lastProgress < STALL_MS) return;
              fail(
                new Error(
                  `${wh}: no batch-ack for ${STALL_MS} ms; ${o.eventsPerClient - acked} of ${o.eventsPerClient} events unacknowledged in ${inFlight.size} batches`,
                ),
              );
            }, 1_000);
            const sendBatch = (upTo: number) => {
              const name = `${o.idPrefix}-${w}-${++count}`;
              const ids: string[] = [];
              const texts: string[] = [];
              let bytes = batchEnvelopeBytes(name);
              while (sent < upTo && ids.length < perBatch) {
                const i = sent;
                const device = `d${i % o.devices}`;
                const id = `${o.idPrefix}-${i}`;
                const payload = JSON.stringify({
                  v: 1,
                  id,
                  type: i % 4 === 3 ? 'shipped' : 'received',
                  sku: `SKU-${(i * 7 + w) % o.skus}`,
                  qty: 1 + (i % 5),
                });
                const text = encodeBatchEvent(device, Buffer.from(payload, 'utf8'));
                const size = Buffer.byteLength(text) + (ids.length > 0 ? 1 : 0); // and its comma
                if (bytes + size > hello.maxBytes) {
                  if (ids.length === 0)
                    throw new Error(`one event of ${size} bytes exceeds a batch's ${hello.maxBytes}`);
                  break;
                }
                bytes += size;
                ids.push(id);
                texts.push(text);
                sent++;
              }
              inFlight.set(name, { sentAt: performance.now(), ids });
              batches++;
              client.publish(batchTopic, encodeBatch(name, texts));
            };
            const pump = () => {
              const allowed =
                o.rate > 0
                  ? Math.min(o.eventsPerClient, Math.floor(((performance.now() - t0) / 1000) * perClientRate))
                  : o.eventsPerClient;
              try {
                // Saturation: full batches while the window allows. Fixed rate: what is due now, in one batch (or
                // more, when more than a batch is due after the window held them back).
                while (inFlight.size < o.window && sent < allowed) sendBatch(allowed);
              } catch (err) {
                fail(err as Error);
              }
            };
            const ticker = o.rate > 0 ? setInterval(pump, TICK_MS) : null;
            client.onMessage = (topic, payload) => {
              if (topic !== ackTopic) return;
              const m = parseBatchAckMessage(payload);
              if (m === null) return fail(new Error(`${wh}: unreadable message on ${ackTopic}: ${payload.toString()}`));
              if ('hello' in m) return; // a second hello (a resubscription) changes nothing here
              if ('error' in m)
                return fail(new Error(`${wh}: central refused batch ${m.batch}: ${m.error.code} ${m.error.message}`));
              const batch = inFlight.get(m.batch);
              if (batch === undefined) return;
              inFlight.delete(m.batch);
              if (m.acks.length !== batch.ids.length)
                return fail(
                  new Error(`${wh}: batch ${m.batch} of ${batch.ids.length} events got ${m.acks.length} acks`),
                );
              const latency = performance.now() - batch.sentAt;
              for (const [i, ack] of m.acks.entries()) {
                if (ack.id !== batch.ids[i])
                  return fail(new Error(`${wh}: batch ${m.batch} ack ${i} is for ${ack.id}, not ${batch.ids[i]}`));
                statuses[ack.status] = (statuses[ack.status] ?? 0) + 1;
                latencies.push(latency);
              }
              lastProgress = performance.now();
              acked += batch.ids.length;
              if (acked === o.eventsPerClient) {
                clearInterval(watchdog);
                if (ticker) clearInterval(ticker);
                return resolve();
              }
              pump();
            };
            pump();
          }),
      ),
    );
    finished = performance.now();
  } finally {
    await Promise.all(clients.map((c) => c.end()));
  }
  const seconds = (finished - started) / 1000;
  return {
    ...loadResult(o.eventsPerClient * o.warehouses.length, seconds, latencies, statuses),
    batches,
    batchLimit: limit,
  };
}
