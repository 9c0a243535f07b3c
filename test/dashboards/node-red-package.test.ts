import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { freePort } from '../helpers/process.js';

const require = createRequire(import.meta.url);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PACKAGE_DIR = 'dashboards/node-red';
const PACKAGE = path.join(ROOT, PACKAGE_DIR);
const NAME = 'node-red-contrib-stockwire';
const exec = promisify(execFile);
// npm must not reach for the network: packing needs none.
const NPM_ENV = {
  ...process.env,
  npm_config_offline: 'true',
  npm_config_audit: 'false',
  npm_config_fund: 'false',
  npm_config_update_notifier: 'false',
};

interface PackageJson {
  version: string;
  files: string[];
  dependencies: Record<string, string>;
  'node-red': { nodes: Record<string, string> };
}

/**
 * The package as users get it: `npm pack` on a copy of what git tracks in dashboards/node-red (a fresh checkout),
 * then the tarball unpacked into a Node-RED user directory. `npm install --offline <tarball>` cannot be tested
 * here: npm resolves the tarball's dependency (mqtt) from registry metadata, which `npm ci` does not cache. So
 * the tarball's contents are checked exactly, and a real Node-RED loads the nodes from the unpacked copy, with
 * mqtt found in the repository's node_modules (the work folder is under test/artifacts).
 */
