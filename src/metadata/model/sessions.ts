// Resumable upload sessions: any gateway appends received chunks (pinning them, so GC keeps them)
// and reads the offset to resume from; commit turns the session into a version in one
// transaction; expiry (default 7 days after the last append) or abort releases the pins.
import { randomBytes } from 'node:crypto';
import { validateTenant } from '../../common/auth.js';
import { CairnError } from '../../common/errors.js';
import { normalizePath } from '../../common/paths.js';
import type { KvTx } from '../kv/types.js';
import { acquire, release } from './chunks.js';
import { CHUNKS_PER_PAGE, decodeChunks, encodeChunks, json, parseJson, readJson, type ChunkRecord } from './codec.js';
import { checkCount, invalid, type ModelContext } from './context.js';
import { checkMedia, checkMediaKind, commitInTx, conflict, validateChunks, type VersionRecord } from './files.js';
import { keys, tuple, u64, under } from './keys.js';
import { lookup } from './tree.js';

interface StoredSession {
  path: string;
  base?: number;
  /** Announced size, when known. */
  size?: number;
  mtime: number;
  device: string;
  media?: string;
  created: number;
  expires: number;
  /** Bytes received so far (the offset to resume from) and chunks received. */
  offset: number;
  n: number;
}

export interface SessionRecord {
  readonly tenant: string;
  readonly id: string;
  readonly path: string;
  readonly baseVersion: number | undefined;
  readonly expectedSize: number | undefined;
  readonly offset: number;
  readonly chunkCount: number;
  readonly mtimeMs: number;
  readonly authorDevice: string;
  readonly createdMs: number;
  readonly expiresMs: number;
  /** Plain hash of the first chunk; only getSession fills it. */
  readonly firstChunkHash?: Buffer;
}

export interface CreateSessionInput {
  readonly tenant: string;
  readonly path: string;
  readonly baseVersion?: number | undefined;
  readonly expectedSize?: number | undefined;
  readonly mtimeMs: number;
  readonly authorDevice: string;
  readonly media?: string | undefined;
}

const SESSION_ID = /^us_[A-Za-z0-9_-]{22}$/;

function toRecord(tenant: string, id: string, s: StoredSession): SessionRecord {
  return { tenant, id, path: s.path, baseVersion: s.base, expectedSize: s.size, offset: s.offset, chunkCount: s.n, mtimeMs: s.mtime, authorDevice: s.device, createdMs: s.created, expiresMs: s.expires };
}

function checkId(id: string): void {
  if (typeof id !== 'string' || !SESSION_ID.test(id)) throw invalid('session_id', 'session_id is malformed');
}

async function load(tx: Pick<KvTx, 'get'>, ctx: ModelContext, tenant: string, id: string): Promise<StoredSession> {
  const s = await readJson<StoredSession>(tx, keys.session(tenant, id));
  if (s === undefined || s.expires <= ctx.now()) throw new CairnError('CAIRN_NOT_FOUND', `upload session ${id} does not exist or has expired`);
  return s;
}

function save(tx: KvTx, ctx: ModelContext, tenant: string, id: string, s: StoredSession, previousExpiry?: number): void {
  if (previousExpiry !== undefined) tx.del(keys.sessionExpiry(previousExpiry, tenant, id));
  tx.put(keys.sessionExpiry(s.expires, tenant, id), json({ t: tenant, id }));
  tx.put(keys.session(tenant, id), json(s));
}

