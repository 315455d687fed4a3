// Turns CairnErrors into gRPC errors carrying google.rpc.Status (ErrorInfo, RetryInfo, BadRequest)
// in `grpc-status-details-bin`, and back again on the client side.
import { join } from 'node:path';
import { Metadata, status as GrpcStatus, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { CairnError, isErrorCode, type FieldViolation } from './errors.js';
import { PROTO_DIR } from './proto.js';

export const ERROR_DOMAIN = 'cairn.dev';
const DETAILS_KEY = 'grpc-status-details-bin';
const TYPE_PREFIX = 'type.googleapis.com/';

const root = new protobuf.Root();
root.resolvePath = (_origin, target) => (target.startsWith('google/protobuf/') ? target : join(PROTO_DIR, target));
root.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: true });
const StatusType = root.lookupType('google.rpc.Status');
const ErrorInfoType = root.lookupType('google.rpc.ErrorInfo');
const RetryInfoType = root.lookupType('google.rpc.RetryInfo');
const BadRequestType = root.lookupType('google.rpc.BadRequest');

interface AnyMessage {
  type_url: string;
  value: Uint8Array;
}

function pack(type: protobuf.Type, value: Record<string, unknown>): AnyMessage {
  return { type_url: TYPE_PREFIX + type.fullName.replace(/^\./, ''), value: type.encode(type.fromObject(value)).finish() };
}

/** Encodes a CairnError as a google.rpc.Status. */
export function encodeStatus(err: CairnError, message = err.message): Buffer {
  const details: AnyMessage[] = [pack(ErrorInfoType, { reason: err.code, domain: ERROR_DOMAIN, metadata: { ...err.metadata } })];
  if (err.retryAfterMs !== undefined) {
    const ms = Math.max(0, Math.round(err.retryAfterMs));
    details.push(pack(RetryInfoType, { retry_delay: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 } }));
  }
  if (err.fieldViolations.length > 0) {
    details.push(pack(BadRequestType, { field_violations: err.fieldViolations.map((v) => ({ field: v.field, description: v.description })) }));
  }
  return Buffer.from(StatusType.encode(StatusType.fromObject({ code: err.grpcCode, message, details })).finish());
}

/** The gRPC error object a handler passes to its callback (or emits on a stream). */
export function toServiceError(err: CairnError, message = err.message): Partial<StatusObject> & { code: GrpcStatus; details: string; metadata: Metadata } {
  const metadata = new Metadata();
  metadata.set(DETAILS_KEY, encodeStatus(err, message));
  return { code: err.grpcCode, details: message, metadata };
}

export interface DecodedStatus {
  readonly code: number;
  readonly message: string;
  readonly reason?: string;
  readonly domain?: string;
  readonly metadata: Record<string, string>;
  readonly retryAfterMs?: number;
  readonly fieldViolations: FieldViolation[];
}

export function decodeStatus(bytes: Uint8Array): DecodedStatus {
  const status = StatusType.toObject(StatusType.decode(bytes), { longs: Number, defaults: true }) as { code: number; message: string; details: AnyMessage[] };
  let reason: string | undefined;
  let domain: string | undefined;
  let metadata: Record<string, string> = {};
  let retryAfterMs: number | undefined;
  const fieldViolations: FieldViolation[] = [];
  for (const any of status.details) {
    const typeName = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    if (typeName === 'google.rpc.ErrorInfo') {
      const info = ErrorInfoType.toObject(ErrorInfoType.decode(any.value), { defaults: true }) as { reason: string; domain: string; metadata: Record<string, string> };
      reason = info.reason;
      domain = info.domain;
      metadata = info.metadata;
    } else if (typeName === 'google.rpc.RetryInfo') {
      const info = RetryInfoType.toObject(RetryInfoType.decode(any.value), { longs: Number, defaults: true }) as { retry_delay?: { seconds: number; nanos: number } };
      if (info.retry_delay) retryAfterMs = info.retry_delay.seconds * 1000 + Math.round(info.retry_delay.nanos / 1e6);
    } else if (typeName === 'google.rpc.BadRequest') {
      const info = BadRequestType.toObject(BadRequestType.decode(any.value), { defaults: true }) as { field_violations: Array<{ field: string; description: string }> };
      for (const v of info.field_violations) fieldViolations.push({ field: v.field, description: v.description });
    }
  }
  return {
    code: status.code,
    message: status.message,
    metadata,
    fieldViolations,
    ...(reason !== undefined ? { reason } : {}),
    ...(domain !== undefined ? { domain } : {}),
    ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
  };
}

const FALLBACK: Partial<Record<GrpcStatus, CairnError['code']>> = {
  [GrpcStatus.INVALID_ARGUMENT]: 'CAIRN_INVALID_ARGUMENT',
  [GrpcStatus.NOT_FOUND]: 'CAIRN_NOT_FOUND',
  [GrpcStatus.ALREADY_EXISTS]: 'CAIRN_ALREADY_EXISTS',
  [GrpcStatus.PERMISSION_DENIED]: 'CAIRN_PERMISSION_DENIED',
  [GrpcStatus.UNAUTHENTICATED]: 'CAIRN_UNAUTHENTICATED',
  [GrpcStatus.RESOURCE_EXHAUSTED]: 'CAIRN_RATE_LIMITED',
  [GrpcStatus.FAILED_PRECONDITION]: 'CAIRN_FAILED_PRECONDITION',
  [GrpcStatus.ABORTED]: 'CAIRN_TX_CONFLICT',
  [GrpcStatus.OUT_OF_RANGE]: 'CAIRN_OUT_OF_RANGE',
  [GrpcStatus.UNIMPLEMENTED]: 'CAIRN_UNIMPLEMENTED',
  [GrpcStatus.UNAVAILABLE]: 'CAIRN_UNAVAILABLE',
  [GrpcStatus.DEADLINE_EXCEEDED]: 'CAIRN_DEADLINE_EXCEEDED',
  [GrpcStatus.CANCELLED]: 'CAIRN_CANCELLED',
  [GrpcStatus.DATA_LOSS]: 'CAIRN_DATA_LOSS',
};

/** Converts an error from a gRPC call into a CairnError, using ErrorInfo.reason when present. */
export function fromServiceError(err: unknown): CairnError {
  if (err instanceof CairnError) return err;
  const se = err as Partial<ServiceError>;
  const code = typeof se.code === 'number' ? se.code : GrpcStatus.UNKNOWN;
  const raw = se.metadata instanceof Metadata ? se.metadata.get(DETAILS_KEY)[0] : undefined;
  if (raw instanceof Buffer) {
    try {
      const decoded = decodeStatus(raw);
      if (decoded.domain === ERROR_DOMAIN && decoded.reason !== undefined && isErrorCode(decoded.reason)) {
        return new CairnError(decoded.reason, decoded.message, {
          metadata: decoded.metadata,
          fieldViolations: decoded.fieldViolations,
          cause: err,
          ...(decoded.retryAfterMs !== undefined ? { retryAfterMs: decoded.retryAfterMs } : {}),
        });
      }
    } catch {
      // Undecodable details: fall through to the status code.
    }
  }
  const message = se.details ?? (err instanceof Error ? err.message : String(err));
  return new CairnError(FALLBACK[code] ?? 'CAIRN_INTERNAL', message, { cause: err });
}
