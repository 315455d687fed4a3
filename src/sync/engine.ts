// The two-way sync engine for one local folder and one remote folder. Decisions are three-way:
// the local tree (scanned), the remote tree (change feed, or a listing) and the state DB (what
// both last agreed on). All work runs one task at a time, so each decision sees settled state;
// transfers inside a task run in parallel.
import { randomBytes } from 'node:crypto';
import { type Stats } from 'node:fs';
import { lstat, mkdir, readdir, rename, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../common/log.js';
import { isCairnError, type CairnClient, type Change, type FileInfo } from '../client/index.js';
import { hashFile, newChunkCount, type LocalHash } from './hash.js';
import { IgnoreRules } from './ignore-rules.js';
import { conflictedCopyName, isWithin, keyOf, parentOf, remoteOf } from './names.js';
import { scanTree, statLocal, type LocalEntry } from './scan.js';
import { SyncState, type BaseEntry } from './state.js';
import { downloadToTemp, uploadFile } from './transfer.js';

export type SyncEvent =
  | { type: 'start'; localRoot: string; remoteRoot: string; resumed: boolean }
  | { type: 'relist'; reason: 'first-sync' | 'cursor-expired' | 'folder'; path: string }
  | { type: 'upload-start'; path: string; size: number }
  /** Bytes of the file acknowledged durable so far (at most every 250 ms). */
  | { type: 'upload-progress'; path: string; doneBytes: number; size: number }
  | { type: 'upload'; path: string; version: number; size: number; bytesSent: number; chunksSent: number; wireBytes: number; chunks: number; newChunks: number }
  | { type: 'download-start'; path: string; size: number; notifiedMs: number; committedMs: number }
  | { type: 'download'; path: string; version: number; size: number }
  | { type: 'delete'; side: 'local' | 'remote'; path: string; folder: boolean }
  | { type: 'move'; side: 'local' | 'remote'; from: string; path: string; folder: boolean }
  | { type: 'mkdir'; side: 'local' | 'remote'; path: string }
  /** `reason` 'name-clash': two local names (`names`, NFC and NFD) for one remote path; neither syncs. */
  | { type: 'conflict'; path: string; copy: string; reason: string; names?: readonly string[] }
  | { type: 'skip'; path: string; reason: 'symlink' | 'special' | 'invalid-name' | 'too-large'; size?: number }
  | { type: 'error'; path: string; code: string; message: string }
  | { type: 'idle'; cursor: string };

export interface SyncStats {
  uploaded: number;
  uploadedBytes: number;
  bytesSent: number;
  downloaded: number;
  downloadedBytes: number;
  deleted: number;
  moved: number;
  folders: number;
  conflicts: number;
  skipped: number;
  errors: number;
}

export interface SyncProgress {
  readonly pendingFiles: number;
  readonly pendingBytes: number;
  /** Bytes moved in either direction since the start. */
  readonly transferredBytes: number;
}

export interface SyncEngineOptions {
  readonly client: CairnClient;
  /** Absolute path of the local folder. */
  readonly localRoot: string;
  /** Normalised remote folder ("/" or "/a/b"). */
  readonly remoteRoot: string;
  readonly stateDir: string;
  /** Named in conflicted copies. */
  readonly device: string;
  readonly log: Logger;
  /** Larger files are reported and not uploaded (default 10 GiB, the server's default). */
  readonly maxFileBytes?: number;
  /** Transfers in flight at once (default 8). */
  readonly concurrency?: number;
  readonly onEvent?: (event: SyncEvent) => void;
  /**
   * Called after a download is renamed into place and before it is recorded (tests use it to
   * edit the file in that window).
   */
  readonly afterPlace?: (key: string, absolutePath: string) => Promise<void>;
}

interface RemoteFile {
  readonly key: string;
  readonly version: number;
  readonly revision: number;
  readonly hash: string;
  readonly size: number;
  readonly notifiedMs: number;
  readonly committedMs: number;
}

interface RemoteNode {
  readonly folder: boolean;
  readonly version: number;
  readonly revision: number;
  readonly hash: string;
  readonly size: number;
}

const DEFAULT_MAX_FILE_BYTES = 10 * 1024 ** 3;

/** The built-in ignore patterns only: litter that may be removed with a deleted folder. */
const JUNK = new IgnoreRules();

function statMatches(local: LocalEntry, base: BaseEntry): boolean {
  return local.kind === base.kind && local.size === base.size && local.mtimeMs === base.mtimeMs && local.ino === base.ino;
}

function errorCode(err: unknown): string {
  if (isCairnError(err)) return err.code;
  return (err as NodeJS.ErrnoException).code ?? 'ERROR';
}

/** Runs `fn` over `items` with at most `limit` in flight. */
async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

export class SyncEngine {
  readonly stats: SyncStats = { uploaded: 0, uploadedBytes: 0, bytesSent: 0, downloaded: 0, downloadedBytes: 0, deleted: 0, moved: 0, folders: 0, conflicts: 0, skipped: 0, errors: 0 };
  readonly #o: SyncEngineOptions;
  readonly #state: SyncState;
  readonly #rules: IgnoreRules;
  readonly #tmpDir: string;
  readonly #reported = new Set<string>();
  /** On-disk names (when not the key) from the last scan. */
  readonly #scanReal = new Map<string, string>();
  #clashes: string[] = [];
  #pendingFiles = 0;
  #pendingBytes = 0;
  #transferred = 0;
  /** A local scan is wanted after the current task (e.g. a conflicted copy was made). */
  #rescan = false;

  private constructor(options: SyncEngineOptions, state: SyncState, rules: IgnoreRules, tmpDir: string) {
    this.#o = options;
    this.#state = state;
    this.#rules = rules;
    this.#tmpDir = tmpDir;
  }

  /** Opens the state DB (creating it) and clears temporaries a killed run left behind. */
  static async open(options: SyncEngineOptions): Promise<SyncEngine> {
    await mkdir(options.stateDir, { recursive: true });
    const state = await SyncState.open(join(options.stateDir, 'db'));
    try {
      const root = state.meta('root');
      const here = JSON.stringify({ remote: options.remoteRoot });
      if (root !== undefined && root !== here) throw new TypeError(`the state in ${options.stateDir} belongs to another remote folder (${root}); use another --state-dir`);
      if (root === undefined) await state.setMeta('root', here);
      // Temporaries live in the state dir (same filesystem as the root when it is inside it, the
      // default) or else in an ignored folder of the root, so renames stay atomic.
      const inside = isInside(options.localRoot, options.stateDir);
      const tmpDir = inside ? join(options.stateDir, 'tmp') : join(options.localRoot, '.cairn-tmp');
      await rm(tmpDir, { recursive: true, force: true });
      await mkdir(tmpDir, { recursive: true });
      const extra = inside ? [relativeKey(options.localRoot, options.stateDir) + '/'] : [];
      return new SyncEngine(options, state, new IgnoreRules(extra), tmpDir);
    } catch (err) {
      await state.close();
      throw err;
    }
  }

  /** Whether a local absolute path is ignored (the watcher skips it). */
  ignoresAbsolute(path: string, folder: boolean): boolean {
    if (path === this.#o.localRoot || !isInside(this.#o.localRoot, path)) return false;
    if (isInside(this.#o.stateDir, path) || path === this.#o.stateDir || isInside(this.#tmpDir, path) || path === this.#tmpDir) return true;
    return this.#rules.ignores(relativeKey(this.#o.localRoot, path).normalize('NFC'), folder);
  }

  get cursor(): string {
    return this.#state.meta('cursor') ?? '';
  }

  get progress(): SyncProgress {
    return { pendingFiles: this.#pendingFiles, pendingBytes: this.#pendingBytes, transferredBytes: this.#transferred };
  }

  /** True when the last remote catch-up or local pass asked for another local pass. */
  get rescanWanted(): boolean {
    return this.#rescan;
  }

  /** Whether the state DB already had a cursor (a resumed sync rather than a first one). */
  get resumed(): boolean {
    return this.#state.meta('cursor') !== undefined;
  }

  async close(): Promise<void> {
    await rm(this.#tmpDir, { recursive: true, force: true }).catch(() => undefined);
    await this.#state.close();
  }

  #emit(event: SyncEvent): void {
    if (event.type === 'error') {
      this.stats.errors++;
      this.#o.log.warn({ path: event.path, code: event.code }, event.message);
    } else this.#o.log.debug(event, event.type);
    this.#o.onEvent?.(event);
  }

  #fail(path: string, err: unknown): void {
    this.#emit({ type: 'error', path, code: errorCode(err), message: (err as Error).message ?? String(err) });
  }

  /**
   * The on-disk relative path of `key`: as the last scan found it, as the state DB recorded it,
   * or else under its parent's on-disk path with the (NFC) name. A local NFD name keeps its form.
   */
  #real(key: string): string {
    if (key === '') return '';
    const known = this.#scanReal.get(key) ?? this.#state.get(key)?.real;
    if (known !== undefined) return known;
    const slash = key.lastIndexOf('/');
    return slash < 0 ? key : `${this.#real(key.slice(0, slash))}/${key.slice(slash + 1)}`;
  }

  #abs(key: string): string {
    return join(this.#o.localRoot, ...this.#real(key).split('/'));
  }

  /** Drops the scanned on-disk names at and under `key` (the engine renamed or removed it). */
  #forgetReal(key: string): void {
    for (const k of [...this.#scanReal.keys()]) if (isWithin(k, key)) this.#scanReal.delete(k);
  }

  #stat(key: string): Promise<LocalEntry | undefined> {
    return statLocal(this.#o.localRoot, this.#real(key));
  }

  /** `entry` with the on-disk name recorded when it differs from the key. */
  #withReal(key: string, entry: BaseEntry): BaseEntry {
    const { real: _old, ...rest } = entry;
    const real = this.#real(key);
    return real === key ? rest : { ...rest, real };
  }

  /** Whether `key` is (under) a path with two local names (NFC and NFD twins): never synced. */
  #clashed(key: string): boolean {
    return this.#clashes.some((c) => isWithin(key, c));
  }

  /** Scans the local tree, reports what is skipped (once per run) and records on-disk names. */
  async #scanLocal(): Promise<Map<string, LocalEntry>> {
    await this.#rules.reload(this.#o.localRoot);
    const { entries, issues, clashes } = await scanTree(this.#o.localRoot, this.#rules);
    this.#clashes = clashes;
    this.#scanReal.clear();
    for (const [k, e] of entries) if (e.real !== k) this.#scanReal.set(k, e.real);
    for (const issue of issues) {
      const id = `${issue.reason}:${issue.key}:${issue.names?.join('|') ?? ''}`;
      if (this.#reported.has(id)) continue;
      this.#reported.add(id);
      if (issue.reason === 'name-clash') {
        // Both names map to one remote path: report it and sync neither until one is renamed.
        this.stats.conflicts++;
        this.#emit({ type: 'conflict', path: issue.key, copy: issue.names?.at(-1) ?? issue.key, reason: 'name-clash', names: issue.names ?? [] });
        continue;
      }
      this.stats.skipped++;
      this.#o.log.warn({ path: issue.key, reason: issue.reason }, issue.reason === 'symlink' ? 'symlink skipped' : 'entry skipped');
      this.#emit({ type: 'skip', path: issue.key, reason: issue.reason });
    }
    // On-disk names of synced paths follow the disk (e.g. an NFC file replaced by its NFD twin).
    for (const [k, e] of entries) {
      const base = this.#state.get(k);
      if (base !== undefined && (base.real ?? k) !== e.real) await this.#state.put(k, this.#withReal(k, base));
    }
    return entries;
  }

  #remote(key: string): string {
    return remoteOf(this.#o.remoteRoot, key);
  }

  /** Makes sure the remote folder exists (it may be new). */
  async ensureRemoteRoot(): Promise<void> {
    if (this.#o.remoteRoot === '/') return;
    try {
      await this.#o.client.mkdir(this.#o.remoteRoot);
    } catch (err) {
      if (!isCairnError(err, 'CAIRN_ALREADY_EXISTS')) throw err;
    }
  }

  // ---------------------------------------------------------------- remote → local

  /**
   * Catches up with the remote side: from the stored cursor through ListChanges, or (first sync,
   * expired cursor) by listing the remote tree without downloading unchanged files.
   */
  async catchUp(signal?: AbortSignal): Promise<void> {
    // On-disk names (NFD forms, NFC/NFD twins) must be known before remote changes land here.
    await this.#scanLocal();
    let cursor = this.#state.meta('cursor');
    if (cursor === undefined) {
      cursor = await this.nowCursor(signal);
      await this.relist('first-sync', cursor);
    }
    for (;;) {
      if (aborted(signal)) return;
      let page;
      try {
        page = await this.#o.client.listChanges(cursor, { pageSize: 1000 });
      } catch (err) {
        if (!isCairnError(err, 'CAIRN_CURSOR_EXPIRED')) throw err;
        cursor = err.metadata['snapshot_cursor'] ?? (await this.nowCursor(signal));
        await this.relist('cursor-expired', cursor);
        continue;
      }
      await this.applyRemote(page.changes, Date.now());
      cursor = page.nextCursor || cursor;
      await this.#state.setMeta('cursor', cursor);
      if (!page.hasMore) return;
    }
  }

  /** The feed's current cursor ("now"), from the first message of a watch. */
  async nowCursor(signal?: AbortSignal): Promise<string> {
    const stop = new AbortController();
    const onAbort = (): void => stop.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const batch of this.#o.client.watch({ path: this.#o.remoteRoot, signal: stop.signal, reconnect: false })) return batch.cursor;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      stop.abort();
    }
    throw new Error('the change watch ended before it started');
  }

  /** Records a cursor reached by the live watch. */
  async saveCursor(cursor: string): Promise<void> {
    if (cursor !== '' && cursor !== this.#state.meta('cursor')) await this.#state.setMeta('cursor', cursor);
  }

  /** Metadata-only reconciliation with a listing of the remote tree, then resume at `cursor`. */
  async relist(reason: 'first-sync' | 'cursor-expired', cursor: string): Promise<void> {
    this.#emit({ type: 'relist', reason, path: this.#o.remoteRoot });
    const remote = await this.#listRemote('');
    // Paths both sides had that are gone remotely were deleted there.
    let gone: string | undefined;
    for (const key of this.#state.paths()) {
      if (gone !== undefined && isWithin(key, gone)) continue;
      const base = this.#state.get(key)!;
      // Gone remotely, or replaced by the other kind (file ↔ folder): deleted there.
      const r = remote.get(key);
      if (r !== undefined && r.folder === (base.kind === 'dir')) continue;
      gone = base.kind === 'dir' ? key : undefined;
      await this.#remoteDeleted(key, base.kind === 'dir', Number.MAX_SAFE_INTEGER);
    }
    await this.#pullTree(remote, 0);
    await this.#state.setMeta('cursor', cursor);
  }

  /** Every file and folder under remote `key` (keys relative to the sync root). */
  async #listRemote(key: string): Promise<Map<string, RemoteNode>> {
    const out = new Map<string, RemoteNode>();
    const folders = [key];
    while (folders.length > 0) {
      const folder = folders.shift()!;
      try {
        for await (const e of this.#o.client.listAll(this.#remote(folder), { pageSize: 1000 })) {
          const k = keyOf(this.#o.remoteRoot, e.path);
          if (k === null || e.deleted) continue;
          out.set(k, { folder: e.folder, version: e.version, revision: e.revision, hash: e.contentHash, size: e.size });
          if (e.folder) folders.push(k);
        }
      } catch (err) {
        if (!isCairnError(err, 'CAIRN_NOT_FOUND')) throw err;
      }
    }
    return out;
  }

  async #pullTree(remote: Map<string, RemoteNode>, notifiedMs: number): Promise<void> {
    const files: RemoteFile[] = [];
    for (const [key, r] of [...remote].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      if (r.folder) await this.#ensureLocalDir(key, r.revision);
      else files.push({ key, version: r.version, revision: r.revision, hash: r.hash, size: r.size, notifiedMs, committedMs: 0 });
    }
    await this.#pullFiles(files);
  }

  /**
   * Applies remote changes in order (consecutive file puts are downloaded in parallel).
   * `notifiedMs`: when the changes reached this client (one time, or one per change).
   */
  async applyRemote(changes: readonly Change[], notifiedMs: number | readonly number[]): Promise<void> {
    const root = this.#o.remoteRoot;
    let puts: RemoteFile[] = [];
    const flush = async (): Promise<void> => {
      if (puts.length === 0) return;
      const batch = puts;
      puts = [];
      await this.#pullFiles(batch);
    };
    for (const [i, c] of changes.entries()) {
      const key = keyOf(root, c.path);
      const fromKey = c.fromPath === '' ? null : keyOf(root, c.fromPath);
      try {
        switch (c.type) {
          case 'put':
          case 'restore':
            if (key === null || key === '') break;
            if (c.folder) {
              await flush();
              await this.#relistFolder(key);
              break;
            }
            puts = puts.filter((p) => p.key !== key);
            puts.push({ key, version: c.version, revision: c.revision, hash: c.contentHash, size: c.size, notifiedMs: typeof notifiedMs === 'number' ? notifiedMs : (notifiedMs[i] ?? Date.now()), committedMs: c.atMs });
            break;
          case 'mkdir':
            if (key === null || key === '') break;
            await flush();
            await this.#ensureLocalDir(key, c.revision);
            break;
          case 'delete':
            if (key === null) break;
            await flush();
            if (key === '') {
              this.#emit({ type: 'error', path: root, code: 'CAIRN_NOT_FOUND', message: `the remote folder ${root} was deleted; local files are kept` });
              break;
            }
            await this.#remoteDeleted(key, c.folder, c.revision);
            break;
          case 'move':
            await flush();
            await this.#remoteMoved(fromKey, key, c);
            break;
          default:
            break;
        }
      } catch (err) {
        this.#fail(key ?? c.path, err);
      }
    }
    await flush();
  }

  async #relistFolder(key: string): Promise<void> {
    this.#emit({ type: 'relist', reason: 'folder', path: this.#remote(key) });
    await this.#ensureLocalDir(key, 0);
    await this.#pullTree(await this.#listRemote(key), Date.now());
  }

  async #ensureLocalDir(key: string, revision: number): Promise<void> {
    if (this.#rules.ignores(key, true) || this.#clashed(key)) return;
    let local = await this.#stat(key);
    // A folder both sides knew that is missing here was moved or deleted here: the local pass
    // sends that; re-creating it would undo it.
    if (local === undefined && this.#state.get(key)?.kind === 'dir') return;
    if (local?.kind === 'file') {
      const base = this.#state.get(key);
      // A replayed mkdir no newer than what we hold (the file, or the folder it replaced here).
      if (base !== undefined && revision !== 0 && base.revision >= revision) return;
      // The remote side replaced the file with a folder: the synced, unchanged file goes; an edit
      // (or a file never synced) is kept as a conflicted copy, which the next scan uploads.
      if (await this.#isClean(key, local, base)) {
        await rm(this.#abs(key), { force: true });
        this.stats.deleted++;
        this.#emit({ type: 'delete', side: 'local', path: key, folder: false });
      } else await this.#keepConflictedCopy(key, 'replaced by a folder remotely');
      await this.#state.deleteTree(key);
      local = undefined;
    }
    // Parents first, so each folder is known to the state DB.
    const parent = parentOf(key);
    if (parent !== '' && this.#state.get(parent) === undefined) await this.#ensureLocalDir(parent, 0);
    if (local === undefined) {
      await mkdir(this.#abs(key), { recursive: true });
      this.#emit({ type: 'mkdir', side: 'local', path: key });
      this.stats.folders++;
    }
    const st = await this.#stat(key);
    if (st === undefined) return;
    const base = this.#state.get(key);
    if (base?.kind !== 'dir' || base.ino !== st.ino) await this.#state.put(key, this.#withReal(key, { kind: 'dir', version: 0, revision, hash: '', size: 0, mtimeMs: 0, ino: st.ino }));
  }

  /** Whether the local file still holds the synced content (re-hashing only when stat changed). */
  async #isClean(key: string, local: LocalEntry, base: BaseEntry | undefined): Promise<boolean> {
    if (base?.kind !== 'file' || local.kind !== 'file') return false;
    if (statMatches(local, base)) return true;
    if (local.size !== base.size) return false;
    return (await hashFile(this.#abs(key))).hash === base.hash;
  }

  async #pullFiles(files: readonly RemoteFile[]): Promise<void> {
    const todo = files.filter((f) => !this.#rules.ignores(f.key, false));
    this.#pendingFiles += todo.length;
    for (const f of todo) this.#pendingBytes += f.size;
    await pool(todo, this.#o.concurrency ?? 8, async (f) => {
      try {
        await this.#pullFile(f);
      } catch (err) {
        this.#fail(f.key, err);
      } finally {
        this.#pendingFiles--;
        this.#pendingBytes -= f.size;
      }
    });
  }

  /** Whether the remote path holds a file right now (not a folder, not gone). */
  async #remoteIsFile(key: string): Promise<boolean> {
    try {
      await this.#o.client.stat(this.#remote(key));
      return true;
    } catch (err) {
      if (isCairnError(err, 'CAIRN_NOT_FOUND') || isCairnError(err, 'CAIRN_FAILED_PRECONDITION')) return false;
      throw err;
    }
  }

  async #pullFile(rc: RemoteFile): Promise<void> {
    const { key } = rc;
    if (this.#clashed(key)) return;
    const base = this.#state.get(key);
    // Our own upload coming back, or a change no newer than what we hold (of either kind).
    if (base !== undefined && rc.revision <= base.revision) return;
    const local = await this.#stat(key);
    if (base?.kind === 'file' && base.hash === rc.hash && local !== undefined && statMatches(local, base)) {
      await this.#state.put(key, { ...base, version: rc.version, revision: rc.revision });
      return;
    }
    if (local?.kind === 'dir') {
      if (!(await this.#remoteIsFile(key))) return;
      // Edited remotely while replaced by a folder here: the folder keeps the name, the edit is
      // moved aside on the server as a conflicted copy.
      if (base?.kind === 'file') return this.#pushRetype(key, base);
      // The remote side replaced the folder with a file: synced, unchanged files go with the
      // folder; what is left (edits, new files) is kept under a conflicted-copy name.
      if (base?.kind === 'dir') await this.#remoteDeleted(key, true, Number.MAX_SAFE_INTEGER);
      if ((await this.#stat(key))?.kind === 'dir') {
        await this.#keepConflictedCopy(key, 'replaced by a file remotely');
        await this.#state.deleteTree(key);
      }
      await this.#download(rc);
      return;
    }
    if (local !== undefined && !(base?.kind === 'file' && statMatches(local, base))) {
      const h = await hashFile(this.#abs(key));
      if (h.hash === rc.hash) {
        // Same content on both sides (e.g. our upload that committed before a crash): adopt it.
        await this.#state.put(key, this.#withReal(key, { kind: 'file', version: rc.version, revision: rc.revision, hash: h.hash, size: local.size, mtimeMs: local.mtimeMs, ino: local.ino }), h.chunks);
        return;
      }
      if (!(base?.kind === 'file' && h.hash === base.hash)) {
        // A local edit the remote side has not seen: it loses the name but is kept.
        await this.#keepConflictedCopy(key, 'edited here and remotely');
      }
    }
    await this.#download(rc);
  }

  async #download(rc: RemoteFile): Promise<void> {
    const { key } = rc;
    this.#emit({ type: 'download-start', path: key, size: rc.size, notifiedMs: rc.notifiedMs, committedMs: rc.committedMs });
    const before = await this.#stat(key);
    let got;
    try {
      got = await downloadToTemp(this.#o.client, this.#remote(key), this.#tmpDir, { onProgress: (d) => (this.#transferred += d) });
    } catch (err) {
      if (isCairnError(err, 'CAIRN_NOT_FOUND')) return; // deleted meanwhile: its delete event follows
      throw err;
    }
    let downloaded: Stats;
    try {
      const parent = parentOf(key);
      if (parent !== '') await this.#ensureLocalDir(parent, 0);
      // The local file changed while we downloaded: keep that edit too.
      const now = await this.#stat(key);
      if (now !== undefined && (before === undefined || !statMatchesLocal(now, before))) {
        const base = this.#state.get(key);
        if (!(await this.#isClean(key, now, base))) await this.#keepConflictedCopy(key, 'edited here during download');
      }
      // What was downloaded, stat'ed before anyone else can touch it; rename keeps inode, size
      // and mtime. The record describes these bytes, not whatever is at the path when the record
      // is written: an edit made right after the rename then differs from the record, and the
      // next scan uploads it instead of taking it for the downloaded version.
      downloaded = await lstat(got.tmpPath);
      await rename(got.tmpPath, this.#abs(key));
    } catch (err) {
      await rm(got.tmpPath, { force: true });
      throw err;
    }
    await this.#o.afterPlace?.(key, this.#abs(key));
    if ((await this.#stat(key)) === undefined) return;
    await this.#state.put(key, this.#withReal(key, { kind: 'file', version: got.info.version, revision: Math.max(rc.revision, got.info.revision), hash: got.info.contentHash, size: downloaded.size, mtimeMs: Math.floor(downloaded.mtimeMs), ino: downloaded.ino }), got.chunks);
    this.stats.downloaded++;
    this.stats.downloadedBytes += got.info.size;
    this.#emit({ type: 'download', path: key, version: got.info.version, size: got.info.size });
  }

  /** Renames the local file at `key` to a free conflicted-copy name; returns that key. */
  async #keepConflictedCopy(key: string, reason: string): Promise<string> {
    const at = new Date();
    let copy = conflictedCopyName(key, this.#o.device, at);
    for (let n = 2; (await this.#stat(copy)) !== undefined; n++) copy = conflictedCopyName(key, this.#o.device, at, n);
    await rename(this.#abs(key), this.#abs(copy));
    this.#forgetReal(key);
    this.stats.conflicts++;
    this.#rescan = true;
    this.#emit({ type: 'conflict', path: key, copy, reason });
    return copy;
  }

  async #remoteDeleted(key: string, folder: boolean, revision: number): Promise<void> {
    if (this.#clashed(key)) return;
    // A replayed delete older than what we hold (the path was re-created since).
    const held = this.#state.get(key);
    if (held !== undefined && held.revision >= revision) return;
    const local = await this.#stat(key);
    if (local === undefined) {
      await this.#state.deleteTree(key);
      return;
    }
    if (local.kind === 'file') {
      if (await this.#isClean(key, local, this.#state.get(key))) {
        await rm(this.#abs(key), { force: true });
        this.stats.deleted++;
        this.#emit({ type: 'delete', side: 'local', path: key, folder: false });
      }
      // Otherwise a local edit (or a file never synced) survives and is uploaded as new.
      await this.#state.deleteTree(key);
      return;
    }
    if (!folder && this.#state.get(key)?.kind === 'file') return;
    // A folder: remove what is synced and unchanged; keep local edits and new files.
    const { entries } = await scanTree(this.#o.localRoot, this.#rules, this.#real(key));
    const kept: string[] = [];
    for (const [k, e] of entries) {
      if (e.kind !== 'file') continue;
      if (await this.#isClean(k, e, this.#state.get(k))) await rm(join(this.#o.localRoot, e.real), { force: true });
      else kept.push(k);
    }
    const dirs = [...entries].filter(([, e]) => e.kind === 'dir').map(([k]) => k).sort().reverse();
    for (const d of [...dirs, key]) {
      const abs = d === key ? this.#abs(key) : join(this.#o.localRoot, entries.get(d)!.real);
      // Editor and system litter (.DS_Store, swap files) must not keep a deleted folder alive,
      // or the next scan would send it back; files the user chose to ignore do keep it.
      for (const name of await readdir(abs).catch(() => [] as string[])) {
        if (JUNK.ignores(`${d}/${name.normalize('NFC')}`, false)) await rm(join(abs, name), { force: true });
      }
      await rmdir(abs).catch(() => undefined);
    }
    await this.#state.deleteTree(key);
    this.stats.deleted++;
    this.#emit({ type: 'delete', side: 'local', path: key, folder: true });
    if (kept.length > 0) this.#rescan = true;
  }

  async #remoteMoved(fromKey: string | null, toKey: string | null, c: Change): Promise<void> {
    if (toKey === '' || fromKey === '') return;
    if (fromKey === null) {
      if (toKey === null) return;
      // Moved in from outside the synced folder: new here.
      if (c.folder) await this.#relistFolder(toKey);
      else await this.#pullByStat(toKey, c.revision, c.atMs);
      return;
    }
    if (toKey === null) {
      await this.#remoteDeleted(fromKey, c.folder, c.revision);
      return;
    }
    if (this.#clashed(fromKey) || this.#clashed(toKey)) return;
    // Our own move (e.g. a conflicted copy made on the server) coming back after we took it.
    const held = this.#state.get(toKey);
    if (held !== undefined && held.revision >= c.revision && this.#state.get(fromKey) === undefined) return;
    const base = this.#state.get(fromKey);
    const src = await this.#stat(fromKey);
    const dst = await this.#stat(toKey);
    if (src === undefined && dst !== undefined && this.#state.get(toKey) !== undefined) {
      // Our own move coming back.
      const e = this.#state.get(toKey)!;
      if (e.revision < c.revision) await this.#state.put(toKey, { ...e, revision: c.revision });
      return;
    }
    const caseOnly = src !== undefined && dst !== undefined && src.ino === dst.ino;
    if (src !== undefined && base !== undefined && (dst === undefined || caseOnly) && !this.#rules.ignores(toKey, c.folder)) {
      const parent = parentOf(toKey);
      if (parent !== '') await this.#ensureLocalDir(parent, 0);
      const [realFrom, realTo] = [this.#real(fromKey), this.#real(toKey)];
      await renameLocal(this.#abs(fromKey), this.#abs(toKey), caseOnly);
      this.#forgetReal(fromKey);
      // An unsynced local edit moves with the file: the next scan uploads it at the new path.
      await this.#state.moveTree(fromKey, toKey, c.revision, realFrom, realTo);
      this.stats.moved++;
      this.#emit({ type: 'move', side: 'local', from: fromKey, path: toKey, folder: c.folder });
      this.#rescan = true;
      return;
    }
    if (base !== undefined) await this.#remoteDeleted(fromKey, c.folder, c.revision);
    if (c.folder) await this.#relistFolder(toKey);
    else await this.#pullByStat(toKey, c.revision, c.atMs);
  }

  async #pullByStat(key: string, revision: number, committedMs: number): Promise<void> {
    let info: FileInfo;
    try {
      info = await this.#o.client.stat(this.#remote(key));
    } catch (err) {
      if (isCairnError(err, 'CAIRN_NOT_FOUND')) return;
      throw err;
    }
    await this.#pullFiles([{ key, version: info.version, revision: Math.max(info.revision, revision), hash: info.contentHash, size: info.size, notifiedMs: Date.now(), committedMs }]);
  }

  // ---------------------------------------------------------------- local → remote

  /** Scans the local folder and sends every difference from the state DB to the remote side. */
  async pushLocal(signal?: AbortSignal): Promise<void> {
    this.#rescan = false;
    let local = await this.#scanLocal();
    await this.#pushMoves(local);
    if (aborted(signal)) return;

    // Paths that changed kind here (a file replaced by a folder, or the reverse), shallowest
    // first: the old kind goes remotely (keeping a remote edit), then the new one is sent below.
    const retyped = [...local].filter(([k, e]) => this.#state.get(k) !== undefined && this.#state.get(k)!.kind !== e.kind).map(([k]) => k).sort();
    for (const key of retyped) {
      const base = this.#state.get(key);
      if (base === undefined || aborted(signal)) continue; // went with a parent
      try {
        await this.#pushRetype(key, base);
      } catch (err) {
        this.#fail(key, err);
      }
    }
    if (retyped.length > 0) local = await this.#scanLocal();
    if (aborted(signal)) return;

    // Folders first (parents before children), then files in parallel, then deletions.
    const added = [...local].filter(([k, e]) => this.#state.get(k)?.kind !== e.kind).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    for (const [key, e] of added) {
      if (e.kind !== 'dir' || aborted(signal)) continue;
      try {
        let made;
        try {
          made = await this.#o.client.mkdir(this.#remote(key));
        } catch (err) {
          if (isCairnError(err, 'CAIRN_ALREADY_EXISTS')) made = undefined;
          else if (isCairnError(err, 'CAIRN_FAILED_PRECONDITION') && (await this.#remoteIsFile(key))) {
            // A file arrived remotely at the name of this new folder: the file keeps the name.
            await this.#keepConflictedCopy(key, 'a file was made at this name remotely');
            await this.#pullByStat(key, 0, 0);
            continue;
          } else throw err;
        }
        await this.#state.put(key, this.#withReal(key, { kind: 'dir', version: 0, revision: made?.revision ?? 0, hash: '', size: 0, mtimeMs: 0, ino: e.ino }));
        this.stats.folders++;
        this.#emit({ type: 'mkdir', side: 'remote', path: key });
      } catch (err) {
        this.#fail(key, err);
      }
    }
    const files = [...local].filter(([k, e]) => {
      if (e.kind !== 'file') return false;
      const base = this.#state.get(k);
      return base === undefined || !statMatches(e, base);
    });
    this.#pendingFiles += files.length;
    for (const [, e] of files) this.#pendingBytes += e.size;
    await pool(files, this.#o.concurrency ?? 8, async ([key, e]) => {
      try {
        if (!aborted(signal)) await this.#pushFile(key, e, signal);
      } catch (err) {
        this.#fail(key, err);
      } finally {
        this.#pendingFiles--;
        this.#pendingBytes -= e.size;
      }
    });
    if (aborted(signal)) return;

    let gone: string | undefined;
    for (const key of this.#state.paths()) {
      if (gone !== undefined && isWithin(key, gone)) continue;
      const base = this.#state.get(key);
      if (base === undefined || local.get(key)?.kind === base.kind || this.#clashed(key)) continue;
      if (local.has(key)) continue; // replaced by the other kind: handled as added above
      // Made during this pass (a conflicted copy, a file pulled back): not gone.
      if ((await this.#stat(key)) !== undefined) continue;
      if (this.#rules.ignores(key, base.kind === 'dir')) {
        // Newly ignored: stop syncing it, but do not delete the remote copy.
        await this.#state.deleteTree(key);
        continue;
      }
      gone = base.kind === 'dir' ? key : undefined;
      try {
        await this.#pushDelete(key, base);
      } catch (err) {
        this.#fail(key, err);
      }
    }
  }

  /**
   * `key` changed kind here. A file replaced by a folder: the remote file is deleted at its synced
   * version; if it was edited remotely meanwhile, that edit is moved (on the server) to a
   * conflicted-copy name and downloaded. A folder replaced by a file: the remote folder goes as a
   * deleted folder does (changed remote files come back, the folder with them, and the local file
   * then becomes a conflicted copy). Unless the remote side already made the same change.
   */
  async #pushRetype(key: string, base: BaseEntry): Promise<void> {
    if (base.kind === 'dir') {
      if (await this.#remoteIsFile(key)) await this.#state.deleteTree(key); // replaced there too: the upload decides
      else await this.#pushDelete(key, base);
      return;
    }
    try {
      await this.#o.client.delete(this.#remote(key), { baseVersion: base.version });
      this.stats.deleted++;
      this.#emit({ type: 'delete', side: 'remote', path: key, folder: false });
    } catch (err) {
      // Gone, or already a folder there (base_version applies to files only).
      if (isCairnError(err, 'CAIRN_NOT_FOUND') || isCairnError(err, 'CAIRN_INVALID_ARGUMENT')) {
        await this.#state.deleteTree(key);
        return;
      }
      if (!isCairnError(err, 'CAIRN_CONFLICT')) throw err;
      // Edited remotely while replaced by a folder here: the edit moves aside on the server.
      const at = new Date();
      for (let n = 1; ; n++) {
        const copy = conflictedCopyName(key, this.#o.device, at, n);
        if ((await this.#stat(copy)) !== undefined) continue;
        let moved;
        try {
          moved = await this.#o.client.move(this.#remote(key), this.#remote(copy));
        } catch (e) {
          if (isCairnError(e, 'CAIRN_ALREADY_EXISTS') && n < 100) continue;
          throw e;
        }
        await this.#state.deleteTree(key);
        this.stats.conflicts++;
        this.#emit({ type: 'conflict', path: key, copy, reason: 'edited remotely, replaced by a folder here' });
        await this.#pullByStat(copy, moved.revision, 0);
        return;
      }
    }
    await this.#state.deleteTree(key);
  }

  /** Detects local renames (same inode, or same content) and sends them as moves. */
  async #pushMoves(local: Map<string, LocalEntry>): Promise<void> {
    const goneOf = (kind: 'file' | 'dir'): string[] => this.#state.paths().filter((k) => this.#state.get(k)!.kind === kind && local.get(k)?.kind !== kind && !this.#clashed(k));
    const addedOf = (kind: 'file' | 'dir'): Array<[string, LocalEntry]> => [...local].filter(([k, e]) => e.kind === kind && this.#state.get(k)?.kind !== kind);
    // Folders: shallowest first; a moved folder takes its subtree along.
    for (;;) {
      const byIno = new Map(addedOf('dir').map(([k, e]) => [e.ino, k]));
      const from = goneOf('dir').find((g) => byIno.has(this.#state.get(g)!.ino) && this.#state.get(g)!.ino !== 0);
      if (from === undefined) break;
      const to = byIno.get(this.#state.get(from)!.ino)!;
      if (!(await this.#pushMove(from, to, true))) break;
    }
    const added = addedOf('file');
    const byIno = new Map(added.map(([k, e]) => [e.ino, k]));
    const hashes = new Map<string, LocalHash>();
    for (const from of goneOf('file')) {
      const base = this.#state.get(from)!;
      // Inode numbers are reused after a delete: trust one only with the synced size and mtime.
      let to = byIno.get(base.ino);
      const candidate = to === undefined ? undefined : local.get(to);
      if (candidate === undefined || candidate.size !== base.size || candidate.mtimeMs !== base.mtimeMs) to = undefined;
      if (to === undefined) {
        // An editor that saves by writing a new file: match by content instead.
        for (const [k, e] of added) {
          if (e.size !== base.size || this.#state.get(k) !== undefined) continue;
          const h = hashes.get(k) ?? (await hashFile(this.#abs(k)).catch(() => undefined));
          if (h === undefined) continue;
          hashes.set(k, h);
          if (h.hash === base.hash) {
            to = k;
            break;
          }
        }
      }
      if (to === undefined || this.#state.get(to) !== undefined) continue;
      await this.#pushMove(from, to, false);
    }
  }

  async #pushMove(from: string, to: string, folder: boolean): Promise<boolean> {
    const base = this.#state.get(from)!;
    try {
      const e = await this.#o.client.move(this.#remote(from), this.#remote(to), folder ? {} : { baseVersion: base.version });
      await this.#state.moveTree(from, to, e.revision, this.#real(from), this.#real(to));
      if (!folder) {
        const st = await this.#stat(to);
        const moved = this.#state.get(to)!;
        // Keep the synced stat only if the content is the synced one; else the upload pass sees it.
        if (st !== undefined && st.ino === moved.ino && st.size === moved.size) await this.#state.put(to, { ...moved, mtimeMs: st.mtimeMs });
      }
      this.stats.moved++;
      this.#emit({ type: 'move', side: 'remote', from, path: to, folder });
      return true;
    } catch (err) {
      // The remote side changed meanwhile (or the target exists): fall back to delete + upload,
      // which keeps every edit through the usual conflict rules.
      this.#o.log.info({ from, to, code: errorCode(err) }, 'move not possible; sending as upload and delete');
      return false;
    }
  }

  async #pushFile(key: string, local: LocalEntry, signal?: AbortSignal): Promise<void> {
    const max = this.#o.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
    if (local.size > max) {
      const id = `too-large:${key}:${local.size}`;
      if (!this.#reported.has(id)) {
        this.#reported.add(id);
        this.stats.skipped++;
        this.#emit({ type: 'skip', path: key, reason: 'too-large', size: local.size });
      }
      return;
    }
    const base = this.#state.get(key);
    if (base?.kind !== 'file') {
      // New here: nothing to compare with, and upload() hashes it anyway; hash only on a conflict.
      await this.#upload(key, local, undefined, 0, signal);
      return;
    }
    // Changed stat: only a different hash (not a touch) is an edit to send.
    const h = await hashFile(this.#abs(key), signal);
    if (h.hash === base.hash) {
      await this.#state.put(key, { ...base, size: local.size, mtimeMs: local.mtimeMs, ino: local.ino });
      return;
    }
    await this.#upload(key, local, h, base.version, signal);
  }

  async #upload(key: string, local: LocalEntry, h: LocalHash | undefined, baseVersion: number, signal?: AbortSignal): Promise<void> {
    this.#emit({ type: 'upload-start', path: key, size: local.size });
    let result;
    let reported = Date.now();
    const onProgress = (delta: number, done: number): void => {
      this.#transferred += delta;
      if (Date.now() - reported < 250 || done >= local.size) return;
      reported = Date.now();
      this.#emit({ type: 'upload-progress', path: key, doneBytes: done, size: local.size });
    };
    try {
      result = await uploadFile(this.#o.client, this.#abs(key), this.#remote(key), { baseVersion, mtimeMs: local.mtimeMs, size: local.size, cacheDir: join(this.#o.stateDir, 'chunk-cache'), ...(signal !== undefined ? { signal } : {}), onProgress });
    } catch (err) {
      if (isCairnError(err, 'CAIRN_CONFLICT')) return this.#uploadConflict(key, local, h, baseVersion, signal);
      if (isCairnError(err, 'CAIRN_FAILED_PRECONDITION')) return this.#uploadRetyped(key, local, err);
      if (isCairnError(err, 'CAIRN_FILE_TOO_LARGE')) {
        this.stats.skipped++;
        this.#emit({ type: 'skip', path: key, reason: 'too-large', size: local.size });
        return undefined;
      }
      throw err;
    }
    const previous = await this.#state.chunks(key);
    await this.#state.put(key, this.#withReal(key, { kind: 'file', version: result.info.version, revision: result.info.revision, hash: result.info.contentHash, size: local.size, mtimeMs: local.mtimeMs, ino: local.ino }), h?.chunks);
    this.stats.uploaded++;
    this.stats.uploadedBytes += local.size;
    this.stats.bytesSent += result.bytesSent;
    this.#emit({ type: 'upload', path: key, version: result.info.version, size: local.size, bytesSent: result.bytesSent, chunksSent: result.chunksSent, wireBytes: result.wireBytes, chunks: result.info.chunkCount, newChunks: h === undefined || previous === undefined ? result.chunksSent : newChunkCount(previous, h.chunks) });
    return undefined;
  }

  /**
   * Our upload was refused because the remote side changed kind: the path is a folder there now
   * (our file loses the name, is kept as a conflicted copy and the folder comes here), or a parent
   * folder became a file (its change events bring that here; the file is sent again after).
   */
  async #uploadRetyped(key: string, local: LocalEntry, err: Error): Promise<undefined> {
    let folder = false;
    try {
      await this.#o.client.stat(this.#remote(key));
    } catch (e) {
      folder = isCairnError(e, 'CAIRN_FAILED_PRECONDITION');
      if (!folder && !isCairnError(e, 'CAIRN_NOT_FOUND')) throw e;
    }
    if (!folder) {
      this.#o.log.info({ path: key, size: local.size, message: err.message }, 'upload refused: a parent changed kind remotely; waiting for its changes');
      return undefined;
    }
    await this.#keepConflictedCopy(key, 'replaced by a folder remotely');
    await this.#state.deleteTree(key);
    await this.#relistFolder(key);
    return undefined;
  }

  /** Our upload lost a race: adopt equal content, or keep ours as a conflicted copy and take theirs. */
  async #uploadConflict(key: string, local: LocalEntry, known: LocalHash | undefined, baseVersion: number, signal?: AbortSignal): Promise<void> {
    const h = known ?? (await hashFile(this.#abs(key), signal));
    let remote: FileInfo | undefined;
    try {
      remote = await this.#o.client.stat(this.#remote(key));
    } catch (err) {
      if (!isCairnError(err, 'CAIRN_NOT_FOUND')) throw err;
    }
    if (remote === undefined) {
      // Deleted remotely while edited here: the edit wins.
      if (baseVersion !== 0) return this.#upload(key, local, h, 0, signal);
      throw new Error(`${key}: conflict on a new file, but the remote file is gone`);
    }
    if (remote.contentHash === h.hash) {
      await this.#state.put(key, this.#withReal(key, { kind: 'file', version: remote.version, revision: remote.revision, hash: h.hash, size: local.size, mtimeMs: local.mtimeMs, ino: local.ino }), h.chunks);
      return undefined;
    }
    const copy = await this.#keepConflictedCopy(key, 'uploaded from a stale version');
    const moved = await this.#stat(copy);
    if (moved !== undefined) await this.#upload(copy, moved, h, 0, signal);
    await this.#download({ key, version: remote.version, revision: remote.revision, hash: remote.contentHash, size: remote.size, notifiedMs: Date.now(), committedMs: 0 });
    return undefined;
  }

  async #pushDelete(key: string, base: BaseEntry): Promise<void> {
    if (base.kind === 'file') {
      try {
        await this.#o.client.delete(this.#remote(key), { baseVersion: base.version });
      } catch (err) {
        if (isCairnError(err, 'CAIRN_NOT_FOUND')) {
          await this.#state.deleteTree(key);
          return;
        }
        if (!isCairnError(err, 'CAIRN_CONFLICT')) throw err;
        // Edited remotely, deleted here: the edit wins and comes back.
        await this.#state.deleteTree(key);
        await this.#pullByStat(key, 0, 0);
        return;
      }
      await this.#state.deleteTree(key);
      this.stats.deleted++;
      this.#emit({ type: 'delete', side: 'remote', path: key, folder: false });
      return;
    }
    // A folder: delete it in one call if the remote subtree is exactly what we synced; otherwise
    // delete what we synced file by file and pull back what changed remotely.
    const remote = await this.#listRemote(key);
    const synced = [...remote].every(([k, r]) => {
      const b = this.#state.get(k);
      return b !== undefined && (r.folder ? b.kind === 'dir' : b.kind === 'file' && b.version === r.version);
    });
    if (synced) {
      try {
        await this.#o.client.delete(this.#remote(key));
      } catch (err) {
        if (!isCairnError(err, 'CAIRN_NOT_FOUND')) throw err;
      }
      await this.#state.deleteTree(key);
      this.stats.deleted++;
      this.#emit({ type: 'delete', side: 'remote', path: key, folder: true });
      return;
    }
    for (const [k, r] of remote) {
      const b = this.#state.get(k);
      if (!r.folder && b?.kind === 'file') await this.#pushDelete(k, b);
    }
    await this.#state.deleteTree(key);
    await this.#relistFolder(key);
  }
}

function aborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}

function statMatchesLocal(a: LocalEntry, b: LocalEntry): boolean {
  return a.kind === b.kind && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ino === b.ino;
}

/** Renames, going through a temporary name for case-only renames (case-insensitive filesystems). */
async function renameLocal(from: string, to: string, caseOnly: boolean): Promise<void> {
  if (!caseOnly) {
    await rename(from, to);
    return;
  }
  const tmp = `${from}.cairn-${randomBytes(4).toString('hex')}.part`;
  await rename(from, tmp);
  await rename(tmp, to);
}

export function relativeKey(root: string, path: string): string {
  return path.slice(root.length + 1).split(/[\\/]/).join('/');
}

function isInside(root: string, path: string): boolean {
  return path.startsWith(root + '/') || path.startsWith(root + '\\');
}
