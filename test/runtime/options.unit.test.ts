import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, opt, parseConfig, warehouseList } from '../../runtime/options.js';

describe('warehouseList: the one parser of warehouse ids every command uses', () => {
  it('takes distinct identifiers, trimmed', () => {
    assert.deepEqual(warehouseList()('WH1, WH2,WH3'), ['WH1', 'WH2', 'WH3']);
  });

  it('names the ids that are not identifiers', () => {
    assert.throws(() => warehouseList()('WH1,bad id,x/y'), /has invalid warehouse ids: bad id, x\/y/);
  });

  it('refuses a warehouse named twice, saying which', () => {
    assert.throws(() => warehouseList()('WH1,WH2,WH1'), /names a warehouse more than once: WH1/);
  });

  it('holds its bounds', () => {
    const demo = warehouseList({ min: 1, max: 8 });
    assert.throws(() => demo(''), /must name 1 to 8 warehouses/);
    assert.throws(() => demo('A,B,C,D,E,F,G,H,I'), /must name 1 to 8 warehouses/);
    assert.deepEqual(demo('A'), ['A']);
    assert.throws(() => warehouseList({ min: 2 })('A'), /must name at least 2 warehouse/);
  });

  it('reports through parseConfig as a configuration problem with its flag', () => {
    const specs = {
      warehouses: opt({ flag: 'warehouses', env: 'WAREHOUSES', help: 'ids', parse: warehouseList(), default: [] }),
    };
    assert.deepEqual(parseConfig(specs, ['--warehouses', 'A,B'], {}).warehouses, ['A', 'B']);
    assert.throws(
      () => parseConfig(specs, [], { WAREHOUSES: 'A,A' }),
      (err: unknown) => err instanceof ConfigError && err.problems.some((p) => /WAREHOUSES.*more than once/.test(p)),
    );
  });
});