export async function createSession(ctx: ModelContext, input: CreateSessionInput): Promise<SessionRecord> {
  validateTenant(input.tenant);
  const path = normalizePath(input.path);
  if (input.baseVersion !== undefined) checkCount(input.baseVersion, 'base_version');
  if (input.expectedSize !== undefined) {
    checkCount(input.expectedSize, 'size');
    if (input.expectedSize > ctx.maxFileBytes) throw new CairnError('CAIRN_FILE_TOO_LARGE', `file of ${input.expectedSize} bytes exceeds the limit of ${ctx.maxFileBytes} bytes`);
  }
  checkCount(input.mtimeMs, 'mtime_ms', { min: -Number.MAX_SAFE_INTEGER });
  if (typeof input.authorDevice !== 'string' || input.authorDevice.length > 256) throw invalid('author_device', 'author_device must be at most 256 characters');
  checkMedia(input.media);
  return ctx.write(input.tenant, async (tx) => {
    // Fail early on a stale base version (it is checked again at commit).
    if (input.baseVersion !== undefined) {
      const found = await lookup(tx, input.tenant, path);
      const current = found?.node.kind === 'file' ? found.node.head : 0;
      if (current !== input.baseVersion) throw conflict(path, current, input.baseVersion);
    }
    const id = 'us_' + randomBytes(16).toString('base64url');
    const now = ctx.now();
    const s: StoredSession = {
      path, mtime: input.mtimeMs, device: input.authorDevice, created: now, expires: now + ctx.sessionTtlMs, offset: 0, n: 0,
      ...(input.baseVersion !== undefined ? { base: input.baseVersion } : {}),
      ...(input.expectedSize !== undefined ? { size: input.expectedSize } : {}),
      ...(input.media !== undefined && input.media !== '' ? { media: input.media } : {}),
    };
    save(tx, ctx, input.tenant, id, s);
    return toRecord(input.tenant, id, s);
  });
}

export async function getSession(ctx: ModelContext, tenant: string, id: string): Promise<SessionRecord> {
  validateTenant(tenant);
  checkId(id);
  const s = await load(ctx.kv, ctx, tenant, id);
  const record = toRecord(tenant, id, s);
  if (s.n === 0) return record;
  const first = decodeChunks((await ctx.kv.get(keys.sessionPage(tenant, id, 0))) ?? Buffer.alloc(0))[0];
  return first === undefined ? record : { ...record, firstChunkHash: first.plainHash };
}

/**
 * Appends chunks received at `offset`, which must be the session's current offset (else
 * CAIRN_FAILED_PRECONDITION with metadata.offset, where to resume). Each new chunk is pinned;
 * `blocksSinceMs` says when the writer began writing their blocks (0 = unknown: orphans.ts).
 */
export async function appendChunks(ctx: ModelContext, tenant: string, id: string, offset: number, chunks: readonly ChunkRecord[], blocksSinceMs = 0): Promise<SessionRecord> {
  validateTenant(tenant);
  checkId(id);
  checkCount(offset, 'offset');
  checkCount(blocksSinceMs, 'blocks_since_ms');
  if (chunks.length > 65_536) throw invalid('chunks', 'at most 65536 chunks per append');
  const end = validateChunks(chunks, offset);
  return ctx.write(tenant, async (tx) => {
    const s = await load(tx, ctx, tenant, id);
    if (offset !== s.offset) throw new CairnError('CAIRN_FAILED_PRECONDITION', `session ${id} is at offset ${s.offset}, not ${offset}`, { metadata: { offset: String(s.offset) } });
    if (end > ctx.maxFileBytes) throw new CairnError('CAIRN_FILE_TOO_LARGE', `file exceeds the limit of ${ctx.maxFileBytes} bytes`);
    if (s.size !== undefined && end > s.size) throw new CairnError('CAIRN_SIZE_MISMATCH', `session ${id} announced ${s.size} bytes; this append ends at ${end}`);
    const fresh = new Map<string, ChunkRecord>();
    for (const c of chunks) {
      const hex = c.plainHash.toString('hex');
      if (fresh.has(hex)) continue;
      if ((await tx.get(keys.sessionPin(tenant, id, c.plainHash))) === undefined) fresh.set(hex, c);
    }
    await acquire(tx, ctx, tenant, [...fresh.values()], 'pin', blocksSinceMs);
    for (const c of fresh.values()) tx.put(keys.sessionPin(tenant, id, c.plainHash), Buffer.alloc(0));
    // Fill the last page, then whole new pages.
    let page = Math.floor(s.n / CHUNKS_PER_PAGE);
    let pending: ChunkRecord[] = s.n % CHUNKS_PER_PAGE === 0 ? [] : decodeChunks((await tx.get(keys.sessionPage(tenant, id, page))) ?? Buffer.alloc(0));
    for (const c of chunks) {
      pending.push(c);
      if (pending.length === CHUNKS_PER_PAGE) {
        tx.put(keys.sessionPage(tenant, id, page++), encodeChunks(pending));
        pending = [];
      }
    }
    if (pending.length > 0) tx.put(keys.sessionPage(tenant, id, page), encodeChunks(pending));
    const previous = s.expires;
    s.offset = end;
    s.n += chunks.length;
    s.expires = ctx.now() + ctx.sessionTtlMs;
    save(tx, ctx, tenant, id, s, previous);
    return toRecord(tenant, id, s);
  });
}

