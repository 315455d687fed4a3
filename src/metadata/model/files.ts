// Files and folders over the KV. Each operation is one serializable transaction: a commit checks
// the base version, takes chunk refs, writes the version, moves the head, applies keep-last
// retention and appends a change; delete leaves a restorable tombstone; move rewrites one entry.
import { validateTenant } from '../../common/auth.js';
import { CairnError } from '../../common/errors.js';
import { normalizePath } from '../../common/paths.js';
import type { KvTx } from '../kv/types.js';
import { appendChange, type NodeKind } from './changes.js';
import { acquire, chunkReadKeys, countChunks, release } from './chunks.js';
import { decodeChunks, encodeChunks, type ChunkRecord } from './codec.js';
import { checkCount, invalid, notFound, type ModelContext } from './context.js';
import { keys } from './keys.js';
import { decodeNode, encodeVersion } from './records.js';
import type { Prefetch } from './lanes.js';
import { enqueueJob } from './jobs.js';
import { keepLastOf, policyOf } from './tenants.js';
import { adjustUsage, enforceQuota, versionBytes } from './usage.js';
import {
  detach, ensureFolder, getEntry, locate, lookup, mustLookup, newNodeId, pathOf, parentPathOf, putEntry, ROOT_ID, segmentsOf,
  listChildren, joinPath, type NodeRecord,
} from './tree.js';
import { contentHash, listVersionHeaders, markReplaced, pruneByCount, readChunks, readHeader, writeVersion, type StoredDerivative, type StoredVersion } from './versions.js';

export type { ChunkRecord } from './codec.js';

const MAX_CHUNK_BYTES = 64 * 1024 * 1024;
const MAX_MEDIA_BYTES = 64 * 1024;
const MAX_DERIVATIVES = 32;
const MAX_DERIVATIVE_CHUNKS = 256;
const MEDIA_KIND_RE = /^[\x21-\x7e]{1,128}$/;
const DERIVATIVE_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const FILE_ID_RE = /^[0-9a-f]{16}$/;

/** Kind of the job a commit with a media kind enqueues (in the commit's transaction). */
export const MEDIA_JOB_KIND = 'media';

/**
 * The media kind of content that was sniffed at commit and is not media: recorded on the version
 * (so readers know no thumbnail will ever come) and enqueues no job.
 */
export const NOT_MEDIA = 'none';

/** Payload (JSON) of a "media" job: which version to process, and what the gateway sniffed. */
export interface MediaJobPayload {
  readonly tenant: string;
  /** The path at commit time (the file may move: read it by file_id). */
  readonly path: string;
  readonly file_id: string;
  readonly version: number;
  readonly size: number;
  readonly media_kind: string;
}

/** A rendition derived from a version (a thumbnail, a poster frame), stored as tenant chunks. */
export interface MediaDerivative {
  readonly name: string;
  readonly chunks: readonly ChunkRecord[];
  readonly size: number;
  readonly width: number;
  readonly height: number;
  readonly format: string;
}

export interface VersionRecord {
  readonly tenant: string;
  readonly path: string;
  readonly nodeId: string;
  readonly version: number;
  readonly size: number;
  readonly contentHash: Buffer;
  readonly mtimeMs: number;
  readonly createdMs: number;
  readonly authorDevice: string;
  readonly revision: number;
  readonly deleted: boolean;
  /** The version this one restored (0: none). */
  readonly restoredFrom: number;
  /** Media metadata as JSON text ('' when none). */
  readonly media: string;
  /**
   * What the content sniffed as at commit: a media type, NOT_MEDIA, or '' when unknown (committed
   * without a sniff, or before versions recorded it).
   */
  readonly mediaKind: string;
  /** What media workers derived from the version, in name order. */
  readonly derivatives: readonly MediaDerivative[];
  readonly chunkCount: number;
  /** The chunks asked for (all of them unless the read was ranged or capped). */
  readonly chunks: readonly ChunkRecord[];
}

export interface EntryRecord {
  readonly tenant: string;
  readonly path: string;
  readonly nodeId: string;
  readonly kind: NodeKind;
  /** Files: current version (a tombstone's version while deleted). */
  readonly version: number;
  readonly size: number;
  readonly contentHash: Buffer;
  readonly mtimeMs: number;
  readonly createdMs: number;
  readonly modifiedMs: number;
  /** When the entry was deleted; undefined while it is live. */
  readonly deletedMs: number | undefined;
  readonly revision: number;
}

