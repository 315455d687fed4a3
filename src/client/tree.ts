// The SDK's file-tree calls (list, versions, restore, delete, move, copy, mkdir, changes, watch,
// usage): typed results with numbers rather than wire strings, and errors as CairnError.
import type * as grpc from '@grpc/grpc-js';
import { CairnError } from '../common/errors.js';
import { callMetadata, deadlineIn, unaryCall } from '../common/grpc-client.js';
import { fromServiceError } from '../common/status.js';
import type { FileChange__Output } from '../gen/cairn/v1/FileChange.js';
import type { FileInfo__Output } from '../gen/cairn/v1/FileInfo.js';
import { toInfo, type FileInfo } from './info.js';
import type { FilesClient } from '../gen/cairn/v1/Files.js';
import type { FilesWatchChangesResponse__Output } from '../gen/cairn/v1/FilesWatchChangesResponse.js';
import type { TreeEntry__Output } from '../gen/cairn/v1/TreeEntry.js';
import type { ListRequest } from '../gen/cairn/v1/ListRequest.js';
import type { ListResponse__Output } from '../gen/cairn/v1/ListResponse.js';
import type { FilesListVersionsRequest } from '../gen/cairn/v1/FilesListVersionsRequest.js';
import type { FilesListVersionsResponse__Output } from '../gen/cairn/v1/FilesListVersionsResponse.js';
import type { RestoreVersionRequest } from '../gen/cairn/v1/RestoreVersionRequest.js';
import type { RestoreVersionResponse__Output } from '../gen/cairn/v1/RestoreVersionResponse.js';
import type { DeleteRequest } from '../gen/cairn/v1/DeleteRequest.js';
import type { DeleteResponse__Output } from '../gen/cairn/v1/DeleteResponse.js';
import type { MoveRequest } from '../gen/cairn/v1/MoveRequest.js';
import type { MoveResponse__Output } from '../gen/cairn/v1/MoveResponse.js';
import type { CopyRequest } from '../gen/cairn/v1/CopyRequest.js';
import type { CopyResponse__Output } from '../gen/cairn/v1/CopyResponse.js';
import type { MkdirRequest } from '../gen/cairn/v1/MkdirRequest.js';
import type { MkdirResponse__Output } from '../gen/cairn/v1/MkdirResponse.js';
import type { FilesListChangesRequest } from '../gen/cairn/v1/FilesListChangesRequest.js';
import type { FilesListChangesResponse__Output } from '../gen/cairn/v1/FilesListChangesResponse.js';
import type { UsageRequest } from '../gen/cairn/v1/UsageRequest.js';
import type { UsageResponse__Output } from '../gen/cairn/v1/UsageResponse.js';

/** A file or folder in a listing. */
export interface TreeEntry {
  readonly path: string;
  readonly name: string;
  readonly folder: boolean;
  /** Files: the current version. */
  readonly version: number;
  readonly size: number;
  readonly contentHash: string;
  readonly mtimeMs: number;
  readonly modifiedMs: number;
  readonly deleted: boolean;
  readonly revision: number;
}

export interface ListOptions {
  /** Entries per page (default 100, at most 1000). */
  readonly pageSize?: number;
  readonly pageToken?: string;
  /** The page after this name. */
  readonly previousLast?: string;
  /** The page before this name. */
  readonly previousFirst?: string;
  readonly includeDeleted?: boolean;
}

export interface ListPage {
  readonly entries: TreeEntry[];
  /** Empty at the end. */
  readonly nextPageToken: string;
  readonly hasMore: boolean;
}

/** One version in a file's history. */
export interface VersionEntry extends FileInfo {
  /** A tombstone: this version deleted the file. */
  readonly deleted: boolean;
  /** The version this one restored (0: none). */
  readonly restoredFrom: number;
}

export interface VersionsPage {
  readonly versions: VersionEntry[];
  readonly nextPageToken: string;
}

export type ChangeType = 'put' | 'delete' | 'mkdir' | 'move' | 'restore' | 'share' | 'unshare' | 'unknown';

export interface Change {
  readonly revision: number;
  readonly type: ChangeType;
  readonly path: string;
  /** Moves: the path before. */
  readonly fromPath: string;
  readonly folder: boolean;
  readonly version: number;
  readonly size: number;
  readonly contentHash: string;
  readonly atMs: number;
}

export interface ChangesPage {
  readonly changes: Change[];
  readonly nextCursor: string;
  readonly hasMore: boolean;
}

/** What a watch delivers: changes in order and the cursor to resume from after them. */
export interface ChangeBatch {
  readonly changes: Change[];
  readonly cursor: string;
}

export interface WatchOptions {
  /** Resume after this cursor; default: from now. */
  readonly cursor?: string;
  /** Only changes at or under this path. */
  readonly path?: string;
  /** Ends the watch (the iteration then returns). */
  readonly signal?: AbortSignal;
}

