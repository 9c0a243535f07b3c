/**
 * `npm run lint`'s import-structure check: the house has floors, and imports point down only.
 *
 *   protocol/            the wire: topics, payloads, errors; imports nothing of ours
 *   runtime/             the ground floor: options, logger, TLS, run/serve, waits; imports protocol/ only
 *   broker/              Aedes hardened; protocol/, runtime/
 *   dashboards/display/  the live display's files and routes; protocol/, runtime/
 *   gateway/, processors/, device-sim/: the services, on the floors above; never one another
 *   cli/                 the commands (the top floor): anything; nothing imports it
 *
 * Inside processors/, a folder keeps its internals: processors/<a>/ imports processors/<b>/ only when b is a shared
 * floor: db/ (pool, migrations, stock reads), publish/ (what goes out after a commit), ledger/ (the pure rules).
 * The entry points (central.ts, processor.ts, main.ts) are imported by no folder of processors/.
 *
 * Prints each forbidden arrow as `file: imports target (rule)` and exits 1 when there is one.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const FLOORS: Record<string, readonly string[]> = {
  protocol: [],
  runtime: ['protocol'],
  broker: ['protocol', 'runtime'],
  'dashboards/display': ['protocol', 'runtime'],
  'dashboards/node-red': ['protocol'],
  gateway: ['protocol', 'runtime', 'broker', 'dashboards/display'],
  processors: ['protocol', 'runtime', 'broker', 'dashboards/display'],
  'device-sim': ['protocol', 'runtime', 'broker'],
};
const SHARED_IN_PROCESSORS = ['db', 'publish', 'ledger'];
const ENTRY_POINTS = ['processors/central.ts', 'processors/processor.ts', 'processors/main.ts'];

/** The area a repository path belongs to: the longest FLOORS key it starts with, or its first folder. */
const areaOf = (rel: string): string =>
  Object.keys(FLOORS)
    .filter((a) => rel === a || rel.startsWith(`${a}/`))
    .sort((x, y) => y.length - x.length)[0] ?? (rel.split('/')[0] as string);

/** Why `from` may not import `to` (both repository paths of .ts files), or null when it may. */
export function forbidden(from: string, to: string): string | null {
  const a = areaOf(from);
  const b = areaOf(to);
  if (b === 'cli' && a !== 'cli') return 'nothing imports cli/: it is the top floor';
  if (a !== b && FLOORS[a] !== undefined && !FLOORS[a].includes(b))
    return `${a}/ may import only ${FLOORS[a].length > 0 ? FLOORS[a].map((f) => `${f}/`).join(', ') : 'nothing of ours'}`;
  if (a === 'processors' && b === 'processors') {
    const [, fromSub, ...fromRest] = from.split('/');
    const [, toSub, ...toRest] = to.split('/');
    const fromFolder = fromRest.length > 0 ? fromSub : undefined;
    const toFolder = toRest.length > 0 ? toSub : undefined;
    if (fromFolder === undefined || fromFolder === toFolder) return null;
    if (toFolder === undefined)
      return ENTRY_POINTS.includes(to) ? 'no folder of processors/ imports an entry point' : null;
    if (!SHARED_IN_PROCESSORS.includes(toFolder))
      return `processors/${fromFolder}/ reaches into processors/${toFolder}/; share through ${SHARED_IN_PROCESSORS.map((s) => `processors/${s}/`).join(', ')}`;
  }
  return null;
}

const IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)['"](\.{1,2}\/[^'"]+)['"]/gm;

/** The relative imports of a source text, as repository paths of the .ts files they name. */
export function importsOf(file: string, source: string): string[] {
  return [...source.matchAll(IMPORT)].map((m) =>
    path.posix.normalize(path.posix.join(path.posix.dirname(file), (m[1] as string).replace(/\.js$/, '.ts'))),
  );
}

/** Every forbidden arrow among the files given (repository path → source text). */
export function violations(files: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [file, source] of files)
    for (const target of importsOf(file, source)) {
      const why = forbidden(file, target);
      if (why !== null) out.push(`${file}: imports ${target} (${why})`);
    }
  return out;
}

function sourcesUnder(root: string, dirs: string[]): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const child = `${rel}/${e.name}`;
      if (e.isDirectory() && e.name !== 'node_modules' && e.name !== 'dist') walk(child);
      else if (e.isFile() && e.name.endsWith('.ts')) files.set(child, fs.readFileSync(path.join(root, child), 'utf8'));
    }
  };
  for (const d of dirs) if (fs.existsSync(path.join(root, d))) walk(d);
  return files;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const files = sourcesUnder(root, [...Object.keys(FLOORS), 'cli']);
  const found = violations(files);
  for (const v of found) process.stderr.write(`${v}\n`);
  process.stdout.write(`check-imports: ${files.size} files, ${found.length} forbidden import(s)\n`);
  process.exitCode = found.length > 0 ? 1 : 0;
}
