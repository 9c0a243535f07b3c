import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import type { SimSummary } from '../../device-sim/report.js';
import { createPool } from '../../processors/db/pool.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { interrupt, spawnStockwire, startDemo, stockwire, type Demo } from '../helpers/demo.js';
import { testSeed } from '../helpers/seed.js';

describe('stockwire sim against a running demo', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  let demo: Demo;
  before(async () => {
    db = await createTestDatabase('sim');
    pool = createPool({ url: db.url, max: 2 });
    demo = await startDemo(['--sim-rate', '0'], { DATABASE_URL: db.url, REDIS_URL: undefined });
  });
  after(async () => {
    if (demo) assert.equal(await interrupt(demo.run), 0, demo.run.logs.slice(-20).join('\n'));
    await pool.end();
    await db.drop();
    if (demo) await fs.rm(demo.dataDir, { recursive: true, force: true });
  });

  it("--verify with every fault on finds central's stock exactly as the ledger predicts", {
    timeout: 200_000,
  }, async (t) => {
    const r = await stockwire([
      'sim',
      '--data-dir',
      demo.dataDir,
      '--count',
      '300',
      '--rate',
      '100',
      '--seed',
      '42',
      '--faults',
      'all',
      '--disconnect-every',
      '2',
      '--skew',
      '0.3',
      '--verify',
      '--format',
      'json',
    ]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr.slice(-3000)}`);
    const s = JSON.parse(r.stdout) as SimSummary;
    t.diagnostic(
      `sim --verify: ${JSON.stringify({ stats: s.stats, rows: s.verify?.rows, outstanding: s.verify?.outstanding })}`,
    );
    assert.deepEqual(s.verify?.differences, []);
    assert.deepEqual(s.verify?.unexpectedRejections, []);
    assert.equal(s.verify?.committed, true);
    assert.equal(s.stats.events + s.stats.malformed, 300);
    // every fault really happened, or the zero above would prove less than it claims
    for (const k of ['duplicates', 'malformed', 'reordered', 'drops', 'reconnects', 'rejectedAsExpected'] as const)
      assert.ok(s.stats[k] > 0, `${k}: ${s.stats[k]}`);
    assert.ok(s.stats.skews['far-ahead'] + s.stats.skews.absent > 0, 'some events were time-stamped by the edge');
    assert.ok(s.stats.skews.behind + s.stats.skews.ahead > 0);
    // and central saw them: the malformed ones sit in its dead-letter store
    const { rows } = await pool.query<{ n: string }>('SELECT count(*) AS n FROM dead_letters');
    assert.ok(Number(rows[0]?.n) >= s.stats.malformed, `dead letters ${rows[0]?.n} for ${s.stats.malformed} malformed`);
  });

  it('--verify reports a stock row changed behind its back and exits 1', { timeout: 120_000 }, async () => {
    const prefix = `tamper${randomBytes(2).toString('hex')}-`;
    // Receipts and shipments only: a count would recompute the row from the event log and erase the tampering.
    const run = spawnStockwire([
      'sim',
      '--data-dir',
      demo.dataDir,
      '--seed',
      String(testSeed('device-sim/sim')),
      '--warehouses',
      'WH1',
      '--skus',
      '1',
      '--mix',
      'received=1,shipped=1',
      '--rate',
      '40',
      '--duration',
      '4',
      '--sku-prefix',
      prefix,
      '--seed',
      '5',
      '--verify',
      '--format',
      'json',
    ]);
    // Once central has the row, add 1000 in the database; the sim's next events carry it into the API.
    const deadline = Date.now() + 20_000;
    let tampered = 0;
    while (tampered === 0 && Date.now() < deadline) {
      tampered =
        (await pool.query(`UPDATE stock SET on_hand = on_hand + 1000 WHERE wh = 'WH1' AND sku = $1`, [`${prefix}001`]))
          .rowCount ?? 0;
      if (tampered === 0) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(tampered, 1, `the sim never created ${prefix}001: ${run.stderr().slice(-2000)}`);
    const r = await run.done;
    assert.equal(r.code, 1, `${r.stdout}\n${r.stderr.slice(-2000)}`);
    const s = JSON.parse(r.stdout) as SimSummary;
    assert.equal(s.verify?.differences.length, 1, JSON.stringify(s.verify));
    const d = s.verify?.differences[0];
    assert.equal(d?.sku, `${prefix}001`);
    assert.equal((d?.actual ?? 0) - (d?.expected ?? 0), 1000);

    // The text summary names it too, and a second run on the same skus is refused before it sends anything.
    const again = await stockwire([
      'sim',
      '--data-dir',
      demo.dataDir,
      '--seed',
      String(testSeed('device-sim/sim again')),
      '--warehouses',
      'WH1',
      '--skus',
      '1',
      '--count',
      '5',
      '--sku-prefix',
      prefix,
      '--verify',
    ]);
    assert.equal(again.code, 2, again.stderr);
    assert.match(again.stderr, new RegExp(`already have stock at central \\(WH1/${prefix}001\\)`));
  });

  it("Ctrl-C stops a run that has no end, waits for the edges' PUBACKs and prints what it sent (exit 0)", {
    timeout: 60_000,
  }, async () => {
    const run = spawnStockwire(['sim', '--data-dir', demo.dataDir, '--rate', '50', '--seed', '3']);
    const deadline = Date.now() + 30_000;
    // the first progress line: devices connected, events on the way
    while (!/sim \d+s sending: [1-9]/.test(run.stderr()) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    run.child.kill('SIGINT');
    const r = await run.done;
    assert.equal(r.code, 0, r.stderr.slice(-2000));
    assert.match(
      r.stderr,
      /stockwire sim: run [0-9a-f]{6}, seed 3, 10 devices in WH1, WH2, 50 events\/s, .*until Ctrl-C/,
    );
    assert.match(r.stderr, /stockwire sim: stopping/);
    assert.match(r.stdout, /^run [0-9a-f]{6} \(seed 3\): [1-9]\d* events from 10 devices in WH1, WH2/m);
    const [, acked, sent] = /(\d+) of (\d+) publishes acknowledged by the edges/.exec(r.stdout) ?? [];
    assert.equal(acked, sent, 'every publish got its PUBACK before the end');
    assert.doesNotMatch(r.stdout, /verify:/);
  });

  it('bad flags exit 2 with every problem listed', async () => {
    const r = await stockwire([
      'sim',
      '--data-dir',
      demo.dataDir,
      '--rate',
      '0',
      '--skew',
      '2',
      '--mix',
      'stolen=1',
      '--faults',
      'bogus',
      '--format',
      'xml',
    ]);
    assert.equal(r.code, 2);
    for (const flag of ['--rate', '--skew', '--mix', '--faults', '--format'])
      assert.ok(r.stderr.includes(flag), `names ${flag}: ${r.stderr}`);
    const both = await stockwire([
      'sim',
      '--data-dir',
      demo.dataDir,
      '--count',
      '5',
      '--duration',
      '5',
      '--scanners',
      '99',
      '--warehouses',
      'WH1,WH9',
    ]);
    assert.equal(both.code, 2);
    for (const problem of ['--count and --duration', '--scanners 99', 'WH9 has no edge'])
      assert.ok(both.stderr.includes(problem), `names ${problem}: ${both.stderr}`);
    assert.equal((await stockwire(['sim', '--verify=yes'])).code, 2);
  });

  it('with no demo running and no --edges it says so (exit 2)', async () => {
    const empty = await fs.mkdtemp(path.join(os.tmpdir(), 'stockwire-nosim-'));
    const r = await stockwire(['sim', '--data-dir', empty, '--count', '1']);
    assert.equal(r.code, 2);
    assert.match(
      r.stderr,
      /no demo is running on .* \(no demo-endpoints.json\): start `stockwire demo --data-dir .*`, or give --edges/,
    );
    await fs.rm(empty, { recursive: true });
  });

  it("a credential the edge refuses ends the run with the edge's answer (exit 1)", async () => {
    const file = path.join(demo.dataDir, 'wrong-credentials.json');
    await fs.writeFile(file, JSON.stringify([{ ...demo.cred('scan-wh1-1'), password: 'not-the-password' }]));
    const r = await stockwire([
      'sim',
      '--data-dir',
      demo.dataDir,
      '--credentials',
      file,
      '--warehouses',
      'WH1',
      '--count',
      '1',
    ]);
    assert.equal(r.code, 1);
    assert.match(
      r.stdout,
      /error: scan-wh1-1 could not connect to the WH1 edge at mqtt:\/\/127\.0\.0\.1:\d+: .*(Bad username or password|Not authorized)/i,
    );
  });
});
