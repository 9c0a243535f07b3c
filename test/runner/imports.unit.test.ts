import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { forbidden, importsOf, violations } from '../../bin/check-imports.js';

describe('check-imports: imports point down the floors', () => {
  it('reads static, type-only, re-export and dynamic imports as repository paths', () => {
    const src = [
      "import { a } from '../runtime/options.js';",
      "import type { B } from './db/stock.js';",
      "export { c } from '../protocol/index.js';",
      "const d = await import('../cli/demo.js');",
      "import '../broker/index.js';",
      "import pg from 'pg';",
    ].join('\n');
    assert.deepEqual(importsOf('processors/central.ts', src), [
      'runtime/options.ts',
      'processors/db/stock.ts',
      'protocol/index.ts',
      'cli/demo.ts',
      'broker/index.ts',
    ]);
  });

  it('allows the arrows the house is built on', () => {
    for (const [from, to] of [
      ['cli/demo.ts', 'gateway/edge.ts'],
      ['gateway/forwarder.ts', 'runtime/tls.ts'],
      ['runtime/options.ts', 'protocol/ids.ts'],
      ['processors/ingest/ingest.ts', 'processors/db/stock.ts'],
      ['processors/reservations/runner.ts', 'processors/publish/publisher.ts'],
      ['processors/reservations/sql.ts', 'processors/ledger/reservations.ts'],
      ['processors/ingest/ingest.ts', 'processors/metrics.ts'],
      ['processors/central.ts', 'processors/ingest/ingest.ts'],
    ])
      assert.equal(forbidden(from as string, to as string), null, `${from} → ${to}`);
  });

  it('refuses an arrow into cli/, up a floor, across services, or into another folder of processors/', () => {
    const cases: [string, string, RegExp][] = [
      ['processors/db/open.ts', 'cli/wait.ts', /nothing imports cli/],
      ['runtime/run.ts', 'broker/index.ts', /runtime\/ may import only protocol\//],
      ['protocol/event.ts', 'runtime/wait.ts', /protocol\/ may import only nothing of ours/],
      ['gateway/edge.ts', 'processors/central.ts', /gateway\/ may import only/],
      ['processors/readmodel/readmodel.ts', 'processors/ingest/batch.ts', /reaches into processors\/ingest/],
      ['processors/reservations/runner.ts', 'processors/central.ts', /imports an entry point/],
    ];
    for (const [from, to, why] of cases) assert.match(forbidden(from, to) ?? 'allowed', why, `${from} → ${to}`);
  });

  it('lists each forbidden arrow with its file', () => {
    const files = new Map([
      ['processors/lists.ts', "import { globalStock } from './ingest/batch.js';"],
      ['processors/readmodel/readmodel.ts', "import { globalStock } from '../ingest/batch.js';"],
    ]);
    assert.deepEqual(violations(files), [
      'processors/readmodel/readmodel.ts: imports processors/ingest/batch.ts (processors/readmodel/ reaches into processors/ingest/; share through processors/db/, processors/publish/, processors/ledger/)',
    ]);
  });
});
