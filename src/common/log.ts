// Structured logging (pino) to stderr, so stdout stays free for the CLI's own output
// and the server's ready line. Per-request child loggers carry the request id.
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const satisfies readonly LevelWithSilent[];

export function createLogger(options: { level?: LevelWithSilent; name?: string } = {}): Logger {
  return pino(
    { level: options.level ?? 'info', base: { name: options.name ?? 'cairn' }, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ fd: 2, sync: false }),
  );
}

/** A logger that drops everything (for tests and library use). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