export interface CommitInput {
  readonly tenant: string;
  readonly path: string;
  /** undefined = unconditional; 0 = must not exist; n = must be current. */
  readonly baseVersion?: number | undefined;
  readonly size: number;
  readonly mtimeMs: number;
  readonly authorDevice: string;
  /** Chunks in file order. An empty address means "already in the tenant's chunk index". */
  readonly chunks: readonly ChunkRecord[];
  /** Media metadata as JSON text. */
  readonly media?: string | undefined;
  /**
   * What the content sniffed as, recorded on the version: a media type (e.g. "image/jpeg") also
   * enqueues a "media" job in the commit's transaction; NOT_MEDIA records that it is not media.
   */
  readonly mediaKind?: string | undefined;
  /**
   * When the writer began writing the blocks this commit names (ms since the epoch; 0 or absent =
   * unknown): an address the orphan sweep deleted after it is refused (model/orphans.ts).
   */
  readonly blocksSinceMs?: number | undefined;
}

function fromStoredDerivatives(stored: readonly StoredDerivative[] | undefined): MediaDerivative[] {
  return (stored ?? []).map((d) => ({ name: d.n, chunks: decodeChunks(Buffer.from(d.c, 'base64')), size: d.s, width: d.w, height: d.h, format: d.f }));
}

export function toVersionRecord(tenant: string, path: string, nodeId: string, s: StoredVersion, chunks: readonly ChunkRecord[]): VersionRecord {
  return {
    tenant,
    path,
    nodeId,
    version: s.v,
    size: s.size,
    contentHash: Buffer.from(s.hash, 'hex'),
    mtimeMs: s.mtime,
    createdMs: s.created,
    authorDevice: s.device,
    revision: s.rev,
    deleted: s.del === 1,
    restoredFrom: s.from ?? 0,
    media: s.media ?? '',
    mediaKind: s.mk ?? '',
    derivatives: fromStoredDerivatives(s.der),
    chunkCount: s.n,
    chunks,
  };
}

export function toEntryRecord(tenant: string, path: string, n: NodeRecord): EntryRecord {
  return {
    tenant,
    path,
    nodeId: n.id,
    kind: n.kind,
    version: n.head,
    size: n.size,
    contentHash: Buffer.from(n.hash, 'hex'),
    mtimeMs: n.mtimeMs,
    createdMs: n.createdMs,
    modifiedMs: n.modifiedMs,
    deletedMs: n.deletedMs,
    revision: n.rev,
  };
}

/** A folder path: "/" (or "") is the root; anything else follows the path rules. */
export function normalizeFolderPath(path: string): string {
  return path === '/' || path === '' ? '/' : normalizePath(path);
}

export function checkMedia(media: string | undefined): void {
  if (media === undefined || media === '') return;
  if (Buffer.byteLength(media) > MAX_MEDIA_BYTES) throw invalid('media', `media metadata is limited to ${MAX_MEDIA_BYTES} bytes`);
  try {
    JSON.parse(media);
  } catch {
    throw invalid('media', 'media metadata must be JSON text');
  }
}

export function checkMediaKind(kind: string | undefined): void {
  if (kind === undefined || kind === '') return;
  if (typeof kind !== 'string' || !MEDIA_KIND_RE.test(kind)) throw invalid('media_kind', 'media_kind must be 1-128 printable ASCII characters without spaces');
}

/** Checks derivatives before any transaction runs. */
export function checkDerivatives(derivatives: readonly MediaDerivative[]): void {
  if (derivatives.length > MAX_DERIVATIVES) throw invalid('derivatives', `at most ${MAX_DERIVATIVES} derivatives per version`);
  const names = new Set<string>();
  derivatives.forEach((d, i) => {
    const f = `derivatives[${i}]`;
    if (typeof d.name !== 'string' || !DERIVATIVE_NAME_RE.test(d.name)) throw invalid(`${f}.name`, `${f}.name must be 1-64 of a-z, 0-9, ".", "_" and "-"`);
    if (names.has(d.name)) throw invalid(`${f}.name`, `derivative ${d.name} is named twice`);
    names.add(d.name);
    if (d.chunks.length === 0 || d.chunks.length > MAX_DERIVATIVE_CHUNKS) throw invalid(`${f}.chunks`, `${f} must have 1..${MAX_DERIVATIVE_CHUNKS} chunks`);
    const end = validateChunks(d.chunks, 0, `${f}.chunks`);
    if (!Number.isSafeInteger(d.size) || end !== d.size) throw invalid(`${f}.size`, `${f}: chunk sizes add up to ${end}, not size ${d.size}`);
    for (const k of ['width', 'height'] as const) if (!Number.isInteger(d[k]) || d[k] < 0 || d[k] > 1_000_000) throw invalid(`${f}.${k}`, `${f}.${k} must be in 0..1000000`);
    if (typeof d.format !== 'string' || !/^[a-z0-9.+-]{1,32}$/.test(d.format)) throw invalid(`${f}.format`, `${f}.format must be 1-32 of a-z, 0-9, ".", "+" and "-"`);
  });
}

