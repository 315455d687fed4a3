// Delta uploads: chunk and hash the file locally (FastCDC, as the gateway does), skip chunks the
// local cache or FindMissingChunks says the tenant has, send the rest over parallel UploadChunks
// streams with retries, and commit either a diff of the last synced chunk list or the whole list.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat as fsStat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type * as grpc from '@grpc/grpc-js';
import { Chunker } from '../chunking/index.js';
import { CairnError } from '../common/errors.js';
import { callMetadata, deadlineIn, unaryCall } from '../common/grpc-client.js';
import { loadProto } from '../common/proto.js';
import { fromServiceError } from '../common/status.js';
import type { FilesClient } from '../gen/cairn/v1/Files.js';
import type { FilesCommitFileRequest } from '../gen/cairn/v1/FilesCommitFileRequest.js';
import type { FilesCommitFileResponse__Output } from '../gen/cairn/v1/FilesCommitFileResponse.js';
import type { FindMissingChunksRequest } from '../gen/cairn/v1/FindMissingChunksRequest.js';
import type { FindMissingChunksResponse__Output } from '../gen/cairn/v1/FindMissingChunksResponse.js';
import type { UploadChunksResponse__Output } from '../gen/cairn/v1/UploadChunksResponse.js';
import { ChunkCache, defaultCacheDir, tokenTenant, type CachedChunk } from './cache.js';
import { diffLists } from './diff.js';
import { toInfo, type FileInfo } from './info.js';
import { varintBytes } from '../common/wire.js';

type ProgressFn = (doneBytes: number, totalBytes: number | undefined) => void;

export interface DeltaPutOptions {
  readonly baseVersion?: number;
  readonly mtimeMs?: number;
  readonly onProgress?: ProgressFn;
  readonly signal?: AbortSignal;
  /** Where the chunk cache lives (default $XDG_CACHE_HOME/cairn or ~/.cache/cairn). */
  readonly cacheDir?: string;
  /** Parallel UploadChunks streams (default 16). */
  readonly streams?: number;
  /** Retries of one call on a retryable error (default 6), with exponential backoff and full jitter. */
  readonly retries?: number;
  /**
   * Chunk bytes per UploadChunks call (default 8 MiB). Each call is acknowledged once its chunks
   * are durable, so an interrupted upload resends at most one call's chunks per stream.
   */
  readonly batchBytes?: number;
  /** Called after each acknowledged UploadChunks call (for tests and progress). */
  readonly onSent?: (chunks: number, bytes: number) => void;
}

export interface DeltaResult {
  readonly info: FileInfo;
  /** Chunks in the committed file. */
  readonly chunks: number;
  /** Chunks sent (and acknowledged) by this call. */
  readonly chunksSent: number;
  readonly bytesSent: number;
  /** Request and response payload bytes on the wire (gRPC messages with their 5-byte frames). */
  readonly wireBytes: number;
}

interface Conn {
  readonly files: FilesClient;
  readonly token: string;
  readonly endpoint: string;
}

interface LocalChunk {
  readonly hash: Buffer;
  readonly hex: string;
  readonly size: number;
}

interface Outgoing {
  readonly hash: Buffer;
  readonly data: Buffer;
}

const READ_BYTES = 4 * 1024 * 1024;
const FIND_BATCH = 1024;
const FIND_BATCH_BYTES = 8 * 1024 * 1024;
const MAX_FIND_INFLIGHT = 4;
const MAX_QUEUED_BYTES = 64 * 1024 * 1024;
const MESSAGE_BYTES = 4 * 1024 * 1024;
const BACKOFF_BASE_MS = 100;
const BACKOFF_CAP_MS = 10_000;
const FRAME = 5;

/** Encoded size of a length-delimited field with a one-byte tag. */
function fieldLen(n: number): number {
  return 1 + varintBytes(n) + n;
}

/** Exponential backoff with full jitter; gives up on non-retryable errors or after `retries`. */
export async function withRetries<T>(fn: () => Promise<T>, retries: number, signal?: AbortSignal): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const e = fromServiceError(err);
      if (!e.retryable || attempt >= retries || signal?.aborted === true) throw e;
      const cap = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
      await sleep(Math.max(e.retryAfterMs ?? 0, Math.random() * cap), undefined, signal ? { signal } : {});
    }
  }
}

/** A queue of chunks to send, with back-pressure on the producer. */
class SendQueue {
  readonly #items: Outgoing[] = [];
  #bytes = 0;
  #closed = false;
  #failure: unknown;
  #wakeTakers: Array<() => void> = [];
  #wakeProducer: Array<() => void> = [];

