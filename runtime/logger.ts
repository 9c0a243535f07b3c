import pino, { type Logger } from 'pino';

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LEVELS)[number];
export const logLevel = (raw: string): LogLevel => {
  if (!(LEVELS as readonly string[]).includes(raw)) throw new Error(`must be one of ${LEVELS.join(', ')}`);
  return raw as LogLevel;
};

/**
 * Fields never logged, at the top of a log object or one level down (`{ config }`): credentials and every
 * option marked `secret` (test/security checks that each secret option is listed here).
 */
export const SECRET_FIELDS = [
  'password',
  'passwordHash',
  'centralPassword',
  'databaseUrl',
  'redisUrl',
  'apiToken',
  'apiReadToken',
  'token',
  'tlsKey',
  'centralKey',
  'key',
  'authorization',
];
export const REDACT_PATHS = [
  ...SECRET_FIELDS.flatMap((f) => [f, `*.${f}`]),
  'headers.authorization',
  '*.headers.authorization',
];

/** Logs go to stderr: stdout carries only the machine-readable ready line. Credentials are redacted. */
export function createLogger(
  name: string,
  level: LogLevel,
  destination: pino.DestinationStream = pino.destination({ fd: 2, sync: false }),
): Logger {
  return pino({ name, level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, destination);
}

/** Removes the password from a connection URL before it is shown anywhere. */
export function redactUrl(raw: string): string {
  try {
    const u = new URL(raw);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '[unparseable url]';
  }
}
