// Files and folders over the KV. Each operation is one serializable transaction: a commit checks
// the base version, takes chunk refs, writes the version, moves the head, applies keep-last
// retention and appends a change; delete leaves a restorable tombstone; move rewrites one entry.
import { validateTenant } from '../../common/auth.js';
import { CairnError } from '../../common/errors.js';
import { normalizePath } from '../../common/paths.js';
import type { KvTx } from '../kv/types.js';
import { appendChange, type NodeKind } from './changes.js';
import { acquire } from './chunks.js';
import { json, type ChunkRecord } from './codec.js';
import { checkCount, invalid, notFound, type ModelContext } from './context.js';
import { keys } from './keys.js';
import { policyOf } from './tenants.js';
import {
  detach, ensureFolder, getEntry, lookup, mustLookup, newNodeId, parentPathOf, putEntry, ROOT_ID, segmentsOf,
  listChildren, joinPath, type NodeRecord,
} from './tree.js';
import { contentHash, listVersionHeaders, markReplaced, pruneByCount, readChunks, readHeader, writeVersion, type StoredVersion } from './versions.js';

export type { ChunkRecord } from './codec.js';

const MAX_CHUNK_BYTES = 64 * 1024 * 1024;
const MAX_MEDIA_BYTES = 64 * 1024;

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
  readonly restoredFrom?: number | undefined;
}

/** The body of every commit (plain, from a session, a restore), inside the caller's transaction. */
export async function commitInTx(tx: KvTx, ctx: ModelContext, tenant: string, path: string, meta: CommitMeta, chunks: readonly ChunkRecord[]): Promise<VersionRecord> {
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
  const resolved = await acquire(tx, ctx, tenant, chunks, 'ref');
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
  const stored = writeVersion(tx, tenant, base.id, {
    v, size: meta.size, hash, mtime, created: now, device: meta.authorDevice, rev,
    ...(meta.restoredFrom !== undefined ? { from: meta.restoredFrom } : {}),
    ...(meta.media !== undefined && meta.media !== '' ? { media: meta.media } : {}),
  }, resolved);
  const next: NodeRecord = { ...base, head: v, last: v, size: meta.size, hash, mtimeMs: mtime, modifiedMs: now, rev };
  delete next.deletedMs;
  putEntry(tx, tenant, parentId, name, next, !isNew);
  await pruneByCount(tx, ctx, tenant, next.id, v, await policyOf(tx, ctx, tenant));
  if (ctx.onCommit !== undefined) await ctx.onCommit(tx, { tenant, path, nodeId: next.id, version: v, size: meta.size, revision: rev });
  return toVersionRecord(tenant, path, next.id, stored, resolved);
}

export async function commitFile(ctx: ModelContext, input: CommitInput): Promise<VersionRecord> {
  const { path } = validateCommit(input, ctx.maxFileBytes);
  return ctx.write(input.tenant, (tx) => commitInTx(tx, ctx, input.tenant, path, input, input.chunks));
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
    await commitInTx(tx, ctx, tenant, path, { size: target.size, mtimeMs: target.mtime, authorDevice, restoredFrom: target.v, ...(target.media !== undefined ? { media: target.media } : {}) }, chunks);
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

/** Sets the media metadata of a version (what media workers extracted); no change event. */
export async function setVersionMedia(ctx: ModelContext, tenant: string, rawPath: string, version: number, media: string): Promise<VersionRecord> {
  validateTenant(tenant);
  const path = normalizePath(rawPath);
  checkCount(version, 'version', { min: 1 });
  checkMedia(media);
  return ctx.write(tenant, async (tx) => {
    const found = await mustLookup(tx, tenant, path, 'last');
    const header = await readHeader(tx, tenant, found.node.id, version);
    if (header === undefined || header.del === 1) throw notFound(`${path} has no version ${version}`);
    if (media === '') delete header.media;
    else header.media = media;
    tx.put(keys.version(tenant, found.node.id, version), json(header));
    return toVersionRecord(tenant, path, found.node.id, header, []);
  });
}
