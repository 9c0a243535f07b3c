import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../test/helpers/process.js';
import { LeanClient } from './lean-client.js';
import { sleep } from './lib.js';

/**
 * Baseline (b): two private Mosquitto brokers, the first bridging `wh/#` (QoS 1) to the second, each
 * otherwise in its default configuration (20 messages in flight and 1,000 queued per client, no
 * persistence). Devices publish to the first; a subscriber on the second counts what arrives.
 */
export interface MosquittoBridge {
  /** where devices publish */
  edgePort: number;
  /** the subscriber on the far side: distinct events received so far */
  received(): number;
  stop(): Promise<void>;
}

async function listening(port: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`mosquitto did not listen on ${port} within ${timeoutMs} ms`);
    await sleep(50);
  }
}

export async function startMosquittoBridge(
  binary = process.env.MOSQUITTO_BIN ?? 'mosquitto',
): Promise<MosquittoBridge> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'stockwire-mosquitto-'));
  const [edgePort, centralPort] = [await freePort(), await freePort()];
  await fs.writeFile(path.join(dir, 'central.conf'), `listener ${centralPort} 127.0.0.1\nallow_anonymous true\n`);
  await fs.writeFile(
    path.join(dir, 'edge.conf'),
    [
      `listener ${edgePort} 127.0.0.1`,
      'allow_anonymous true',
      'connection bench-bridge',
      `address 127.0.0.1:${centralPort}`,
      'topic wh/# out 1',
      '',
    ].join('\n'),
  );
  const children: ChildProcess[] = [];
  const start = (conf: string) => {
    const child = spawn(binary, ['-c', path.join(dir, conf)], { stdio: ['ignore', 'ignore', 'ignore'] });
    children.push(child);
    return child;
  };
  const stop = async () => {
    await Promise.all(
      children.map((c) =>
        c.exitCode !== null || c.signalCode !== null
          ? undefined
          : new Promise((r) => {
              c.once('exit', r);
              c.kill('SIGTERM');
            }),
      ),
    );
    await fs.rm(dir, { recursive: true, force: true });
  };
  try {
    start('central.conf');
    await listening(centralPort, 10_000);
    const seen = new Set<string>();
    let probed = false;
    const counter = new LeanClient({ host: '127.0.0.1', port: centralPort, clientId: 'bench-counter', keepalive: 0 });
    await counter.connect();
    counter.onMessage = (topic, payload) => {
      if (topic.startsWith('wh/PROBE/')) probed = true;
      else seen.add(`${topic} ${payload.toString()}`);
    };
    await counter.subscribe('wh/+/dev/+/event', 1);
    start('edge.conf');
    await listening(edgePort, 10_000);
    // The bridge connects on its own schedule: wait until a probe crosses it.
    const probe = new LeanClient({ host: '127.0.0.1', port: edgePort, clientId: 'bench-probe', keepalive: 0 });
    await probe.connect();
    const until = Date.now() + 20_000;
    for (let i = 0; !probed; i++) {
      if (Date.now() > until) throw new Error('the Mosquitto bridge did not pass a probe within 20 s');
      probe.publish('wh/PROBE/dev/probe/event', `probe-${i}`);
      await sleep(200);
    }
    await probe.end();
    return {
      edgePort,
      received: () => seen.size,
      stop: async () => {
        await counter.end();
        await stop();
      },
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
