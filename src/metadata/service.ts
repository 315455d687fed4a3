// The Metadata gRPC service: translates wire messages to model calls. Gateways call it on behalf
// of an authenticated tenant, so the tenant travels in the request; page tokens and cursors are
// HMAC-bound to it. WatchChanges streams the feed, woken by commits on any replica.
import { validateTenant } from '../common/auth.js';
import { CairnError, isCairnError } from '../common/errors.js';
import { send, serverStream, unary } from '../common/grpc-server.js';
import { normalizePath } from '../common/paths.js';
import { wireInt } from '../common/wire.js';
import type { ChangeEvent as WireChange } from '../gen/cairn/v1/ChangeEvent.js';
import type { ChunkRef, ChunkRef__Output } from '../gen/cairn/v1/ChunkRef.js';
import type { Entry } from '../gen/cairn/v1/Entry.js';
import type { FileVersion } from '../gen/cairn/v1/FileVersion.js';
import type { LinkShare } from '../gen/cairn/v1/LinkShare.js';
import type { MetadataHandlers } from '../gen/cairn/v1/Metadata.js';
import type { ShareGrant } from '../gen/cairn/v1/ShareGrant.js';
import type { SharePermission__Output } from '../gen/cairn/v1/SharePermission.js';
import type { UploadSession } from '../gen/cairn/v1/UploadSession.js';
import * as model from './model/index.js';
import type { ChunkRecord, EntryRecord, ModelContext, VersionRecord } from './model/index.js';
import { pageSize, TokenCodec } from './page-tokens.js';
import type { ChangeHub } from './watch.js';

/** Every Metadata method is internal: callable with a component's service token only. */
export const METADATA_PERMISSIONS = {
  CommitFile: 'service', GetFile: 'service', GetEntry: 'service', ListFolder: 'service', ListVersions: 'service',
  CreateFolder: 'service', MoveEntry: 'service', DeleteEntry: 'service', RestoreEntry: 'service', SetVersionMedia: 'service',
  FindChunks: 'service', GetUsage: 'service', CreateUploadSession: 'service', GetUploadSession: 'service', AppendUploadChunks: 'service',
  AbortUploadSession: 'service', GetChangeCursor: 'service', ListChanges: 'service', WatchChanges: 'service',
  GrantShare: 'service', RevokeShare: 'service', ListShares: 'service', CheckAccess: 'service',
  CreateLinkShare: 'service', ResolveLinkShare: 'service', ListLinkShares: 'service', RevokeLinkShare: 'service',
} as const satisfies Record<keyof MetadataHandlers, 'service'>;

const MAX_FIND_CHUNKS = 10_000;
/** Grants on one path come in one page (a path shared with more users than this is cut off). */
const MAX_GRANTS_PER_PATH = 10_000;
const CHANGE_TYPES: Record<model.ChangeType, WireChange['type']> = {
  put: 'CHANGE_TYPE_PUT', delete: 'CHANGE_TYPE_DELETE', mkdir: 'CHANGE_TYPE_CREATE_FOLDER', move: 'CHANGE_TYPE_MOVE',
  restore: 'CHANGE_TYPE_RESTORE', share: 'CHANGE_TYPE_SHARE', unshare: 'CHANGE_TYPE_UNSHARE',
};
const PERMISSIONS: Record<model.Access, SharePermission__Output> = { none: 'SHARE_PERMISSION_UNSPECIFIED', read: 'SHARE_PERMISSION_READ', write: 'SHARE_PERMISSION_WRITE' };

function toWireChunk(c: ChunkRecord): ChunkRef {
  return { plain_hash: c.plainHash, offset: c.offset, size: c.size, address: c.address, stored_size: c.storedSize };
}

export function toWireVersion(v: VersionRecord): FileVersion {
  return {
    tenant: v.tenant,
    path: v.path,
    version: v.version,
    size: v.size,
    content_hash: v.contentHash,
    mtime_ms: v.mtimeMs,
    created_ms: v.createdMs,
    author_device: v.authorDevice,
    revision: v.revision,
    chunks: v.chunks.map(toWireChunk),
    node_id: v.nodeId,
    deleted: v.deleted,
    restored_from: v.restoredFrom,
    media_json: v.media,
    media_kind: v.mediaKind,
    chunk_count: v.chunkCount,
    derivatives: v.derivatives.map((d) => ({ name: d.name, chunks: d.chunks.map(toWireChunk), size: d.size, width: d.width, height: d.height, format: d.format })),
  };
}

