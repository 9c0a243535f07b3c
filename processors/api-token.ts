import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { API_TOKEN_FILE } from '../protocol/index.js';

// Shortest configured token accepted, in characters: a generated one has 43 (32 random bytes, base64url).
const MIN_TOKEN_CHARS = 16;

/** Parser of API_TOKEN / API_READ_TOKEN: visible ASCII without spaces (it travels in a header), long enough not to be guessed. */
export function apiToken(raw: string): string {
  if (!/^[\x21-\x7e]+$/.test(raw)) throw new Error('must be visible ASCII characters without spaces');
  if (raw.length < MIN_TOKEN_CHARS) throw new Error(`must be at least ${MIN_TOKEN_CHARS} characters`);
  return raw;
}

/**
 * The configured token, else the one kept in DATA_DIR/api-token, else a new random one written there
 * (mode 0600; the first of several processes sharing DATA_DIR wins, the others read its token). Logs the file, never the token.
 */
export async function resolveApiToken(configured: string | undefined, dataDir: string, log: Logger): Promise<string> {
  if (configured !== undefined) return configured;
  const file = path.resolve(dataDir, API_TOKEN_FILE);
  const kept = await readToken(file);
  if (kept !== null) {
    const mode = (await fs.stat(file)).mode & 0o777;
    if ((mode & 0o077) !== 0)
      log.warn({ file, mode: mode.toString(8) }, 'the API token file is readable by other users; chmod 600 it');
    else log.info({ file }, 'API write token read from file (API_TOKEN is not set)');
    return kept;
  }
  await fs.mkdir(path.dirname(file), { recursive: true });
  const token = randomBytes(32).toString('base64url');
  // Written whole under another name, then linked into place: link() fails if the file exists, so two
  // processes sharing DATA_DIR never see a half-written token, and the first one's token wins.
  const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
  await fs.writeFile(temp, `${token}\n`, { mode: 0o600 });
  try {
    await fs.link(temp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return (await readToken(file)) as string;
  } finally {
    await fs.rm(temp, { force: true });
  }
  log.warn(
    { file },
    'API_TOKEN is not set: generated an API write token and saved it; HTTP writes need "Authorization: Bearer <the file\'s content>"',
  );
  return token;
}

async function readToken(file: string): Promise<string | null> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`cannot read the API token file ${file}: ${(err as Error).message}`);
  }
  try {
    return apiToken(text.trim());
  } catch (err) {
    throw new Error(`the API token in ${file} ${(err as Error).message}; fix or remove the file, or set API_TOKEN`);
  }
}
