import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import { createPool } from '../../processors/db/pool.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices, type TestDevice } from '../helpers/devices.js';
import { freePort, startStockwire, type Running } from '../helpers/process.js';
import { PubackDevices } from '../helpers/puback-devices.js';
import { assertExact, waitApplied } from '../helpers/exactly-once.js';
import { workload } from '../helpers/workload.js';

const MOSQUITTO = process.env.MOSQUITTO_URL ?? 'mqtt://127.0.0.1:1883';
const DEVICES = 10;

async function edgeMetric(edge: Running, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${edge.ports.http}/metrics`)).text();
  return Number(
    text
      .split('\n')
      .find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`))
      ?.split(' ')[1] ?? NaN,
  );
}

// kill -9 of the edge and of central under load: test/faults/kill.test.ts (several kills per run).
describe('edge faults with real processes', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  before(async () => {
    db = await createTestDatabase('edge_faults');
    pool = createPool({ url: db.url, max: 2 });
  });
  after(async () => {
    await pool.end();
    await db.drop();
  });

  async function setup(wh: string) {
    const scanners: TestDevice[] = Array.from({ length: DEVICES }, (_, i) => ({
      id: `dev-${i}`,
      warehouse: wh,
      kind: 'scanner' as const,
      password: `pw-dev-${i}-x`,
    }));
    const files = await writeDevices([
      ...scanners,
      { id: `gw-${wh}`, warehouse: wh, kind: 'gateway', password: 'pw-gateway-x' },
      { id: `disp-${wh}`, warehouse: wh, kind: 'display', password: 'pw-display-x' },
    ]);
    const centralPort = await freePort();
    const edgePort = await freePort();
    const centralArgs = [
      'central',
      '--mqtt-port',
      String(centralPort),
      '--ws-port',
      '0',
      '--http-port',
      '0',
      '--host',
      '127.0.0.1',
      '--devices-file',
      files.file,
      '--data-dir',
      files.dir,
    ];
    const edgeArgs = (centralUrl: string, auth: boolean) => [
      'edge',
      '--warehouse',
      wh,
      '--devices-file',
      files.file,
      '--data-dir',
      path.join(files.dir, 'edge'),
      '--mqtt-port',
      String(edgePort),
      '--ws-port',
      '0',
      '--http-port',
      '0',
      '--host',
      '127.0.0.1',
      '--central-url',
      centralUrl,
      '--resend-after-ms',
      '3000',
      '--keepalive',
      '3',
      // Each test device sends thousands of events as fast as the edge takes them: far above a scanner's default rate.
      '--device-publish-rate',
      '1000000',
      '--device-publish-burst',
      '1000000',
      ...(auth ? ['--central-username', `gw-${wh}`, '--central-password', 'pw-gateway-x'] : []),
    ];
    const devices = new PubackDevices(
      `mqtt://127.0.0.1:${edgePort}`,
      wh,
      scanners.map((s) => ({ id: s.id, password: s.password })),
    );
    return { centralArgs, edgeArgs, centralUrl: `mqtt://127.0.0.1:${centralPort}`, devices };
  }

  it('central unreachable while devices publish 100,000 events: PUBACKs continue; when central returns stock is exact and the backlog drains', {
    timeout: 400_000,
  }, async () => {
    const wh = `WH${randomBytes(3).toString('hex')}`;
    const { events, expected } = workload(wh, 100_000, 23, { devices: DEVICES });
    const s = await setup(wh);
    const env = { DATABASE_URL: db.url };
    const edge = await startStockwire(s.edgeArgs(s.centralUrl, true), env);
    let central: Running | null = null;
    try {
      await s.devices.run(events); // resolves only when every event got its PUBACK, with central down
      assert.equal(await edgeMetric(edge, 'stockwire_edge_backlog_events'), 100_000);
      assert.equal(await edgeMetric(edge, 'stockwire_edge_link_up'), 0);
      central = await startStockwire(s.centralArgs, env);
      await waitApplied(pool, wh, 100_000, 240_000);
      await assertExact(pool, wh, 100_000, expected);
      for (let i = 0; i < 300 && (await edgeMetric(edge, 'stockwire_edge_backlog_events')) !== 0; i++)
        await new Promise((r) => setTimeout(r, 100));
      assert.equal(await edgeMetric(edge, 'stockwire_edge_backlog_events'), 0, 'the backlog drained');
    } finally {
      await s.devices.close();
      edge.child.kill('SIGTERM');
      central?.child.kill('SIGTERM');
      await edge.exited;
      await central?.exited;
    }
  });

  it("bridge interop: the machine's Mosquitto as central with stockwire processor behind it", {
    timeout: 120_000,
  }, async () => {
    const wh = `WM${randomBytes(3).toString('hex')}`;
    const { events, expected } = workload(wh, 2_000, 24, { devices: DEVICES });
    const s = await setup(wh);
    const env = { DATABASE_URL: db.url };
    const processor = await startStockwire(
      [
        'processor',
        '--central-url',
        MOSQUITTO,
        '--warehouses',
        wh,
        '--instance',
        wh,
        '--http-port',
        '0',
        '--host',
        '127.0.0.1',
      ],
      env,
    );
    const edge = await startStockwire(s.edgeArgs(MOSQUITTO, false), env);
    try {
      await s.devices.run(events);
      await waitApplied(pool, wh, 2_000, 60_000);
      await assertExact(pool, wh, 2_000, expected);
      for (let i = 0; i < 300 && (await edgeMetric(edge, 'stockwire_edge_backlog_events')) !== 0; i++)
        await new Promise((r) => setTimeout(r, 100));
      assert.equal(
        await edgeMetric(edge, 'stockwire_edge_backlog_events'),
        0,
        "confirmed by the processor's commit acks through Mosquitto",
      );
    } finally {
      await s.devices.close();
      edge.child.kill('SIGTERM');
      processor.child.kill('SIGTERM');
      await edge.exited;
      await processor.exited;
    }
  });
});
