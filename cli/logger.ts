import pino, { type Logger } from 'pino';

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LEVELS)[number];
export const logLevel = (raw: string): LogLevel => {
  if (!(LEVELS as readonly string[]).includes(raw)) throw new Error(`must be one of ${LEVELS.join(', ')}`);
  return raw as LogLevel;
};

/** Logs go to stderr: stdout carries only the machine-readable ready line. Credentials are redacted. */
export function createLogger(name: string, level: LogLevel): Logger {
  return pino(
    {
      name,
      level,
      redact: {
        paths: ['password', '*.password', 'passwordHash', '*.passwordHash', 'centralPassword', '*.centralPassword', 'databaseUrl', '*.databaseUrl', 'headers.authorization'],
        censor: '[redacted]',
      },
    },
    pino.destination({ fd: 2, sync: false }),
  );
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
