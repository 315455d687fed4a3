// Export and import of the whole metadata store (every KV entry) on either backend: a consistent
// snapshot streamed to a checksummed file, and a verified, resumable load in batches of transactions.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, rename, rm, stat, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { z } from 'zod';
import { CairnError } from '../common/errors.js';
import { openKv, openPostgresKv, type Kv, type KvEntry } from './kv/index.js';
import pg from 'pg';
import { copyLiveLevelDb, isLocked } from './export-level-copy.js';
import {
  HEADER_BYTES,
  encodeEnd,
  encodeHeader,
  encodeRecord,
  openExport,
  readRecords,
  verifyExport,
  type ExportHeader,
} from './export-format.js';

export { verifyExport, type ExportHeader } from './export-format.js';

/**
 * Progress of an interrupted or running import, kept in the target so a re-run resumes. Its
 * first byte 0x00 sorts before every model key (their tags are letters), which lets the load
 * phase resume "after the last key loaded" without ever passing over the marker.
 */
export const IMPORT_MARKER_KEY = Buffer.from('\u0000cairn-import', 'utf8');

const markerSchema = z.object({
  checksum: z.string(),
  phase: z.enum(['clear', 'load']),
  lastKey: z.string().optional(),
  loaded: z.number().int().min(0),
  batches: z.number().int().min(0),
  startedAt: z.string(),
});
type Marker = z.infer<typeof markerSchema>;

export type MetadataStoreTarget =
  | { readonly backend: 'level'; readonly dataDir: string }
  | { readonly backend: 'postgres'; readonly url: string };

/**
 * Opens the metadata store the way `cairn server` does (LevelDB under `<data-dir>/metadata`).
 * `mustExist` refuses a LevelDB directory that holds no store instead of creating an empty one.
 */
export async function openMetadataStore(target: MetadataStoreTarget, mustExist: boolean): Promise<Kv> {
  if (target.backend === 'postgres') return openKv({ backend: 'postgres', url: target.url });
  const dir = join(target.dataDir, 'metadata');
  if (mustExist && !existsSync(join(dir, 'CURRENT'))) {
    throw new CairnError('CAIRN_NOT_FOUND', `no metadata store in ${target.dataDir} (expected LevelDB files in ${dir})`);
  }
  if (!mustExist) await mkdir(target.dataDir, { recursive: true });
  try {
    return await openKv({ backend: 'level', dir });
  } catch (error) {
    // LevelDB admits one process: the usual cause is a server still running on this data dir.
    throw new CairnError('CAIRN_UNAVAILABLE', `cannot open the metadata store in ${dir}: is a server running on it? Stop it first (LevelDB admits one process)`, { cause: error });
  }
}

/** The application_name metadata services connect with (see kv/postgres.ts). */
const SERVICE_APPLICATION = 'cairn-metadata';

/**
 * Opens the target of an import, refusing one a running metadata service uses: LevelDB admits one
 * process (the lock refuses it); on PostgreSQL, other sessions connected as a metadata service
 * mean a live service would serve a half-loaded store. Only `force` into an empty store is allowed
 * then (nothing is overwritten; the service sees the entries appear).
 */
export async function openImportTarget(target: MetadataStoreTarget, options: { force?: boolean } = {}): Promise<Kv> {
  if (target.backend === 'level') return openMetadataStore(target, false);
  const live = await liveServices(target.url);
  const kv = await openPostgresKv({ connectionString: target.url, pool: { application_name: 'cairn-import' } });
  if (live > 0) {
    const empty = (await kv.scan({ limit: 2 })).every(([key]) => key.equals(IMPORT_MARKER_KEY));
    if (options.force !== true || !empty) {
      await kv.close();
      throw new CairnError('CAIRN_FAILED_PRECONDITION', `${live} metadata service connection(s) are using this database: stop every metadata service before importing${empty ? ' (or pass --force to load into this empty store under it)' : ''}; to copy a running store, use cairn admin export --metadata <host:port>`, { metadata: { connections: String(live) } });
    }
  }
  return kv;
}

/**
 * Sessions of running metadata services on the target database. A service that has just stopped
 * can still show for a moment: its backends leave pg_stat_activity when they exit, a little after
 * the service hung up (an import right after `stop` was refused with "1 connection" now and
 * then). So a count above zero is read again until it reaches zero or `settleMs` has passed.
 */
