import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { createBroker, DeviceRegistry, hashPassword } from '../../broker/index.js';

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

test('mqtts listener: a gateway connects over TLS and publishes', {
  skip: hasOpenssl() ? false : 'needs the openssl CLI to make a test certificate',
}, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'stockwire-tls-'));
  try {
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      {
        stdio: 'ignore',
      },
    );
    const certPem = await readFile(cert);
    const devices = DeviceRegistry.fromList([
      { id: 'gw-W1', warehouse: 'W1', kind: 'gateway', passwordHash: await hashPassword('pw') },
    ]);
    const received: string[] = [];
    const broker = createBroker({
      role: 'central',
      devices,
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: null,
      tls: { port: 0, cert: certPem, key: await readFile(key) },
      registry: new Registry(),
      log: pino({ level: 'silent' }),
      beforePuback: async (_client, packet) => {
        received.push(packet.topic);
      },
    });
    const ports = await broker.start();
    assert.ok(ports.mqtts !== undefined && ports.mqtts > 0);
    try {
      const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${ports.mqtts}`, {
        reconnectPeriod: 0,
        clientId: 'gw-W1',
        username: 'gw-W1',
        password: 'pw',
        ca: certPem,
      });
      await client.publishAsync('wh/W1/dev/s1/event', '{}', { qos: 1 });
      await client.endAsync();
      assert.deepEqual(received, ['wh/W1/dev/s1/event']);
    } finally {
      await broker.stop();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
