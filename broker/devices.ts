import { randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { isIdent } from '../protocol/index.js';

/** Device kinds of CONTRACT section 5. */
export const DEVICE_KINDS = ['scanner', 'shelf', 'display', 'gateway', 'processor'] as const;
export type DeviceKind = (typeof DEVICE_KINDS)[number];

/** One credential of the DEVICES_FILE. The MQTT username is the `id`. */
export interface Device {
  readonly id: string;
  readonly warehouse: string;
  readonly kind: DeviceKind;
  readonly passwordHash: string;
}

export function isDeviceKind(value: unknown): value is DeviceKind {
  return typeof value === 'string' && (DEVICE_KINDS as readonly string[]).includes(value);
}

/** A devices file (or list) that failed validation; `problems` lists every one of them. */
export class DevicesFileError extends Error {
  constructor(
    readonly source: string,
    readonly problems: readonly string[],
  ) {
    super(`${source}: ${problems.length} problem(s):\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'DevicesFileError';
  }
}

// ---- password hashes ---------------------------------------------------------------------------

// scrypt cost of new hashes: N=2^14, r=8 needs 16 MiB and ~50 ms per check.
const SCRYPT_N = 16384;
const SCRYPT_R = 8;
const SCRYPT_P = 1;
const SALT_BYTES = 16;
const KEY_BYTES = 32;
// Bounds on parameters read back from a hash, so a crafted file cannot make a check cost minutes.
const MAX_N = 1 << 20;
const MAX_R = 32;
const MAX_P = 16;

interface ScryptHash {
  n: number;
  r: number;
  p: number;
  salt: Buffer;
  key: Buffer;
}

function scrypt(password: string | Uint8Array, salt: Buffer, keylen: number, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCb(password, salt, keylen, opts, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

function scryptOptions(n: number, r: number, p: number): ScryptOptions {
  // Node refuses N*r above its 32 MiB default maxmem; allow exactly what the parameters need, plus slack.
  return { N: n, r, p, maxmem: 128 * n * r * p + 1024 * 1024 };
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

function parseHash(hash: unknown): ScryptHash | null {
  if (typeof hash !== 'string') return null;
  const parts = hash.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return null;
  const [, nText, rText, pText, saltText, keyText] = parts as [string, string, string, string, string, string];
  const n = Number(nText);
  const r = Number(rText);
  const p = Number(pText);
  if (!Number.isInteger(n) || n < 2 || n > MAX_N || (n & (n - 1)) !== 0) return null;
  if (!Number.isInteger(r) || r < 1 || r > MAX_R) return null;
  if (!Number.isInteger(p) || p < 1 || p > MAX_P) return null;
  if (!BASE64.test(saltText) || !BASE64.test(keyText)) return null;
  const salt = Buffer.from(saltText, 'base64');
  const key = Buffer.from(keyText, 'base64');
  if (salt.length < 8 || key.length < 16 || key.length > 64) return null;
  return { n, r, p, salt, key };
}

/** Hashes a password as `scrypt$N$r$p$saltBase64$keyBase64`. Async: never blocks the event loop. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const key = await scrypt(password, salt, KEY_BYTES, scryptOptions(SCRYPT_N, SCRYPT_R, SCRYPT_P));
  return ['scrypt', SCRYPT_N, SCRYPT_R, SCRYPT_P, salt.toString('base64'), key.toString('base64')].join('$');
}

/** Constant-time check of a password against a hash from `hashPassword`; a malformed hash verifies false. */
export async function verifyPassword(password: string | Uint8Array, hash: string): Promise<boolean> {
  const parsed = parseHash(hash);
  if (parsed === null) return false;
  const key = await scrypt(password, parsed.salt, parsed.key.length, scryptOptions(parsed.n, parsed.r, parsed.p));
  return timingSafeEqual(key, parsed.key);
}

/** True when `hash` has the shape `verifyPassword` accepts. */
export function isPasswordHash(hash: unknown): boolean {
  return parseHash(hash) !== null;
}

// ---- registry ----------------------------------------------------------------------------------

function identityProblems(e: Record<string, unknown>, at: string): string[] {
  const problems: string[] = [];
  if (!isIdent(e.id)) problems.push(`${at}.id: must match ^[A-Za-z0-9._-]{1,64}$ (got ${JSON.stringify(e.id)})`);
  if (!isIdent(e.warehouse))
    problems.push(`${at}.warehouse: must match ^[A-Za-z0-9._-]{1,64}$ (got ${JSON.stringify(e.warehouse)})`);
  if (!isDeviceKind(e.kind))
    problems.push(`${at}.kind: must be one of ${DEVICE_KINDS.join(', ')} (got ${JSON.stringify(e.kind)})`);
  return problems;
}

function problemsOfEntry(entry: unknown, at: string): string[] {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return [`${at}: must be an object`];
  const e = entry as Record<string, unknown>;
  const problems = identityProblems(e, at);
  if (e.passwordHash === undefined) problems.push(`${at}.passwordHash: missing`);
  else if (!isPasswordHash(e.passwordHash))
    problems.push(`${at}.passwordHash: not a scrypt hash (scrypt$N$r$p$salt$key)`);
  return problems;
}

/** Validates a list of raw entries; returns the devices, or every problem found. */
function validateList(entries: readonly unknown[], at: string): { devices: Device[]; problems: string[] } {
  const problems: string[] = [];
  const devices: Device[] = [];
  const firstIndex = new Map<string, number>();
  entries.forEach((entry, i) => {
    const where = `${at}[${i}]`;
    const entryProblems = problemsOfEntry(entry, where);
    problems.push(...entryProblems);
    const id = (entry as { id?: unknown } | null)?.id;
    if (isIdent(id)) {
      const first = firstIndex.get(id);
      if (first !== undefined) problems.push(`${where}.id: duplicate id "${id}" (first at ${at}[${first}])`);
      else firstIndex.set(id, i);
    }
    if (entryProblems.length === 0) {
      const e = entry as Device;
      devices.push(Object.freeze({ id: e.id, warehouse: e.warehouse, kind: e.kind, passwordHash: e.passwordHash }));
    }
  });
  return { devices, problems };
}

/** The credentials a broker accepts, by device id. Immutable once built. */
export class DeviceRegistry {
  private readonly byId: ReadonlyMap<string, Device>;

  private constructor(devices: readonly Device[]) {
    this.byId = new Map(devices.map((d) => [d.id, d]));
  }

  /** Builds a registry from devices, validating them as `loadDevices` does (throws `DevicesFileError`). */
  static fromList(devices: readonly Device[]): DeviceRegistry {
    const { devices: valid, problems } = validateList(devices, 'devices');
    if (problems.length > 0) throw new DevicesFileError('device list', problems);
    return new DeviceRegistry(valid);
  }

  get(id: string): Device | undefined {
    return this.byId.get(id);
  }

  all(): Device[] {
    return [...this.byId.values()];
  }

  /**
   * The device an MQTT client id belongs to: the device whose id equals it, else the one with the
   * longest id `d` such that the client id starts with `d-`. Longest wins, so device `a` can never
   * claim `a-b`, the session of device `a-b`.
   */
  ownerOfClientId(clientId: string): Device | undefined {
    const exact = this.byId.get(clientId);
    if (exact !== undefined) return exact;
    for (let i = clientId.lastIndexOf('-'); i > 0; i = clientId.lastIndexOf('-', i - 1)) {
      const owner = this.byId.get(clientId.slice(0, i));
      if (owner !== undefined) return owner;
    }
    return undefined;
  }
}

async function readDevicesFile(path: string): Promise<{ raw: Record<string, unknown>; devices: Device[] }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new DevicesFileError(path, [`cannot read: ${(err as Error).message}`]);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new DevicesFileError(path, [`bad JSON: ${(err as Error).message}`]);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new DevicesFileError(path, ['must be a JSON object {"devices":[...]}']);
  }
  const list = (raw as Record<string, unknown>).devices;
  if (!Array.isArray(list)) throw new DevicesFileError(path, ['devices: must be an array']);
  const { devices, problems } = validateList(list, 'devices');
  if (problems.length > 0) throw new DevicesFileError(path, problems);
  return { raw: raw as Record<string, unknown>, devices };
}

/** Reads and validates a DEVICES_FILE; throws one `DevicesFileError` listing every problem. */
export async function loadDevices(path: string): Promise<DeviceRegistry> {
  const { devices } = await readDevicesFile(path);
  return DeviceRegistry.fromList(devices);
}

export interface NewDevice {
  id: string;
  warehouse: string;
  kind: string;
  password: string;
}

// Longest password accepted: scrypt takes any length, this only bounds the input.
const MAX_PASSWORD_CHARS = 1024;

/**
 * Adds a credential to a devices file, creating the file (mode 0600) if absent.
 * Refuses bad input and a duplicate id; writes a temporary file, fsyncs and renames it over the old one.
 * Not safe against two concurrent writers of the same file (the last rename wins).
 */
export async function addDevice(path: string, input: NewDevice): Promise<void> {
  const problems = identityProblems({ id: input.id, warehouse: input.warehouse, kind: input.kind }, 'device');
  if (typeof input.password !== 'string' || input.password.length === 0) problems.push('password: must not be empty');
  else if (input.password.length > MAX_PASSWORD_CHARS)
    problems.push(`password: at most ${MAX_PASSWORD_CHARS} characters`);
  if (problems.length > 0) throw new DevicesFileError('new device', problems);

  let raw: Record<string, unknown> = { devices: [] };
  let devices: Device[] = [];
  let mode = 0o600;
  const existing = await stat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
  if (existing !== null) {
    ({ raw, devices } = await readDevicesFile(path));
    mode = existing.mode & 0o777;
  }
  if (devices.some((d) => d.id === input.id)) {
    throw new DevicesFileError(path, [`device "${input.id}" already exists; remove it first to change its credential`]);
  }

  const passwordHash = await hashPassword(input.password);
  const entries = Array.isArray(raw.devices) ? (raw.devices as unknown[]) : [];
  const next = {
    ...raw,
    devices: [...entries, { id: input.id, warehouse: input.warehouse, kind: input.kind, passwordHash }],
  };
  await writeAtomically(path, `${JSON.stringify(next, null, 2)}\n`, mode);
}

async function writeAtomically(path: string, text: string, mode: number): Promise<void> {
  const dir = dirname(path);
  const temp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const file = await open(temp, 'wx', mode);
  try {
    await file.writeFile(text, 'utf8');
    await file.chmod(mode); // the umask may have narrowed or widened the create mode
    await file.sync();
  } catch (err) {
    await file.close();
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  await file.close();
  try {
    await rename(temp, path);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  // fsync the directory so the rename itself survives a crash
  const dirHandle = await open(dir, 'r');
  try {
    await dirHandle.sync();
  } finally {
    await dirHandle.close();
  }
}
