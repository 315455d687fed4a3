// Exit codes of the `cairn` binary, and how errors are printed: one line, no stack, with the
// stable error code so scripts can branch on it.
import { ConfigError } from '../common/config.js';
import { CairnError, type ErrorCode } from '../common/errors.js';

export const EXIT = Object.freeze({
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
  NOT_FOUND: 3,
  AUTH: 4,
  CONFLICT: 5,
  UNAVAILABLE: 6,
  DATA_LOSS: 7,
});

const BY_CODE: Partial<Record<ErrorCode, number>> = {
  CAIRN_INVALID_ARGUMENT: EXIT.USAGE,
  CAIRN_INVALID_PATH: EXIT.USAGE,
  CAIRN_INVALID_HASH: EXIT.USAGE,
  CAIRN_OUT_OF_RANGE: EXIT.USAGE,
  CAIRN_FILE_TOO_LARGE: EXIT.USAGE,
  CAIRN_FAILED_PRECONDITION: EXIT.USAGE,
  CAIRN_NOT_FOUND: EXIT.NOT_FOUND,
  CAIRN_UNAUTHENTICATED: EXIT.AUTH,
  CAIRN_TOKEN_EXPIRED: EXIT.AUTH,
  CAIRN_PERMISSION_DENIED: EXIT.AUTH,
  CAIRN_CONFLICT: EXIT.CONFLICT,
  CAIRN_ALREADY_EXISTS: EXIT.CONFLICT,
  CAIRN_UNAVAILABLE: EXIT.UNAVAILABLE,
  CAIRN_INSUFFICIENT_REPLICAS: EXIT.UNAVAILABLE,
  CAIRN_DEADLINE_EXCEEDED: EXIT.UNAVAILABLE,
  CAIRN_DATA_LOSS: EXIT.DATA_LOSS,
  CAIRN_CORRUPT_BLOCK: EXIT.DATA_LOSS,
};

export function exitCodeFor(err: unknown): number {
  if (err instanceof ConfigError) return EXIT.USAGE;
  if (err instanceof CairnError) return BY_CODE[err.code] ?? EXIT.FAILURE;
  return EXIT.FAILURE;
}

export function describeError(err: unknown): string {
  if (err instanceof ConfigError) return err.message;
  if (err instanceof CairnError) return `${err.message} [${err.code}]`;
  const e = err as NodeJS.ErrnoException;
  if (e.code === 'ENOENT' && e.path !== undefined) return `no such file: ${e.path}`;
  if (e.code === 'EACCES' && e.path !== undefined) return `permission denied: ${e.path}`;
  if (e.code === 'EADDRINUSE') return `address already in use: ${e.message}`;
  return e.message ?? String(err);
}
