import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { demoSpecs } from '../../cli/demo.js';
import { devicesAddSpecs } from '../../cli/devices.js';
import { createLogger, SECRET_FIELDS } from '../../runtime/logger.js';
import { parseConfig, type Specs } from '../../runtime/options.js';
import { simSpecs } from '../../device-sim/config.js';
import { edgeSpecs } from '../../gateway/config.js';
import { centralSpecs, migrateSpecs, processorSpecs, rebuildSpecs, replaySpecs } from '../../processors/config.js';

const ALL: Record<string, Specs> = {
  central: centralSpecs,
  processor: processorSpecs,
  edge: edgeSpecs,
  demo: demoSpecs,
  sim: simSpecs,
  'devices add': devicesAddSpecs,
  migrate: migrateSpecs,
  rebuild: rebuildSpecs,
  replay: replaySpecs,
};

/** A logger like every command's, writing into an array. */
function captured(): { log: ReturnType<typeof createLogger>; text: () => string } {
  const lines: string[] = [];
  return {
    log: createLogger('test', 'debug', { write: (s: string) => void lines.push(s) }),
    text: () => lines.join(''),
  };
}

describe('pino redaction (runtime/logger.ts)', () => {
  it('every option marked secret, in every command, is a redacted field', () => {
    for (const [command, specs] of Object.entries(ALL)) {
      for (const [key, spec] of Object.entries(specs))
        if (spec.secret)
          assert.ok(SECRET_FIELDS.includes(key), `${command}: --${spec.flag} is secret but ${key} is not redacted`);
    }
  });

  it('a dump of a parsed configuration, at the top or one level down, shows no secret value', () => {
    const values = {
      db: 'db-secret-0123',
      pw: 'pw-secret-0123',
      token: 'token-secret-0123456789',
      read: 'read-secret-0123456789',
      redis: 'redis-secret-0123',
    };
    const central = parseConfig(centralSpecs, [], {
      DEVICES_FILE: 'd.json',
      DATABASE_URL: `postgres://u:${values.db}@h/db`,
      REDIS_URL: `redis://:${values.redis}@h`,
      API_TOKEN: values.token,
      API_READ_TOKEN: values.read,
      TLS_KEY: '/etc/stockwire/key.pem',
    });
    const edge = parseConfig(edgeSpecs, [], {
      WAREHOUSE_ID: 'W1',
      DEVICES_FILE: 'd.json',
      CENTRAL_PASSWORD: values.pw,
      CENTRAL_KEY: '/etc/stockwire/client.key',
    });
    const processor = parseConfig(processorSpecs, [], { CENTRAL_PASSWORD: values.pw, API_TOKEN: values.token });
    const { log, text } = captured();
    for (const config of [central, edge, processor]) {
      log.info(config, 'configuration');
      log.info({ config }, 'configuration');
    }
    log.info({ headers: { authorization: `Bearer ${values.token}` } }, 'request');
    log.info({ req: { headers: { authorization: `Bearer ${values.token}` } } }, 'request');
    log.info({ device: { id: 'd1', password: values.pw } }, 'device');
    log.flush();
    for (const [what, v] of Object.entries(values))
      assert.ok(!text().includes(v), `the ${what} value was logged:\n${text()}`);
    assert.ok(!text().includes('key.pem'), 'key paths are redacted too');
    assert.match(text(), /"configuration"/);
    assert.ok((text().match(/\[redacted\]/g) ?? []).length >= 20, 'the fields are there, redacted');
  });
  it('a refused URL option is echoed with its user and password masked', () => {
    let message = '';
    try {
      parseConfig(processorSpecs, ['--central-url', 'tcp://proc1:hunter2@central:1884'], {});
    } catch (err) {
      message = (err as Error).message;
    }
    assert.match(message, /central-url \(CENTRAL_URL\) must use mqtt:/);
    assert.match(message, /tcp:\/\/\*\*\*@central:1884/);
    assert.ok(!message.includes('hunter2') && !message.includes('proc1'), message);
  });
});