export function checkFileId(id: string, field = 'file_id'): void {
  if (typeof id !== 'string' || !FILE_ID_RE.test(id)) throw invalid(field, `${field} must be 16 hex digits`);
}

/** Checks a commit's shape before any transaction runs, so bad input changes nothing. */
export function validateCommit(input: CommitInput, maxFileBytes: number): { path: string } {
  validateTenant(input.tenant);
  const path = normalizePath(input.path);
  if (!Number.isSafeInteger(input.size) || input.size < 0) throw invalid('size', 'size must be a non-negative integer');
  if (input.size > maxFileBytes) throw new CairnError('CAIRN_FILE_TOO_LARGE', `file of ${input.size} bytes exceeds the limit of ${maxFileBytes} bytes`);
  if (input.baseVersion !== undefined) checkCount(input.baseVersion, 'base_version');
  checkCount(input.mtimeMs, 'mtime_ms', { min: -Number.MAX_SAFE_INTEGER });
  if (typeof input.authorDevice !== 'string' || input.authorDevice.length > 256) throw invalid('author_device', 'author_device must be at most 256 characters');
  checkMedia(input.media);
  checkMediaKind(input.mediaKind);
  if (input.blocksSinceMs !== undefined) checkCount(input.blocksSinceMs, 'blocks_since_ms');
  validateChunks(input.chunks, 0);
  const end = input.chunks.reduce((sum, c) => sum + c.size, 0);
  if (end !== input.size) throw invalid('size', `chunk sizes add up to ${end}, not size ${input.size}`);
  return { path };
}

/** Chunks must be well-formed and contiguous from `offset`. */
export function validateChunks(chunks: readonly ChunkRecord[], offset: number, field = 'chunks'): number {
  let at = offset;
  chunks.forEach((c, i) => {
    const f = `${field}[${i}]`;
    if (!Buffer.isBuffer(c.plainHash) || c.plainHash.length !== 32) throw new CairnError('CAIRN_INVALID_HASH', `${f}.plain_hash must be 32 bytes`, { fieldViolations: [{ field: `${f}.plain_hash`, description: 'must be 32 bytes' }] });
    if (!Buffer.isBuffer(c.address) || (c.address.length !== 32 && c.address.length !== 0)) throw new CairnError('CAIRN_INVALID_HASH', `${f}.address must be 32 bytes (or empty for an indexed chunk)`, { fieldViolations: [{ field: `${f}.address`, description: 'must be 32 bytes or empty' }] });
    if (c.offset !== at) throw invalid(`${f}.offset`, `${f}.offset is ${c.offset}, expected ${at} (chunks must be contiguous)`);
    if (!Number.isInteger(c.size) || c.size <= 0 || c.size > MAX_CHUNK_BYTES) throw invalid(`${f}.size`, `${f}.size must be in 1..${MAX_CHUNK_BYTES}`);
    if (c.address.length === 32 && (!Number.isInteger(c.storedSize) || c.storedSize <= 0 || c.storedSize > MAX_CHUNK_BYTES + 1024)) throw invalid(`${f}.stored_size`, `${f}.stored_size is out of range`);
    at += c.size;
  });
  return at;
}

export function conflict(path: string, current: number, base: number): CairnError {
  return new CairnError('CAIRN_CONFLICT', `${path} is at version ${current}, not ${base}`, { metadata: { current_version: String(current) } });
}

export interface CommitMeta {
  readonly baseVersion?: number | undefined;
  readonly size: number;
  readonly mtimeMs: number;
  readonly authorDevice: string;
  readonly media?: string | undefined;
  readonly mediaKind?: string | undefined;
  readonly restoredFrom?: number | undefined;
  /** Derivatives carried over (a restore): their chunks take refs for the new version too. */
  readonly derivatives?: readonly StoredDerivative[] | undefined;
  /** When the writer began writing the blocks of new chunks (0/absent = unknown; orphans.ts). */
  readonly blocksSinceMs?: number | undefined;
}

async function takeDerivatives(tx: KvTx, ctx: ModelContext, tenant: string, derivatives: readonly StoredDerivative[]): Promise<StoredDerivative[]> {
  const out: StoredDerivative[] = [];
  for (const d of derivatives) {
    const resolved = await acquire(tx, ctx, tenant, decodeChunks(Buffer.from(d.c, 'base64')), 'ref');
    out.push({ ...d, c: encodeChunks(resolved).toString('base64') });
  }
  return out;
}

