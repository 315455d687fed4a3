// Presigned thumbnail URLs: an HMAC-SHA256 (key = HKDF of the cluster's signing secret with its own
// label, so a thumbnail URL can never be turned into a file URL or the reverse) over tenant, path,
// pinned version, ladder size, expiry and recipient, checked in constant time.
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { CairnError } from '../common/errors.js';
import { normalizePath } from '../common/paths.js';
import { LADDER } from './options.js';

export const PRESIGNED_THUMBNAIL_PREFIX = '/v1/thumbnails/presigned/';
export const DEFAULT_THUMBNAIL_URL_SECONDS = 900;
export const MAX_THUMBNAIL_URL_SECONDS = 7 * 24 * 3600;
const LABEL = 'cairn/v1/presign-thumbnail';
const SIG_BYTES = 32;

export interface ThumbnailClaims {
  readonly tenant: string;
  readonly path: string;
  /** Always pinned (≥ 1): the URL names immutable bytes. */
  readonly version: number;
  readonly size: number;
  /** Expiry, seconds since the epoch. */
  readonly expires: number;
  /** A share recipient's user id (their share is checked again on every use); '' for the owner tenant. */
  readonly user: string;
}

/** Every gateway derives the same key from the shared signing secret, so any gateway serves any URL. */
export function thumbnailPresignKey(secret: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), LABEL, 32));
}

function mac(key: Buffer, c: ThumbnailClaims): Buffer {
  // Newline-separated: no field may contain one (paths and tenants exclude control characters).
  return createHmac('sha256', key).update(['cairn-thumbnail-v1', c.tenant, c.path, String(c.version), String(c.size), String(c.expires), c.user].join('\n')).digest();
}

function encodePath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

export function signThumbnailUrl(key: Buffer, c: ThumbnailClaims): string {
  if (!Number.isSafeInteger(c.version) || c.version < 1) throw new CairnError('CAIRN_INTERNAL', 'a presigned thumbnail URL pins a version');
  const q = new URLSearchParams({ v: String(c.version), size: String(c.size), x: String(c.expires) });
  if (c.user !== '') q.set('u', c.user);
  q.set('s', mac(key, c).toString('base64url'));
  return `${PRESIGNED_THUMBNAIL_PREFIX}${c.tenant}${encodePath(c.path)}?${q.toString()}`;
}

function denied(message: string): CairnError {
  return new CairnError('CAIRN_PERMISSION_DENIED', message);
}

/**
 * Checks a presigned thumbnail request (pathname and query) at `nowMs`: its claims, or
 * CAIRN_PERMISSION_DENIED (HTTP 403) for anything malformed, tampered with or expired.
 */
export function verifyThumbnailUrl(key: Buffer, pathname: string, query: URLSearchParams, nowMs: number): ThumbnailClaims {
  const rest = pathname.slice(PRESIGNED_THUMBNAIL_PREFIX.length);
  const slash = rest.indexOf('/');
  if (!pathname.startsWith(PRESIGNED_THUMBNAIL_PREFIX) || slash <= 0) throw denied('malformed presigned thumbnail URL');
  const tenant = rest.slice(0, slash);
  let path: string;
  try {
    path = normalizePath(decodeURIComponent(rest.slice(slash)));
  } catch {
    throw denied('malformed presigned thumbnail URL');
  }
  const v = query.get('v') ?? '';
  const size = query.get('size') ?? '';
  const x = query.get('x') ?? '';
  const s = query.get('s') ?? '';
  if (!/^[1-9]\d{0,14}$/.test(v) || !/^\d{1,5}$/.test(size) || !/^\d{1,15}$/.test(x) || !/^[A-Za-z0-9_-]{43}$/.test(s)) throw denied('malformed presigned thumbnail URL');
  if (!(LADDER as readonly number[]).includes(Number(size))) throw denied('malformed presigned thumbnail URL');
  const claims: ThumbnailClaims = { tenant, path, version: Number(v), size: Number(size), expires: Number(x), user: query.get('u') ?? '' };
  const given = Buffer.from(s, 'base64url');
  if (given.length !== SIG_BYTES || !timingSafeEqual(given, mac(key, claims))) throw denied('signature does not match');
  if (claims.expires * 1000 <= nowMs) throw denied('presigned thumbnail URL expired');
  return claims;
}
