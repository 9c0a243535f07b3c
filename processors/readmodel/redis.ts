import type pg from 'pg';
import { createClient } from 'redis';
import type { Logger } from 'pino';
import type { GlobalStock, WarehouseStock } from '../../protocol/index.js';
import type { IngestMetrics } from '../metrics.js';
import { DatabaseStock, MemoryReadModel, type ReadModel } from './readmodel.js';

// Sets each key only when its version is newer: several processors may write out of order.
const SET_NEWER = `
for i, key in ipairs(KEYS) do
  local v = tonumber(ARGV[i * 2 - 1])
  local cur = redis.call('HGET', key, 'v')
  if (not cur) or tonumber(cur) < v then
    redis.call('HSET', key, 'v', ARGV[i * 2 - 1], 'json', ARGV[i * 2])
  end
end
return #KEYS`;

type Client = ReturnType<typeof createClient>;

/**
 * Stock read model in Redis, shared by every API instance. Redis trouble never stops
 * ingest: a failed write is counted and logged, and reads fall back to PostgreSQL.
 */
export class RedisReadModel implements ReadModel {
  private readonly client: Client;
  private readonly db: DatabaseStock;

  constructor(
    url: string,
    pool: pg.Pool,
    private readonly prefix: string,
    private readonly metrics: IngestMetrics,
    private readonly log: Logger,
  ) {
    this.db = new DatabaseStock(pool);
    this.client = createClient({
      url,
      disableOfflineQueue: true, // fail at once while disconnected, never queue behind a dead Redis
      socket: { connectTimeout: 2_000, reconnectStrategy: (retries: number) => Math.min(100 * 2 ** retries, 5_000) }, // ms
    });
    this.client.on('error', (err: Error) => this.log.warn({ err: err.message }, 'redis error'));
  }

  async start(): Promise<void> {
    // A Redis that is down at start is tolerated: the client keeps reconnecting and reads use PostgreSQL.
    await this.client.connect().catch((err: Error) => this.log.warn({ err: err.message }, 'redis not reachable at start'));
  }

  private whKey = (wh: string, sku: string) => `${this.prefix}wh:${wh}:stock:${sku}`;
  private skuKey = (sku: string) => `${this.prefix}stock:${sku}`;

  async write(warehouse: WarehouseStock[], global: GlobalStock[]): Promise<void> {
    if (warehouse.length + global.length === 0) return;
    const keys: string[] = [];
    const args: string[] = [];
    for (const s of warehouse) keys.push(this.whKey(s.warehouse, s.sku)), args.push(String(s.version), JSON.stringify(s));
    for (const g of global) keys.push(this.skuKey(g.sku)), args.push(String(g.version), JSON.stringify(g));
    try {
      if (!this.client.isReady) throw new Error('redis not connected');
      await this.client.eval(SET_NEWER, { keys, arguments: args });
    } catch (err) {
      this.metrics.readModelErrors.inc({ op: 'write' });
      this.log.warn({ err: (err as Error).message, keys: keys.length }, 'read model write failed');
    }
  }

  private async read<T>(key: string, fallback: () => Promise<T | null>): Promise<T | null> {
    try {
      if (this.client.isReady) {
        const json = await this.client.hGet(key, 'json');
        if (json) return JSON.parse(json) as T;
      }
    } catch (err) {
      this.metrics.readModelErrors.inc({ op: 'read' });
      this.log.warn({ err: (err as Error).message }, 'read model read failed; reading the database');
    }
    return fallback();
  }

  warehouse(wh: string, sku: string): Promise<WarehouseStock | null> {
    return this.read(this.whKey(wh, sku), () => this.db.warehouse(wh, sku));
  }

  global(sku: string): Promise<GlobalStock | null> {
    return this.read(this.skuKey(sku), () => this.db.global(sku));
  }

  async close(): Promise<void> {
    // quit() waits for a reconnect that may never come: only a connected client quits politely.
    if (this.client.isReady) await this.client.quit().catch(() => this.client.destroy());
    else if (this.client.isOpen) this.client.destroy();
  }
}

/** REDIS_URL set: the shared Redis model; unset: the in-process model backed by the database. */
export async function createReadModel(o: { redisUrl?: string; redisPrefix: string }, pool: pg.Pool, metrics: IngestMetrics, log: Logger): Promise<ReadModel> {
  if (!o.redisUrl) return new MemoryReadModel(pool);
  const redis = new RedisReadModel(o.redisUrl, pool, o.redisPrefix, metrics, log);
  await redis.start();
  return redis;
}
