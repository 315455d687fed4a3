// Serving thumbnails and media metadata: the Media gRPC service and the HTTP thumbnail route of
// the gateway. Thumbnails are content-addressed, so they carry strong ETags and (for a pinned
// version) `Cache-Control: immutable`; decrypted bytes are kept in a small per-process LRU.
// A size not derived yet is generated on demand (single-flight) or answered 503 + Retry-After.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { BlockAccess } from '../blocknode/index.js';
import { can, validateTenant, verifyToken, type Principal } from '../common/auth.js';
import { CairnError, isCairnError } from '../common/errors.js';
import { principalOf, unary } from '../common/grpc-server.js';
import type { Logger } from '../common/log.js';
import { normalizePath } from '../common/paths.js';
import { wireInt } from '../common/wire.js';
import type { FileVersion__Output } from '../gen/cairn/v1/FileVersion.js';
import type { GetMediaInfoRequest__Output } from '../gen/cairn/v1/GetMediaInfoRequest.js';
import type { GetMediaInfoResponse } from '../gen/cairn/v1/GetMediaInfoResponse.js';
import type { GetThumbnailRequest__Output } from '../gen/cairn/v1/GetThumbnailRequest.js';
import type { GetThumbnailResponse } from '../gen/cairn/v1/GetThumbnailResponse.js';
import type { ListThumbnailsRequest__Output } from '../gen/cairn/v1/ListThumbnailsRequest.js';
import type { ListThumbnailsResponse } from '../gen/cairn/v1/ListThumbnailsResponse.js';
import type { MediaHandlers } from '../gen/cairn/v1/Media.js';
import type { PresignThumbnailRequest__Output } from '../gen/cairn/v1/PresignThumbnailRequest.js';
import type { PresignThumbnailResponse } from '../gen/cairn/v1/PresignThumbnailResponse.js';
import type { ThumbnailEntry } from '../gen/cairn/v1/ThumbnailEntry.js';
import { actingOf, granteeOf, unseal, type TenantKeys, type TenantLimiter } from '../gateway/index.js';
import { NOT_MEDIA, type MetadataClient } from '../metadata/index.js';
import type { MediaMetrics } from './metrics.js';
import { CONTENT_TYPES, LADDER, MediaFailure, type MediaOptions, type OutputFormat } from './options.js';
import { DEFAULT_THUMBNAIL_URL_SECONDS, MAX_THUMBNAIL_URL_SECONDS, PRESIGNED_THUMBNAIL_PREFIX, signThumbnailUrl, thumbnailPresignKey, verifyThumbnailUrl } from './presign.js';
import { derivativeEtag, derivativeName, parseMediaRecord, type MediaProcessor, type MediaRecord } from './processor.js';

export const THUMBNAIL_ROUTE = '/v1/thumbnails';
export const IMMUTABLE = 'public, max-age=31536000, immutable';
/** For "the current version": the bytes behind the URL change with new versions, so revalidate. */
export const REVALIDATE = 'private, no-cache';
const CACHE_BYTES = 64 * 1024 * 1024;
const MAX_LIST_PAGE = 200;

export interface ServeDeps {
  readonly metadata: MetadataClient;
  readonly blocks: BlockAccess;
  readonly keys: TenantKeys;
  readonly processor: MediaProcessor;
  readonly options: MediaOptions;
  readonly log: Logger;
  readonly authSecret: Uint8Array;
  readonly metrics: MediaMetrics;
  readonly publicHttpUrl?: () => string | undefined;
  /** The gateway's per-tenant rate limits: HTTP requests are admitted and served bytes charged. */
  readonly limiter?: TenantLimiter;
}

export interface Thumbnail {
  readonly data: Buffer | undefined;
  readonly etag: string;
  readonly contentType: string;
  readonly width: number;
  readonly height: number;
  readonly version: number;
  readonly notModified: boolean;
}

/** The header by which a request acts on another tenant's shared tree (the gateway's share guard). */
const OWNER_HEADER = 'x-cairn-tenant';