export function toWireEntry(e: EntryRecord): Entry {
  return {
    path: e.path,
    node_id: e.nodeId,
    kind: e.kind === 'file' ? 'ENTRY_KIND_FILE' : 'ENTRY_KIND_FOLDER',
    version: e.version,
    size: e.size,
    content_hash: e.contentHash,
    mtime_ms: e.mtimeMs,
    created_ms: e.createdMs,
    modified_ms: e.modifiedMs,
    deleted: e.deletedMs !== undefined,
    deleted_ms: e.deletedMs ?? 0,
    revision: e.revision,
  };
}

function toWireChange(c: model.ChangeEvent): WireChange {
  return {
    revision: c.revision,
    type: CHANGE_TYPES[c.type],
    path: c.path,
    from_path: c.fromPath ?? '',
    node_id: c.nodeId,
    kind: c.kind === 'file' ? 'ENTRY_KIND_FILE' : 'ENTRY_KIND_FOLDER',
    version: c.version ?? 0,
    size: c.size ?? 0,
    content_hash: Buffer.from(c.contentHash ?? '', 'hex'),
    user: c.user ?? '',
    at_ms: c.atMs,
  };
}

function toWireSession(s: model.SessionRecord): UploadSession {
  return {
    session_id: s.id,
    path: s.path,
    ...(s.baseVersion !== undefined ? { base_version: s.baseVersion } : {}),
    ...(s.expectedSize !== undefined ? { expected_size: s.expectedSize } : {}),
    offset: s.offset,
    chunk_count: s.chunkCount,
    mtime_ms: s.mtimeMs,
    author_device: s.authorDevice,
    created_ms: s.createdMs,
    expires_ms: s.expiresMs,
    ...(s.firstChunkHash !== undefined ? { first_chunk_hash: s.firstChunkHash } : {}),
  };
}

function toWireGrant(g: model.GrantRecord): ShareGrant {
  return { path: g.path, node_id: g.nodeId, user: g.user, permission: PERMISSIONS[g.permission], granted_by: g.grantedBy, created_ms: g.createdMs };
}

function toWireLink(l: model.LinkRecord): LinkShare {
  return { tenant: l.tenant, link_id: l.linkId, path: l.path, node_id: l.nodeId, permission: PERMISSIONS[l.permission], created_by: l.createdBy, created_ms: l.createdMs, expires_ms: l.expiresMs };
}

function fromWireChunks(chunks: readonly ChunkRef__Output[], field = 'chunks'): ChunkRecord[] {
  return chunks.map((c, i) => ({ plainHash: c.plain_hash, offset: wireInt(c.offset, `${field}[${i}].offset`), size: c.size, address: c.address, storedSize: c.stored_size }));
}

function permissionOf(p: SharePermission__Output): model.SharePermission {
  if (p === 'SHARE_PERMISSION_READ') return 'read';
  if (p === 'SHARE_PERMISSION_WRITE') return 'write';
  throw new CairnError('CAIRN_INVALID_ARGUMENT', 'permission must be SHARE_PERMISSION_READ or SHARE_PERMISSION_WRITE', { fieldViolations: [{ field: 'permission', description: 'required' }] });
}

function optionalInt(value: string | undefined, field: string): number | undefined {
  return value === undefined ? undefined : wireInt(value, field);
}

/** A page position given by the caller (previous_last / previous_first): a name, bounded. */
function position(value: string, field: string): string {
  if (Buffer.byteLength(value) > 1024) throw new CairnError('CAIRN_INVALID_ARGUMENT', `${field} is longer than 1024 bytes`, { fieldViolations: [{ field, description: 'too long' }] });
  return value;
}