/** The body of every commit (plain, from a session, a restore), inside the caller's transaction. */
export async function commitInTx(tx: KvTx, ctx: ModelContext, tenant: string, path: string, meta: CommitMeta, chunks: readonly ChunkRecord[]): Promise<VersionRecord> {
  if (tx.getMany !== undefined) {
    // Where reads are round trips, fetch in one what the commit reads whatever the tree holds:
    // the tenant record, the revision counter, the path's first entry and the chunks' entries.
    const first = segmentsOf(path)[0];
    await tx.getMany([keys.tenant(tenant), keys.revision(tenant), ...(first !== undefined ? [keys.dentry(tenant, ROOT_ID, first)] : []), ...chunkReadKeys(tenant, chunks)]);
  }
  const parentId = await ensureFolder(tx, ctx, tenant, parentPathOf(path));
  const name = segmentsOf(path).at(-1)!;
  let node = await getEntry(tx, tenant, parentId, name);
  if (node?.kind === 'dir') {
    if (node.deletedMs === undefined) throw new CairnError('CAIRN_FAILED_PRECONDITION', `${path} is a folder`);
    detach(tx, tenant, parentId, name, node);
    node = undefined;
  }
  const current = node !== undefined && node.deletedMs === undefined ? node.head : 0;
  if (meta.baseVersion !== undefined && meta.baseVersion !== current) throw conflict(path, current, meta.baseVersion);
  const usedBefore = await versionBytes(tx, tenant);
  // The new version's bytes are counted with its new chunks: one write of the tenant record.
  const resolved = await acquire(tx, ctx, tenant, chunks, 'ref', meta.blocksSinceMs ?? 0, { versionBytes: meta.size, versions: 1 });
  const der = meta.derivatives !== undefined && meta.derivatives.length > 0 ? await takeDerivatives(tx, ctx, tenant, meta.derivatives) : undefined;
  const now = ctx.now();
  const isNew = node === undefined;
  const base: NodeRecord = node ?? { id: newNodeId(), kind: 'file', createdMs: now, modifiedMs: now, head: 0, last: 0, size: 0, hash: '', mtimeMs: now, rev: 0 };
  if (base.head > 0) await markReplaced(tx, tenant, base.id, base.head, now);
  if (base.deletedMs !== undefined) tx.del(keys.deleted(tenant, base.deletedMs, base.id));
  const v = base.last + 1;
  const hash = contentHash(resolved).toString('hex');
  const mtime = meta.mtimeMs !== 0 ? meta.mtimeMs : now;
  const rev = await appendChange(tx, ctx, tenant, {
    type: meta.restoredFrom !== undefined ? 'restore' : 'put', path, nodeId: base.id, kind: 'file', version: v, size: meta.size, contentHash: hash,
  });
  // Optional fields assigned, not spread: four conditional spreads were a measurable part of a commit.
  const header: Omit<StoredVersion, 'n' | 'po' | 'inline'> = { v, size: meta.size, hash, mtime, created: now, device: meta.authorDevice, rev };
  if (meta.restoredFrom !== undefined) header.from = meta.restoredFrom;
  if (meta.media !== undefined && meta.media !== '') header.media = meta.media;
  if (meta.mediaKind !== undefined && meta.mediaKind !== '') header.mk = meta.mediaKind;
  if (der !== undefined) header.der = der;
  const stored = writeVersion(tx, tenant, base.id, header, resolved);
  const next: NodeRecord = { ...base, head: v, last: v, size: meta.size, hash, mtimeMs: mtime, modifiedMs: now, rev };
  delete next.deletedMs;
  putEntry(tx, tenant, parentId, name, next, !isNew);
  // Versions are numbered 1..v, so a file has at most v: with v ≤ keepLast there is nothing to prune.
  const keepLast = await keepLastOf(tx, ctx, tenant);
  if (keepLast !== undefined && v > keepLast) await pruneByCount(tx, ctx, tenant, next.id, v, await policyOf(tx, ctx, tenant));
  await enforceQuota(tx, tenant, usedBefore);
  if (ctx.onCommit !== undefined) await ctx.onCommit(tx, { tenant, path, nodeId: next.id, version: v, size: meta.size, revision: rev });
  // A restore carries the restored version's media kind, record and derivatives; it enqueues nothing.
  if (meta.mediaKind !== undefined && meta.mediaKind !== '' && meta.mediaKind !== NOT_MEDIA && meta.restoredFrom === undefined) {
    const payload: MediaJobPayload = { tenant, path, file_id: next.id, version: v, size: meta.size, media_kind: meta.mediaKind };
    await enqueueJob(tx, { tenant, kind: MEDIA_JOB_KIND, payload: JSON.stringify(payload), dedupeKey: `${next.id}/${v}` }, { now: ctx.now });
  }
  return toVersionRecord(tenant, path, next.id, stored, resolved);
}