/**
 * GPS is personal data: only the owner sees it — a principal of the tenant who may change its
 * files, not acting through a share. Readers (what links and share recipients get) do not.
 */
export function mayseeGps(principal: Principal, shared: boolean): boolean {
  return !shared && can(principal, 'write');
}

export function redact(record: MediaRecord, principal: Principal, shared = false): MediaRecord {
  if (mayseeGps(principal, shared) || record.gps === undefined) return record;
  const { gps: _gps, ...rest } = record;
  return rest;
}

/**
 * Whether a version is known not to be media: its content was sniffed at commit as not an image
 * or video, or it is empty. Versions committed before versions recorded the sniff (media_kind '')
 * are not known either way.
 */
export function isNotMedia(v: Pick<FileVersion__Output, 'media_kind' | 'size' | 'media_json'>): boolean {
  return v.media_json === '' && (v.media_kind === NOT_MEDIA || Number(v.size) === 0);
}

function notMedia(path: string): CairnError {
  return new CairnError('CAIRN_FAILED_PRECONDITION', `${path} is not an image or video: it has no thumbnails`, { metadata: { reason: 'not_media' } });
}

function checkSize(size: number): number {
  if (!(LADDER as readonly number[]).includes(size)) throw new CairnError('CAIRN_INVALID_ARGUMENT', `size must be one of ${LADDER.join(', ')}`, { fieldViolations: [{ field: 'size', description: `one of ${LADDER.join(', ')}` }] });
  return size;
}