async function liveServices(url: string, settleMs = 2000): Promise<number> {
  const client = new pg.Client({ connectionString: url, application_name: 'cairn-import-check' });
  await client.connect();
  try {
    const deadline = Date.now() + settleMs;
    for (;;) {
      const res = await client.query<{ n: string }>('select count(*)::text as n from pg_stat_activity where datname = current_database() and application_name = $1 and pid <> pg_backend_pid()', [SERVICE_APPLICATION]);
      const live = Number(res.rows[0]?.n ?? 0);
      if (live === 0 || Date.now() >= deadline) return live;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } finally {
    await client.end();
  }
}

/**
 * Writes an export streamed by a running service (Admin.Export) to `file`: into a temporary file
 * next to it, verified (format, order, count, SHA-256) and synced, then renamed into place.
 */
export async function saveStreamedExport(chunks: AsyncIterable<Buffer>, file: string, onBytes?: (bytes: number) => void): Promise<ExportSummary> {
  const temp = join(dirname(file), `.${basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(temp, 'wx');
  let done = false;
  try {
    let bytes = 0;
    for await (const chunk of chunks) {
      await fh.write(chunk, 0, chunk.length, bytes);
      bytes += chunk.length;
      onBytes?.(bytes);
    }
    await fh.sync();
    await fh.close();
    const { header, checksum } = await verifyExport(temp);
    await rename(temp, file);
    await syncDir(dirname(file));
    done = true;
    return { file, entries: header.entries, bytes, checksum, header };
  } finally {
    if (!done) {
      await fh.close().catch(() => undefined);
      await unlink(temp).catch(() => undefined);
    }
  }
}

export interface ExportSource {
  readonly kv: Kv;
  /** True when the LevelDB store was in use and `kv` is a crash-consistent copy of it. */
  readonly copied: boolean;
  close(): Promise<void>;
}

/**
 * Opens a store to export. A LevelDB store held by a running server is copied first (see
 * copyLiveLevelDb) into a temporary directory that close() removes.
 */
export async function openExportSource(target: MetadataStoreTarget): Promise<ExportSource> {
  if (target.backend === 'postgres') {
    const kv = await openMetadataStore(target, true);
    return { kv, copied: false, close: () => kv.close() };
  }
  const dir = join(target.dataDir, 'metadata');
  if (!existsSync(join(dir, 'CURRENT'))) {
    throw new CairnError('CAIRN_NOT_FOUND', `no metadata store in ${target.dataDir} (expected LevelDB files in ${dir})`);
  }
  try {
    const kv = await openKv({ backend: 'level', dir });
    return { kv, copied: false, close: () => kv.close() };
  } catch (error) {
    if (!isLocked(error)) throw new CairnError('CAIRN_UNAVAILABLE', `cannot open the metadata store in ${dir}`, { cause: error });
  }
  const temp = await mkdtemp(join(tmpdir(), 'cairn-export-'));
  try {
    await copyLiveLevelDb(dir, join(temp, 'metadata'));
    const kv = await openKv({ backend: 'level', dir: join(temp, 'metadata') });
    return {
      kv,
      copied: true,
      async close() {
        await kv.close();
        await rm(temp, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await rm(temp, { recursive: true, force: true });
    throw error;
  }
}

export interface ExportOptions {
  /** Written into the header (informational). */
  readonly backend: 'level' | 'postgres';
  /** Entries read from the snapshot per scan (default 1000). */
  readonly pageEntries?: number;
  /** Called after each page with entries and bytes written so far. */
  readonly onProgress?: (entries: number, bytes: number) => void;
  readonly clock?: () => number;
}

export interface ExportSummary {
  readonly file: string;
  readonly entries: number;
  readonly bytes: number;
  readonly checksum: string;
  readonly header: ExportHeader;
}

/**
 * Writes every entry of `kv`, as of one point in time, to `file`: into a temporary file next to
 * it, synced, then renamed, so `file` is either absent, the previous file, or complete.
 */
export async function exportStore(kv: Kv, file: string, options: ExportOptions): Promise<ExportSummary> {
  const pageEntries = options.pageEntries ?? 1000;
  if (!Number.isSafeInteger(pageEntries) || pageEntries < 1) throw new RangeError('options.pageEntries must be an integer ≥ 1');
  const now = options.clock ?? Date.now;
  const temp = join(dirname(file), `.${basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(temp, 'wx');
  let done = false;
  try {
    const hash = createHash('sha256');
    let position = HEADER_BYTES;
    const write = async (data: Buffer): Promise<void> => {
      hash.update(data);
      await fh.write(data, 0, data.length, position);
      position += data.length;
    };
    // The header is written last, in place, once the count is known.
    await fh.write(Buffer.alloc(HEADER_BYTES), 0, HEADER_BYTES, 0);
    const createdAt = new Date(now()).toISOString();
    const totals = await kv.snapshot(async (view) => {
      if ((await view.get(IMPORT_MARKER_KEY)) !== undefined) {
        throw new CairnError('CAIRN_FAILED_PRECONDITION', 'an import into this metadata store is unfinished: re-run it before exporting');
      }
      let entries = 0;
      let keyBytes = 0;
      let valueBytes = 0;
      let last: Buffer | undefined;
      for (;;) {
        const page: KvEntry[] = await view.scan({ ...(last === undefined ? {} : { gt: last }), limit: pageEntries });
        if (page.length === 0) break;
        const parts: Buffer[] = [];
        for (const [key, value] of page) {
          parts.push(encodeRecord(key, value));
          keyBytes += key.length;
          valueBytes += value.length;
        }
        await write(Buffer.concat(parts));
        entries += page.length;
        last = page.at(-1)?.[0];
        options.onProgress?.(entries, position);
        if (page.length < pageEntries) break;
      }
      return { entries, keyBytes, valueBytes };
    });
    await write(encodeEnd(totals.entries));
    const header: ExportHeader = { format: 1, backend: options.backend, createdAt, ...totals };
    const headerBlock = encodeHeader(header);
    hash.update(headerBlock);
    const checksum = hash.digest();
    await fh.write(checksum, 0, checksum.length, position);
    position += checksum.length;
    await fh.write(headerBlock, 0, headerBlock.length, 0);
    await fh.sync();
    await fh.close();
    await rename(temp, file);
    await syncDir(dirname(file));
    done = true;
    return { file, entries: totals.entries, bytes: position, checksum: checksum.toString('hex'), header };
  } finally {
    if (!done) {
      await fh.close().catch(() => undefined);
      await unlink(temp).catch(() => undefined);
    }
  }
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } catch {
    // Some filesystems refuse fsync on a directory; the rename is then as durable as they make it.
  } finally {
    await handle.close();
  }
}

export interface ImportOptions {
  /** Replace a non-empty target (and an unfinished import of another file). */
  readonly force?: boolean;
  /** Entries per transaction (default 1000). */
  readonly batchEntries?: number;
  /** Approximate bytes per transaction (default 4 MiB). */
  readonly batchBytes?: number;
  /** Bytes of the file read so far, and its size; called in the verify pass and again in the load pass. */
  readonly onProgress?: (phase: 'verify' | 'clear' | 'load', done: number, total: number) => void;
  /** Called after each committed batch (tests use it to interrupt an import). */
  readonly onBatch?: (batches: number, loaded: number) => void | Promise<void>;
  readonly clock?: () => number;
  /** The result of a `verifyExport` of this file the caller just ran, to skip a second verify pass. */
  readonly verified?: { readonly header: ExportHeader; readonly checksum: string };
}

export interface ImportSummary {
  readonly entries: number;
  /** Entries written by this run (fewer than `entries` when it resumed). */
  readonly loaded: number;
  readonly resumed: boolean;
  /** Entries of the target deleted first (with `force`). */
  readonly cleared: number;
  readonly checksum: string;
  readonly header: ExportHeader;
}

function positive(value: number | undefined, fallback: number, name: string): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`options.${name} must be an integer ≥ 1`);
  return v;
}

