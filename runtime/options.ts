import { isIdent } from '../protocol/ids.js';
import { parseArgs } from 'node:util';

/** One configuration option: a flag, the environment variable of the same meaning, a parser. */
export interface OptionSpec<T> {
  flag: string;
  env?: string;
  help: string;
  /** parses the raw string; throws an Error whose message names the problem */
  parse: (raw: string) => T;
  default?: T;
  required?: boolean;
  secret?: boolean;
  /** a switch: `--flag` alone means "true" (its environment variable takes true/false/1/0/yes/no) */
  boolean?: boolean;
}

export type Specs = Record<string, OptionSpec<unknown>>;
export type Values<S extends Specs> = {
  readonly [K in keyof S]: S[K] extends OptionSpec<infer T>
    ? S[K] extends { required: true } | { default: unknown }
      ? T
      : T | undefined
    : never;
};

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
  }
}

export const str = (raw: string): string => raw;
export const int =
  (min: number, max: number) =>
  (raw: string): number => {
    const n = Number(raw);
    if (!/^-?\d+$/.test(raw.trim()) || n < min || n > max) throw new Error(`must be an integer from ${min} to ${max}`);
    return n;
  };
export const port = int(0, 65535);
export const oneOf =
  <T extends string>(...choices: T[]) =>
  (raw: string): T => {
    if (!choices.includes(raw as T)) throw new Error(`must be one of ${choices.join(', ')}`);
    return raw as T;
  };
/** The value with any `user:password@` of a URL in it masked: a URL that is not a secret option may still carry one. */
function withoutUserinfo(raw: string): string {
  return raw.replace(/(:\/\/)[^/?#@\s]*@/g, '$1***@');
}

export const url =
  (...protocols: string[]) =>
  (raw: string): string => {
    let u: URL;
    try {
      u = new URL(raw);
    } catch {
      throw new Error('must be a URL');
    }
    if (!protocols.includes(u.protocol)) throw new Error(`must use ${protocols.join(' or ')}`);
    return raw;
  };
export const list = (raw: string): string[] =>
  raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
/**
 * A comma-separated list of warehouse ids, each a valid identifier, none twice, between `min` and `max` of them.
 * Every command that takes warehouses parses them with this.
 */
export const warehouseList =
  ({ min = 0, max = Number.POSITIVE_INFINITY }: { min?: number; max?: number } = {}) =>
  (raw: string): string[] => {
    const whs = list(raw);
    const bad = whs.filter((w) => !isIdent(w));
    if (bad.length > 0) throw new Error(`has invalid warehouse ids: ${bad.join(', ')}`);
    const twice = whs.filter((w, i) => whs.indexOf(w) !== i);
    if (twice.length > 0) throw new Error(`names a warehouse more than once: ${[...new Set(twice)].join(', ')}`);
    if (whs.length < min || whs.length > max)
      throw new Error(
        max === Number.POSITIVE_INFINITY
          ? `must name at least ${min} warehouse(s)`
          : `must name ${min} to ${max} warehouses, comma-separated`,
      );
    return whs;
  };

/** Declares an option with its type inferred from its parser: `opt({ flag, env, help, parse, default })`. */
export const opt = <S extends OptionSpec<unknown>>(spec: S): S => spec;

export const bool = (raw: string): boolean => {
  const v = raw.trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(v)) return true;
  if (['false', '0', 'no', 'off'].includes(v)) return false;
  throw new Error('must be true or false');
};
export const fraction = (raw: string): number => {
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(n) || n < 0 || n > 1) throw new Error('must be a number from 0 to 1');
  return n;
};
export const positive =
  (max: number) =>
  (raw: string): number => {
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n) || n <= 0 || n > max)
      throw new Error(`must be a number above 0, at most ${max}`);
    return n;
  };

/**
 * Parses flags, then environment variables of the same meaning (a flag wins), then defaults.
 * Every problem is collected before failing, so one run lists them all (CONTRACT section 1).
 */
export function parseConfig<S extends Specs>(specs: S, argv: string[], env: NodeJS.ProcessEnv): Values<S> {
  const problems: string[] = [];
  const options: Record<string, { type: 'string' | 'boolean' }> = {};
  for (const spec of Object.values(specs)) options[spec.flag] = { type: spec.boolean ? 'boolean' : 'string' };
  let values: Record<string, string | undefined> = {};
  try {
    const parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: false });
    // a switch given on the command line is true; its parser sees the same text an env variable would give
    values = Object.fromEntries(
      Object.entries(parsed.values).map(([k, v]) => [k, typeof v === 'boolean' ? String(v) : v]),
    ) as Record<string, string | undefined>;
  } catch (err) {
    problems.push((err as Error).message);
  }
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(specs)) {
    const raw = values[spec.flag] ?? (spec.env ? env[spec.env] : undefined);
    const name = spec.env ? `--${spec.flag} (${spec.env})` : `--${spec.flag}`;
    if (raw === undefined || raw === '') {
      if (spec.required) problems.push(`${name} is required`);
      out[key] = spec.default;
      continue;
    }
    try {
      out[key] = spec.parse(raw);
    } catch (err) {
      problems.push(
        `${name} ${(err as Error).message}${spec.secret ? '' : ` (got ${JSON.stringify(withoutUserinfo(raw))})`}`,
      );
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(out) as Values<S>;
}

export function helpText(command: string, summary: string, specs: Specs): string {
  const rows = Object.values(specs).map((s) => {
    const left = `  --${s.flag}${s.env ? ` (${s.env})` : ''}`;
    const def = s.required
      ? ' [required]'
      : s.default !== undefined && !s.secret
        ? ` [default: ${String(s.default)}]`
        : '';
    return `${left.padEnd(44)} ${s.help}${def}`;
  });
  return `Usage: stockwire ${command} [options]\n\n${summary}\n\nOptions (a flag wins over its environment variable):\n${rows.join('\n')}\n  --help${' '.repeat(38)} show this help\n`;
}