describe('node-red-contrib-stockwire as a package: npm pack, the tarball, Node-RED 4.1 loading it', () => {
  let work: string;
  let copy: string;
  let tarball: string;
  let entries: string[];
  let pkg: PackageJson;

  before(async () => {
    await fs.mkdir(path.join(ROOT, 'test/artifacts'), { recursive: true });
    work = await fs.mkdtemp(path.join(ROOT, 'test/artifacts/node-red-package-'));
    copy = path.join(work, 'checkout');
    const { stdout } = await exec('git', ['ls-files', '-z', PACKAGE_DIR], { cwd: ROOT });
    for (const file of stdout.split('\0').filter(Boolean)) {
      const to = path.join(copy, path.relative(PACKAGE_DIR, file));
      await fs.mkdir(path.dirname(to), { recursive: true });
      await fs.copyFile(path.join(ROOT, file), to);
    }
    pkg = JSON.parse(await fs.readFile(path.join(copy, 'package.json'), 'utf8')) as PackageJson;
    // The README's build: npm pack, whose prepack script compiles src/ into dist/.
    await exec('npm', ['pack', '--pack-destination', work], { cwd: copy, env: NPM_ENV, timeout: 180_000 });
    tarball = path.join(work, `${NAME}-${pkg.version}.tgz`);
    entries = (await exec('tar', ['-tzf', tarball])).stdout.split('\n').filter(Boolean).sort();
  });

  after(async () => {
    if (work) await fs.rm(work, { recursive: true, force: true });
  });

  it('npm pack builds the nodes and the tarball holds exactly what package.json names: every compiled node, the editor file, the example, the README', async () => {
    const sources = (await fs.readdir(path.join(copy, 'src'))).filter((f) => f.endsWith('.ts'));
    assert.ok(sources.length >= 9, `${sources.length} sources`);
    const expected = [
      'package.json',
      'README.md',
      'dist/stockwire.html',
      ...sources.map((f) => `dist/${f.replace(/\.ts$/, '.js')}`),
      'examples/stockwire-flow.json', // Node-RED lists a package's examples/ under Import → Examples
    ].map((f) => `package/${f}`);
    assert.deepEqual(entries, expected.sort());
    for (const file of Object.values(pkg['node-red'].nodes))
      assert.ok(entries.includes(`package/${file}`), `node-red.nodes ${file} is packed`);
    assert.deepEqual(pkg.files.sort(), ['README.md', 'dist', 'examples']);
    assert.deepEqual(Object.keys(pkg.dependencies), ['mqtt'], 'installing it brings only mqtt');
    await assert.rejects(fs.access(path.join(copy, 'package-lock.json')), 'packing wrote no package-lock.json');
  });

  it('building leaves nothing for git to see: dist/, the tarball, node_modules/ and a package-lock.json are ignored, and npm install here writes no lock', async () => {
    const leftovers = [
      'dist/stockwire.js',
      `${NAME}-${pkg.version}.tgz`,
      'node_modules/mqtt/package.json',
      'package-lock.json',
    ].map((f) => `${PACKAGE_DIR}/${f}`);
    for (const f of leftovers) {
      const ignored = await exec('git', ['check-ignore', '-q', f], { cwd: ROOT }).then(
        () => true,
        () => false,
      );
      assert.ok(ignored, `git ignores ${f}`);
    }
    const { stdout } = await exec('npm', ['config', 'get', 'package-lock'], { cwd: PACKAGE, env: NPM_ENV });
    assert.equal(stdout.trim(), 'false', 'npm reads package-lock=false in dashboards/node-red');
  });

  describe('a real Node-RED with the tarball unpacked in its user directory', () => {
    let nodeRed: ChildProcess;
    let url: string;
    let logs = '';

    before(async () => {
      const userDir = path.join(work, 'node-red-user');
      const into = path.join(userDir, 'node_modules', NAME);
      await fs.mkdir(into, { recursive: true });
      await exec('tar', ['-xzf', tarball, '-C', into, '--strip-components=1']);
      await fs.writeFile(
        path.join(userDir, 'package.json'),
        JSON.stringify({ name: 'node-red-project', private: true, dependencies: { [NAME]: pkg.version } }),
      );
      const port = await freePort();
      const settings = path.join(userDir, 'settings.js');
      await fs.writeFile(
        settings,
        `module.exports = ${JSON.stringify({ uiHost: '127.0.0.1', uiPort: port, flowFile: 'flows.json', credentialSecret: false, logging: { console: { level: 'warn' } } })};\n`,
      );
      nodeRed = spawn(
        process.execPath,
        [
          path.join(path.dirname(require.resolve('node-red/package.json')), 'red.js'),
          '--userDir',
          userDir,
          '--settings',
          settings,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      nodeRed.stdout?.on('data', (b: Buffer) => (logs += b.toString()));
      nodeRed.stderr?.on('data', (b: Buffer) => (logs += b.toString()));
      url = `http://127.0.0.1:${port}`;
      const deadline = Date.now() + 60_000;
      while (
        !(await fetch(`${url}/nodes`, { headers: { accept: 'application/json' } }).then(
          (r) => r.ok,
          () => false,
        ))
      ) {
        if (Date.now() > deadline || nodeRed.exitCode !== null)
          throw new Error(`Node-RED did not start:\n${logs.slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    });

    after(async () => {
      if (nodeRed && nodeRed.exitCode === null) {
        const exited = new Promise((r) => nodeRed.once('exit', r));
        nodeRed.kill('SIGTERM');
        await exited;
      }
    });

    it('loads every node of the package, enabled and without an error', async () => {
      type NodeSet = { module: string; types: string[]; enabled: boolean; err?: string; version?: string };
      const sets = (
        (await (await fetch(`${url}/nodes`, { headers: { accept: 'application/json' } })).json()) as NodeSet[]
      ).filter((s) => s.module === NAME);
      assert.equal(
        sets.length,
        Object.keys(pkg['node-red'].nodes).length,
        `Node-RED found the package: ${logs.slice(-2000)}`,
      );
      for (const s of sets) assert.deepEqual([s.enabled, s.err, s.version], [true, undefined, pkg.version]);
      assert.deepEqual(sets.flatMap((s) => s.types).sort(), [
        'stockwire-movements',
        'stockwire-reserve',
        'stockwire-server',
        'stockwire-stock-in',
        'stockwire-stock-level',
        'stockwire-submit',
        'stockwire-transfer',
      ]);
    });

    it('offers the example flow under Import → Examples, as packed', async () => {
      const listed = (await (await fetch(`${url}/library/examples/flows/${NAME}/`)).json()) as { fn: string }[];
      assert.deepEqual(listed, [{ fn: 'stockwire-flow' }]);
      const flow = (await (await fetch(`${url}/library/examples/flows/${NAME}/stockwire-flow`)).json()) as unknown;
      assert.deepEqual(flow, JSON.parse(await fs.readFile(path.join(copy, 'examples/stockwire-flow.json'), 'utf8')));
    });
  });
});