  async put(item: Outgoing): Promise<void> {
    while (this.#bytes >= MAX_QUEUED_BYTES && this.#failure === undefined) await new Promise<void>((resolve) => this.#wakeProducer.push(resolve));
    if (this.#failure !== undefined) throw fromServiceError(this.#failure);
    this.#items.push(item);
    this.#bytes += item.data.length;
    this.#wake(this.#wakeTakers);
  }

  close(): void {
    this.#closed = true;
    this.#wake(this.#wakeTakers);
  }

  fail(err: unknown): void {
    this.#failure ??= err;
    this.#closed = true;
    this.#wake(this.#wakeTakers);
    this.#wake(this.#wakeProducer);
  }

  /** Up to `maxBytes` of chunks (at least one); empty when closed and drained. */
  async take(maxBytes: number): Promise<Outgoing[]> {
    for (;;) {
      if (this.#failure !== undefined) return [];
      if (this.#items.length > 0) {
        const out: Outgoing[] = [];
        let n = 0;
        while (this.#items.length > 0 && (out.length === 0 || n + this.#items[0]!.data.length <= maxBytes)) {
          const item = this.#items.shift()!;
          n += item.data.length;
          out.push(item);
        }
        this.#bytes -= n;
        this.#wake(this.#wakeProducer);
        return out;
      }
      if (this.#closed) return [];
      await new Promise<void>((resolve) => this.#wakeTakers.push(resolve));
    }
  }

  #wake(list: Array<() => void>): void {
    const fns = list.splice(0);
    for (const fn of fns) fn();
  }
}

export class DeltaUploader {
  readonly #conn: Conn;
  readonly #service = loadProto().proto.cairn.v1.Files.service;
  wireBytes = 0;

  constructor(conn: Conn) {
    this.#conn = conn;
  }

  #size(method: 'FindMissingChunks' | 'CommitFile', kind: 'request' | 'response', msg: unknown): number {
    const def = this.#service[method] as { requestSerialize: (m: unknown) => Buffer; responseSerialize: (m: unknown) => Buffer };
    return FRAME + (kind === 'request' ? def.requestSerialize(msg) : def.responseSerialize(msg)).length;
  }

  async #md(): Promise<grpc.Metadata> {
    return callMetadata(() => this.#conn.token);
  }

  async findMissing(hashes: Buffer[], retries: number, signal?: AbortSignal): Promise<Set<string>> {
    const req: FindMissingChunksRequest = { plain_hashes: hashes };
    const res = await withRetries(async () => {
      this.wireBytes += this.#size('FindMissingChunks', 'request', req);
      const files = this.#conn.files;
      return unaryCall<FindMissingChunksRequest, FindMissingChunksResponse__Output>(files.FindMissingChunks.bind(files), req, await this.#md(), deadlineIn(60_000));
    }, retries, signal);
    this.wireBytes += this.#size('FindMissingChunks', 'response', res);
    return new Set(res.missing.map((h) => h.toString('hex')));
  }

  /** One UploadChunks call: resolves once its chunks are durable and pinned under the upload id. */
  async #uploadOnce(uploadId: string, batch: Outgoing[], signal?: AbortSignal): Promise<UploadChunksResponse__Output> {
    const md = await this.#md();
    return new Promise((resolve, reject) => {
      const call = this.#conn.files.UploadChunks(md, deadlineIn(300_000), (err, res) => {
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(fromServiceError(err));
        else if (res) {
          this.wireBytes += FRAME + fieldLen(Buffer.byteLength(res.upload_id)) + 16;
          resolve(res);
        } else reject(new CairnError('CAIRN_INTERNAL', 'empty UploadChunks response'));
      });
      const onAbort = (): void => call.cancel();
      signal?.addEventListener('abort', onAbort, { once: true });
      let first = true;
      for (let i = 0; i < batch.length; ) {
        const chunks: Outgoing[] = [];
        let n = 0;
        while (i < batch.length && (chunks.length === 0 || n + batch[i]!.data.length <= MESSAGE_BYTES)) {
          n += batch[i]!.data.length;
          chunks.push(batch[i++]!);
        }
        const id = first ? uploadId : '';
        first = false;
        let len = id === '' ? 0 : fieldLen(Buffer.byteLength(id));
        for (const c of chunks) len += fieldLen(fieldLen(32) + fieldLen(c.data.length));
        this.wireBytes += FRAME + len;
        call.write({ upload_id: id, chunks: chunks.map((c) => ({ plain_hash: c.hash, data: c.data })) });
      }
      call.end();
    });
  }

  /** Sends a batch, retrying; a retry first asks which of its chunks are still missing. */
  async uploadBatch(uploadId: string, batch: Outgoing[], retries: number, signal?: AbortSignal): Promise<{ uploadId: string; sent: Outgoing[] }> {
    let todo = batch;
    let id = uploadId;
    for (let attempt = 0; ; attempt++) {
      try {
        if (todo.length === 0) return { uploadId: id, sent: [] };
        const res = await this.#uploadOnce(id, todo, signal);
        return { uploadId: res.upload_id, sent: todo };
      } catch (err) {
        const e = fromServiceError(err);
        // An expired or unknown upload id: start a new upload on the next try.
        if (e.code === 'CAIRN_NOT_FOUND' && id !== '') {
          id = '';
          continue;
        }
        if (!e.retryable || attempt >= retries || signal?.aborted === true) throw e;
        const cap = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
        await sleep(Math.max(e.retryAfterMs ?? 0, Math.random() * cap), undefined, signal ? { signal } : {});
        const missing = await this.findMissing(todo.map((c) => c.hash), retries, signal);
        todo = todo.filter((c) => missing.has(c.hash.toString('hex')));
      }
    }
  }

  async commit(req: FilesCommitFileRequest, retries: number, signal?: AbortSignal): Promise<FileInfo> {
    const res = await withRetries(async () => {
      this.wireBytes += this.#size('CommitFile', 'request', req);
      const files = this.#conn.files;
      return unaryCall<FilesCommitFileRequest, FilesCommitFileResponse__Output>(files.CommitFile.bind(files), req, await this.#md(), deadlineIn(120_000));
    }, retries, signal);
    this.wireBytes += this.#size('CommitFile', 'response', res);
    return toInfo(res.file);
  }

  async upload(localPath: string, remotePath: string, options: DeltaPutOptions, useCache = true): Promise<DeltaResult> {
    const st = await fsStat(localPath);
    if (!st.isFile()) throw new CairnError('CAIRN_INVALID_ARGUMENT', `${localPath} is not a regular file`);
    const streams = options.streams ?? 16;
    const retries = options.retries ?? 6;
    const batchBytes = options.batchBytes ?? 8 * 1024 * 1024;
    if (!Number.isInteger(streams) || streams < 1 || streams > 256) throw new RangeError('options.streams must be an integer in 1..256');
    if (!Number.isInteger(retries) || retries < 0) throw new RangeError('options.retries must be an integer ≥ 0');
    if (!Number.isInteger(batchBytes) || batchBytes < 1) throw new RangeError('options.batchBytes must be a positive integer');
    const mtimeMs = options.mtimeMs ?? Math.floor(st.mtimeMs);
    const signal = options.signal;

    const cache = new ChunkCache(options.cacheDir ?? defaultCacheDir(), this.#conn.endpoint, tokenTenant(this.#conn.token), remotePath);
    const entry = useCache ? await cache.load() : undefined;
    const known = new Set((entry?.chunks ?? []).map((c) => c.h));
    const previousIds = entry?.pending?.uploadIds ?? [];
    const uploadIds: string[] = new Array<string>(streams).fill('');
    let saving = Promise.resolve();
    const savePending = (): void => {
      const ids = [...new Set([...previousIds, ...uploadIds.filter((id) => id !== '')])];
      saving = saving.then(() => cache.save({ version: entry?.version ?? 0, chunks: entry?.chunks ?? [], pending: { size: st.size, mtimeMs, uploadIds: ids } })).catch(() => undefined);
    };
    savePending();

    let done = 0;
    const progress = (n: number): void => {
      done += n;
      options.onProgress?.(done, st.size);
    };
    let chunksSent = 0;
    let bytesSent = 0;
    const queue = new SendQueue();
    const workers = Array.from({ length: streams }, async (_, i) => {
      for (;;) {
        const batch = await queue.take(batchBytes);
        if (batch.length === 0) return;
        const { uploadId, sent } = await this.uploadBatch(uploadIds[i]!, batch, retries, signal);
        if (uploadId !== uploadIds[i]) {
          uploadIds[i] = uploadId;
          savePending();
        }
        const bytes = batch.reduce((n, c) => n + c.data.length, 0);
        chunksSent += sent.length;
        bytesSent += sent.reduce((n, c) => n + c.data.length, 0);
        options.onSent?.(sent.length, sent.reduce((n, c) => n + c.data.length, 0));
        progress(bytes);
      }
    });
    const sending = Promise.all(workers).catch((err: unknown) => {
      queue.fail(err);
      throw err;
    });
    sending.catch(() => undefined);

    // Produce: read, chunk, hash; ask about chunks the cache does not vouch for; queue the missing.
    const list: LocalChunk[] = [];
    /** Chunks already asked about (or queued) in this upload: a repeat is never asked twice. */
    const seen = new Set<string>();
    let pending: Array<{ hash: Buffer; data: Buffer }> = [];
    let pendingBytes = 0;
    // FindMissingChunks calls in flight, so hashing goes on while the gateway answers.
    const asking = new Set<Promise<void>>();
    const classify = async (): Promise<void> => {
      const batch = pending;
      pending = [];
      pendingBytes = 0;
      if (batch.length === 0) return;
      while (asking.size >= MAX_FIND_INFLIGHT) await Promise.race(asking);
      const p: Promise<void> = (async () => {
        const missing = await this.findMissing(batch.map((c) => c.hash), retries, signal);
        for (const c of batch) {
          if (missing.has(c.hash.toString('hex'))) await queue.put(c);
          else progress(c.data.length);
        }
      })();
      const tracked = p.finally(() => asking.delete(tracked));
      tracked.catch((err: unknown) => queue.fail(err));
      asking.add(tracked);
    };
    const onChunk = async (data: Buffer): Promise<void> => {
      const hash = createHash('sha256').update(data).digest();
      const hex = hash.toString('hex');
      list.push({ hash, hex, size: data.length });
      if (known.has(hex) || seen.has(hex)) {
        progress(data.length);
        return;
      }
      seen.add(hex);
      pending.push({ hash, data });
      pendingBytes += data.length;
      if (pending.length >= FIND_BATCH || pendingBytes >= FIND_BATCH_BYTES) await classify();
    };
    try {
      const chunker = new Chunker();
      for await (const piece of createReadStream(localPath, { highWaterMark: READ_BYTES, ...(signal ? { signal } : {}) }) as AsyncIterable<Buffer>) {
        for (const c of chunker.push(piece)) await onChunk(c);
      }
      for (const c of chunker.finish()) await onChunk(c);
      await classify();
      while (asking.size > 0) await Promise.race(asking);
      queue.close();
    } catch (err) {
      queue.fail(err);
      await sending.catch(() => undefined);
      throw fromServiceError(err);
    }
    await sending;
    await saving;

    const size = list.reduce((n, c) => n + c.size, 0);
    if (size !== st.size) throw new CairnError('CAIRN_FAILED_PRECONDITION', `${localPath} changed while it was read (${st.size} bytes before, ${size} read); nothing was committed`);
    const ids = [...new Set([...previousIds, ...uploadIds.filter((id) => id !== '')])];
    const newList: CachedChunk[] = list.map((c) => ({ h: c.hex, s: c.size }));
    const wire = (c: CachedChunk): { plain_hash: Buffer; size: number } => ({ plain_hash: Buffer.from(c.h, 'hex'), size: c.s });
    const full: FilesCommitFileRequest = { path: remotePath, mtime_ms: mtimeMs, chunks: newList.map(wire), upload_ids: ids, ...(options.baseVersion !== undefined ? { base_version: options.baseVersion } : {}) };
    let info: FileInfo;
    try {
      if (entry !== undefined && entry.version > 0 && (options.baseVersion === undefined || options.baseVersion === entry.version)) {
        const splices = diffLists(entry.chunks, newList, (c) => c.h).map((sp) => ({ start: sp.start, delete_count: sp.deleteCount, insert: sp.insert.map(wire) }));
        try {
          info = await this.commit({ path: remotePath, base_version: entry.version, mtime_ms: mtimeMs, upload_ids: ids, diff: { splices } }, retries, signal);
        } catch (err) {
          // Someone else committed since our last sync: without a base version the put replaces it.
          if (!(err instanceof CairnError) || err.code !== 'CAIRN_CONFLICT' || options.baseVersion !== undefined) throw err;
          info = await this.commit(full, retries, signal);
        }
      } else {
        info = await this.commit(full, retries, signal);
      }
    } catch (err) {
      // Chunks the cache vouched for are gone (the versions holding them were pruned): start over
      // asking the gateway about every chunk.
      if (useCache && err instanceof CairnError && err.code === 'CAIRN_FAILED_PRECONDITION' && err.metadata['missing'] !== undefined) {
        const again = await this.upload(localPath, remotePath, options, false);
        return { ...again, chunksSent: again.chunksSent + chunksSent, bytesSent: again.bytesSent + bytesSent };
      }
      throw err;
    }
    if (info.size !== size) throw new CairnError('CAIRN_DATA_LOSS', `committed ${info.size} bytes for a file of ${size}`);
    await cache.save({ version: info.version, chunks: newList }).catch(() => undefined);
    return { info, chunks: list.length, chunksSent, bytesSent, wireBytes: this.wireBytes };
  }
}
