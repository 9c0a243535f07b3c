import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createTestDatabase, type TestDatabase } from './db.js';

/** ../shared/timescaledb/start beside the checkout: a private PostgreSQL 15 + TimescaleDB 2.28.3 (its README). */
export const TIMESCALE_START = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../shared/timescaledb/start');

/**
 * The TimescaleDB server's admin URL: TIMESCALE_URL (npm test sets it). Never a skip: without it the test fails,
 * saying how to get one.
 */
export function timescaleAdminUrl(): string {
  const url = process.env.TIMESCALE_URL;
  if (url) return url;
  throw new Error(
    `TIMESCALE_URL is not set: start TimescaleDB with ${TIMESCALE_START} (it prints the URL) and set TIMESCALE_URL, or run the tests with npm test, which does both`,
  );
}

/** A database of the test file's own on the TimescaleDB server. */
export function createTimescaleDatabase(label: string): Promise<TestDatabase> {
  return createTestDatabase(label, timescaleAdminUrl());
}

/**
 * A second cluster of the same binaries where the extension is installed but not preloaded (TIMESCALE_PRELOAD=0),
 * the usual state right after installing the package. Returns its admin URL.
 */
export function startUnpreloadedCluster(port: number, dir: string): string {
  if (!existsSync(TIMESCALE_START)) throw new Error(`${TIMESCALE_START} is missing: the TimescaleDB tests need ../shared/timescaledb beside the checkout`);
  const out = execFileSync(TIMESCALE_START, [], { env: { ...process.env, TIMESCALE_PORT: String(port), TIMESCALE_PRELOAD: '0', TIMESCALE_DIR: dir }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return out.trim().split('\n').pop() as string;
}

export function stopCluster(port: number, dir: string): void {
  execFileSync(TIMESCALE_START, ['stop'], { env: { ...process.env, TIMESCALE_PORT: String(port), TIMESCALE_DIR: dir }, stdio: 'ignore' });
}
