import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, test } from 'node:test';
import pino from 'pino';
import { ConfigError, parseConfig } from '../../runtime/options.js';
import { deviceShareBytes, edgeSpecs } from '../../gateway/config.js';
import { Edge } from '../../gateway/edge.js';
import { BIN } from '../helpers/process.js';

const base = ['--warehouse', 'W1', '--devices-file', 'devices.json'];
const share = (raw: string) => parseConfig(edgeSpecs, [...base, '--outbox-device-share', raw], {}).outboxDeviceShare;

describe('OUTBOX_DEVICE_SHARE', () => {
  test('a fraction (a plain number up to 1, or a percentage) or a byte count; unset when not given', () => {
    assert.deepEqual(share('0.25'), { fraction: 0.25 });
    assert.deepEqual(share('.5'), { fraction: 0.5 });
    assert.deepEqual(share('1'), { fraction: 1 });
    assert.deepEqual(share('10%'), { fraction: 0.1 });
    assert.deepEqual(share('64MiB'), { bytes: 64 * 1024 ** 2 });
    assert.deepEqual(share('16384'), { bytes: 16_384 });
    assert.deepEqual(parseConfig(edgeSpecs, base, { OUTBOX_DEVICE_SHARE: '30%' }).outboxDeviceShare, { fraction: 0.3 });
    assert.equal(parseConfig(edgeSpecs, base, {}).outboxDeviceShare, undefined);
  });

  test('refused, naming the flag: 0, above 100 %, a fraction above 1, fewer than 16 KiB, not a number', () => {
    for (const raw of ['0', '0%', '150%', '1.5', '2', '16383', 'lots', '-0.5']) {
      assert.throws(
        () => share(raw),
        (err: unknown) => err instanceof ConfigError && err.message.includes('--outbox-device-share'),
        raw,
      );
    }
  });

  test('in bytes against the bound: a fraction of it, at least 16 KiB, at most the bound', () => {
    assert.deepEqual(deviceShareBytes({ fraction: 0.25 }, 1024 ** 3), { bytes: 256 * 1024 ** 2, problem: null });
    assert.deepEqual(deviceShareBytes({ bytes: 64 * 1024 }, 64 * 1024), { bytes: 64 * 1024, problem: null });
    assert.match(
      deviceShareBytes({ fraction: 0.1 }, 64 * 1024).problem ?? '',
      /0\.1 of OUTBOX_MAX_BYTES \(65536 bytes\) is 6553 bytes, less than one device needs/,
    );
    assert.match(
      deviceShareBytes({ bytes: 2 * 1024 ** 2 }, 1024 ** 2).problem ?? '',
      /2097152 bytes, more than OUTBOX_MAX_BYTES/,
    );
    const edge = {
      wh: 'W1',
      devicesFile: 'x',
      dataDir: 'x',
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: 0,
      httpPort: 0,
      centralUrl: 'mqtt://127.0.0.1:1',
      outboxMaxBytes: 64 * 1024,
      forwardWindow: 1,
      resendAfterMs: 100,
      keepalive: 1,
      log: pino({ level: 'silent' }),
    };
    assert.throws(() => new Edge({ ...edge, outboxDeviceShare: { fraction: 0.1 } }), RangeError);
  });

  test('stockwire edge exits 2 listing a share the bound cannot give', async () => {
    const child = spawn(BIN, ['edge', ...base, '--outbox-max-bytes', '64KiB', '--outbox-device-share', '0.1'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 2, stderr);
    assert.match(
      stderr,
      /--outbox-device-share \(OUTBOX_DEVICE_SHARE\): 0\.1 of OUTBOX_MAX_BYTES \(65536 bytes\) is 6553 bytes/,
    );
  });
});
