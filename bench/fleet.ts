import { LeanClient } from './lean-client.js';
import { percentile } from './lib.js';

/**
 * Many simulated devices (lean MQTT clients, one connection each) and optionally a display, for the
 * end-to-end and scale benchmarks. Each device publishes QoS-1 `received` events of quantity 1 to
 * `wh/{wh}/dev/{id}/event` and keeps at most `window` of them open; an event is closed by the
 * broker's PUBACK (`until: 'puback'`, a device that forgets an event once the edge has it on disk)
 * or by central's commit ack on `wh/{wh}/dev/{id}/ack` (`until: 'ack'`).
 *
 * Latency to the stock update: with only positive deltas a row's onHand only grows, and the ack
 * carries the row's onHand after the batch that applied the event; the event is visible at the
 * display from the first `stock/{sku}` whose `warehouses[wh].onHand` reaches that number.
 */

export interface FleetDevice {
  wh: string;
  id: string;
  host: string;
  port: number;
  password?: string;
}

export interface RunOptions {
  /** events in all, spread evenly over the devices */
  events: number;
  window: number;
  /** events/s over all devices; 0: as fast as the window allows (saturation) */
  rate: number;
  until: 'ack' | 'puback';
  skus: number;
  /** prefix of this run's skus and event ids: a fresh prefix per run keeps the rows of runs apart */
  prefix: string;
  /** ms without progress before the run fails */
  stallMs?: number;
  /** ms to wait after the last ack for stock updates still on their way */
  stockWaitMs?: number;
}

export interface Latency {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

export interface RunResult {
  events: number;
  seconds: number;
  perSecond: number;
  /** events/s between the 10th and the 90th percentile of completions: the run without its ramps */
  steadyPerSecond: number;
  puback: Latency;
  ack: Latency;
  stock: Latency | null;
  /** acked events whose stock update never reached the display */
  stockMissing: number;
  statuses: Record<string, number>;
}

interface Device {
  d: FleetDevice;
  index: number;
  client: LeanClient;
  sent: number;
  closed: number;
  quota: number;
  open: Map<string, { t: number; sku: string }>; // by event id
  byPacket: Map<number, number>; // packet id → publish time
}

function summary(values: number[]): Latency {
  values.sort((a, b) => a - b);
  return {
    count: values.length,
    p50: percentile(values, 50),
    p99: percentile(values, 99),
    max: values[values.length - 1] ?? NaN,
  };
}

/** What the display has seen of one (warehouse, sku) row, and the events still waiting to be seen. */
interface Row {
  onHand: number[];
  at: number[];
  waiting: { need: number; t: number }[];
}

export class Fleet {
  private devices: Device[] = [];
  private display: LeanClient | null = null;
  private rows = new Map<string, Row>();
  private stockLatency: number[] = [];
  private displayPrefix = '';

  constructor(private readonly list: FleetDevice[]) {}

  get size(): number {
    return this.devices.length;
  }

  /** Connects every device (at most `concurrency` CONNECTs awaiting their CONNACK at once); resolves with the seconds it took. */
  async connect(o: { concurrency: number; subscribeAcks: boolean; onProgress?: (n: number) => void }): Promise<number> {
    const t0 = performance.now();
    let next = 0;
    const worker = async () => {
      while (next < this.list.length) {
        const d = this.list[next++] as FleetDevice;
        const client = new LeanClient({
          host: d.host,
          port: d.port,
          clientId: d.id,
          username: d.id,
          ...(d.password !== undefined && { password: d.password }),
          keepalive: 0,
        });
        await client.connect();
        if (o.subscribeAcks) await client.subscribe(`wh/${d.wh}/dev/${d.id}/ack`, 1);
        this.devices.push({
          d,
          index: this.devices.length,
          client,
          sent: 0,
          closed: 0,
          quota: 0,
          open: new Map(),
          byPacket: new Map(),
        });
        o.onProgress?.(this.devices.length);
      }
    };
    await Promise.all(Array.from({ length: Math.min(o.concurrency, this.list.length) }, worker));
    return (performance.now() - t0) / 1000;
  }

  /** A display subscribed to `filter` (`stock/#`) that feeds the stock latency. */
  async connectDisplay(o: { host: string; port: number; id: string; password: string; filter: string }): Promise<void> {
    this.display = new LeanClient({
      host: o.host,
      port: o.port,
      clientId: o.id,
      username: o.id,
      password: o.password,
      keepalive: 0,
    });
    await this.display.connect();
    this.display.onMessage = (topic, payload) => this.observe(topic, payload);
    await this.display.subscribe(o.filter, 1);
  }

  private observe(topic: string, payload: Buffer): void {
    if (!topic.startsWith(`stock/${this.displayPrefix}`) || this.displayPrefix === '') return;
    const now = performance.now();
    const g = JSON.parse(payload.toString()) as { sku: string; warehouses: Record<string, { onHand: number }> };
    for (const [wh, s] of Object.entries(g.warehouses)) {
      const row = this.row(`${wh}/${g.sku}`);
      const last = row.onHand[row.onHand.length - 1];
      if (last !== undefined && s.onHand <= last) continue;
      row.onHand.push(s.onHand);
      row.at.push(now);
      if (row.waiting.length === 0) continue;
      row.waiting = row.waiting.filter((w) => {
        if (w.need <= s.onHand) {
          this.stockLatency.push(now - w.t);
          return false;
        }
        return true;
      });
    }
  }

  private row(key: string): Row {
    let row = this.rows.get(key);
    if (!row) {
      row = { onHand: [], at: [], waiting: [] };
      this.rows.set(key, row);
    }
    return row;
  }