function nameOf(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

export interface MetadataServiceParts {
  readonly handlers: MetadataHandlers;
  /** Ends every WatchChanges stream (before the server shuts down). */
  close(): void;
}

export interface MetadataHandlerOptions {
  /** Secret that page tokens and cursors are bound with (the cluster's auth secret). */
  readonly secret: Uint8Array;
  readonly hub: ChangeHub;
  /** How often a watch re-reads the feed without a notification (default 5 s). */
  readonly watchPollMs?: number;
}

export function metadataHandlers(ctx: ModelContext, options: MetadataHandlerOptions): MetadataServiceParts {
  const pages = new TokenCodec(options.secret, 'page');
  const cursors = new TokenCodec(options.secret, 'cursor', 'CAIRN_INVALID_CURSOR', 'cursor');
  const watches = new Set<AbortController>();
  const pollMs = options.watchPollMs ?? 5000;

  const encodeCursor = (tenant: string, revision: number): string => cursors.encode([tenant], { r: revision });
  const decodeCursor = (tenant: string, cursor: string): number => {
    validateTenant(tenant);
    if (cursor === '') return 0;
    const pos = cursors.decode(cursor, [tenant]) as { r?: unknown };
    if (typeof pos.r !== 'number' || !Number.isSafeInteger(pos.r) || pos.r < 0) throw new CairnError('CAIRN_INVALID_CURSOR', 'cursor is malformed');
    return pos.r;
  };
  /** A page of changes; an expired cursor's error carries a fresh snapshot cursor. */
  const changesAfter = async (tenant: string, after: number, limit: number): Promise<model.ChangePage> => {
    try {
      return await model.listChanges(ctx, tenant, after, limit);
    } catch (err) {
      if (!isCairnError(err, 'CAIRN_CURSOR_EXPIRED')) throw err;
      const current = Number(err.metadata['current_revision'] ?? 0);
      throw new CairnError('CAIRN_CURSOR_EXPIRED', `${err.message}: list the tree again, then resume from metadata.snapshot_cursor`, {
        metadata: { snapshot_cursor: encodeCursor(tenant, current), current_revision: String(current) },
      });
    }
  };

  const handlers: MetadataHandlers = {
    CommitFile: unary(async (req) => {
      if (req.session_id !== '') {
        if (req.chunks.length > 0 || req.base_version !== undefined) {
          throw new CairnError('CAIRN_INVALID_ARGUMENT', 'a session commit takes its chunks and base_version from the session');
        }
        return { file: toWireVersion(await model.commitSession(ctx, req.tenant, req.session_id, { mediaKind: req.media_kind })) };
      }
      const record = await model.commitFile(ctx, {
        tenant: req.tenant,
        path: req.path,
        baseVersion: optionalInt(req.base_version, 'base_version'),
        size: wireInt(req.size, 'size'),
        mtimeMs: wireInt(req.mtime_ms, 'mtime_ms', { min: -Number.MAX_SAFE_INTEGER }),
        authorDevice: req.author_device,
        chunks: fromWireChunks(req.chunks),
        media: req.media_json,
        mediaKind: req.media_kind,
        blocksSinceMs: wireInt(req.blocks_since_ms, 'blocks_since_ms'),
      });
      return { file: toWireVersion(record) };
    }),

    GetFile: unary(async (req) => {
      const window = { fromOffset: wireInt(req.chunk_offset, 'chunk_offset'), maxChunks: req.max_chunks };
      if (req.file_id !== '' && req.path !== '') throw new CairnError('CAIRN_INVALID_ARGUMENT', 'give a path or a file_id, not both');
      const record = req.file_id !== ''
        ? await model.getFileById(ctx, req.tenant, req.file_id, wireInt(req.version, 'version'), window)
        : await model.getFile(ctx, req.tenant, req.path, wireInt(req.version, 'version'), window);
      return { file: toWireVersion(record) };
    }),

    GetEntry: unary(async (req) => ({ entry: toWireEntry(await model.statEntry(ctx, req.tenant, req.path, req.include_deleted)) })),

    ListFolder: unary(async (req) => {
      validateTenant(req.tenant);
      const path = model.normalizeFolderPath(req.path);
      const limit = pageSize(req.page_size);
      const given = [req.page_token, req.previous_last, req.previous_first].filter((s) => s !== '').length;
      if (given > 1) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'give at most one of page_token, previous_last and previous_first');
      const scope = ['ListFolder', req.tenant, path, req.include_deleted ? 'deleted' : 'live'];
      let after: string | undefined;
      let before: string | undefined;
      if (req.page_token !== '') {
        const pos = pages.decode(req.page_token, scope) as { a?: unknown };
        if (typeof pos.a !== 'string') throw new CairnError('CAIRN_INVALID_PAGE_TOKEN', 'page token is malformed');
        after = pos.a;
      } else if (req.previous_last !== '') {
        after = position(req.previous_last, 'previous_last');
      } else if (req.previous_first !== '') {
        before = position(req.previous_first, 'previous_first');
      }
      const page = await model.listFolder(ctx, req.tenant, path, { after, before, limit, includeDeleted: req.include_deleted });
      const last = page.entries.at(-1);
      // Going backward, the entries after the page (at least previous_first) are the next page.
      const next = before !== undefined ? (last !== undefined ? nameOf(last.path) : undefined) : page.resume;
      return {
        entries: page.entries.map(toWireEntry),
        next_page_token: next === undefined ? '' : pages.encode(scope, { a: next }),
        has_more: page.resume !== undefined,
      };
    }),

    ListVersions: unary(async (req) => {
      validateTenant(req.tenant);
      const path = normalizePath(req.path);
      const limit = pageSize(req.page_size);
      const scope = ['ListVersions', req.tenant, path];
      let before: number | undefined;
      if (req.page_token !== '') {
        const pos = pages.decode(req.page_token, scope) as { b?: unknown };
        if (typeof pos.b !== 'number' || !Number.isSafeInteger(pos.b)) throw new CairnError('CAIRN_INVALID_PAGE_TOKEN', 'page token is malformed');
        before = pos.b;
      }
      const { versions, more } = await model.listVersions(ctx, req.tenant, path, { before, limit });
      const last = versions.at(-1);
      return { versions: versions.map(toWireVersion), next_page_token: more && last !== undefined ? pages.encode(scope, { b: last.version }) : '' };
    }),

    CreateFolder: unary(async (req) => ({ entry: toWireEntry(await model.makeFolder(ctx, req.tenant, req.path)) })),

    MoveEntry: unary(async (req) => ({ entry: toWireEntry(await model.moveEntry(ctx, req.tenant, req.from_path, req.to_path, optionalInt(req.base_version, 'base_version'))) })),

    DeleteEntry: unary(async (req) => ({ entry: toWireEntry(await model.deleteEntry(ctx, req.tenant, req.path, optionalInt(req.base_version, 'base_version'))) })),

    RestoreEntry: unary(async (req) => ({ entry: toWireEntry(await model.restoreEntry(ctx, req.tenant, req.path, wireInt(req.version, 'version'), req.author_device)) })),

    SetVersionMedia: unary(async (req) => {
      if (req.file_id !== '' && req.path !== '') throw new CairnError('CAIRN_INVALID_ARGUMENT', 'give a path or a file_id, not both');
      const derivatives = req.derivatives.map((d, i) => ({
        name: d.name,
        chunks: fromWireChunks(d.chunks, `derivatives[${i}].chunks`),
        size: wireInt(d.size, `derivatives[${i}].size`),
        width: d.width,
        height: d.height,
        format: d.format,
      }));
      const target = req.file_id !== '' ? { fileId: req.file_id } : req.path;
      return { file: toWireVersion(await model.setVersionMedia(ctx, req.tenant, target, wireInt(req.version, 'version'), req.media_json, derivatives, wireInt(req.blocks_since_ms, 'blocks_since_ms'))) };
    }),

    GetUsage: unary(async (req) => {
      const u = await model.getUsage(ctx.kv, req.tenant);
      return { version_bytes: u.versionBytes, versions: u.versions, stored_bytes: u.storedBytes, chunks: u.chunks, quota_bytes: u.quotaBytes };
    }),
    FindChunks: unary(async (req) => {
      validateTenant(req.tenant);
      if (req.plain_hashes.length > MAX_FIND_CHUNKS) throw new CairnError('CAIRN_INVALID_ARGUMENT', `at most ${MAX_FIND_CHUNKS} hashes per call`);
      req.plain_hashes.forEach((h, i) => {
        if (h.length !== 32) throw new CairnError('CAIRN_INVALID_HASH', `plain_hashes[${i}] must be 32 bytes`, { fieldViolations: [{ field: `plain_hashes[${i}]`, description: 'must be 32 bytes' }] });
      });
      const found = await model.findChunks(ctx, req.tenant, req.plain_hashes);
      return { chunks: found.map((c) => ({ plain_hash: c.plainHash, address: c.address, plain_size: c.plainSize, stored_size: c.storedSize, refs: c.refs, pins: c.pins, being_deleted: c.beingDeleted })) };
    }),

    CreateUploadSession: unary(async (req) => {
      const session = await model.createSession(ctx, {
        tenant: req.tenant,
        path: req.path,
        baseVersion: optionalInt(req.base_version, 'base_version'),
        expectedSize: optionalInt(req.size, 'size'),
        mtimeMs: wireInt(req.mtime_ms, 'mtime_ms', { min: -Number.MAX_SAFE_INTEGER }),
        authorDevice: req.author_device,
        media: req.media_json,
      });
      return { session: toWireSession(session) };
    }),

    GetUploadSession: unary(async (req) => ({ session: toWireSession(await model.getSession(ctx, req.tenant, req.session_id)) })),

    AppendUploadChunks: unary(async (req) => ({
      session: toWireSession(await model.appendChunks(ctx, req.tenant, req.session_id, wireInt(req.offset, 'offset'), fromWireChunks(req.chunks), wireInt(req.blocks_since_ms, 'blocks_since_ms'))),
    })),

    AbortUploadSession: unary(async (req) => {
      await model.abortSession(ctx, req.tenant, req.session_id);
      return {};
    }),

    GetChangeCursor: unary(async (req) => {
      validateTenant(req.tenant);
      const revision = await model.currentRevision(ctx.kv, req.tenant);
      return { cursor: encodeCursor(req.tenant, revision), revision };
    }),

    ListChanges: unary(async (req) => {
      const after = decodeCursor(req.tenant, req.cursor);
      const page = await changesAfter(req.tenant, after, pageSize(req.page_size));
      return { changes: page.changes.map(toWireChange), next_cursor: encodeCursor(req.tenant, page.last), has_more: page.last < page.current };
    }),

    WatchChanges: serverStream(async (req, call, callCtx) => {
      let after = decodeCursor(req.tenant, req.cursor);
      const stop = new AbortController();
      watches.add(stop);
      const signal = AbortSignal.any([stop.signal, callCtx.signal]);
      let dirty = true;
      let wake: (() => void) | undefined;
      const unlisten = options.hub.listen(req.tenant, () => {
        dirty = true;
        wake?.();
      });
      const onAbort = (): void => wake?.();
      signal.addEventListener('abort', onAbort);
      try {
        // Subscribed before the first read, so no commit falls between reading and listening.
        for (let first = true; !signal.aborted;) {
          if (!dirty) {
            await new Promise<void>((resolve) => {
              const timer = setTimeout(resolve, pollMs);
              wake = () => {
                clearTimeout(timer);
                resolve();
              };
            });
            wake = undefined;
            // A poll without a notification re-reads too: notifications can be lost.
            dirty = true;
            continue;
          }
          dirty = false;
          const page = await changesAfter(req.tenant, after, 1000);
          if (page.changes.length > 0 || first) {
            await send(call, { changes: page.changes.map(toWireChange), cursor: encodeCursor(req.tenant, page.last) }, callCtx.signal);
            first = false;
          }
          after = page.last;
          if (page.last < page.current) dirty = true;
        }
      } finally {
        unlisten();
        signal.removeEventListener('abort', onAbort);
        watches.delete(stop);
      }
    }),

    GrantShare: unary(async (req) => ({ grant: toWireGrant(await model.grantShare(ctx, req.tenant, req.path, req.user, permissionOf(req.permission), req.granted_by)) })),

    RevokeShare: unary(async (req) => {
      await model.revokeShare(ctx, req.tenant, req.path, req.user);
      return {};
    }),

    ListShares: unary(async (req) => {
      validateTenant(req.tenant);
      const limit = pageSize(req.page_size);
      if ((req.path === '') === (req.user === '')) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'give exactly one of path and user');
      if (req.path !== '') {
        if (req.page_token !== '') throw new CairnError('CAIRN_INVALID_PAGE_TOKEN', 'grants on a path come in one page');
        return { grants: (await model.listGrants(ctx, req.tenant, req.path, MAX_GRANTS_PER_PATH)).map(toWireGrant), next_page_token: '' };
      }
      const scope = ['ListShares', req.tenant, req.user];
      let after = '';
      if (req.page_token !== '') {
        const pos = pages.decode(req.page_token, scope) as { n?: unknown };
        if (typeof pos.n !== 'string') throw new CairnError('CAIRN_INVALID_PAGE_TOKEN', 'page token is malformed');
        after = pos.n;
      }
      const { grants, resume } = await model.listSharedWith(ctx, req.tenant, req.user, after, limit);
      return { grants: grants.map(toWireGrant), next_page_token: resume === undefined ? '' : pages.encode(scope, { n: resume }) };
    }),

    CheckAccess: unary(async (req) => ({ permission: PERMISSIONS[await model.checkAccess(ctx, req.tenant, req.path, req.user)] })),

    CreateLinkShare: unary(async (req) => {
      const link = await model.createLink(ctx, req.tenant, req.path, permissionOf(req.permission), wireInt(req.expires_ms, 'expires_ms'), req.created_by);
      return { link: toWireLink(link), token: link.token };
    }),

    ResolveLinkShare: unary(async (req) => ({ link: toWireLink(await model.resolveLink(ctx, req.token)) })),

    ListLinkShares: unary(async (req) => ({ links: (await model.listLinks(ctx, req.tenant, req.path)).map(toWireLink) })),

    RevokeLinkShare: unary(async (req) => {
      await model.revokeLink(ctx, req.tenant, req.path, req.link_id);
      return {};
    }),
  };

  return {
    handlers,
    close() {
      for (const w of watches) w.abort();
    },
  };
}