/** RFC 9110 weak comparison for If-None-Match: "*", or any listed tag with W/ ignored. */
export function etagMatches(header: string | undefined, etag: string): boolean {
  if (header === undefined || header === '') return false;
  if (header.trim() === '*') return true;
  const bare = etag.replace(/^W\//, '');
  return header.split(',').some((t) => t.trim().replace(/^W\//, '') === bare);
}

class ByteLru {
  readonly #map = new Map<string, Buffer>();
  #bytes = 0;
  constructor(readonly limit: number) {}
  get(key: string): Buffer | undefined {
    const v = this.#map.get(key);
    if (v !== undefined) {
      this.#map.delete(key);
      this.#map.set(key, v);
    }
    return v;
  }
  set(key: string, value: Buffer): void {
    if (value.length > this.limit / 8 || this.#map.has(key)) return;
    this.#map.set(key, value);
    this.#bytes += value.length;
    for (const [k, v] of this.#map) {
      if (this.#bytes <= this.limit) break;
      this.#map.delete(k);
      this.#bytes -= v.length;
    }
  }
}

/**
 * Hot derivatives of pinned versions. A derivative's bytes never change (its ETag names them), but
 * the version can go away (delete, prune) or be derived again in another format, so an entry is
 * confirmed with the metadata service: fresh for FRESH_MS; after that it is still served while
 * one background lookup confirms it (stale-while-revalidate, single-flight), and past STALE_MS
 * without a confirmation a request looks it up itself. A version that is gone stops being served
 * about FRESH_MS + one metadata round trip after it went.
 */
const FRESH_MS = 1_000;
const STALE_MS = 10_000;
const TOKEN_TTL_MS = 10_000;
const MAX_HOT = 4_096;
const MAX_SMALL_CACHE = 4_096;

type Derivative = FileVersion__Output['derivatives'][number];

interface HotEntry {
  readonly tenant: string;
  readonly path: string;
  readonly size: number;
  d: Derivative;
  etag: string;
  contentType: string;
  version: number;
  /** When the metadata service last confirmed it. */
  checked: number;
  refreshing: boolean;
}

function entryOf(tenant: string, path: string, size: number, d: Derivative, version: number, now: number): HotEntry {
  return { tenant, path, size, d, etag: derivativeEtag(d), contentType: CONTENT_TYPES[d.format as OutputFormat] ?? `image/${d.format}`, version, checked: now, refreshing: false };
}

export class ThumbnailService {
  readonly #d: ServeDeps;
  readonly #cache = new ByteLru(CACHE_BYTES);
  /** (tenant, path, pinned version, size) → its derivative and ETag, most recently used last. */
  readonly #hot = new Map<string, HotEntry>();
  /** Block reads in flight, by (tenant, ETag): concurrent misses of one thumbnail read it once. */
  readonly #reading = new Map<string, Promise<Buffer>>();
  readonly #tokens = new Map<string, { principal: Principal; until: number }>();
  readonly #presignKey: Buffer;

  constructor(deps: ServeDeps) {
    this.#d = deps;
    this.#presignKey = thumbnailPresignKey(deps.authSecret);
  }

  /** One ladder size of a version of `tenant`'s file (the caller has been authorised for it). */
  async thumbnail(tenant: string, rawPath: string, version: number, size: number, ifNoneMatch: string | undefined, requestId?: string): Promise<Thumbnail> {
    const path = normalizePath(rawPath);
    checkSize(size);
    if (version > 0) {
      const key = `${tenant}\0${path}\0${version}\0${size}`;
      const hit = this.#hot.get(key);
      if (hit !== undefined) {
        const age = Date.now() - hit.checked;
        if (age < STALE_MS) {
          this.#hot.delete(key);
          this.#hot.set(key, hit);
          if (age >= FRESH_MS && !hit.refreshing) this.#revalidate(key, hit, requestId);
          return this.#serve(hit, ifNoneMatch);
        }
      }
    }
    const { d, version: found } = await this.#lookup(tenant, path, version, size, requestId);
    const entry = entryOf(tenant, path, size, d, found, Date.now());
    if (version > 0) this.#remember(`${tenant}\0${path}\0${version}\0${size}`, entry);
    return this.#serve(entry, ifNoneMatch);
  }

  #remember(key: string, entry: HotEntry): void {
    this.#hot.delete(key);
    this.#hot.set(key, entry);
    if (this.#hot.size > MAX_HOT) {
      const oldest = this.#hot.keys().next();
      if (oldest.done !== true) this.#hot.delete(oldest.value);
    }
  }

  /** Confirms a hot entry in the background; drops it when its version or derivative is gone. */
  #revalidate(key: string, entry: HotEntry, requestId?: string): void {
    entry.refreshing = true;
    this.#d.metadata.getFile({ tenant: entry.tenant, path: entry.path, version: entry.version, max_chunks: 1 }, requestId).then(
      (v) => {
        entry.refreshing = false;
        const d = v.deleted ? undefined : v.derivatives.find((x) => x.name === derivativeName(entry.size));
        if (d === undefined) {
          if (this.#hot.get(key) === entry) this.#hot.delete(key);
          return;
        }
        const etag = derivativeEtag(d);
        if (etag !== entry.etag) {
          entry.d = d;
          entry.etag = etag;
          entry.contentType = CONTENT_TYPES[d.format as OutputFormat] ?? `image/${d.format}`;
        }
        entry.checked = Date.now();
      },
      (err: unknown) => {
        entry.refreshing = false;
        // Gone: stop serving it. Anything else: keep it until STALE_MS, then requests look it up.
        if (isCairnError(err, 'CAIRN_NOT_FOUND') && this.#hot.get(key) === entry) this.#hot.delete(key);
        else this.#d.log.debug({ err }, 'thumbnail revalidation failed');
      },
    );
  }

  /** The version's derivative of `size`: stored, generated on demand, or a clear error. */
  async #lookup(tenant: string, path: string, version: number, size: number, requestId?: string): Promise<{ d: Derivative; version: number }> {
    let v = await this.#d.metadata.getFile({ tenant, path, version, max_chunks: 1 }, requestId);
    if (v.deleted) throw new CairnError('CAIRN_NOT_FOUND', `${path} was deleted in version ${v.version}`);
    let d = v.derivatives.find((x) => x.name === derivativeName(size));
    if (d === undefined) {
      const record = parseMediaRecord(v.media_json);
      if (record?.state === 'failed') throw new CairnError('CAIRN_FAILED_PRECONDITION', `no thumbnail: ${record.error ?? record.reason ?? 'media processing failed'}`, { metadata: { reason: record.reason ?? 'failed' } });
      if (isNotMedia(v)) throw notMedia(path);
      if (this.#d.options.onDemand === 'unavailable') {
        throw new CairnError('CAIRN_UNAVAILABLE', `the ${size} px thumbnail of ${path} is not ready yet`, { retryAfterMs: this.#d.options.retryAfterSeconds * 1000 });
      }
      try {
        v = await this.#d.processor.derive({ tenant, fileId: v.node_id, version: Number(v.version) }, 'on_demand');
      } catch (err) {
        if (err instanceof MediaFailure) {
          if (err.reason === 'overloaded' || err.reason === 'deadline') throw new CairnError('CAIRN_UNAVAILABLE', `thumbnail not ready: ${err.message}`, { retryAfterMs: this.#d.options.retryAfterSeconds * 1000 });
          throw new CairnError('CAIRN_FAILED_PRECONDITION', `no thumbnail: ${err.message}`, { metadata: { reason: err.reason } });
        }
        throw err;
      }
      d = v.derivatives.find((x) => x.name === derivativeName(size));
      if (d === undefined) throw new CairnError('CAIRN_UNAVAILABLE', `the ${size} px thumbnail of ${path} is not ready yet`, { retryAfterMs: this.#d.options.retryAfterSeconds * 1000 });
    }
    return { d, version: Number(v.version) };
  }

  async #serve(e: HotEntry, ifNoneMatch: string | undefined): Promise<Thumbnail> {
    const base = { etag: e.etag, contentType: e.contentType, width: e.d.width, height: e.d.height, version: e.version };
    if (etagMatches(ifNoneMatch, e.etag)) return { ...base, data: undefined, notModified: true };
    const cacheKey = `${e.tenant}\0${e.etag}`;
    let data = this.#cache.get(cacheKey);
    if (data === undefined) {
      let reading = this.#reading.get(cacheKey);
      if (reading === undefined) {
        reading = this.#read(e.tenant, e.d.chunks, Number(e.d.size)).finally(() => this.#reading.delete(cacheKey));
        this.#reading.set(cacheKey, reading);
      }
      data = await reading;
      this.#cache.set(cacheKey, data);
    }
    return { ...base, data, notModified: false };
  }

  async #read(tenant: string, chunks: FileVersion__Output['chunks'], size: number): Promise<Buffer> {
    const key = await this.#d.keys.get(tenant);
    const got = new Map<string, Buffer>();
    // Verified against their addresses by BlockAccess, authenticated again by unseal.
    for await (const b of this.#d.blocks.getBlocks(chunks.map((c) => c.address))) {
      if (b.data !== undefined) got.set(b.address.toString('hex'), b.data);
    }
    const out = Buffer.allocUnsafe(size);
    for (const c of chunks) {
      const block = got.get(c.address.toString('hex'));
      if (block === undefined) throw new CairnError('CAIRN_DATA_LOSS', `thumbnail block ${c.address.toString('hex')} is unavailable on every replica`);
      unseal(key, c.plain_hash, block).copy(out, Number(c.offset));
    }
    return out;
  }

  /** A presigned GET URL for one size of a pinned version (the current one when `version` is 0). */
  async presign(tenant: string, user: string, req: PresignThumbnailRequest__Output, requestId?: string): Promise<PresignThumbnailResponse> {
    const path = normalizePath(req.path);
    const size = checkSize(req.size);
    const raw = wireInt(req.expires_in_seconds, 'expires_in_seconds');
    if (raw < 0 || raw > MAX_THUMBNAIL_URL_SECONDS) throw new CairnError('CAIRN_INVALID_ARGUMENT', `expires_in_seconds must be at most ${MAX_THUMBNAIL_URL_SECONDS}`, { fieldViolations: [{ field: 'expires_in_seconds', description: `0..${MAX_THUMBNAIL_URL_SECONDS}` }] });
    const ttl = raw === 0 ? DEFAULT_THUMBNAIL_URL_SECONDS : raw;
    // Pin the version now (a URL for "the current version" would not name immutable bytes) and
    // fail now for something that is not there rather than when the URL is used.
    const v = await this.#d.metadata.getFile({ tenant, path, version: wireInt(req.version, 'version'), max_chunks: 1 }, requestId);
    if (v.deleted) throw new CairnError('CAIRN_NOT_FOUND', `${path} is deleted`);
    const record = parseMediaRecord(v.media_json);
    if (record?.state === 'failed') throw new CairnError('CAIRN_FAILED_PRECONDITION', `no thumbnail: ${record.error ?? record.reason ?? 'media processing failed'}`, { metadata: { reason: record.reason ?? 'failed' } });
    if (isNotMedia(v)) throw notMedia(path);
    const expires = Math.ceil(Date.now() / 1000) + ttl;
    const pathAndQuery = signThumbnailUrl(this.#presignKey, { tenant, path, version: Number(v.version), size, expires, user });
    this.#d.log.info({ tenant, path, version: Number(v.version), size, expires, user }, 'thumbnail URL presigned');
    // Absolute when the gateway knows its public HTTP URL (as Files.Presign answers).
    const base = this.#d.publicHttpUrl?.()?.replace(/\/+$/, '');
    return { url: base !== undefined && base !== '' ? `${base}${pathAndQuery}` : pathAndQuery, path_and_query: pathAndQuery, expires_ms: expires * 1000, version: v.version };
  }

  async info(principal: Principal, req: GetMediaInfoRequest__Output, requestId?: string, shared = false): Promise<GetMediaInfoResponse> {
    const path = normalizePath(req.path);
    const v = await this.#d.metadata.getFile({ tenant: principal.tenant, path, version: wireInt(req.version, 'version'), max_chunks: 1 }, requestId);
    const record = parseMediaRecord(v.media_json);
    if (record === undefined) return { path, version: v.version, state: isNotMedia(v) ? 'none' : 'pending', media_json: '', error: '' };
    const shown = redact(record, principal, shared);
    return { path, version: v.version, state: record.state, media_json: JSON.stringify(shown), error: record.state === 'failed' ? record.error ?? '' : '' };
  }

  async list(principal: Principal, req: ListThumbnailsRequest__Output, requestId?: string): Promise<ListThumbnailsResponse> {
    const path = req.path === '' || req.path === '/' ? '/' : normalizePath(req.path);
    const size = checkSize(req.size === 0 ? LADDER[0] : req.size);
    if (req.page_size < 0 || req.page_size > MAX_LIST_PAGE) throw new CairnError('CAIRN_INVALID_ARGUMENT', `page_size must be 0..${MAX_LIST_PAGE}`, { fieldViolations: [{ field: 'page_size', description: `0..${MAX_LIST_PAGE}` }] });
    if (req.previous_last !== '' && req.previous_first !== '') throw new CairnError('CAIRN_INVALID_ARGUMENT', 'give at most one of previous_last and previous_first');
    const page = await this.#d.metadata.listFolder({ tenant: principal.tenant, path, page_size: req.page_size === 0 ? 50 : req.page_size, previous_last: req.previous_last, previous_first: req.previous_first }, requestId);
    const entries = await Promise.all(page.entries.map(async (e): Promise<ThumbnailEntry> => {
      if (e.kind !== 'ENTRY_KIND_FILE') return { path: e.path, folder: true, version: e.version, state: 'none' };
      const v = await this.#d.metadata.getFile({ tenant: principal.tenant, path: e.path, version: 0, max_chunks: 1 }, requestId).catch(() => undefined);
      if (v === undefined) return { path: e.path, folder: false, version: e.version, state: 'none' };
      const d = v.derivatives.find((x) => x.name === derivativeName(size));
      const record = parseMediaRecord(v.media_json);
      if (d !== undefined) return { path: e.path, folder: false, version: v.version, state: 'ready', etag: derivativeEtag(d), width: d.width, height: d.height, content_type: CONTENT_TYPES[d.format as OutputFormat] ?? `image/${d.format}` };
      // No record: a job is coming unless the content is known not to be media (older versions
      // without a recorded sniff stay pending: GetThumbnail may still derive them on demand).
      return { path: e.path, folder: false, version: v.version, state: record?.state === 'failed' ? 'failed' : record === undefined && !isNotMedia(v) ? 'pending' : 'none' };
    }));
    return { entries, has_more: page.has_more };
  }

  /** Media service handlers for the gateway's gRPC server. */
  handlers(): MediaHandlers {
    return {
      GetThumbnail: unary(async (req: GetThumbnailRequest__Output, ctx): Promise<GetThumbnailResponse> => {
        const t = await this.thumbnail(principalOf(ctx).tenant, req.path, wireInt(req.version, 'version'), req.size, req.if_none_match, ctx.requestId);
        // The gateway's guard admitted the call; the bytes are paced on the caller's (not the owner's) budget.
        const limiter = this.#d.limiter;
        if (t.data !== undefined && limiter?.pacesBytes === true) await limiter.pace(actingOf(ctx)?.caller.tenant ?? principalOf(ctx).tenant, t.data.length, ctx.signal);
        return { data: t.data ?? Buffer.alloc(0), content_type: t.contentType, etag: t.etag, width: t.width, height: t.height, version: t.version, not_modified: t.notModified };
      }),
      GetMediaInfo: unary(async (req: GetMediaInfoRequest__Output, ctx) => this.info(principalOf(ctx), req, ctx.requestId, actingOf(ctx) !== undefined)),
      ListThumbnails: unary(async (req: ListThumbnailsRequest__Output, ctx) => this.list(principalOf(ctx), req, ctx.requestId)),
      // A recipient's URL carries their user id: their share is checked again on every use.
      PresignThumbnail: unary(async (req: PresignThumbnailRequest__Output, ctx) => this.presign(principalOf(ctx).tenant, actingOf(ctx)?.grantee ?? '', req, ctx.requestId)),
    };
  }

  /** Throws PERMISSION_DENIED unless `grantee` holds at least a read share on `path` of `owner` (asked every time: revocation is immediate). */
  async #requireShare(owner: string, path: string, grantee: string, requestId?: string): Promise<void> {
    const res = path === '/' ? undefined : await this.#d.metadata.checkAccess({ tenant: owner, path, user: grantee }, requestId);
    const p = res?.permission;
    if (p !== 'SHARE_PERMISSION_READ' && p !== 'SHARE_PERMISSION_WRITE') throw new CairnError('CAIRN_PERMISSION_DENIED', `${path} of tenant ${owner} is not shared with you`);
  }

  /** A verified token's principal, reused for a few seconds (HS256 verification per GET adds up). */
  async #verify(token: string): Promise<Principal> {
    const now = Date.now();
    const hit = this.#tokens.get(token);
    if (hit !== undefined && hit.until > now) return hit.principal;
    const principal = await verifyToken(this.#d.authSecret, token);
    if (this.#tokens.size >= MAX_SMALL_CACHE) this.#tokens.clear();
    // Never past the token's own expiry (verified just now, so the payload is the signed one).
    const exp = (JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { exp?: unknown }).exp;
    this.#tokens.set(token, { principal, until: Math.min(now + TOKEN_TTL_MS, typeof exp === 'number' ? exp * 1000 : now) });
    return principal;
  }

  /**
   * GET /v1/thumbnails?path=…&size=…[&version=…] with `Authorization: Bearer <token>` (and
   * `x-cairn-tenant: <owner>` for a tree shared with the caller), or a presigned
   * GET /v1/thumbnails/presigned/<tenant>/<path>?v=…&size=…&x=…[&u=…]&s=… without a token.
   */
  async http(req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    const target = req.url ?? '/';
    const presigned = target.startsWith(PRESIGNED_THUMBNAIL_PREFIX);
    if (!presigned && target !== THUMBNAIL_ROUTE && !target.startsWith(`${THUMBNAIL_ROUTE}?`)) return false;
    const started = process.hrtime.bigint();
    const url = new URL(target, 'http://localhost');
    const send = (status: number, headers: Record<string, string>, body?: Buffer | string): void => {
      res.writeHead(status, headers);
      res.end(req.method === 'HEAD' ? undefined : body);
      this.#d.metrics.serve.observe({ route: presigned ? 'presigned' : 'bearer', status: `${Math.floor(status / 100)}xx` }, Number(process.hrtime.bigint() - started) / 1e9);
    };
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        send(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }, 'method not allowed\n');
        return true;
      }
      let t: Thumbnail;
      let headers: Record<string, string>;
      /** Whose rate limits the request counts against: the URL's tenant, or the token's. */
      let payer: string;
      if (presigned) {
        // The signature first: a tampered or expired URL costs no lookup and changes nothing.
        const c = verifyThumbnailUrl(this.#presignKey, url.pathname, url.searchParams, Date.now());
        payer = c.tenant;
        this.#d.limiter?.admit(payer);
        if (c.user !== '') await this.#requireShare(c.tenant, c.path, c.user);
        t = await this.thumbnail(c.tenant, c.path, c.version, c.size, req.headers['if-none-match']);
        headers = { etag: t.etag, 'cache-control': IMMUTABLE };
      } else {
        const auth = req.headers.authorization ?? '';
        const m = /^Bearer\s+(\S+)$/i.exec(auth);
        if (m === null) throw new CairnError('CAIRN_UNAUTHENTICATED', 'Authorization: Bearer <token> is required');
        const principal = await this.#verify(m[1]!);
        if (!can(principal, 'read')) throw new CairnError('CAIRN_PERMISSION_DENIED', `role ${principal.role} may not read files`);
        payer = principal.tenant;
        this.#d.limiter?.admit(payer);
        const path = url.searchParams.get('path') ?? '';
        const sizeText = url.searchParams.get('size') ?? String(LADDER[0]);
        const versionText = url.searchParams.get('version') ?? '0';
        if (!/^\d{1,6}$/.test(sizeText)) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'size must be a number');
        if (!/^\d{1,15}$/.test(versionText)) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'version must be a number');
        let tenant = principal.tenant;
        const owner = req.headers[OWNER_HEADER];
        if (typeof owner === 'string' && owner !== '' && owner !== principal.tenant) {
          validateTenant(owner);
          await this.#requireShare(owner, normalizePath(path), granteeOf(principal));
          tenant = owner;
        }
        const pinned = Number(versionText) > 0;
        t = await this.thumbnail(tenant, path, Number(versionText), Number(sizeText), req.headers['if-none-match']);
        // A shared tree's bytes are not public: caches keep them per Authorization only.
        headers = { etag: t.etag, 'cache-control': pinned && tenant === principal.tenant ? IMMUTABLE : pinned ? 'private, max-age=31536000, immutable' : REVALIDATE, vary: 'Authorization, X-Cairn-Tenant' };
      }
      if (t.notModified) {
        send(304, headers);
      } else {
        // Paced like the file routes' bytes: while the tenant is in byte debt its new requests are refused.
        const limiter = this.#d.limiter;
        if (req.method !== 'HEAD' && limiter?.pacesBytes === true) await limiter.pace(payer, t.data!.length);
        send(200, { ...headers, 'content-type': t.contentType, 'content-length': String(t.data!.length), 'x-cairn-version': String(t.version) }, t.data);
      }
    } catch (err) {
      const e = err instanceof CairnError ? err : undefined;
      if (e === undefined) this.#d.log.error({ err }, 'thumbnail request failed');
      const status = e?.httpStatus ?? 500;
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (e?.retryAfterMs !== undefined) headers['retry-after'] = String(Math.ceil(e.retryAfterMs / 1000));
      const reason = e?.metadata['reason'];
      send(status, headers, JSON.stringify({ code: e?.code ?? 'CAIRN_INTERNAL', message: e?.message ?? 'internal error', ...(reason !== undefined ? { reason } : {}) }) + '\n');
    }
    return true;
  }
}
