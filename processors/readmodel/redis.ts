import type pg from 'pg';
import { createClient } from 'redis';
import type { Logger } from 'pino';
import type { GlobalStock, WarehouseStock } from '../../protocol/index.js';
import type { IngestMetrics } from '../metrics.js';
import type { Publisher } from '../publish/publisher.js';
import { republishStock } from './republish.js';
import { DatabaseStock } from '../db/stock.js';
import type { ReadModel } from '../publish/read-model.js';
import { MemoryReadModel } from './readmodel.js';

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

const ANSWER_WITHIN_MS = 1_000; // a Redis that takes longer is treated as away (a hung server keeps its sockets open)
const CATCH_UP_AGAIN_MS = 200; // ms before another catch-up, for rows whose write failed during the last one
const READY_AGAIN_MS = 1_000; // ms before the reconnect check runs again when Redis refused it (LOADING while it reads its data back)
const ANY_INSTANCE = 'any'; // the marker's value where INFO is not allowed: it then tells only an empty Redis
const PROBE_EVERY_MS = 1_000;
const SILENT: Publisher = { publish: async () => {} }; // a resync writes the read model only, no MQTT // while it is treated as away, a PING this often tells when it answers again

/** Rejects when `p` takes longer than `ms`; `p` itself may still settle later (its outcome is then ignored). */
function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>(
    (_r, reject) => (t = setTimeout(() => reject(new Error(`redis did not answer within ${ms} ms`)), ms)),
  );
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

/**
 * Stock read model in Redis, shared by every API instance. Redis trouble never stops
 * ingest: a failed write is counted and logged, and reads fall back to PostgreSQL.
 */
export class RedisReadModel implements ReadModel {
  private readonly client: Client;
  private readonly db: DatabaseStock;
  /** rows and skus whose write failed: rewritten from the database once Redis is back (else their cached stock stays old) */
  private readonly missed = new Map<string, { wh: string; sku: string } | { sku: string }>();
  private catchingUp: Promise<void> | null = null;
  private resyncing = false;
  /**
   * Set once the whole read model was written, to the Redis instance's run_id (new at every start). After a
   * reconnect a missing marker means Redis lost our keys, and another run_id that it restarted, perhaps from an
   * older snapshot that lacks later writes: either way the whole read model is rewritten.
   */
  private readonly marker: string;
  /** a command went unanswered: writes and reads skip Redis until a PING answers (post-commit acks must never wait on it) */
  private hung = false;
  private probe: NodeJS.Timeout | null = null;

  constructor(
    url: string,
    private readonly pool: pg.Pool,
    private readonly prefix: string,
    private readonly metrics: IngestMetrics,
    private readonly log: Logger,
    readPool: pg.Pool = pool,
  ) {
    this.db = new DatabaseStock(readPool);
    this.marker = `${prefix}synced`;
    this.client = createClient({
      url,
      disableOfflineQueue: true, // fail at once while disconnected, never queue behind a dead Redis
      socket: { connectTimeout: 2_000, reconnectStrategy: (retries: number) => Math.min(100 * 2 ** retries, 5_000) }, // ms
    });
    this.client.on('error', (err: Error) => this.log.warn({ err: err.message }, 'redis error'));
    this.client.on('ready', () => void this.onReady());
  }

  /** Redis's run_id, or ANY_INSTANCE where INFO is not allowed (some managed services). */
  private async instance(): Promise<string> {
    try {
      const info = await this.answered(this.client.info('server'));
      return /^run_id:(\w+)/m.exec(info)?.[1] ?? ANY_INSTANCE;
    } catch (err) {
      if (this.hung || /^LOADING/.test((err as Error).message)) throw err;
      return ANY_INSTANCE;
    }
  }

  /**
   * Every (re)connect: a Redis that restarted empty, or from an older snapshot, lacks rows no write failed
   * for, so unless our marker names this very instance the whole read model is rewritten from the database;
   * otherwise only the failed writes are.
   */
  private async onReady(): Promise<void> {
    let instance: string;
    let marked: string | null;
    try {
      instance = await this.instance();
      marked = await this.answered(this.client.get(this.marker));
    } catch (err) {
      // Not answering: the probe runs this again once Redis does. Refused (LOADING while a restarted Redis reads
      // its data back, or any other error): again shortly, else the rows whose writes failed keep old values there.
      if (!this.hung) {
        this.log.warn({ err: (err as Error).message }, 'redis refused the reconnect check; trying again');
        setTimeout(() => this.client.isReady && !this.hung && void this.onReady(), READY_AGAIN_MS).unref();
      }
      return;
    }
    const lost = marked === null || (instance !== ANY_INSTANCE && marked !== instance);
    if (lost && !this.resyncing) {
      this.resyncing = true;
      try {
        const started = Date.now();
        this.missed.clear(); // the full rewrite covers them; writes failing meanwhile are noted again
        const count = await republishStock(this.pool, SILENT, this);
        await this.answered(this.client.set(this.marker, instance));
        const why =
          marked === null
            ? 'Redis held none of our keys'
            : 'Redis restarted since it was last written: it may lack later writes';
        this.log.info({ ...count, ms: Date.now() - started }, `read model rewritten from the database (${why})`);
      } catch (err) {
        this.log.warn(
          { err: (err as Error).message },
          'rewriting the read model failed; retried on the next reconnect',
        );
      } finally {
        this.resyncing = false;
      }
    }
    await this.catchUp();
  }

