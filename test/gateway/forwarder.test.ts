import assert from 'node:assert/strict';
import net from 'node:net';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { Aedes } from 'aedes';
import pino from 'pino';
import { Registry } from 'prom-client';
import { Forwarder } from '../../gateway/forwarder.js';
import { createEdgeMetrics } from '../../gateway/metrics.js';
import { MemoryOutbox } from '../../gateway/outbox/index.js';

describe('forwarder', () => {
  it('an outbox that fails to read is logged and retried, never an unhandled rejection that kills the edge', { timeout: 30_000 }, async () => {
    const aedes = await Aedes.createBroker({});
    const server = net.createServer(aedes.handle);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const lines: string[] = [];
    const log = pino({ level: 'error' }, new Writable({ write: (chunk, _enc, cb) => (lines.push(String(chunk)), cb()) }));
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    const outbox = new MemoryOutbox(1_000_000);
    await outbox.append({ device: 'd1', eventId: 'e1', topic: 'wh/W/dev/d1/event', payload: Buffer.from('{}'), receivedAt: Date.now() });
    await outbox.close(); // every read now fails
    const forwarder = new Forwarder({ outbox, wh: 'W', centralUrl: `mqtt://127.0.0.1:${port}`, window: 10, resendAfterMs: 1_000, keepalive: 5, metrics: createEdgeMetrics(new Registry()), log, onMessage: () => {}, onLink: () => {} });
    try {
      forwarder.start();
      for (let i = 0; i < 100 && lines.filter((l) => l.includes('reading the outbox failed')).length < 2; i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(lines.filter((l) => l.includes('reading the outbox failed')).length >= 2, 'logged, then retried');
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await forwarder.stop().catch(() => {});
      await new Promise<void>((r) => aedes.close(() => r()));
      server.close();
    }
  });
});
