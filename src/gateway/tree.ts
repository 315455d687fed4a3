// The file-tree half of the public Files service: listing, versions, restore, delete, move, copy,
// mkdir, the change feed and usage, each answered by the metadata service for the caller's tenant.
import { CairnError } from '../common/errors.js';
import { principalOf, send, serverStream, unary, type CallContext } from '../common/grpc-server.js';
import type { Permission } from '../common/auth.js';
import { normalizePath } from '../common/paths.js';
import { wireInt } from '../common/wire.js';
import type { ChangeEvent__Output } from '../gen/cairn/v1/ChangeEvent.js';
import type { Entry__Output } from '../gen/cairn/v1/Entry.js';
import type { FileChange } from '../gen/cairn/v1/FileChange.js';
import type { FilesHandlers } from '../gen/cairn/v1/Files.js';
import type { FileVersion__Output } from '../gen/cairn/v1/FileVersion.js';
import type { TreeEntry } from '../gen/cairn/v1/TreeEntry.js';
import type { FileInfo } from '../gen/cairn/v1/FileInfo.js';
import type { MetadataClient } from '../metadata/index.js';

export const TREE_PERMISSIONS = Object.freeze({
  List: 'read',
  ListVersions: 'read',
  RestoreVersion: 'write',
  Delete: 'write',
  Move: 'write',
  Copy: 'write',
  Mkdir: 'write',
  ListChanges: 'read',
  WatchChanges: 'read',
  Usage: 'read',
} satisfies Record<string, Permission>);

export type TreeMethod = keyof typeof TREE_PERMISSIONS;

/** The Files handlers other than the tree's (FilesHandlers minus its index signature and TreeMethod). */
export type FilesDataHandlers = { [K in keyof FilesHandlers as string extends K ? never : K extends TreeMethod ? never : K]: FilesHandlers[K] };

export interface TreeServiceOptions {
  readonly metadata: MetadataClient;
  /** Aborted when the gateway stops: open watches end with CAIRN_SHUTTING_DOWN instead of holding the shutdown. */
  readonly closing?: AbortSignal;
}

const MAX_PAGE_SIZE = 1000;
/** Usage walks the tree; past this many entries the answer would cost too much to compute per call. */
const MAX_USAGE_ENTRIES = 1_000_000;

/** A folder path: "/" (or empty) is the root; anything else is validated like a file path. */
function folderPath(raw: string): string {
  return raw === '' || raw === '/' ? '/' : normalizePath(raw);
}

function pageSizeOf(raw: number): number {
  if (!Number.isInteger(raw) || raw < 0) {
    throw new CairnError('CAIRN_INVALID_ARGUMENT', `page_size must be between 0 and ${MAX_PAGE_SIZE}, got ${raw}`, { fieldViolations: [{ field: 'page_size', description: 'must be ≥ 0' }] });
  }
  return Math.min(raw, MAX_PAGE_SIZE);
}