export async function commitFile(ctx: ModelContext, input: CommitInput): Promise<VersionRecord> {
  const { path } = validateCommit(input, ctx.maxFileBytes);
  return ctx.write(input.tenant, (tx) => commitInTx(tx, ctx, input.tenant, path, input, input.chunks), commitPrefetch(input.tenant, path, input.chunks));
}

/**
 * Folder ids this process has seen, by tenant and folder path, most recent last: a guess that
 * lets a commit's prefetch ask for every entry on its path in its first round trip, instead of
 * one level per round trip. Only a hint: the walk below and the commit itself read the path, and
 * a stale guess (a folder moved or replaced) costs one wasted read in a round trip made anyway.
 */
const folderGuesses = new Map<string, string>();
const FOLDER_GUESSES_MAX = 10_000;

function rememberFolder(tenant: string, path: string, id: string): void {
  const key = `${tenant}\0${path}`;
  if (folderGuesses.get(key) === id) return;
  folderGuesses.delete(key);
  folderGuesses.set(key, id);
  if (folderGuesses.size > FOLDER_GUESSES_MAX) folderGuesses.delete(folderGuesses.keys().next().value!);
}

/**
 * What commitInTx reads, declared for its batch: the keys it prefetches itself, then the path's
 * entries level by level (each names the next folder). Batched commits then find their reads
 * in the transaction's cache instead of walking their paths one round trip at a time; with the
 * folders' ids remembered from earlier commits, the whole path comes in the first round trip
 * (64 commits to /a/wN/fM on PostgreSQL: one getMany per batch instead of three).
 */
function commitPrefetch(tenant: string, path: string, chunks: readonly ChunkRecord[]): Prefetch {
  return async (reader) => {
    const segments = segmentsOf(path);
    const guessed: Buffer[] = [];
    let folderPath = '';
    for (let i = 0; i + 1 < segments.length; i++) {
      folderPath += `/${segments[i]!}`;
      const id = folderGuesses.get(`${tenant}\0${folderPath}`);
      if (id === undefined) break;
      guessed.push(keys.dentry(tenant, id, segments[i + 1]!));
    }
    const [, , rootEntry] = await reader.getMany([keys.tenant(tenant), keys.revision(tenant), keys.dentry(tenant, ROOT_ID, segments[0]!), ...guessed, ...chunkReadKeys(tenant, chunks)]);
    let node = rootEntry === undefined ? undefined : decodeNode(rootEntry);
    let at = '';
    for (let i = 0; i + 1 < segments.length; i++) {
      if (node === undefined || node.kind !== 'dir') return;
      at += `/${segments[i]!}`;
      rememberFolder(tenant, at, node.id);
      // Already in the transaction's cache when the guess was right: no round trip.
      node = await getEntry(reader, tenant, node.id, segments[i + 1]!);
    }
  };
}

export interface ChunkWindow {
  /** Return chunks from the one containing this byte offset. */
  readonly fromOffset?: number;
  /** At most this many chunks (0 = all). */
  readonly maxChunks?: number;
}

/**
 * A version of a file (0 = current) with its chunks. Older versions of a deleted file stay
 * readable until retention drops them; a tombstone itself is not a readable version.
 */
export async function getFile(ctx: ModelContext, tenant: string, rawPath: string, version = 0, window: ChunkWindow = {}): Promise<VersionRecord> {
  validateTenant(tenant);
  const path = normalizePath(rawPath);
  checkCount(version, 'version');
  const fromOffset = checkCount(window.fromOffset ?? 0, 'chunk_offset');
  const maxChunks = checkCount(window.maxChunks ?? 0, 'max_chunks');
  return ctx.kv.transact(async (tx) => {
    const found = await lookup(tx, tenant, path, version === 0 ? 'live' : 'last');
    if (found === undefined) throw notFound(`no file at ${path}`);
    if (found.node.kind !== 'file') throw new CairnError('CAIRN_FAILED_PRECONDITION', `${path} is a folder`);
    const v = version === 0 ? found.node.head : version;
    const header = await readHeader(tx, tenant, found.node.id, v);
    if (header === undefined || header.del === 1) throw notFound(`${path} has no version ${v}`);
    const chunks = await readChunks(tx, tenant, found.node.id, header, fromOffset, maxChunks);
    return toVersionRecord(tenant, path, found.node.id, header, chunks);
  });
}

