// Opaque, HMAC-bound tokens (AIP-158): list page tokens and change-feed cursors. A token is bound to
// its purpose and to the request's scope (tenant, method, filters), so it cannot be forged, edited,
// or replayed against another request; every replica sharing the auth secret accepts it.
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { CairnError, type ErrorCode } from '../common/errors.js';

export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;

/** AIP-158 page size: 0 → default, above the maximum → the maximum, negative → invalid. */
export function pageSize(raw: number, field = 'page_size'): number {
  if (!Number.isInteger(raw) || raw < 0) {
    throw new CairnError('CAIRN_INVALID_ARGUMENT', `${field} must not be negative`, { fieldViolations: [{ field, description: 'must be ≥ 0' }] });
  }
  return raw === 0 ? DEFAULT_PAGE_SIZE : Math.min(raw, MAX_PAGE_SIZE);
}

export class TokenCodec {
  readonly #key: Buffer;
  readonly #code: ErrorCode;
  readonly #what: string;

  /** `purpose` separates key spaces: a page token never verifies as a cursor. */
  constructor(secret: Uint8Array, purpose: string, code: ErrorCode = 'CAIRN_INVALID_PAGE_TOKEN', what = 'page token') {
    if (secret.length < 16) throw new RangeError('secret must be at least 16 bytes');
    this.#key = Buffer.from(hkdfSync('sha256', secret, 'cairn-metadata-tokens', purpose, 32));
    this.#code = code;
    this.#what = what;
  }

  #mac(scope: readonly string[], body: string): Buffer {
    const h = createHmac('sha256', this.#key);
    for (const part of scope) h.update(part).update('\0');
    return h.update(body).digest().subarray(0, 16);
  }

  encode(scope: readonly string[], position: unknown): string {
    const body = Buffer.from(JSON.stringify(position), 'utf8').toString('base64url');
    return `${body}.${this.#mac(scope, body).toString('base64url')}`;
  }

  /** The position in a token made for `scope`; anything else is the codec's error code. */
  decode(token: string, scope: readonly string[]): unknown {
    const bad = new CairnError(this.#code, `${this.#what} is malformed, tampered with, or belongs to another request`);
    if (typeof token !== 'string' || token.length > 4096) throw bad;
    const dot = token.indexOf('.');
    if (dot <= 0) throw bad;
    const body = token.slice(0, dot);
    const mac = Buffer.from(token.slice(dot + 1), 'base64url');
    const want = this.#mac(scope, body);
    if (mac.length !== want.length || !timingSafeEqual(mac, want)) throw bad;
    try {
      return JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as unknown;
    } catch {
      throw bad;
    }
  }
}
