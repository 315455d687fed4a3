// The gateway's HTTP routes: presigned GET/HEAD/PUT URLs, link shares, and bearer-token GET/PUT of
// files. GETs honour Range (one range), strong ETags, If-None-Match and If-Range; PUTs stream the
// body through the same chunk → seal → replicate path as UploadFile and commit only a whole body.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Chunker, type ChunkerOptions } from '../chunking/index.js';
import { can, validateTenant, verifyToken } from '../common/auth.js';
import { CairnError } from '../common/errors.js';
import type { RouteHandler } from '../common/http.js';
import type { Logger } from '../common/log.js';
import { normalizePath } from '../common/paths.js';
import type { ChunkRef } from '../gen/cairn/v1/ChunkRef.js';
import type { FileVersion__Output } from '../gen/cairn/v1/FileVersion.js';
import type { BlockAccess } from '../blocknode/index.js';
import type { MetadataClient } from '../metadata/index.js';
import { BlockUploader, ChunkDedup, checkBlocksAge, toFileInfo } from './files.js';
import type { TenantKeys } from './keys.js';
import type { TenantLimiter } from './limits.js';
import { PRESIGN_PREFIX, verifyPresigned } from './presign.js';
import { readRange } from './read.js';
import { LINK_PREFIX, OWNER_HEADER, granteeOf, type ShareChecker } from './sharing.js';

export const FILES_PREFIX = '/v1/files/';
const LIST_PAGE = 1000;
/** Plain bytes handed to the media sniffer at commit. */
const SNIFF_BYTES = 4096;

export interface HttpRoutesOptions {
  readonly metadata: MetadataClient;
  readonly blocks: BlockAccess;
  readonly keys: TenantKeys;
  readonly authSecret: Uint8Array;
  readonly presignKey: Buffer;
  readonly checker: ShareChecker;
  readonly limiter: TenantLimiter;
  readonly maxFileBytes: number;
  readonly chunker?: ChunkerOptions;
  /** Classifies a new version from its first plain bytes for media jobs (see GatewayExtension.sniff). */
  readonly sniffMedia?: (head: Uint8Array) => string | undefined;
  readonly log: Logger;
}

/** Who a request acts for once its credentials are checked. */
interface Target {
  readonly tenant: string;
  readonly path: string;
  readonly version: number;
  /** Who is charged for the request (rate limits). */
  readonly payer: string;
  /** Recorded as the new version's author on PUT. */
  readonly author: string;
}