/** A file or folder's entry; deleted entries only when asked for. */
export async function statEntry(ctx: ModelContext, tenant: string, rawPath: string, includeDeleted = false): Promise<EntryRecord> {
  validateTenant(tenant);
  const path = normalizeFolderPath(rawPath);
  if (path === '/') return rootEntry(tenant);
  const found = await mustLookup(ctx.kv, tenant, path, includeDeleted ? 'last' : 'live');
  return toEntryRecord(tenant, path, found.node);
}

function rootEntry(tenant: string): EntryRecord {
  return { tenant, path: '/', nodeId: ROOT_ID, kind: 'dir', version: 0, size: 0, contentHash: Buffer.alloc(0), mtimeMs: 0, createdMs: 0, modifiedMs: 0, deletedMs: undefined, revision: 0 };
}

/** Creates a folder and any missing parents; an existing folder is returned unchanged. */
export async function makeFolder(ctx: ModelContext, tenant: string, rawPath: string): Promise<EntryRecord> {
  validateTenant(tenant);
  const path = normalizePath(rawPath);
  return ctx.write(tenant, async (tx) => {
    await ensureFolder(tx, ctx, tenant, path);
    const found = await mustLookup(tx, tenant, path);
    return toEntryRecord(tenant, path, found.node);
  });
}

/**
 * Deletes a file or folder, leaving a tombstone restorable until the trash window passes. A
 * folder's descendants are untouched (and unreachable) until it is restored or purged.
 */
export async function deleteEntry(ctx: ModelContext, tenant: string, rawPath: string, baseVersion?: number): Promise<EntryRecord> {
  validateTenant(tenant);
  const path = normalizePath(rawPath);
  if (baseVersion !== undefined) checkCount(baseVersion, 'base_version');
  return ctx.write(tenant, async (tx) => {
    const { node, parent, name } = await mustLookup(tx, tenant, path);
    const now = ctx.now();
    const next: NodeRecord = { ...node, deletedMs: now, modifiedMs: now };
    if (node.kind === 'file') {
      if (baseVersion !== undefined && baseVersion !== node.head) throw conflict(path, node.head, baseVersion);
      await markReplaced(tx, tenant, node.id, node.head, now);
      next.head = next.last = node.last + 1;
      next.size = 0;
      next.hash = '';
    } else if (baseVersion !== undefined) {
      throw invalid('base_version', 'base_version applies to files, not folders');
    }
    next.rev = await appendChange(tx, ctx, tenant, { type: 'delete', path, nodeId: node.id, kind: node.kind, ...(node.kind === 'file' ? { version: next.head } : {}) });
    if (node.kind === 'file') {
      writeVersion(tx, tenant, node.id, { v: next.head, size: 0, hash: '', mtime: now, created: now, device: '', rev: next.rev, del: 1 }, []);
      await adjustUsage(tx, tenant, { versions: 1 });
      await pruneByCount(tx, ctx, tenant, node.id, next.head, await policyOf(tx, ctx, tenant));
    }
    tx.put(keys.deleted(tenant, now, node.id), Buffer.from(node.id));
    putEntry(tx, tenant, parent, name, next);
    return toEntryRecord(tenant, path, next);
  });
}

/** Clears the deletion of every deleted folder on the way to `path` (restoring inside them). */
async function undeleteAncestors(tx: KvTx, ctx: ModelContext, tenant: string, path: string): Promise<void> {
  let parent = ROOT_ID;
  let current = '/';
  const segments = segmentsOf(path);
  for (const name of segments.slice(0, -1)) {
    current = joinPath(current, name);
    const node = await getEntry(tx, tenant, parent, name);
    if (node === undefined || node.kind !== 'dir') throw notFound(`no folder at ${current}`);
    if (node.deletedMs !== undefined) await undelete(tx, ctx, tenant, parent, name, current, node);
    parent = node.id;
  }
}

async function undelete(tx: KvTx, ctx: ModelContext, tenant: string, parent: string, name: string, path: string, node: NodeRecord): Promise<NodeRecord> {
  const next: NodeRecord = { ...node, modifiedMs: ctx.now() };
  if (node.deletedMs !== undefined) tx.del(keys.deleted(tenant, node.deletedMs, node.id));
  delete next.deletedMs;
  next.rev = await appendChange(tx, ctx, tenant, { type: 'restore', path, nodeId: node.id, kind: node.kind });
  putEntry(tx, tenant, parent, name, next);
  return next;
}

/**
 * Restores a file's `version` (0 = the newest version that is not a tombstone) as a new version,
 * or undeletes a folder (version must be 0). Deleted folders on the way are undeleted too.
 */
