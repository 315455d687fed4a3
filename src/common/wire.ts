// Conversions between wire types (64-bit integers as decimal strings) and JS numbers,
// rejecting values a JS number cannot hold exactly.
import { CairnError } from './errors.js';

/** Parses a uint64/int64 wire value; throws CAIRN_INVALID_ARGUMENT naming `field` when unsafe. */
export function wireInt(value: string | number | undefined, field: string, { min = 0 } = {}): number {
  const n = typeof value === 'number' ? value : value === undefined || value === '' ? 0 : Number(value);
  if (!Number.isSafeInteger(n) || n < min) {
    throw new CairnError('CAIRN_INVALID_ARGUMENT', `${field} must be an integer in ${min}..${Number.MAX_SAFE_INTEGER}, got ${String(value)}`, { fieldViolations: [{ field, description: 'out of range' }] });
  }
  return n;
}

/**
 * A response message already in protobuf wire form. A handler that streams bulk bytes builds its
 * messages itself (one allocation and one copy of the payload, as protobufjs would make) so it
 * can pack many pieces into one message; `payloadBytes` is the data it carries, for byte budgets.
 * The method's serializer must accept it: see `acceptEncoded`.
 */
export class EncodedMessage {
  constructor(
    readonly bytes: Buffer,
    readonly payloadBytes: number,
    /**
     * Called once gRPC has copied `bytes` into its frame (grpc-js does so in the same synchronous
     * step as serializing), so the buffer can be reused for a later message.
     */
    readonly onSerialized?: () => void,
  ) {}
}

/** `service` with the named methods' response serializers passing EncodedMessage through. */
export function acceptEncoded<S extends Record<string, { responseSerialize: (value: never) => Buffer }>>(service: S, methods: readonly (keyof S & string)[]): S {
  const out: Record<string, unknown> = { ...service };
  for (const name of methods) {
    const method = service[name];
    if (method === undefined) throw new Error(`no method ${name}`);
    const inner = method.responseSerialize as (value: unknown) => Buffer;
    out[name] = {
      ...method,
      responseSerialize: (value: unknown): Buffer => {
        if (!(value instanceof EncodedMessage)) return inner(value);
        // grpc-js copies the returned bytes into the frame before anything else runs.
        if (value.onSerialized) queueMicrotask(value.onSerialized);
        return value.bytes;
      },
    };
  }
  return out as S;
}

/** Bytes of `n` as a protobuf varint. */
export function varintBytes(n: number): number {
  let bytes = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    bytes++;
  }
  return bytes;
}

function writeVarint(buf: Buffer, at: number, n: number): number {
  while (n >= 0x80) {
    buf[at++] = (n % 0x80) | 0x80;
    n = Math.floor(n / 0x80);
  }
  buf[at++] = n;
  return at;
}

/**
 * The wire form of a message `{ <bytesField>: concat(pieces), <offsetField>: offset }` (a bytes
 * field and a uint64 field, as in ReadFileResponse), copying each piece once — into `scratch`
 * when it is large enough (then `onSerialized` tells when it is free again).
 */
export function encodeBytesAndOffset(bytesField: number, pieces: readonly Uint8Array[], offsetField: number, offset: number, scratch?: Buffer, onSerialized?: () => void): EncodedMessage {
  if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`offset must be a safe non-negative integer, got ${offset}`);
  let length = 0;
  for (const p of pieces) length += p.length;
  const size = 1 + varintBytes(length) + length + 1 + varintBytes(offset);
  const reuse = scratch !== undefined && scratch.length >= size;
  const buf = reuse ? scratch.subarray(0, size) : Buffer.allocUnsafe(size);
  buf[0] = (bytesField << 3) | 2;
  let at = writeVarint(buf, 1, length);
  for (const p of pieces) {
    buf.set(p, at);
    at += p.length;
  }
  buf[at++] = offsetField << 3;
  at = writeVarint(buf, at, offset);
  if (at !== size) throw new Error('encodeBytesAndOffset: size mismatch');
  return new EncodedMessage(buf, length, reuse ? onSerialized : undefined);
}
