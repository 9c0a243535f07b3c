import pino, { type Logger } from 'pino';

export type LogLine = Record<string, unknown> & { msg?: string };

/** A pino logger whose lines are kept, parsed, for a test to search and wait on (TEST_LOG=1 also prints them). */
export class CapturedLog {
  readonly lines: LogLine[] = [];
  readonly log: Logger;
  private waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];

  constructor(level = 'debug') {
    const echo = process.env.TEST_LOG !== undefined;
    this.log = pino(
      { level },
      {
        write: (s: string) => {
          if (echo) process.stderr.write(s);
          const line = JSON.parse(s) as LogLine;
          this.lines.push(line);
          this.waiters = this.waiters.filter((w) => {
            if (w.pred(line)) {
              w.resolve(line);
              return false;
            }
            return true;
          });
        },
      },
    );
  }

  find(pred: (l: LogLine) => boolean): LogLine | undefined {
    return this.lines.find(pred);
  }

  /** Resolves with the first line from index `from` on (already logged or to come) that fits. */
  waitFor(pred: (l: LogLine) => boolean, what: string, timeoutMs = 15_000, from = 0): Promise<LogLine> {
    const found = this.lines.slice(from).find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () =>
          reject(
            new Error(
              `no log line with ${what} within ${timeoutMs} ms; last lines:\n${this.lines
                .slice(-8)
                .map((l) => JSON.stringify(l))
                .join('\n')}`,
            ),
          ),
        timeoutMs,
      );
      this.waiters.push({
        pred,
        resolve: (l) => {
          clearTimeout(t);
          resolve(l);
        },
      });
    });
  }
}
