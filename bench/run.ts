import { benchEdge } from './edge.js';
import { benchProcessor } from './processor.js';
import { benchReservations } from './reservations.js';

/** `npm run bench [-- name…]`: runs the named benchmarks (all by default); each appends to bench/RESULTS.md. */
const BENCHES: Record<string, () => Promise<void>> = { processor: benchProcessor, edge: benchEdge, reservations: benchReservations };

const wanted = process.argv.slice(2);
for (const name of wanted.length > 0 ? wanted : Object.keys(BENCHES)) {
  const bench = BENCHES[name];
  if (!bench) {
    process.stderr.write(`unknown benchmark ${name}; known: ${Object.keys(BENCHES).join(', ')}\n`);
    process.exit(2);
  }
  await bench();
}
process.exit(0);