function sha256(data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest();
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function sendError(res: ServerResponse, err: unknown, log: Logger): void {
  const e = err instanceof CairnError ? err : new CairnError('CAIRN_INTERNAL', 'internal error');
  if (!(err instanceof CairnError)) log.error({ err }, 'http request failed');
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const headers: Record<string, string> = {};
  if (e.retryAfterMs !== undefined) headers['retry-after'] = String(Math.max(1, Math.ceil(e.retryAfterMs / 1000)));
  sendJson(res, e.httpStatus, { error: { code: e.code, message: e.message } }, headers);
}

/** Strong ETag: the content hash and the version ("same bytes, same version" — never reused for other bytes). */
export function etagOf(v: Pick<FileVersion__Output, 'content_hash' | 'version'>): string {
  return `"${v.content_hash.toString('hex')}-${v.version}"`;
}

export type RangeSpec =
  | { kind: 'none' }
  | { kind: 'unsatisfiable' }
  | { kind: 'range'; start: number; end: number }
  | { kind: 'ranges'; ranges: ReadonlyArray<{ start: number; end: number }> };

/** More ranges than this in one header are ignored (the whole body is sent): a guard against
 * requests that ask for thousands of tiny parts. */
export const MAX_RANGES = 64;

/** One range spec ("a-b", "a-", "-n") against `size`; `null` when malformed, `undefined` when unsatisfiable. */
function parseOne(spec: string, size: number): { start: number; end: number } | null | undefined {
  const m = /^(\d*)\s*-\s*(\d*)$/.exec(spec.trim());
  if (m === null) return null;
  const [, a = '', b = ''] = m;
  if (a === '' && b === '') return null;
  if (a === '') {
    const n = Number(b);
    if (n === 0 || size === 0) return undefined;
    return { start: Math.max(0, size - n), end: size };
  }
  const start = Number(a);
  if (b !== '' && Number(b) < start) return null;
  if (start >= size) return undefined;
  const last = b === '' ? size - 1 : Math.min(Number(b), size - 1);
  return { start, end: last + 1 };
}

/**
 * A `bytes=` Range header against a file of `size` bytes (`end` exclusive). Several ranges are
 * sorted and coalesced where they overlap or touch; if more than one remains the answer is a
 * multipart/byteranges body. A malformed header, or one with more than MAX_RANGES ranges, is
 * treated as no Range (a 200 with the whole body), which RFC 9110 allows; when no range is
 * satisfiable the answer is 416.
 */
export function parseRange(header: string | undefined, size: number): RangeSpec {
  if (header === undefined) return { kind: 'none' };
  const m = /^bytes=(.*)$/.exec(header.trim());
  if (m === null) return { kind: 'none' };
  const specs = m[1]!.split(',');
  if (specs.length > MAX_RANGES) return { kind: 'none' };
  const wanted: Array<{ start: number; end: number }> = [];
  for (const spec of specs) {
    const r = parseOne(spec, size);
    if (r === null) return { kind: 'none' };
    if (r !== undefined) wanted.push(r);
  }
  if (wanted.length === 0) return { kind: 'unsatisfiable' };
  wanted.sort((x, y) => x.start - y.start);
  const merged: Array<{ start: number; end: number }> = [];
  for (const r of wanted) {
    const last = merged.at(-1);
    if (last !== undefined && r.start <= last.end) last.end = Math.max(last.end, r.end);
    else merged.push({ ...r });
  }
  if (merged.length === 1) return { kind: 'range', start: merged[0]!.start, end: merged[0]!.end };
  return { kind: 'ranges', ranges: merged };
}

function etagList(header: string | undefined): string[] {
  if (header === undefined) return [];
  return header.split(',').map((s) => s.trim().replace(/^W\//, '')).filter((s) => s !== '');
}

async function serveFile(options: HttpRoutesOptions, req: IncomingMessage, res: ServerResponse, t: Target, signal: AbortSignal): Promise<void> {
  const v = await options.metadata.getFile({ tenant: t.tenant, path: t.path, version: t.version });
  if (v.deleted) throw new CairnError('CAIRN_NOT_FOUND', `${t.path} is deleted`);
  const size = Number(v.size);
  const etag = etagOf(v);
  const headers: Record<string, string> = {
    etag,
    'accept-ranges': 'bytes',
    'last-modified': new Date(Number(v.mtime_ms)).toUTCString(),
    // A pinned version never changes; "current" must be revalidated.
    'cache-control': t.version !== 0 ? 'private, max-age=31536000, immutable' : 'private, no-cache',
  };
  const inm = etagList(req.headers['if-none-match']);
  if (inm.includes('*') || inm.includes(etag)) {
    res.writeHead(304, headers);
    res.end();
    return;
  }
  const ifRange = typeof req.headers['if-range'] === 'string' ? req.headers['if-range'] : undefined;
  // If-Range with a date (or another ETag) is not a strong match: the whole file is sent.
  const range = ifRange === undefined || ifRange.trim() === etag ? parseRange(req.headers.range, size) : { kind: 'none' as const };
  if (range.kind === 'unsatisfiable') {
    res.writeHead(416, { ...headers, 'content-range': `bytes */${size}`, 'content-length': '0' });
    res.end();
    return;
  }
  if (range.kind === 'ranges') {
    await serveParts(options, req, res, t, v, range.ranges, headers, signal);
    return;
  }
  const start = range.kind === 'range' ? range.start : 0;
  const end = range.kind === 'range' ? range.end : size;
  res.writeHead(range.kind === 'range' ? 206 : 200, {
    ...headers,
    'content-type': 'application/octet-stream',
    'content-length': String(end - start),
    ...(range.kind === 'range' ? { 'content-range': `bytes ${start}-${end - 1}/${size}` } : {}),
  });
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  await sendBytes(options, res, t, v, start, end, signal);
  res.end();
}

/** Streams `v`'s bytes [start, end) to the response, paced on the payer's byte budget. */
async function sendBytes(options: HttpRoutesOptions, res: ServerResponse, t: Target, v: FileVersion__Output, start: number, end: number, signal: AbortSignal): Promise<void> {
  for await (const { data: piece } of readRange(options, t.tenant, v, start, end, signal)) {
    await options.limiter.pace(t.payer, piece.length, signal);
    if (!res.write(piece)) await Promise.race([once(res, 'drain'), once(res, 'close')]);
    if (signal.aborted) throw new CairnError('CAIRN_CANCELLED', 'client went away');
  }
}

/** A 206 multipart/byteranges answer (RFC 9110 §14.6), its exact length announced up front. */
async function serveParts(options: HttpRoutesOptions, req: IncomingMessage, res: ServerResponse, t: Target, v: FileVersion__Output, ranges: ReadonlyArray<{ start: number; end: number }>, headers: Record<string, string>, signal: AbortSignal): Promise<void> {
  const size = Number(v.size);
  const boundary = randomBytes(12).toString('hex');
  const heads = ranges.map((r, i) => Buffer.from(`${i === 0 ? '' : '\r\n'}--${boundary}\r\ncontent-type: application/octet-stream\r\ncontent-range: bytes ${r.start}-${r.end - 1}/${size}\r\n\r\n`, 'latin1'));
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`, 'latin1');
  const length = heads.reduce((n, h) => n + h.length, 0) + ranges.reduce((n, r) => n + r.end - r.start, 0) + tail.length;
  res.writeHead(206, { ...headers, 'content-type': `multipart/byteranges; boundary=${boundary}`, 'content-length': String(length) });
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  for (const [i, r] of ranges.entries()) {
    res.write(heads[i]!);
    await sendBytes(options, res, t, v, r.start, r.end, signal);
  }
  res.end(tail);
}

function baseVersionOf(req: IncomingMessage): number | undefined {
  if (req.headers['if-none-match']?.trim() === '*') return 0;
  const ifMatch = req.headers['if-match']?.trim();
  if (ifMatch === undefined) return undefined;
  const m = /^"[0-9a-f]{64}-(\d+)"$/.exec(ifMatch);
  if (m?.[1] === undefined) throw new CairnError('CAIRN_FAILED_PRECONDITION', 'If-Match must be an ETag this server issued');
  return Number(m[1]);
}

/** Streams a request body into a new version; nothing is committed unless the whole body arrived. */
async function receiveFile(options: HttpRoutesOptions, req: IncomingMessage, res: ServerResponse, t: Target, signal: AbortSignal): Promise<void> {
  const lengthHeader = req.headers['content-length'];
  const chunked = /\bchunked\b/i.test(req.headers['transfer-encoding'] ?? '');
  if (lengthHeader === undefined && !chunked) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'PUT needs Content-Length or chunked transfer encoding');
  const declared = lengthHeader === undefined ? undefined : Number(lengthHeader);
  if (declared !== undefined && declared > options.maxFileBytes) throw new CairnError('CAIRN_FILE_TOO_LARGE', `file of ${declared} bytes exceeds the limit of ${options.maxFileBytes} bytes`);
  const baseVersion = baseVersionOf(req);
  const key = await options.keys.get(t.tenant);
  const chunker = new Chunker(options.chunker);
  const uploader = new BlockUploader(options.blocks);
  const dedup = new ChunkDedup(options, t.tenant, key, uploader, undefined);
  const chunks: ChunkRef[] = [];
  let offset = 0;
  // Before the first block write: the commit tells metadata since when its blocks were written.
  const blocksSinceMs = Date.now();
  const add = async (chunk: Buffer): Promise<void> => {
    const ref: ChunkRef = { plain_hash: sha256(chunk), offset, size: chunk.length };
    chunks.push(ref);
    offset += chunk.length;
    await dedup.add(ref, chunk);
  };
  let received = 0;
  const head: Buffer[] = [];
  let headBytes = 0;
  for await (const piece of req as AsyncIterable<Buffer>) {
    if (options.sniffMedia !== undefined && headBytes < SNIFF_BYTES) {
      head.push(Buffer.from(piece.subarray(0, SNIFF_BYTES - headBytes)));
      headBytes += Math.min(piece.length, SNIFF_BYTES - headBytes);
    }
    received += piece.length;
    if (received > options.maxFileBytes) throw new CairnError('CAIRN_FILE_TOO_LARGE', `file exceeds the limit of ${options.maxFileBytes} bytes`);
    await options.limiter.pace(t.payer, piece.length, signal);
    for (const chunk of chunker.push(piece)) await add(chunk);
  }
  // A body cut short (connection closed early) ends the iteration without `complete`.
  if (!req.complete || signal.aborted) throw new CairnError('CAIRN_CANCELLED', 'the request body did not arrive whole; nothing was stored');
  if (declared !== undefined && received !== declared) throw new CairnError('CAIRN_SIZE_MISMATCH', `announced ${declared} bytes, received ${received}`);
  for (const chunk of chunker.finish()) await add(chunk);
  await dedup.finish();
  await uploader.finish();
  const mediaKind = headBytes > 0 ? options.sniffMedia?.(Buffer.concat(head)) : undefined;
  checkBlocksAge(blocksSinceMs);
  const v = await options.metadata.commitFile({
    tenant: t.tenant,
    path: t.path,
    ...(baseVersion !== undefined ? { base_version: baseVersion } : {}),
    size: received,
    mtime_ms: Date.now(),
    author_device: t.author,
    chunks,
    ...(mediaKind !== undefined ? { media_kind: mediaKind } : {}),
    blocks_since_ms: blocksSinceMs,
  });
  options.log.info({ tenant: t.tenant, path: t.path, version: v.version, bytes: received }, 'file committed over HTTP');
  sendJson(res, 200, { file: toFileInfo(v) }, { etag: etagOf(v) });
}

/** Percent-decodes a URL path; a malformed escape is an invalid path, not an internal error. */
function decodePath(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new CairnError('CAIRN_INVALID_PATH', 'malformed percent-encoding in the URL path');
  }
}

function needOf(method: string | undefined): 'read' | 'write' {
  return method === 'PUT' ? 'write' : 'read';
}

function methodAllowed(res: ServerResponse, method: string | undefined): boolean {
  if (method === 'GET' || method === 'HEAD' || method === 'PUT') return true;
  res.writeHead(405, { allow: 'GET, HEAD, PUT', 'content-type': 'text/plain' });
  res.end('method not allowed\n');
  return false;
}

async function dispatch(options: HttpRoutesOptions, req: IncomingMessage, res: ServerResponse, t: Target, signal: AbortSignal): Promise<void> {
  if (req.method === 'PUT') await receiveFile(options, req, res, t, signal);
  else await serveFile(options, req, res, t, signal);
}

async function presigned(options: HttpRoutesOptions, req: IncomingMessage, res: ServerResponse, url: URL, signal: AbortSignal): Promise<void> {
  const claims = verifyPresigned(options.presignKey, req.method ?? '', url.pathname, url.searchParams, Date.now());
  options.limiter.admit(claims.tenant);
  // A recipient's URL is worth no more than their share is now.
  if (claims.user !== '') await options.checker.require(claims.tenant, [[claims.path, needOf(claims.method === 'PUT' ? 'PUT' : 'GET')]], claims.user);
  await dispatch(options, req, res, { tenant: claims.tenant, path: claims.path, version: claims.version, payer: claims.tenant, author: claims.user || 'presigned-url' }, signal);
}

async function bearer(options: HttpRoutesOptions, req: IncomingMessage, res: ServerResponse, url: URL, signal: AbortSignal): Promise<void> {
  const header = req.headers.authorization ?? '';
  const m = /^Bearer\s+(\S+)$/i.exec(header);
  if (m?.[1] === undefined) throw new CairnError('CAIRN_UNAUTHENTICATED', 'authorization must be "Bearer <token>"');
  const principal = await verifyToken(options.authSecret, m[1]);
  const need = needOf(req.method);
  if (!can(principal, need)) throw new CairnError('CAIRN_PERMISSION_DENIED', `role ${principal.role} may not ${req.method} files`);
  options.limiter.admit(principal.tenant);
  const path = normalizePath(decodePath(url.pathname.slice(FILES_PREFIX.length - 1)));
  const versionParam = url.searchParams.get('version') ?? '0';
  if (!/^\d{1,15}$/.test(versionParam)) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'version must be a non-negative integer');
  let tenant = principal.tenant;
  let author = principal.subject;
  const owner = req.headers[OWNER_HEADER];
  if (typeof owner === 'string' && owner !== '' && owner !== principal.tenant) {
    validateTenant(owner);
    author = granteeOf(principal);
    await options.checker.require(owner, [[path, need]], author);
    tenant = owner;
  }
  await dispatch(options, req, res, { tenant, path, version: Number(versionParam), payer: principal.tenant, author }, signal);
}

async function link(options: HttpRoutesOptions, req: IncomingMessage, res: ServerResponse, url: URL, signal: AbortSignal): Promise<void> {
  const rest = url.pathname.slice(LINK_PREFIX.length);
  const slash = rest.indexOf('/');
  const token = slash < 0 ? rest : rest.slice(0, slash);
  const sub = slash < 0 ? '' : decodePath(rest.slice(slash + 1));
  const resolved = await options.metadata.resolveLinkShare({ token });
  const l = resolved.link;
  if (l === null) throw new CairnError('CAIRN_NOT_FOUND', 'unknown or expired link');
  options.limiter.admit(l.tenant);
  if (req.method === 'PUT' && l.permission !== 'SHARE_PERMISSION_WRITE') throw new CairnError('CAIRN_PERMISSION_DENIED', 'this link is read-only');
  // normalizePath refuses "." and "..": a subpath cannot climb out of the shared folder.
  const path = sub.replace(/\/+$/, '') === '' ? l.path : normalizePath(`${l.path}/${sub}`);
  const t: Target = { tenant: l.tenant, path, version: 0, payer: l.tenant, author: `link:${l.link_id}` };
  if (req.method !== 'PUT') {
    const entry = (await options.metadata.getEntry({ tenant: l.tenant, path })).entry;
    if (entry === null || entry.deleted) throw new CairnError('CAIRN_NOT_FOUND', `${path} not found`);
    if (entry.kind === 'ENTRY_KIND_FOLDER') {
      const page = await options.metadata.listFolder({ tenant: l.tenant, path, page_size: LIST_PAGE, page_token: url.searchParams.get('page_token') ?? '' });
      const at = l.path.length;
      sendJson(res, 200, {
        path: path.slice(at) || '/',
        entries: page.entries.map((e) => ({ path: e.path.slice(at), folder: e.kind === 'ENTRY_KIND_FOLDER', size: Number(e.size), version: Number(e.version), modifiedMs: Number(e.modified_ms) })),
        nextPageToken: page.next_page_token,
      });
      return;
    }
  }
  await dispatch(options, req, res, t, signal);
}

/** The gateway's HTTP routes; answers false for paths it does not serve. */
export function httpRoutes(options: HttpRoutesOptions): RouteHandler {
  return async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    let route: typeof presigned | undefined;
    if (url.pathname.startsWith(PRESIGN_PREFIX)) route = presigned;
    else if (url.pathname.startsWith(LINK_PREFIX)) route = link;
    else if (url.pathname.startsWith(FILES_PREFIX)) route = bearer;
    if (route === undefined) return false;
    if (!methodAllowed(res, req.method)) return true;
    const abort = new AbortController();
    const onClose = (): void => {
      if (!res.writableFinished) abort.abort();
    };
    res.once('close', onClose);
    try {
      await route(options, req, res, url, abort.signal);
    } catch (err) {
      if (req.method === 'PUT' && !req.complete) {
        // Unread body: the connection cannot be reused for another request.
        res.setHeader('connection', 'close');
      }
      sendError(res, err, options.log);
    } finally {
      res.off('close', onClose);
    }
    return true;
  };
}
