import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  addDevice,
  DeviceRegistry,
  DevicesFileError,
  hashPassword,
  loadDevices,
  verifyPassword,
} from '../../broker/index.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stockwire-devices-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('password hashes', () => {
  test('hash then verify: right password true, wrong password false', async () => {
    const hash = await hashPassword('correct horse');
    assert.match(hash, /^scrypt\$16384\$8\$1\$[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*$/);
    assert.equal(await verifyPassword('correct horse', hash), true);
    assert.equal(await verifyPassword(Buffer.from('correct horse'), hash), true);
    assert.equal(await verifyPassword('correct horsE', hash), false);
    assert.equal(await verifyPassword('', hash), false);
  });

  test('two hashes of one password differ (random salt)', async () => {
    assert.notEqual(await hashPassword('p'), await hashPassword('p'));
  });

  test('a malformed hash verifies false, never throws', async () => {
    const good = await hashPassword('p');
    const parts = good.split('$');
    const bad = [
      '',
      'plain',
      'bcrypt$2$x$y',
      good.replace('scrypt', 'scrypu'),
      ['scrypt', '1000', ...parts.slice(2)].join('$'), // N not a power of two
      ['scrypt', String(2 ** 30), ...parts.slice(2)].join('$'), // N above the bound
      [...parts.slice(0, 4), '!!!', parts[5]].join('$'),
      [...parts.slice(0, 5), ''].join('$'),
      `${good}$extra`,
    ];
    for (const hash of bad) assert.equal(await verifyPassword('p', hash), false, hash);
  });
});

