// Presigned HTTP URLs: an HMAC-SHA256 (key = HKDF of the cluster's signing secret, label
// "cairn/v1/presign") over method, tenant, path, version, expiry and recipient, checked in constant time.
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { CairnError } from '../common/errors.js';
import { normalizePath } from '../common/paths.js';

export const PRESIGN_PREFIX = '/v1/presigned/';
export const DEFAULT_PRESIGN_SECONDS = 900;
export const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;
const LABEL = 'cairn/v1/presign';
const SIG_BYTES = 32;

export type PresignedMethod = 'GET' | 'PUT';

export interface PresignClaims {
  readonly method: PresignedMethod;
  readonly tenant: string;
  readonly path: string;
  /** 0 = the version current when the URL is used. */
  readonly version: number;
  /** Expiry, seconds since the epoch. */
  readonly expires: number;
  /** A share recipient's user id (their access is checked again on use); '' for the owner tenant. */
  readonly user: string;
}

/** Every gateway derives the same key from the shared signing secret, so any gateway serves any URL. */
export function presignKey(secret: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), LABEL, 32));
}

function mac(key: Buffer, c: PresignClaims): Buffer {
  // Newline-separated: no field may contain one (paths and tenants exclude control characters).
  return createHmac('sha256', key).update(['cairn-presign-v1', c.method, c.tenant, c.path, String(c.version), String(c.expires), c.user].join('\n')).digest();
}

/** "/a/b c" → "/a/b%20c": each segment percent-encoded, slashes kept. */
export function encodePath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

export function signedPathAndQuery(key: Buffer, c: PresignClaims): string {
  const q = new URLSearchParams({ v: String(c.version), x: String(c.expires) });
  if (c.user !== '') q.set('u', c.user);
  q.set('s', mac(key, c).toString('base64url'));
  return `${PRESIGN_PREFIX}${c.tenant}${encodePath(c.path)}?${q.toString()}`;
}

function denied(message: string): CairnError {
  return new CairnError('CAIRN_PERMISSION_DENIED', message);
}

/**
 * Checks a presigned request (pathname after the prefix and query) for `method` (HEAD counts as
 * GET) at `nowMs`; returns its claims or throws CAIRN_PERMISSION_DENIED (HTTP 403). Tampering with
 * any signed part, another method, and expiry are indistinguishable to the caller except expiry.
 */
export function verifyPresigned(key: Buffer, method: string, pathname: string, query: URLSearchParams, nowMs: number): PresignClaims {
  const signedMethod: PresignedMethod | undefined = method === 'GET' || method === 'HEAD' ? 'GET' : method === 'PUT' ? 'PUT' : undefined;
  if (signedMethod === undefined) throw new CairnError('CAIRN_INVALID_ARGUMENT', `method ${method} is not allowed on presigned URLs`);
  const rest = pathname.slice(PRESIGN_PREFIX.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) throw denied('malformed presigned URL');
  const tenant = rest.slice(0, slash);
  let path: string;
  try {
    path = normalizePath(decodeURIComponent(rest.slice(slash)));
  } catch {
    throw denied('malformed presigned URL');
  }
  const v = query.get('v') ?? '';
  const x = query.get('x') ?? '';
  const s = query.get('s') ?? '';
  if (!/^\d{1,15}$/.test(v) || !/^\d{1,15}$/.test(x) || !/^[A-Za-z0-9_-]{43}$/.test(s)) throw denied('malformed presigned URL');
  const claims: PresignClaims = { method: signedMethod, tenant, path, version: Number(v), expires: Number(x), user: query.get('u') ?? '' };
  const given = Buffer.from(s, 'base64url');
  const expected = mac(key, claims);
  if (given.length !== SIG_BYTES || !timingSafeEqual(given, expected)) throw denied('signature does not match');
  if (claims.expires * 1000 <= nowMs) throw denied('presigned URL expired');
  return claims;
}