async function sessionChunks(tx: Pick<KvTx, 'scan'>, tenant: string, id: string): Promise<ChunkRecord[]> {
  const out: ChunkRecord[] = [];
  for (const [, v] of await tx.scan(under('S', tenant, id))) out.push(...decodeChunks(v));
  return out;
}

/** Deletes a session and releases its pins, inside the caller's transaction. */
async function drop(tx: KvTx, ctx: ModelContext, tenant: string, id: string, s: StoredSession): Promise<void> {
  const pins = new Map<string, number>();
  const range = under('P', tenant, id);
  for (const [k] of await tx.scan(range)) {
    pins.set(k.subarray(range.gt.length).toString('hex'), 1);
    tx.del(k);
  }
  await release(tx, ctx, tenant, pins, 'pin');
  for (const [k] of await tx.scan(under('S', tenant, id))) tx.del(k);
  tx.del(keys.sessionExpiry(s.expires, tenant, id));
  tx.del(keys.session(tenant, id));
}

/**
 * Commits the session's chunks as a new version of its path (base version checked again) and
 * ends the session. A session with an announced size must have received exactly that many bytes.
 */
export async function commitSession(ctx: ModelContext, tenant: string, id: string, options: { mediaKind?: string | undefined } = {}): Promise<VersionRecord> {
  validateTenant(tenant);
  checkId(id);
  checkMediaKind(options.mediaKind);
  return ctx.write(tenant, async (tx) => {
    const s = await load(tx, ctx, tenant, id);
    if (s.size !== undefined && s.offset !== s.size) throw new CairnError('CAIRN_SIZE_MISMATCH', `session ${id} announced ${s.size} bytes and received ${s.offset}`, { metadata: { offset: String(s.offset) } });
    const chunks = await sessionChunks(tx, tenant, id);
    // Refs are taken before the pins go, so no chunk passes through zero on the way.
    const version = await commitInTx(tx, ctx, tenant, s.path, { baseVersion: s.base, size: s.offset, mtimeMs: s.mtime, authorDevice: s.device, media: s.media, mediaKind: options.mediaKind }, chunks);
    await drop(tx, ctx, tenant, id, s);
    return version;
  });
}

export async function abortSession(ctx: ModelContext, tenant: string, id: string): Promise<void> {
  validateTenant(tenant);
  checkId(id);
  await ctx.write(tenant, async (tx) => {
    await drop(tx, ctx, tenant, id, await load(tx, ctx, tenant, id));
  });
}

/** Ends up to `limit` expired sessions, releasing their pins; returns how many. */
export async function expireSessions(ctx: ModelContext, limit = 64): Promise<number> {
  return ctx.kv.transact(async (tx) => {
    const now = ctx.now();
    const rows = await tx.scan({ gt: under('x').gt, lt: tuple('x', u64(now + 1)), limit });
    let ended = 0;
    for (const [k, v] of rows) {
      const { t, id } = parseJson<{ t: string; id: string }>(v);
      const s = await readJson<StoredSession>(tx, keys.session(t, id));
      if (s === undefined || s.expires > now) {
        tx.del(k);
        continue;
      }
      await drop(tx, ctx, t, id, s);
      ended++;
    }
    return ended;
  });
}
