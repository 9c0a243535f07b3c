import type { Ack } from '../protocol/index.js';
import { LeanClient } from './lean-client.js';
import { percentile } from './lib.js';

const STALL_MS = 20_000; // ms

export interface LoadOptions {
  url: string;
  /** one client per warehouse, like one edge each */
  warehouses: string[];
  credentials?: (wh: string) => { username: string; password: string; clientId: string };
  eventsPerClient: number;
  /** events in flight per client, waiting for their commit ack */
  window: number;
  /** events/s across all clients; 0: as fast as acks allow (saturation) */
  rate: number;
  devices: number;
  skus: number;
  idPrefix: string;
}

export interface LoadResult {
  events: number;
  seconds: number;
  perSecond: number;
  latencyMs: { p50: number; p99: number; max: number };
  statuses: Record<string, number>;
}

/**
 * Drives gateway-like clients that publish QoS-1 events and wait for central's commit acks.
 * The clients are lean (bench/lean-client.ts): on a 2-core machine every microsecond the load
 * generator spends is taken from the broker, processor and database under test.
 */
export async function drive(o: LoadOptions): Promise<LoadResult> {
  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  const clients: LeanClient[] = [];
  const target = new URL(o.url);
  const started = performance.now();
  const perClientRate = o.rate / o.warehouses.length;
  await Promise.all(
    o.warehouses.map(async (wh, w) => {
      const creds = o.credentials?.(wh);
      const client = new LeanClient({
        host: target.hostname,
        port: Number(target.port || 1883),
        clientId: creds?.clientId ?? `bench-${o.idPrefix}-${w}`,
        ...(creds && { username: creds.username, password: creds.password }),
      });
      await client.connect();
      clients.push(client);
      const sentAt = new Map<string, number>();
      let sent = 0;
      let acked = 0;
      const t0 = performance.now();
      await client.subscribe(`wh/${wh}/dev/+/ack`, 1);
      await new Promise<void>((resolve, reject) => {
        // A benchmark stops by itself: no ack for this long means events were lost on the way.
        let lastProgress = performance.now();
        const watchdog = setInterval(() => {
          if (performance.now() - lastProgress < STALL_MS) return;
          clearInterval(watchdog);
          if (ticker) clearInterval(ticker);
          reject(
            new Error(
              `${wh}: no ack for ${STALL_MS} ms; ${o.eventsPerClient - acked} of ${o.eventsPerClient} events unacknowledged`,
            ),
          );
        }, 1_000);
        const pump = () => {
          const allowed =
            o.rate > 0
              ? Math.min(o.eventsPerClient, Math.floor(((performance.now() - t0) / 1000) * perClientRate))
              : o.eventsPerClient;
          while (sent - acked < o.window && sent < allowed) {
            const i = sent++;
            const device = `d${i % o.devices}`;
            const id = `${o.idPrefix}-${i}`;
            sentAt.set(`${device}/${id}`, performance.now());
            client.publish(
              `wh/${wh}/dev/${device}/event`,
              JSON.stringify({
                v: 1,
                id,
                type: i % 4 === 3 ? 'shipped' : 'received',
                sku: `SKU-${(i * 7 + w) % o.skus}`,
                qty: 1 + (i % 5),
              }),
            );
          }
        };
        const ticker = o.rate > 0 ? setInterval(pump, 5) : null; // ms: paces a fixed rate
        client.onMessage = (topic, payload) => {
          const ack = JSON.parse(payload.toString()) as Ack;
          const key = `${topic.split('/')[3]}/${ack.id}`;
          const t = sentAt.get(key);
          if (t === undefined) return;
          sentAt.delete(key);
          latencies.push(performance.now() - t);
          statuses[ack.status] = (statuses[ack.status] ?? 0) + 1;
          lastProgress = performance.now();
          if (++acked === o.eventsPerClient) {
            clearInterval(watchdog);
            if (ticker) clearInterval(ticker);
            return resolve();
          }
          pump();
        };
        pump();
      });
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  await Promise.all(clients.map((c) => c.end()));
  return loadResult(o.eventsPerClient * o.warehouses.length, seconds, latencies, statuses);
}

/** A run's figures from its event count, duration and per-event latencies (sorted here). */
export function loadResult(
  events: number,
  seconds: number,
  latencies: number[],
  statuses: Record<string, number>,
): LoadResult {
  latencies.sort((a, b) => a - b);
  return {
    events,
    seconds,
    perSecond: events / seconds,
    latencyMs: {
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      max: latencies[latencies.length - 1] ?? NaN,
    },
    statuses,
  };
}