export interface Usage {
  readonly files: number;
  readonly folders: number;
  readonly bytes: number;
  /** The whole tenant: bytes of every version retention keeps (what the quota limits) and their count. */
  readonly tenantVersionBytes: number;
  readonly tenantVersions: number;
  /** The whole tenant: sealed bytes of its distinct chunks (deduplicated, before replication). */
  readonly tenantStoredBytes: number;
  /** 0 = no quota. */
  readonly quotaBytes: number;
}

function toEntry(e: TreeEntry__Output | null | undefined): TreeEntry {
  if (!e) throw new CairnError('CAIRN_INTERNAL', 'server sent no entry');
  return {
    path: e.path,
    name: e.name,
    folder: e.folder,
    version: Number(e.version),
    size: Number(e.size),
    contentHash: e.content_hash,
    mtimeMs: Number(e.mtime_ms),
    modifiedMs: Number(e.modified_ms),
    deleted: e.deleted,
    revision: Number(e.revision),
  };
}

function toVersion(f: FileInfo__Output | null | undefined, deleted: boolean, restoredFrom: string): VersionEntry {
  return { ...toInfo(f), deleted, restoredFrom: Number(restoredFrom) };
}

const CHANGE_TYPES: Record<string, ChangeType> = {
  FILE_CHANGE_TYPE_PUT: 'put',
  FILE_CHANGE_TYPE_DELETE: 'delete',
  FILE_CHANGE_TYPE_MKDIR: 'mkdir',
  FILE_CHANGE_TYPE_MOVE: 'move',
  FILE_CHANGE_TYPE_RESTORE: 'restore',
  FILE_CHANGE_TYPE_SHARE: 'share',
  FILE_CHANGE_TYPE_UNSHARE: 'unshare',
};

function toChange(c: FileChange__Output): Change {
  return {
    revision: Number(c.revision),
    type: CHANGE_TYPES[c.type] ?? 'unknown',
    path: c.path,
    fromPath: c.from_path,
    folder: c.folder,
    version: Number(c.version),
    size: Number(c.size),
    contentHash: c.content_hash,
    atMs: Number(c.at_ms),
  };
}

/** Waits `ms`; resolves true when `signal` aborted instead. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<boolean> {
  if (signal?.aborted === true) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve(signal?.aborted === true);
    }
  });
}

type UnaryFn<Req, Res> = (req: Req, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => unknown;

/** The tree calls of CairnClient (its base class), over the Files client the subclass creates. */
export class TreeClient {
  protected readonly files: FilesClient;
  protected readonly token: string;

  constructor(files: FilesClient, token: string) {
    this.files = files;
    this.token = token;
  }

