import type { Logger } from 'pino';
import { ConfigError, helpText, parseConfig, type Specs, type Values } from './options.js';

export const EXIT_USAGE = 2;
const FORCE_AFTER_MS = 2_000; // a signal this long after the first one forces the exit

/** Parses config (exit 2 listing every problem), or prints help (exit 0). Returns null when the process should exit. */
export function configure<S extends Specs>(
  command: string,
  summary: string,
  specs: S,
  argv: string[],
): Values<S> | null {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(helpText(command, summary, specs));
    process.exitCode = 0;
    return null;
  }
  try {
    return parseConfig(specs, argv, process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    usageError(command, err.problems);
    return null;
  }
}

/** Reports problems found after parsing (files, combinations of options) like a bad flag: listed on stderr, exit 2. */
export function usageError(command: string, problems: string[]): void {
  process.stderr.write(`stockwire ${command}: invalid configuration\n${problems.map((p) => `  - ${p}`).join('\n')}\n`);
  process.exitCode = EXIT_USAGE;
}

/**
 * Runs a long-lived service: prints the ready line once it serves, stops cleanly on SIGTERM/SIGINT
 * (exit 0), and exits at once on a second signal.
 */
export async function serve<Ready extends object>(
  log: Logger,
  start: () => Promise<Ready>,
  stop: () => Promise<void>,
): Promise<void> {
  let stoppingSince = 0;
  const onSignal = (signal: string) => {
    if (stoppingSince > 0) {
      // `npm start` forwards Ctrl-C and the terminal sends it too: one press can arrive twice at once.
      if (Date.now() - stoppingSince < FORCE_AFTER_MS) return;
      log.warn({ signal }, 'signal while stopping, exiting now');
      process.exit(1);
    }
    stoppingSince = Date.now();
    log.info({ signal }, 'stopping');
    stop().then(
      () => {
        log.info('stopped');
        log.flush?.();
        process.exit(0);
      },
      (err: Error) => {
        log.error({ err: err.message }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
  try {
    const ports = await start();
    process.stdout.write(`${JSON.stringify({ ready: true, ...ports })}\n`);
  } catch (err) {
    log.fatal({ err: (err as Error).message }, 'start failed');
    await stop().catch(() => {});
    log.flush?.();
    process.exitCode = 1;
    setTimeout(() => process.exit(1), 100).unref();
  }
}