describe('loadDevices', () => {
  test('loads a valid file', async () => {
    const path = join(dir, 'valid.json');
    const passwordHash = await hashPassword('pw');
    await writeFile(
      path,
      JSON.stringify({ devices: [{ id: 'scanner-1', warehouse: 'W1', kind: 'scanner', passwordHash }] }),
    );
    const registry = await loadDevices(path);
    assert.deepEqual(registry.get('scanner-1'), { id: 'scanner-1', warehouse: 'W1', kind: 'scanner', passwordHash });
    assert.equal(registry.get('nobody'), undefined);
    assert.equal(registry.all().length, 1);
  });

  test('lists every problem of the file in one error', async () => {
    const path = join(dir, 'bad.json');
    const passwordHash = await hashPassword('pw');
    await writeFile(
      path,
      JSON.stringify({
        devices: [
          { id: 'a', warehouse: 'W1', kind: 'scanner', passwordHash },
          { id: 'a', warehouse: 'W1', kind: 'shelf', passwordHash },
          { id: 'b', warehouse: 'W1', kind: 'toaster', passwordHash },
          { id: 'has space', warehouse: 'W/1', kind: 'display', passwordHash },
          { id: 'c', warehouse: 'W1', kind: 'gateway' },
          { id: 'd', warehouse: 'W1', kind: 'processor', passwordHash: 'plain' },
          'not an object',
        ],
      }),
    );
    const err = await loadDevices(path).then(
      () => assert.fail('expected an error'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof DevicesFileError);
    assert.equal(err.problems.length, 7, err.message);
    for (const fragment of [
      'devices[1].id: duplicate id "a"',
      'devices[2].kind',
      'devices[3].id',
      'devices[3].warehouse',
      'devices[4].passwordHash: missing',
      'devices[5].passwordHash: not a scrypt hash',
      'devices[6]: must be an object',
    ]) {
      assert.ok(err.message.includes(fragment), `missing "${fragment}" in:\n${err.message}`);
    }
  });

  test('bad JSON, a missing file and a wrong shape are reported with the path', async () => {
    const badJson = join(dir, 'bad-json.json');
    await writeFile(badJson, '{"devices": [');
    await assert.rejects(
      loadDevices(badJson),
      (e: unknown) => e instanceof DevicesFileError && /bad JSON/.test(e.message) && e.message.includes(badJson),
    );
    await assert.rejects(loadDevices(join(dir, 'absent.json')), /cannot read/);
    const shape = join(dir, 'shape.json');
    await writeFile(shape, '{"device": []}');
    await assert.rejects(loadDevices(shape), /devices: must be an array/);
  });

  test('DeviceRegistry.fromList validates like the file loader', () => {
    assert.throws(
      () => DeviceRegistry.fromList([{ id: 'x', warehouse: 'W1', kind: 'scanner', passwordHash: 'nope' }]),
      DevicesFileError,
    );
  });

  test('ownerOfClientId: exact id, then the longest id followed by "-"', () => {
    const h = 'scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=';
    const registry = DeviceRegistry.fromList([
      { id: 'a', warehouse: 'W1', kind: 'scanner', passwordHash: h },
      { id: 'a-b', warehouse: 'W1', kind: 'scanner', passwordHash: h },
    ]);
    assert.equal(registry.ownerOfClientId('a')?.id, 'a');
    assert.equal(registry.ownerOfClientId('a-1')?.id, 'a');
    assert.equal(registry.ownerOfClientId('a-b')?.id, 'a-b');
    assert.equal(registry.ownerOfClientId('a-b-c')?.id, 'a-b');
    assert.equal(registry.ownerOfClientId('ab'), undefined);
    assert.equal(registry.ownerOfClientId('b-a'), undefined);
    assert.equal(registry.ownerOfClientId('-a'), undefined);
  });
});

describe('addDevice', () => {
  test('creates the file with mode 0600, appends, refuses a duplicate id', async () => {
    const path = join(dir, 'added', 'devices.json');
    await mkdir(join(dir, 'added'));
    await addDevice(path, { id: 'scanner-1', warehouse: 'W1', kind: 'scanner', password: 'pw1' });
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    await addDevice(path, { id: 'gw-W1', warehouse: 'W1', kind: 'gateway', password: 'pw2' });

    const registry = await loadDevices(path);
    assert.deepEqual(
      registry.all().map((d) => [d.id, d.kind]),
      [
        ['scanner-1', 'scanner'],
        ['gw-W1', 'gateway'],
      ],
    );
    assert.equal(await verifyPassword('pw2', registry.get('gw-W1')?.passwordHash ?? ''), true);
    assert.ok(!(await readFile(path, 'utf8')).includes('pw1'), 'the password itself is never written');

    const before = await readFile(path, 'utf8');
    await assert.rejects(
      addDevice(path, { id: 'scanner-1', warehouse: 'W2', kind: 'shelf', password: 'x' }),
      /already exists/,
    );
    assert.equal(await readFile(path, 'utf8'), before, 'a refused add leaves the file as it was');
    assert.deepEqual(await readdir(join(dir, 'added')), ['devices.json'], 'no temporary files left behind');
  });

  test('keeps a narrower or wider mode the operator chose', async () => {
    const path = join(dir, 'mode.json');
    await writeFile(path, '{"devices":[]}', { mode: 0o640 });
    await chmod(path, 0o640); // regardless of the umask
    await addDevice(path, { id: 'd1', warehouse: 'W1', kind: 'display', password: 'pw' });
    assert.equal((await stat(path)).mode & 0o777, 0o640);
  });

  test('refuses bad input, listing every problem', async () => {
    const path = join(dir, 'never.json');
    const err = await addDevice(path, { id: 'a b', warehouse: '', kind: 'robot', password: '' }).then(
      () => assert.fail('expected an error'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof DevicesFileError);
    assert.equal(err.problems.length, 4, err.message);
    await assert.rejects(stat(path), { code: 'ENOENT' });
  });

  test('refuses to add to an invalid file', async () => {
    const path = join(dir, 'invalid.json');
    await writeFile(path, '{"devices":[{"id":"x"}]}');
    await assert.rejects(
      addDevice(path, { id: 'y', warehouse: 'W1', kind: 'scanner', password: 'pw' }),
      DevicesFileError,
    );
  });
});