export async function restoreEntry(ctx: ModelContext, tenant: string, rawPath: string, version = 0, authorDevice = ''): Promise<EntryRecord> {
  validateTenant(tenant);
  const path = normalizePath(rawPath);
  checkCount(version, 'version');
  return ctx.write(tenant, async (tx) => {
    const found = await lookup(tx, tenant, path, 'any');
    if (found === undefined) throw notFound(`no file or folder at ${path}`);
    await undeleteAncestors(tx, ctx, tenant, path);
    const { node, parent, name } = found;
    if (node.kind === 'dir') {
      if (version !== 0) throw invalid('version', 'folders have no versions: restore a folder with version 0');
      if (node.deletedMs === undefined) return toEntryRecord(tenant, path, node);
      return toEntryRecord(tenant, path, await undelete(tx, ctx, tenant, parent, name, path, node));
    }
    let target: StoredVersion | undefined;
    if (version === 0) {
      for (let before: number | undefined; target === undefined;) {
        const batch = await listVersionHeaders(tx, tenant, node.id, { before, limit: 64 });
        if (batch.length === 0) break;
        target = batch.find((h) => h.del !== 1);
        before = batch.at(-1)!.v;
      }
    } else {
      target = await readHeader(tx, tenant, node.id, version);
    }
    if (target === undefined || target.del === 1) throw notFound(version === 0 ? `${path} has no version to restore` : `${path} has no version ${version}`);
    if (node.deletedMs === undefined && target.v === node.head) return toEntryRecord(tenant, path, node);
    const chunks = await readChunks(tx, tenant, node.id, target);
    await commitInTx(tx, ctx, tenant, path, { size: target.size, mtimeMs: target.mtime, authorDevice, restoredFrom: target.v, ...(target.media !== undefined ? { media: target.media } : {}), ...(target.mk !== undefined ? { mediaKind: target.mk } : {}), derivatives: target.der }, chunks);
    return toEntryRecord(tenant, path, (await mustLookup(tx, tenant, path)).node);
  });
}

/**
 * Moves or renames a file or folder: one entry is rewritten, whatever the folder holds. The
 * destination must not exist (a tombstone there is displaced); missing parents are created.
 */
export async function moveEntry(ctx: ModelContext, tenant: string, rawFrom: string, rawTo: string, baseVersion?: number): Promise<EntryRecord> {
  validateTenant(tenant);
  const from = normalizePath(rawFrom);
  const to = normalizePath(rawTo);
  if (baseVersion !== undefined) checkCount(baseVersion, 'base_version');
  if (from === to) throw invalid('to', 'source and destination are the same path');
  return ctx.write(tenant, async (tx) => {
    const src = await mustLookup(tx, tenant, from);
    if (src.node.kind === 'dir' && to.startsWith(from + '/')) throw invalid('to', `cannot move ${from} into itself`);
    if (src.node.kind === 'file' && baseVersion !== undefined && baseVersion !== src.node.head) throw conflict(from, src.node.head, baseVersion);
    const destParent = await ensureFolder(tx, ctx, tenant, parentPathOf(to));
    const name = segmentsOf(to).at(-1)!;
    const existing = await getEntry(tx, tenant, destParent, name);
    if (existing !== undefined) {
      if (existing.deletedMs === undefined) throw new CairnError('CAIRN_ALREADY_EXISTS', `${to} already exists`);
      detach(tx, tenant, destParent, name, existing);
    }
    tx.del(keys.dentry(tenant, src.parent, src.name));
    const rev = await appendChange(tx, ctx, tenant, { type: 'move', path: to, fromPath: from, nodeId: src.node.id, kind: src.node.kind, ...(src.node.kind === 'file' ? { version: src.node.head } : {}) });
    const next: NodeRecord = { ...src.node, rev, modifiedMs: ctx.now() };
    putEntry(tx, tenant, destParent, name, next, false);
    return toEntryRecord(tenant, to, next);
  });
}

export interface FolderPage {
  readonly entries: EntryRecord[];
  /** Name to resume from (after it going forward; before it going backward); undefined at the end. */
  readonly resume: string | undefined;
}

export async function listFolder(
  ctx: ModelContext,
  tenant: string,
  rawPath: string,
  options: { after?: string | undefined; before?: string | undefined; limit: number; includeDeleted?: boolean },
): Promise<FolderPage> {
  validateTenant(tenant);
  const path = normalizeFolderPath(rawPath);
  return ctx.kv.transact(async (tx) => {
    let folder = ROOT_ID;
    if (path !== '/') {
      const found = await mustLookup(tx, tenant, path);
      if (found.node.kind !== 'dir') throw new CairnError('CAIRN_FAILED_PRECONDITION', `${path} is a file, not a folder`);
      folder = found.node.id;
    }
    const page = await listChildren(tx, tenant, folder, { after: options.after, before: options.before, limit: options.limit, includeDeleted: options.includeDeleted ?? false });
    return { entries: page.entries.map((e) => toEntryRecord(tenant, joinPath(path, e.name), e.node)), resume: page.resume };
  });
}