  /** Rewrites, from the database, what failed to reach Redis while it was away. Version-checked like every write. */
  private catchUp(): Promise<void> {
    if (this.catchingUp || this.missed.size === 0) return this.catchingUp ?? Promise.resolve();
    const todo = [...this.missed.values()];
    this.missed.clear();
    this.catchingUp = (async () => {
      const warehouse: WarehouseStock[] = [];
      const global: GlobalStock[] = [];
      for (const m of todo) {
        const s = 'wh' in m ? await this.db.warehouse(m.wh, m.sku) : await this.db.global(m.sku);
        if (s && 'warehouse' in s) warehouse.push(s);
        else if (s) global.push(s as GlobalStock);
      }
      await this.write(warehouse, global); // a failure puts them back into `missed`
      this.log.info(
        { rows: warehouse.length, skus: global.length, pending: this.missed.size },
        'read model caught up after a Redis outage',
      );
    })()
      .catch((err: Error) => {
        for (const m of todo) this.missed.set('wh' in m ? this.whKey(m.wh, m.sku) : this.skuKey(m.sku), m);
        this.log.warn({ err: err.message }, 'read model catch-up failed; retried on the next reconnect');
      })
      .finally(() => {
        this.catchingUp = null;
        // Writes that failed while this catch-up ran (it had already taken its list) wait for the next one.
        if (this.missed.size > 0 && this.client.isReady && !this.hung)
          setTimeout(() => void this.catchUp(), CATCH_UP_AGAIN_MS).unref();
      });
    return this.catchingUp;
  }

  async start(): Promise<void> {
    // A Redis that is down at start is tolerated: the client keeps reconnecting and reads use PostgreSQL.
    await this.client
      .connect()
      .catch((err: Error) => this.log.warn({ err: err.message }, 'redis not reachable at start'));
  }

  private whKey = (wh: string, sku: string) => `${this.prefix}wh:${wh}:stock:${sku}`;
  private skuKey = (sku: string) => `${this.prefix}stock:${sku}`;

  async write(warehouse: WarehouseStock[], global: GlobalStock[]): Promise<void> {
    if (warehouse.length + global.length === 0) return;
    const keys: string[] = [];
    const args: string[] = [];
    for (const s of warehouse) {
      keys.push(this.whKey(s.warehouse, s.sku));
      args.push(String(s.version), JSON.stringify(s));
    }
    for (const g of global) {
      keys.push(this.skuKey(g.sku));
      args.push(String(g.version), JSON.stringify(g));
    }
    try {
      if (!this.client.isReady) throw new Error('redis not connected');
      if (this.hung) throw new Error('redis not answering');
      await this.answered(this.client.eval(SET_NEWER, { keys, arguments: args }));
    } catch (err) {
      this.metrics.readModelErrors.inc({ op: 'write' });
      this.log.warn({ err: (err as Error).message, keys: keys.length }, 'read model write failed');
      for (const s of warehouse) this.missed.set(this.whKey(s.warehouse, s.sku), { wh: s.warehouse, sku: s.sku });
      for (const g of global) this.missed.set(this.skuKey(g.sku), { sku: g.sku });
      // A reconnect that happened meanwhile already fired 'ready': catch up now.
      if (this.client.isReady && !this.hung) void this.catchUp();
    }
  }

  /** `p`, unless Redis takes longer than ANSWER_WITHIN_MS: then it counts as hung until a PING answers. */
  private async answered<T>(p: Promise<T>): Promise<T> {
    try {
      return await within(p, ANSWER_WITHIN_MS);
    } catch (err) {
      if (!this.hung && (err as Error).message.startsWith('redis did not answer')) {
        this.hung = true;
        this.log.warn({ ms: ANSWER_WITHIN_MS }, 'redis not answering; the read model skips it until it does');
        this.probe = setInterval(() => {
          if (!this.client.isReady) return;
          void within(this.client.ping(), ANSWER_WITHIN_MS).then(
            () => {
              if (!this.hung) return;
              this.hung = false;
              if (this.probe) {
                clearInterval(this.probe);
                this.probe = null;
              }
              this.log.info('redis answers again');
              void this.onReady(); // it may also have restarted meanwhile
            },
            () => {},
          );
        }, PROBE_EVERY_MS);
        this.probe.unref();
      }
      throw err;
    }
  }

  private async read<T>(key: string, fallback: () => Promise<T | null>): Promise<T | null> {
    try {
      if (this.client.isReady && !this.hung) {
        const json = await this.answered(this.client.hGet(key, 'json'));
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
    if (this.probe) {
      clearInterval(this.probe);
      this.probe = null;
    }
    // quit() waits for a reconnect that may never come: only a connected client quits politely.
    if (this.client.isReady) await this.client.quit().catch(() => this.client.destroy());
    else if (this.client.isOpen) this.client.destroy();
  }
}

/**
 * REDIS_URL set: the shared Redis model; unset: the in-process model backed by the database. Reads that
 * fall through to the database use `db.readPool` (time-limited); a resync of Redis reads every row on `db.pool`.
 */
export async function createReadModel(
  o: { redisUrl?: string; redisPrefix: string },
  db: { pool: pg.Pool; readPool: pg.Pool },
  metrics: IngestMetrics,
  log: Logger,
): Promise<ReadModel> {
  if (!o.redisUrl) return new MemoryReadModel(db.readPool);
  const redis = new RedisReadModel(o.redisUrl, db.pool, o.redisPrefix, metrics, log, db.readPool);
  await redis.start();
  return redis;
}
