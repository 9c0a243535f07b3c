import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { interrupt, startDemo } from '../helpers/demo.js';
import { writeDevices, type TestDevice } from '../helpers/devices.js';
import { connect } from '../helpers/mqtt.js';
import { startStockwire, type Running } from '../helpers/process.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARTIFACTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../artifacts');
const WAIT_MS = 20_000;

const onHandCell = (wh: string, sku: string) => `[data-wh="${wh}"] tr[data-sku="${sku}"] td.onhand`;

/** Waits until the on-hand cell shows `value` (its first text node: a change badge may follow). */
async function waitOnHand(page: Page, wh: string, sku: string, value: number): Promise<void> {
  await page.waitForFunction(
    ([sel, want]) => document.querySelector(sel as string)?.firstChild?.textContent === want,
    [onHandCell(wh, sku), String(value)],
    { timeout: WAIT_MS },
  );
}

describe('live display in a real browser (Debian chromium, playwright-core)', () => {
  let db: TestDatabase;
  let dir: string;
  let context: BrowserContext;
  const running: Running[] = [];
  before(async () => {
    if (!existsSync(CHROMIUM))
      throw new Error(
        `no browser at ${CHROMIUM}: install it with \`apt-get install -y chromium\` (.ci/run does), or set CHROMIUM_PATH`,
      );
    db = await createTestDatabase('display');
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'stockwire-display-'));
    await fs.mkdir(ARTIFACTS, { recursive: true });
    // a fresh profile every run: no cache, no stored credential from an earlier run
    context = await chromium.launchPersistentContext(path.join(dir, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      viewport: { width: 1280, height: 800 },
    });
  });
  after(async () => {
    await context?.close();
    for (const r of running) r.child.kill('SIGKILL');
    await Promise.all(running.map((r) => r.exited));
    await db?.drop();
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('logs in, shows a scan at an edge as a changing number, and turns a warehouse stale when its edge stops', {
    timeout: 180_000,
  }, async (t) => {
    const devices: TestDevice[] = [
      { id: 'wall', warehouse: 'WH1', kind: 'display', password: 'pw-display-wall' },
      { id: 'wall-wh1', warehouse: 'WH1', kind: 'display', password: 'pw-display-wh1' },
      { id: 'gw-wh1', warehouse: 'WH1', kind: 'gateway', password: 'pw-gateway-wh1' },
      { id: 'gw-wh2', warehouse: 'WH2', kind: 'gateway', password: 'pw-gateway-wh2' },
      { id: 'scan-1', warehouse: 'WH1', kind: 'scanner', password: 'pw-scanner-1' },
    ];
    const files = await writeDevices(devices);
    const env = { DATABASE_URL: db.url };
    const common = [
      '--devices-file',
      files.file,
      '--host',
      '127.0.0.1',
      '--mqtt-port',
      '0',
      '--ws-port',
      '0',
      '--http-port',
      '0',
    ];
    const central = await startStockwire(['central', ...common, '--data-dir', files.dir], env);
    running.push(central);
    const edge = async (wh: string) => {
      const r = await startStockwire(
        [
          'edge',
          ...common,
          '--warehouse',
          wh,
          '--data-dir',
          path.join(files.dir, wh),
          '--central-url',
          `mqtt://127.0.0.1:${central.ports.mqtt}`,
          '--central-username',
          `gw-${wh.toLowerCase()}`,
          '--central-password',
          `pw-gateway-${wh.toLowerCase()}`,
          '--keepalive',
          '2',
        ],
        env,
      );
      running.push(r);
      return r;
    };
    const wh1 = await edge('WH1');
    await edge('WH2');

    // Outside the demo the page gets no credential: it asks for one.
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(err.message));
    page.on('console', (m) => m.type() === 'error' && problems.push(m.text()));
    await page.goto(`http://127.0.0.1:${central.ports.http}/`); // redirects to /display/
    await page.waitForSelector('#login', { state: 'visible', timeout: WAIT_MS });
    assert.equal(await page.isVisible('#main'), false);
    await page.fill('input[name=username]', 'wall');
    await page.fill('input[name=password]', 'wrong-password');
    await page.click('#login button[type=submit]');
    await page.waitForFunction(
      () => /refused/.test(document.getElementById('login-error')?.textContent ?? ''),
      undefined,
      { timeout: WAIT_MS },
    );
    await page.fill('input[name=password]', 'pw-display-wall');
    await page.click('#login button[type=submit]');
    await page.waitForSelector('#conn[data-state="live"]', { timeout: WAIT_MS });
    for (const wh of ['WH1', 'WH2'])
      await page.waitForSelector(`[data-wh="${wh}"][data-link="online"][data-stale="false"]`, { timeout: WAIT_MS });

    // A scanner publishes through the WH1 edge; the number appears, then changes.
    const sku = `SHOW-${randomBytes(2).toString('hex')}`;
    const scanner = await connect(`mqtt://127.0.0.1:${wh1.ports.mqtt}`, 'scan-1', 'pw-scanner-1');
    const scan = (id: string, type: string, qty: number) =>
      scanner.publishAsync('wh/WH1/dev/scan-1/event', JSON.stringify({ v: 1, id, type, sku, qty }), { qos: 1 });
    await scan('s1', 'received', 7);
    await waitOnHand(page, 'WH1', sku, 7);
    const before = Date.now();
    await scan('s2', 'shipped', 2);
    await waitOnHand(page, 'WH1', sku, 5);
    t.diagnostic(`scan → number changed in the page: ${Date.now() - before} ms`);

    // The WH1 edge's own page shows its warehouse only, with the same number.
    const edgePage = await context.newPage();
    await edgePage.goto(`http://127.0.0.1:${wh1.ports.http}/display/`);
    await edgePage.fill('input[name=username]', 'wall-wh1');
    await edgePage.fill('input[name=password]', 'pw-display-wh1');
    await edgePage.click('#login button[type=submit]');
    await waitOnHand(edgePage, 'WH1', sku, 5);
    assert.deepEqual(await edgePage.$$eval('[data-wh]', (cards) => cards.map((c) => c.getAttribute('data-wh'))), [
      'WH1',
    ]);
    await edgePage.close();
    await scanner.endAsync();

    // Stop the WH1 edge: central takes its `offline` status and the page marks WH1 stale; WH2 stays live.
    wh1.child.kill('SIGTERM');
    assert.equal(await wh1.exited, 0);
    await page.waitForSelector('[data-wh="WH1"][data-link="offline"][data-stale="true"]', { timeout: WAIT_MS });
    assert.equal(await page.getAttribute('[data-wh="WH2"]', 'data-stale'), 'false');
    assert.match((await page.textContent('[data-wh="WH1"] .note')) ?? '', /stale: edge offline since/);
    assert.equal(
      await page.$eval(onHandCell('WH1', sku), (td) => td.firstChild?.textContent),
      '5',
      'the last known value stays',
    );
    await page.screenshot({ path: path.join(ARTIFACTS, 'display-stale.png'), fullPage: true });
    assert.deepEqual(problems, [], 'no script errors in the page');
    await page.close();
  });

  it('in the demo the page connects with no login and shows the simulated stock', { timeout: 120_000 }, async () => {
    const demo = await startDemo(['--sim-rate', '20'], { DATABASE_URL: db.url, REDIS_URL: undefined });
    try {
      const page = await context.newPage();
      await page.goto(`http://127.0.0.1:${demo.central.http}/display/`);
      await page.waitForSelector('#conn[data-state="live"]', { timeout: WAIT_MS });
      assert.equal(await page.isVisible('#login'), false);
      for (const wh of ['WH1', 'WH2'])
        await page.waitForSelector(`[data-wh="${wh}"][data-link="online"] tr[data-sku^="SKU-"]`, { timeout: WAIT_MS });
      // a few seconds of simulated traffic for the rate chart, then a picture for a person to look at
      await page.waitForTimeout(2_500);
      await page.screenshot({ path: path.join(ARTIFACTS, 'display-demo.png'), fullPage: true });
      await page.close();
    } finally {
      assert.equal(await interrupt(demo.run), 0);
      await fs.rm(demo.dataDir, { recursive: true, force: true });
    }
  });
});