function nameOf(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

function toTreeEntry(e: Entry__Output | null | undefined): TreeEntry {
  if (!e) throw new CairnError('CAIRN_INTERNAL', 'metadata returned no entry');
  return {
    path: e.path,
    name: nameOf(e.path),
    folder: e.kind === 'ENTRY_KIND_FOLDER',
    version: e.version,
    size: e.size,
    content_hash: e.content_hash.toString('hex'),
    mtime_ms: e.mtime_ms,
    modified_ms: e.modified_ms,
    deleted: e.deleted,
    revision: e.revision,
  };
}

function toInfo(v: FileVersion__Output): FileInfo {
  return {
    path: v.path,
    version: v.version,
    size: v.size,
    content_hash: v.content_hash.toString('hex'),
    mtime_ms: v.mtime_ms,
    created_ms: v.created_ms,
    chunk_count: Number(v.chunk_count),
    revision: v.revision,
  };
}

const CHANGE_TYPES: Record<string, FileChange['type']> = {
  CHANGE_TYPE_PUT: 'FILE_CHANGE_TYPE_PUT',
  CHANGE_TYPE_DELETE: 'FILE_CHANGE_TYPE_DELETE',
  CHANGE_TYPE_CREATE_FOLDER: 'FILE_CHANGE_TYPE_MKDIR',
  CHANGE_TYPE_MOVE: 'FILE_CHANGE_TYPE_MOVE',
  CHANGE_TYPE_RESTORE: 'FILE_CHANGE_TYPE_RESTORE',
  CHANGE_TYPE_SHARE: 'FILE_CHANGE_TYPE_SHARE',
  CHANGE_TYPE_UNSHARE: 'FILE_CHANGE_TYPE_UNSHARE',
};

function toChange(c: ChangeEvent__Output): FileChange {
  return {
    revision: c.revision,
    type: CHANGE_TYPES[c.type] ?? 'FILE_CHANGE_TYPE_UNSPECIFIED',
    path: c.path,
    from_path: c.from_path,
    folder: c.kind === 'ENTRY_KIND_FOLDER',
    version: c.version,
    size: c.size,
    content_hash: c.content_hash.toString('hex'),
    at_ms: c.at_ms,
  };
}

function under(path: string, prefix: string): boolean {
  return prefix === '/' || path === prefix || path.startsWith(prefix + '/');
}

function optionalBase(value: string | undefined, field: string): { base_version?: number } {
  return value === undefined ? {} : { base_version: wireInt(value, field) };
}

async function usage(options: TreeServiceOptions, ctx: CallContext, root: string): Promise<{ files: number; folders: number; bytes: number }> {
  const tenant = principalOf(ctx).tenant;
  const totals = { files: 0, folders: 0, bytes: 0 };
  const pending = [root];
  let seen = 0;
  while (pending.length > 0) {
    const folder = pending.pop()!;
    let token = '';
    do {
      if (ctx.signal.aborted) throw new CairnError('CAIRN_CANCELLED', 'usage cancelled');
      const page = await options.metadata.listFolder({ tenant, path: folder, page_size: MAX_PAGE_SIZE, page_token: token }, ctx.requestId);
      for (const e of page.entries) {
        if (++seen > MAX_USAGE_ENTRIES) throw new CairnError('CAIRN_OUT_OF_RANGE', `${root} holds more than ${MAX_USAGE_ENTRIES} entries; ask for the usage of a subfolder`);
        if (e.kind === 'ENTRY_KIND_FOLDER') {
          totals.folders++;
          pending.push(e.path);
        } else {
          totals.files++;
          totals.bytes += Number(e.size);
        }
      }
      token = page.next_page_token;
    } while (token !== '');
  }
  return totals;
}

export function treeHandlers(options: TreeServiceOptions): Pick<FilesHandlers, TreeMethod> {
  const { metadata } = options;
  return {
    List: unary(async (req, ctx) => {
      const res = await metadata.listFolder({
        tenant: principalOf(ctx).tenant,
        path: folderPath(req.path),
        page_size: pageSizeOf(req.page_size),
        page_token: req.page_token,
        previous_last: req.previous_last,
        previous_first: req.previous_first,
        include_deleted: req.include_deleted,
      }, ctx.requestId);
      return { entries: res.entries.map(toTreeEntry), next_page_token: res.next_page_token, has_more: res.has_more };
    }),

    ListVersions: unary(async (req, ctx) => {
      const res = await metadata.listVersions({ tenant: principalOf(ctx).tenant, path: normalizePath(req.path), page_size: pageSizeOf(req.page_size), page_token: req.page_token }, ctx.requestId);
      return { versions: res.versions.map((v) => ({ file: toInfo(v), deleted: v.deleted, restored_from: v.restored_from })), next_page_token: res.next_page_token };
    }),

    RestoreVersion: unary(async (req, ctx) => {
      const principal = principalOf(ctx);
      const res = await metadata.restoreEntry({ tenant: principal.tenant, path: normalizePath(req.path), version: wireInt(req.version, 'version'), author_device: principal.subject }, ctx.requestId);
      return { entry: toTreeEntry(res.entry) };
    }),

    Delete: unary(async (req, ctx) => {
      const res = await metadata.deleteEntry({ tenant: principalOf(ctx).tenant, path: normalizePath(req.path), ...optionalBase(req.base_version, 'base_version') }, ctx.requestId);
      return { entry: toTreeEntry(res.entry) };
    }),

    Move: unary(async (req, ctx) => {
      const res = await metadata.moveEntry({ tenant: principalOf(ctx).tenant, from_path: normalizePath(req.from_path), to_path: normalizePath(req.to_path), ...optionalBase(req.base_version, 'base_version') }, ctx.requestId);
      return { entry: toTreeEntry(res.entry) };
    }),

    Copy: unary(async (req, ctx) => {
      const principal = principalOf(ctx);
      const from = normalizePath(req.from_path);
      const to = normalizePath(req.to_path);
      const base = optionalBase(req.base_version, 'base_version');
      // The new version references the source's chunks; the commit takes a ref on each, so no
      // block is copied and the chunks live as long as either file does.
      const source = await metadata.getFile({ tenant: principal.tenant, path: from, version: wireInt(req.from_version, 'from_version') }, ctx.requestId);
      if (source.deleted) throw new CairnError('CAIRN_NOT_FOUND', `version ${source.version} of ${from} is a deletion`);
      const copy = await metadata.commitFile({
        tenant: principal.tenant,
        path: to,
        ...base,
        size: source.size,
        mtime_ms: source.mtime_ms,
        author_device: principal.subject,
        chunks: source.chunks,
      }, ctx.requestId);
      ctx.log.info({ from, to, version: copy.version }, 'file copied');
      return { file: toInfo(copy) };
    }),

    Mkdir: unary(async (req, ctx) => {
      const res = await metadata.createFolder({ tenant: principalOf(ctx).tenant, path: normalizePath(req.path) }, ctx.requestId);
      return { entry: toTreeEntry(res.entry) };
    }),

    ListChanges: unary(async (req, ctx) => {
      const res = await metadata.listChanges({ tenant: principalOf(ctx).tenant, cursor: req.cursor, page_size: pageSizeOf(req.page_size) }, ctx.requestId);
      return { changes: res.changes.map(toChange), next_cursor: res.next_cursor, has_more: res.has_more };
    }),

    WatchChanges: serverStream(async (req, call, ctx) => {
      const tenant = principalOf(ctx).tenant;
      const prefix = folderPath(req.path);
      // An empty cursor means "from now": metadata's empty cursor is the start of the feed.
      const cursor = req.cursor !== '' ? req.cursor : (await metadata.getChangeCursor({ tenant }, ctx.requestId)).cursor;
      // The metadata client resumes a broken watch from the last cursor, so a gateway ↔ metadata
      // hiccup costs the caller nothing; non-retryable errors (an expired cursor) end the call.
      const signal = options.closing === undefined ? ctx.signal : AbortSignal.any([ctx.signal, options.closing]);
      for await (const msg of metadata.watchChanges({ tenant, cursor }, signal)) {
        const changes = msg.changes.filter((c) => under(c.path, prefix) || (c.from_path !== '' && under(c.from_path, prefix))).map(toChange);
        await send(call, { changes, cursor: msg.cursor }, ctx.signal);
      }
      // Watches never end by themselves; a stopping gateway ends them with a retryable error so
      // clients reconnect (to another gateway) from their last cursor.
      if (options.closing?.aborted === true && !ctx.signal.aborted) throw new CairnError('CAIRN_SHUTTING_DOWN', 'the gateway is shutting down; reconnect from the last cursor');
    }),

    Usage: unary(async (req, ctx) => {
      const path = folderPath(req.path);
      const [folder, tenant] = await Promise.all([usage(options, ctx, path), metadata.getUsage({ tenant: principalOf(ctx).tenant }, ctx.requestId)]);
      return { ...folder, tenant_version_bytes: tenant.version_bytes, tenant_versions: tenant.versions, tenant_stored_bytes: tenant.stored_bytes, quota_bytes: tenant.quota_bytes };
    }),
  };
}