  /** The event published at `t` is in the row once onHand reaches `need`: seen already, or wait for it. */
  private expect(wh: string, sku: string, need: number, t: number): void {
    const row = this.row(`${wh}/${sku}`);
    let lo = 0;
    let hi = row.onHand.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((row.onHand[mid] as number) >= need) hi = mid;
      else lo = mid + 1;
    }
    if (lo < row.onHand.length) this.stockLatency.push((row.at[lo] as number) - t);
    else row.waiting.push({ need, t });
  }

  run(o: RunOptions): Promise<RunResult> {
    const stallMs = o.stallMs ?? 30_000;
    this.displayPrefix = `${o.prefix}-`;
    this.rows.clear();
    this.stockLatency = [];
    const pubLatency: number[] = [];
    const ackLatency: number[] = [];
    const statuses: Record<string, number> = {};
    const doneAt: number[] = [];
    const count = this.devices.length;
    const each = Math.floor(o.events / count);
    const total = each * count;
    const t0 = performance.now();
    let lastProgress = t0;
    let ticker: NodeJS.Timeout | null = null;
    let watchdog: NodeJS.Timeout | null = null;
    const stop = () => {
      if (ticker) clearInterval(ticker);
      if (watchdog) clearInterval(watchdog);
    };

    return new Promise<RunResult>((resolve, reject) => {
      const finish = async () => {
        stop();
        const seconds = (doneAt[doneAt.length - 1] as number) / 1000;
        const a = doneAt[Math.floor(doneAt.length * 0.1)] as number;
        const b = doneAt[Math.floor(doneAt.length * 0.9)] as number;
        let stockMissing = 0;
        if (this.display && o.until === 'ack') {
          const waited = performance.now();
          const missing = () => [...this.rows.values()].reduce((n, r) => n + r.waiting.length, 0);
          while (missing() > 0 && performance.now() - waited < (o.stockWaitMs ?? 10_000))
            await new Promise((r) => setTimeout(r, 50));
          stockMissing = missing();
        }
        for (const dev of this.devices) {
          dev.client.onMessage = () => {};
          dev.client.onPuback = () => {};
        }
        resolve({
          events: total,
          seconds,
          perSecond: total / seconds,
          steadyPerSecond:
            b > a ? (Math.floor(doneAt.length * 0.9) - Math.floor(doneAt.length * 0.1)) / ((b - a) / 1000) : NaN,
          puback: summary(pubLatency),
          ack: summary(ackLatency),
          stock: this.display && o.until === 'ack' ? summary(this.stockLatency) : null,
          stockMissing,
          statuses,
        });
      };
      const close = (dev: Device) => {
        dev.closed++;
        const now = performance.now();
        lastProgress = now;
        doneAt.push(now - t0);
        if (doneAt.length === total) void finish();
        else pump(dev);
      };
      const pump = (dev: Device) => {
        const allowed = o.rate > 0 ? Math.min(each, dev.quota) : each;
        while (dev.sent - dev.closed < o.window && dev.sent < allowed) {
          const j = dev.sent++;
          const id = `${o.prefix}-${j}`;
          const sku = `${o.prefix}-${(j * 7 + dev.index) % o.skus}`;
          const t = performance.now();
          if (o.until === 'ack') dev.open.set(id, { t, sku });
          const packet = dev.client.publish(
            `wh/${dev.d.wh}/dev/${dev.d.id}/event`,
            `{"v":1,"id":"${id}","type":"received","sku":"${sku}","qty":1,"ts":${Date.now()}}`,
          );
          dev.byPacket.set(packet, t);
        }
      };
      for (const dev of this.devices) {
        dev.sent = dev.closed = dev.quota = 0;
        dev.open.clear();
        dev.byPacket.clear();
        dev.client.onPuback = (packet) => {
          const t = dev.byPacket.get(packet);
          if (t === undefined) return;
          dev.byPacket.delete(packet);
          pubLatency.push(performance.now() - t);
          if (o.until === 'puback') close(dev);
        };
        dev.client.onMessage = (_topic, payload) => {
          if (o.until !== 'ack') return;
          const ack = JSON.parse(payload.toString()) as { id: string; status: string; stock?: { onHand: number } };
          const open = dev.open.get(ack.id);
          if (open === undefined) return; // a repeated ack
          dev.open.delete(ack.id);
          ackLatency.push(performance.now() - open.t);
          statuses[ack.status] = (statuses[ack.status] ?? 0) + 1;
          if (this.display && ack.stock) this.expect(dev.d.wh, open.sku, ack.stock.onHand, open.t);
          close(dev);
        };
      }
      watchdog = setInterval(() => {
        if (performance.now() - lastProgress < stallMs) return;
        stop();
        reject(new Error(`no progress for ${stallMs} ms: ${doneAt.length} of ${total} events closed (${o.until})`));
      }, 1_000);
      if (o.rate > 0) {
        // ms: paces a fixed rate; each device gets its share of what the elapsed time allows. Each device is
        // offset by its share of one period, as real scanners are not synchronised: with one quota for all,
        // all 200 devices published at once every period (every 100 ms at 2,000/s), and the fixed-rate
        // latency measured those bursts (ack p50 55 ms at 200 events/s; 17 ms with 10 devices).
        const perDevice = o.rate / count;
        const tick = () => {
          const periods = ((performance.now() - t0) / 1000) * perDevice;
          for (const dev of this.devices) {
            dev.quota = Math.floor(periods + dev.index / count);
            pump(dev);
          }
        };
        ticker = setInterval(tick, 5);
        tick();
      } else for (const dev of this.devices) pump(dev);
    });
  }

  async close(): Promise<void> {
    await Promise.all([...this.devices.map((d) => d.client.end()), this.display?.end()]);
    this.devices = [];
    this.display = null;
  }
}
