import net from 'node:net';
import { Aedes } from 'aedes';
import { migrate } from '../processors/db/migrate.js';
import { createPool } from '../processors/db/pool.js';

/**
 * Baseline (c): the processor most people would write first. An Aedes broker in its own process
 * whose subscriber commits one transaction per message — inbox key, event row, stock upsert — on a
 * pool of 10 connections, then acks the device with the row's onHand. No batching, no validation
 * beyond JSON.parse. Prints {"ready":true,"mqtt":PORT}. DATABASE_URL names a database it may migrate.
 */
const url = process.env.DATABASE_URL;
if (!url) throw new Error('DATABASE_URL is required');
const pool = createPool({ url, max: 10 });
await migrate(pool);

async function commit(
  wh: string,
  device: string,
  e: { id: string; type: string; sku: string; qty: number; ts?: number },
  raw: string,
): Promise<{ status: string; onHand?: number }> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const fresh = await client.query(
      `INSERT INTO inbox (wh, device, id, sku) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1`,
      [wh, device, e.id, e.sku],
    );
    if (fresh.rowCount === 0) {
      await client.query('ROLLBACK');
      return { status: 'duplicate' };
    }
    const delta = e.type === 'shipped' ? -e.qty : e.qty;
    const ts = new Date(e.ts ?? Date.now()).toISOString();
    await client.query(
      `INSERT INTO events (ts, wh, device, id, type, sku, qty, delta, payload, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())`,
      [ts, wh, device, e.id, e.type, e.sku, e.qty, delta, raw],
    );
    const { rows } = await client.query<{ on_hand: string }>(
      `INSERT INTO stock (wh, sku, on_hand, version) VALUES ($1, $2, $3, 1)
       ON CONFLICT (wh, sku) DO UPDATE SET on_hand = stock.on_hand + EXCLUDED.on_hand, version = stock.version + 1, updated_at = now()
       RETURNING on_hand`,
      [wh, e.sku, delta],
    );
    await client.query('COMMIT');
    return { status: 'applied', onHand: Number(rows[0]?.on_hand) };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

const aedes = await Aedes.createBroker({});
aedes.subscribe(
  'wh/+/dev/+/event',
  (packet, cb) => {
    const [, wh = '', , device = ''] = packet.topic.split('/');
    const raw = packet.payload.toString();
    setImmediate(cb); // the next message need not wait for this one's commit
    const e = JSON.parse(raw) as { id: string; type: string; sku: string; qty: number; ts?: number };
    void commit(wh, device, e, raw).then(
      (r) => {
        const ack = {
          id: e.id,
          status: r.status,
          ...(r.onHand !== undefined && { stock: { onHand: r.onHand, available: r.onHand } }),
        };
        aedes.publish(
          {
            cmd: 'publish',
            topic: `wh/${wh}/dev/${device}/ack`,
            payload: Buffer.from(JSON.stringify(ack)),
            qos: 1,
            retain: false,
            dup: false,
          },
          () => {},
        );
      },
      (err: Error) => process.stderr.write(`naive processor: ${err.message}\n`),
    );
  },
  () => {},
);
const server = net.createServer(aedes.handle);
server.listen(0, '127.0.0.1', () =>
  process.stdout.write(`${JSON.stringify({ ready: true, mqtt: (server.address() as net.AddressInfo).port })}\n`),
);
process.on('SIGTERM', () => void pool.end().finally(() => process.exit(0)));
