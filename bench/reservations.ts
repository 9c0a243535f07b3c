import { randomBytes } from 'node:crypto';
import { createPool } from '../processors/db/pool.js';
import { migrate } from '../processors/db/migrate.js';
import { createTestDatabase } from '../test/helpers/db.js';
import { writeDevices } from '../test/helpers/devices.js';
import { startStockwire } from '../test/helpers/process.js';
import { percentile, record } from './lib.js';

/**
 * Reservation commands through `stockwire central`'s HTTP API into PostgreSQL (issue 4/7): one hot
 * sku (every request waits for the same row lock), allocation across warehouses (two row locks), many
 * skus (no contention), and repeats of used Idempotency-Keys (answered from the stored answer).
 */
const REQUESTS = Number(process.env.BENCH_RESERVATIONS ?? 3_000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
const SKUS = 1_000;
const TOKEN = randomBytes(32).toString('base64url'); // API_TOKEN of the central under test: writes need it

const progress = (what: string) => process.stderr.write(`[bench] ${what}\n`);

interface Run {
  name: string;
  perSecond: number;
  p50: number;
  p99: number;
  statuses: Record<number, number>;
}

async function drive(
  base: string,
  name: string,
  body: (i: number) => unknown,
  key: (i: number) => string,
): Promise<Run> {
  const latencies: number[] = [];
  const statuses: Record<number, number> = {};
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (let i = next++; i < REQUESTS; i = next++) {
        const s = performance.now();
        const res = await fetch(`${base}/v1/reservations`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': key(i), authorization: `Bearer ${TOKEN}` },
          body: JSON.stringify(body(i)),
        });
        await res.arrayBuffer();
        latencies.push(performance.now() - s);
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  progress(`${name}: ${Math.round(REQUESTS / seconds)}/s`);
  return {
    name,
    perSecond: REQUESTS / seconds,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    statuses,
  };
}

export async function benchReservations(): Promise<void> {
  const db = await createTestDatabase('bench_resv');
  const pool = createPool({ url: db.url, max: 2 });
  const devices = await writeDevices([
    { id: 'bench-display', warehouse: 'W1', kind: 'display', password: 'pw-bench-display' },
  ]);
  try {
    await migrate(pool);
    // Plenty of stock, so every request is granted and each one does the whole write path.
    await pool.query(
      `INSERT INTO stock (wh, sku, on_hand, version) SELECT wh, 'SKU-' || n, 10000000, 1 FROM unnest(ARRAY['W1', 'W2']) wh, generate_series(0, ${SKUS - 1}) n`,
    );
    await pool.query(
      `INSERT INTO sku_versions (sku, version) SELECT 'SKU-' || n, 1 FROM generate_series(0, ${SKUS - 1}) n`,
    );
    const central = await startStockwire(
      [
        'central',
        '--mqtt-port',
        '0',
        '--ws-port',
        '0',
        '--http-port',
        '0',
        '--host',
        '127.0.0.1',
        '--devices-file',
        devices.file,
        '--data-dir',
        devices.dir,
      ],
      { DATABASE_URL: db.url, LOG_LEVEL: 'warn', API_TOKEN: TOKEN },
    );
    const base = `http://127.0.0.1:${central.ports.http}`;
    const runs = [
      await drive(
        base,
        'one hot sku, warehouse named',
        () => ({ sku: 'SKU-0', qty: 1, warehouse: 'W1' }),
        (i) => `hot-${i}`,
      ),
      await drive(
        base,
        'one hot sku, allocated (most-available over 2)',
        () => ({ sku: 'SKU-1', qty: 1 }),
        (i) => `alloc-${i}`,
      ),
      await drive(
        base,
        `${SKUS} skus, warehouse named`,
        (i) => ({ sku: `SKU-${i % SKUS}`, qty: 1, warehouse: 'W2' }),
        (i) => `spread-${i}`,
      ),
      await drive(
        base,
        'repeated keys (stored answers)',
        (i) => ({ sku: `SKU-${i % SKUS}`, qty: 1, warehouse: 'W2' }),
        (i) => `spread-${i}`,
      ),
    ];
    central.child.kill('SIGTERM');
    await central.exited;
    record(
      'Reservations (HTTP → PostgreSQL)',
      `BENCH_RESERVATIONS=${REQUESTS} BENCH_CONCURRENCY=${CONCURRENCY} npm run bench -- reservations`,
      [
        `${REQUESTS} POST /v1/reservations per row, ${CONCURRENCY} in flight, against a \`stockwire central\` process; every request granted (or answered from its stored key).`,
        '',
        '| scenario | requests/s | p50 ms | p99 ms | statuses |',
        '| --- | ---: | ---: | ---: | --- |',
        ...runs.map(
          (r) =>
            `| ${r.name} | ${Math.round(r.perSecond)} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${Object.entries(
              r.statuses,
            )
              .map(([s, n]) => `${s}×${n}`)
              .join(' ')} |`,
        ),
      ],
    );
  } finally {
    await pool.end();
    await db.drop();
  }
}