async function readMarker(kv: Kv, force: boolean): Promise<Marker | undefined> {
  const raw = await kv.get(IMPORT_MARKER_KEY);
  if (raw === undefined) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch {
    json = undefined;
  }
  const parsed = markerSchema.safeParse(json);
  // With force the damaged marker is simply overwritten by the new import's.
  if (!parsed.success && force) return undefined;
  if (!parsed.success) throw new CairnError('CAIRN_DATA_LOSS', 'the import progress marker in the target is damaged; re-run with --force');
  return parsed.data;
}

function encodeMarker(marker: Marker): Buffer {
  return Buffer.from(JSON.stringify(marker), 'utf8');
}

/**
 * Loads an export into `kv`. The whole file is verified (format, order, count, SHA-256) before
 * anything is written. Then, in transactions of `batchEntries`, entries are written together with
 * a progress marker, so a re-run after an interruption resumes after the last committed batch;
 * the marker is removed at the end. No server may use the target meanwhile.
 */
export async function importStore(kv: Kv, file: string, options: ImportOptions = {}): Promise<ImportSummary> {
  const batchEntries = positive(options.batchEntries, 1000, 'batchEntries');
  const batchBytes = positive(options.batchBytes, 4 * 1024 * 1024, 'batchBytes');
  const now = options.clock ?? Date.now;
  const { size: fileSize } = await stat(file);
  // The load pass checks the SHA-256 again as it reads, so a file changed after this verify is
  // still caught (the marker then keeps a re-run from mixing two files).
  const { header, checksum } = options.verified ?? (await verifyExport(file, (bytes) => options.onProgress?.('verify', bytes, fileSize)));

  let marker = await readMarker(kv, options.force === true);
  const resumed = marker !== undefined && marker.checksum === checksum && options.force !== true;
  if (marker !== undefined && !resumed && options.force !== true) {
    throw new CairnError('CAIRN_FAILED_PRECONDITION', `an import of another export (sha256 ${marker.checksum.slice(0, 16)}…) into this store is unfinished: re-run that import, or pass --force to replace it`);
  }
  if (!resumed) {
    const nonEmpty = (await kv.scan({ limit: 2 })).some(([key]) => !key.equals(IMPORT_MARKER_KEY));
    if (nonEmpty && options.force !== true) {
      throw new CairnError('CAIRN_FAILED_PRECONDITION', 'the target metadata store is not empty: pass --force to replace its contents');
    }
    marker = { checksum, phase: nonEmpty ? 'clear' : 'load', loaded: 0, batches: 0, startedAt: new Date(now()).toISOString() };
    const fresh = marker;
    await kv.transact(async (tx) => {
      tx.put(IMPORT_MARKER_KEY, encodeMarker(fresh));
    });
  }
  if (marker === undefined) throw new Error('unreachable: no import marker');

  let cleared = 0;
  if (marker.phase === 'clear') {
    for (;;) {
      const deleted = await kv.transact(async (tx) => {
        const page = await tx.scan({ gt: IMPORT_MARKER_KEY, limit: batchEntries });
        for (const [key] of page) tx.del(key);
        return page.length;
      });
      cleared += deleted;
      options.onProgress?.('clear', cleared, cleared);
      if (deleted === 0) break;
    }
    // Keys sorting before the marker cannot exist in a store the model wrote, but a forced
    // import must leave nothing behind whatever the target held.
    for (;;) {
      const deleted = await kv.transact(async (tx) => {
        const page = await tx.scan({ lt: IMPORT_MARKER_KEY, limit: batchEntries });
        for (const [key] of page) tx.del(key);
        return page.length;
      });
      cleared += deleted;
      if (deleted === 0) break;
    }
    marker = { ...marker, phase: 'load' };
    const loading = marker;
    await kv.transact(async (tx) => {
      tx.put(IMPORT_MARKER_KEY, encodeMarker(loading));
    });
  }

  const opened = await openExport(file);
  const lastKey = marker.lastKey === undefined ? undefined : Buffer.from(marker.lastKey, 'hex');
  let state: Marker = marker;
  let loaded = 0;
  let pending: KvEntry[] = [];
  let pendingBytes = 0;
  const commit = async (): Promise<void> => {
    const entries = pending;
    const last = entries.at(-1);
    if (last === undefined) return;
    const next: Marker = { ...state, lastKey: last[0].toString('hex'), loaded: state.loaded + entries.length, batches: state.batches + 1 };
    await kv.transact(async (tx) => {
      for (const [key, value] of entries) tx.put(key, value);
      tx.put(IMPORT_MARKER_KEY, encodeMarker(next));
    });
    state = next;
    loaded += entries.length;
    pending = [];
    pendingBytes = 0;
    await options.onBatch?.(state.batches, state.loaded);
  };
  for await (const batch of readRecords(file, opened, { batchEntries, batchBytes, onBytes: (bytes) => options.onProgress?.('load', bytes, opened.size) })) {
    for (const entry of batch) {
      if (lastKey !== undefined && Buffer.compare(entry[0], lastKey) <= 0) continue;
      // Copies: the reader's buffers are slices of large read chunks.
      pending.push([Buffer.from(entry[0]), Buffer.from(entry[1])]);
      pendingBytes += entry[0].length + entry[1].length;
      if (pending.length >= batchEntries || pendingBytes >= batchBytes) await commit();
    }
  }
  await commit();
  if (state.loaded !== header.entries) {
    throw new CairnError('CAIRN_DATA_LOSS', `import loaded ${state.loaded} of ${header.entries} entries: the target changed during the import; re-run with --force`);
  }
  await kv.transact(async (tx) => {
    tx.del(IMPORT_MARKER_KEY);
  });
  return { entries: header.entries, loaded, resumed, cleared, checksum, header };
}
