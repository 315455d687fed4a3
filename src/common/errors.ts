// One registry of Cairn's stable error codes, each mapped to a gRPC status.
// Callers branch on `err.code`, never on messages; docs/errors.md documents every code.
import { status as GrpcStatus } from '@grpc/grpc-js';

export interface ErrorSpec {
  /** gRPC status code sent on the wire. */
  readonly grpc: GrpcStatus;
  /** HTTP status for the HTTP endpoints. */
  readonly http: number;
  /** Whether a client may retry the same request (possibly after a delay). */
  readonly retryable: boolean;
}

function spec(grpc: GrpcStatus, http: number, retryable = false): ErrorSpec {
  return Object.freeze({ grpc, http, retryable });
}

export const ERROR_CODES = Object.freeze({
  CAIRN_INVALID_ARGUMENT: spec(GrpcStatus.INVALID_ARGUMENT, 400),
  CAIRN_INVALID_PATH: spec(GrpcStatus.INVALID_ARGUMENT, 400),
  CAIRN_INVALID_HASH: spec(GrpcStatus.INVALID_ARGUMENT, 400),
  CAIRN_HASH_MISMATCH: spec(GrpcStatus.INVALID_ARGUMENT, 400),
  CAIRN_SIZE_MISMATCH: spec(GrpcStatus.INVALID_ARGUMENT, 400),
  CAIRN_BLOCK_TOO_LARGE: spec(GrpcStatus.INVALID_ARGUMENT, 400),
  CAIRN_INVALID_PAGE_TOKEN: spec(GrpcStatus.INVALID_ARGUMENT, 400),
  CAIRN_INVALID_CURSOR: spec(GrpcStatus.INVALID_ARGUMENT, 400),
  CAIRN_OUT_OF_RANGE: spec(GrpcStatus.OUT_OF_RANGE, 416),
  CAIRN_FILE_TOO_LARGE: spec(GrpcStatus.OUT_OF_RANGE, 413),
  CAIRN_NOT_FOUND: spec(GrpcStatus.NOT_FOUND, 404),
  CAIRN_ALREADY_EXISTS: spec(GrpcStatus.ALREADY_EXISTS, 409),
  CAIRN_CONFLICT: spec(GrpcStatus.ABORTED, 409),
  CAIRN_TX_CONFLICT: spec(GrpcStatus.ABORTED, 409, true),
  CAIRN_CURSOR_EXPIRED: spec(GrpcStatus.FAILED_PRECONDITION, 410),
  CAIRN_FAILED_PRECONDITION: spec(GrpcStatus.FAILED_PRECONDITION, 412),
  CAIRN_UNAUTHENTICATED: spec(GrpcStatus.UNAUTHENTICATED, 401),
  CAIRN_TOKEN_EXPIRED: spec(GrpcStatus.UNAUTHENTICATED, 401),
  CAIRN_PERMISSION_DENIED: spec(GrpcStatus.PERMISSION_DENIED, 403),
  CAIRN_QUOTA_EXCEEDED: spec(GrpcStatus.RESOURCE_EXHAUSTED, 507),
  CAIRN_RATE_LIMITED: spec(GrpcStatus.RESOURCE_EXHAUSTED, 429, true),
  CAIRN_DISK_FULL: spec(GrpcStatus.RESOURCE_EXHAUSTED, 507, true),
  CAIRN_UNAVAILABLE: spec(GrpcStatus.UNAVAILABLE, 503, true),
  CAIRN_INSUFFICIENT_REPLICAS: spec(GrpcStatus.UNAVAILABLE, 503, true),
  CAIRN_SHUTTING_DOWN: spec(GrpcStatus.UNAVAILABLE, 503, true),
  CAIRN_DEADLINE_EXCEEDED: spec(GrpcStatus.DEADLINE_EXCEEDED, 504, true),
  CAIRN_CANCELLED: spec(GrpcStatus.CANCELLED, 499),
  CAIRN_DATA_LOSS: spec(GrpcStatus.DATA_LOSS, 500),
  CAIRN_CORRUPT_BLOCK: spec(GrpcStatus.DATA_LOSS, 500),
  CAIRN_UNIMPLEMENTED: spec(GrpcStatus.UNIMPLEMENTED, 501),
  CAIRN_INTERNAL: spec(GrpcStatus.INTERNAL, 500),
} satisfies Record<string, ErrorSpec>);

export type ErrorCode = keyof typeof ERROR_CODES;

export interface FieldViolation {
  readonly field: string;
  readonly description: string;
}

export interface CairnErrorOptions {
  /** Extra key/values sent in ErrorInfo.metadata (strings only, no secrets). */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Suggested client back-off, sent as google.rpc.RetryInfo. */
  readonly retryAfterMs?: number;
  /** Offending request fields, sent as google.rpc.BadRequest. */
  readonly fieldViolations?: readonly FieldViolation[];
  readonly cause?: unknown;
}

/** A domain error with a stable code; the gRPC layer turns it into a google.rpc.Status. */
export class CairnError extends Error {
  override readonly name = 'CairnError';
  readonly code: ErrorCode;
  readonly metadata: Readonly<Record<string, string>>;
  readonly retryAfterMs: number | undefined;
  readonly fieldViolations: readonly FieldViolation[];

  constructor(code: ErrorCode, message: string, options: CairnErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    if (!(code in ERROR_CODES)) throw new TypeError(`unknown error code ${String(code)}`);
    this.code = code;
    this.metadata = Object.freeze({ ...options.metadata });
    this.retryAfterMs = options.retryAfterMs;
    this.fieldViolations = Object.freeze([...(options.fieldViolations ?? [])]);
  }

  get grpcCode(): GrpcStatus {
    return ERROR_CODES[this.code].grpc;
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code].http;
  }

  get retryable(): boolean {
    return ERROR_CODES[this.code].retryable;
  }
}

export function isCairnError(err: unknown, code?: ErrorCode): err is CairnError {
  return err instanceof CairnError && (code === undefined || err.code === code);
}

export function isErrorCode(value: string): value is ErrorCode {
  return Object.hasOwn(ERROR_CODES, value);
}