  async #unary<Req, Res>(fn: UnaryFn<Req, Res>, req: Req, timeoutMs = 30_000): Promise<Res> {
    const md = await callMetadata(() => this.token);
    try {
      return await unaryCall<Req, Res>(fn, req, md, deadlineIn(timeoutMs));
    } catch (err) {
      throw fromServiceError(err);
    }
  }

  /** One page of a folder ("/" is the root), in name order. */
  async list(path: string, options: ListOptions = {}): Promise<ListPage> {
    const res = await this.#unary<ListRequest, ListResponse__Output>(this.files.List.bind(this.files), {
      path,
      page_size: options.pageSize ?? 0,
      page_token: options.pageToken ?? '',
      previous_last: options.previousLast ?? '',
      previous_first: options.previousFirst ?? '',
      include_deleted: options.includeDeleted ?? false,
    });
    return { entries: res.entries.map(toEntry), nextPageToken: res.next_page_token, hasMore: res.has_more };
  }

  /** Every entry of a folder, page by page. */
  async *listAll(path: string, options: Pick<ListOptions, 'pageSize' | 'includeDeleted'> = {}): AsyncGenerator<TreeEntry> {
    let pageToken = '';
    do {
      const page = await this.list(path, { ...options, pageToken });
      yield* page.entries;
      pageToken = page.nextPageToken;
    } while (pageToken !== '');
  }

  /** One page of a file's versions, newest first (tombstones included). */
  async versions(path: string, options: { pageSize?: number; pageToken?: string } = {}): Promise<VersionsPage> {
    const res = await this.#unary<FilesListVersionsRequest, FilesListVersionsResponse__Output>(this.files.ListVersions.bind(this.files), { path, page_size: options.pageSize ?? 0, page_token: options.pageToken ?? '' });
    return { versions: res.versions.map((v) => toVersion(v.file, v.deleted, v.restored_from)), nextPageToken: res.next_page_token };
  }

  /** Makes `version` of a file current again (as a new version); version 0 undeletes a file or folder. */
  async restore(path: string, version = 0): Promise<TreeEntry> {
    return toEntry((await this.#unary<RestoreVersionRequest, RestoreVersionResponse__Output>(this.files.RestoreVersion.bind(this.files), { path, version }, 60_000)).entry);
  }

  /** Deletes a file or folder (restorable within the trash window). */
  async delete(path: string, options: { baseVersion?: number } = {}): Promise<TreeEntry> {
    return toEntry((await this.#unary<DeleteRequest, DeleteResponse__Output>(this.files.Delete.bind(this.files), { path, ...(options.baseVersion !== undefined ? { base_version: options.baseVersion } : {}) })).entry);
  }

  /** Moves or renames a file or folder; the destination must not exist. */
  async move(fromPath: string, toPath: string, options: { baseVersion?: number } = {}): Promise<TreeEntry> {
    return toEntry((await this.#unary<MoveRequest, MoveResponse__Output>(this.files.Move.bind(this.files), { from_path: fromPath, to_path: toPath, ...(options.baseVersion !== undefined ? { base_version: options.baseVersion } : {}) })).entry);
  }

  /** Copies a file (a version of it) to another path without copying data. */
  async copy(fromPath: string, toPath: string, options: { fromVersion?: number; baseVersion?: number } = {}): Promise<VersionEntry> {
    const res = await this.#unary<CopyRequest, CopyResponse__Output>(this.files.Copy.bind(this.files), { from_path: fromPath, to_path: toPath, from_version: options.fromVersion ?? 0, ...(options.baseVersion !== undefined ? { base_version: options.baseVersion } : {}) }, 60_000);
    return toVersion(res.file, false, '0');
  }

  /** Creates a folder and its missing parents. */
  async mkdir(path: string): Promise<TreeEntry> {
    return toEntry((await this.#unary<MkdirRequest, MkdirResponse__Output>(this.files.Mkdir.bind(this.files), { path })).entry);
  }

  /** One page of changes after `cursor` (empty: from the start of the retained feed). */
  async listChanges(cursor = '', options: { pageSize?: number } = {}): Promise<ChangesPage> {
    const res = await this.#unary<FilesListChangesRequest, FilesListChangesResponse__Output>(this.files.ListChanges.bind(this.files), { cursor, page_size: options.pageSize ?? 0 });
    return { changes: res.changes.map(toChange), nextCursor: res.next_cursor, hasMore: res.has_more };
  }

  /**
   * Streams change batches until `signal` aborts (then returns quietly). The first batch arrives
   * once the watch is established and may be empty; keep the last cursor to resume without gaps.
   * Retryable failures (a gateway restarting, the network) reconnect from the last cursor with
   * backoff and jitter unless `reconnect` is false; other errors (an expired cursor) are thrown.
   */
  async *watch(options: WatchOptions & { reconnect?: boolean } = {}): AsyncGenerator<ChangeBatch> {
    let cursor = options.cursor ?? '';
    let failures = 0;
    for (;;) {
      try {
        for await (const batch of this.#watchOnce(cursor, options)) {
          failures = 0;
          cursor = batch.cursor;
          yield batch;
        }
        return;
      } catch (err) {
        if (options.signal?.aborted === true) return;
        const e = err instanceof CairnError ? err : fromServiceError(err);
        if (options.reconnect === false || !e.retryable) throw e;
      }
      failures++;
      const cap = Math.min(10_000, 100 * 2 ** Math.min(failures, 10));
      if (await sleep(cap / 2 + Math.random() * (cap / 2), options.signal)) return;
    }
  }

  async *#watchOnce(cursor: string, options: WatchOptions): AsyncGenerator<ChangeBatch> {
    const md = await callMetadata(() => this.token);
    const call = this.files.WatchChanges({ cursor, path: options.path ?? '' }, md);
    const onAbort = (): void => call.cancel();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const msg of call as AsyncIterable<FilesWatchChangesResponse__Output>) yield { changes: msg.changes.map(toChange), cursor: msg.cursor };
    } catch (err) {
      if (options.signal?.aborted === true) return;
      throw fromServiceError(err);
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      call.cancel();
    }
  }

  /** Files, folders and bytes (current versions) under a folder (default: everything). */
  async usage(path = '/'): Promise<Usage> {
    const res = await this.#unary<UsageRequest, UsageResponse__Output>(this.files.Usage.bind(this.files), { path }, 120_000);
    return {
      files: Number(res.files),
      folders: Number(res.folders),
      bytes: Number(res.bytes),
      tenantVersionBytes: Number(res.tenant_version_bytes),
      tenantVersions: Number(res.tenant_versions),
      tenantStoredBytes: Number(res.tenant_stored_bytes),
      quotaBytes: Number(res.quota_bytes),
    };
  }
}