/** Versions of a file, newest first (tombstones included), without their chunk lists. */
export async function listVersions(ctx: ModelContext, tenant: string, rawPath: string, options: { before?: number | undefined; limit: number }): Promise<{ versions: VersionRecord[]; more: boolean }> {
  validateTenant(tenant);
  const path = normalizePath(rawPath);
  return ctx.kv.transact(async (tx) => {
    const found = await mustLookup(tx, tenant, path, 'last');
    if (found.node.kind !== 'file') throw new CairnError('CAIRN_FAILED_PRECONDITION', `${path} is a folder`);
    const headers = await listVersionHeaders(tx, tenant, found.node.id, { before: options.before, limit: options.limit + 1 });
    const more = headers.length > options.limit;
    return { versions: headers.slice(0, options.limit).map((h) => toVersionRecord(tenant, path, found.node.id, h, [])), more };
  });
}

/** A version of a file selected by its stable id (media workers: the file may have moved). */
export async function getFileById(ctx: ModelContext, tenant: string, fileId: string, version: number, window: ChunkWindow = {}): Promise<VersionRecord> {
  validateTenant(tenant);
  checkFileId(fileId);
  checkCount(version, 'version', { min: 1 });
  const fromOffset = checkCount(window.fromOffset ?? 0, 'chunk_offset');
  const maxChunks = checkCount(window.maxChunks ?? 0, 'max_chunks');
  return ctx.kv.transact(async (tx) => {
    const header = await readHeader(tx, tenant, fileId, version);
    if (header === undefined || header.del === 1) throw notFound(`file ${fileId} has no version ${version}`);
    const chunks = await readChunks(tx, tenant, fileId, header, fromOffset, maxChunks);
    return toVersionRecord(tenant, (await pathOf(tx, tenant, fileId)) ?? '', fileId, header, chunks);
  });
}

/** Which file a media update is for: its path, or its stable id. */
export type FileTarget = string | { readonly fileId: string };

/**
 * Sets what media workers derived from a version: the metadata JSON and the derivatives (both
 * replaced; no change event). Derivative chunks take refs in the same transaction and the
 * replaced derivatives' refs are released after, so a chunk kept by both never passes zero.
 * `blocksSinceMs`: when the writer began writing the derivatives' blocks (0 = unknown: orphans.ts).
 */
export async function setVersionMedia(ctx: ModelContext, tenant: string, target: FileTarget, version: number, media: string, derivatives: readonly MediaDerivative[] = [], blocksSinceMs = 0): Promise<VersionRecord> {
  validateTenant(tenant);
  checkCount(blocksSinceMs, 'blocks_since_ms');
  const path = typeof target === 'string' ? normalizePath(target) : undefined;
  if (typeof target !== 'string') checkFileId(target.fileId);
  checkCount(version, 'version', { min: 1 });
  checkMedia(media);
  checkDerivatives(derivatives);
  return ctx.write(tenant, async (tx) => {
    let nodeId: string;
    let at: string;
    if (path !== undefined) {
      nodeId = (await mustLookup(tx, tenant, path, 'last')).node.id;
      at = path;
    } else {
      nodeId = (target as { fileId: string }).fileId;
      if ((await locate(tx, tenant, nodeId)) === undefined) throw notFound(`no file ${nodeId}`);
      at = (await pathOf(tx, tenant, nodeId)) ?? '';
    }
    const header = await readHeader(tx, tenant, nodeId, version);
    if (header === undefined || header.del === 1) throw notFound(`${at || nodeId} has no version ${version}`);
    if (media === '') delete header.media;
    else header.media = media;
    const old = header.der ?? [];
    const sorted = [...derivatives].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const stored: StoredDerivative[] = [];
    for (const d of sorted) {
      const resolved = await acquire(tx, ctx, tenant, d.chunks, 'ref', blocksSinceMs);
      stored.push({ n: d.name, c: encodeChunks(resolved).toString('base64'), s: d.size, w: d.width, h: d.height, f: d.format });
    }
    const released = new Map<string, number>();
    for (const d of old) for (const [hex, { count }] of countChunks(decodeChunks(Buffer.from(d.c, 'base64')))) released.set(hex, (released.get(hex) ?? 0) + count);
    await release(tx, ctx, tenant, released, 'ref');
    if (stored.length > 0) header.der = stored;
    else delete header.der;
    tx.put(keys.version(tenant, nodeId, version), encodeVersion(header));
    return toVersionRecord(tenant, at, nodeId, header, []);
  });
}
