import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchE2e } from './e2e.js';
import { benchEdge } from './edge.js';
import { benchHistory } from './history.js';
import { benchProcessor } from './processor.js';
import { benchReservations } from './reservations.js';
import { benchScale } from './scale.js';
import { benchSoak } from './soak.js';

/** `npm run bench [-- name…]`: runs the named benchmarks (all by default); each appends to bench/RESULTS.md. */
const BENCHES: Record<string, () => Promise<void>> = {
  processor: benchProcessor,
  edge: benchEdge,
  reservations: benchReservations,
  e2e: benchE2e,
  scale: benchScale,
  history: benchHistory,
  soak: benchSoak, // tens of minutes: only when named, never in the default set
};
const BY_NAME_ONLY = new Set(['soak']);

// Measure the compiled code users run (bin/stockwire runs dist/ only when it is newer than every source;
// otherwise the sources run through tsx, which costs ~40 MiB more and starts slower).
execFileSync('sh', [path.join(path.dirname(fileURLToPath(import.meta.url)), '../bin/build.sh')], {
  stdio: ['ignore', 'ignore', 'inherit'],
});

const wanted = process.argv.slice(2);
for (const name of wanted.length > 0 ? wanted : Object.keys(BENCHES).filter((n) => !BY_NAME_ONLY.has(n))) {
  const bench = BENCHES[name];
  if (!bench) {
    process.stderr.write(`unknown benchmark ${name}; known: ${Object.keys(BENCHES).join(', ')}\n`);
    process.exit(2);
  }
  await bench();
}
process.exit(0);
