// Cairn's client SDK: a typed client for the public Files API, used by the CLI, tests and
// benchmarks. It ships to users and contains no server code.
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm, stat as fsStat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { Readable } from 'node:stream';
import type * as grpc from '@grpc/grpc-js';
import { CairnError } from '../common/errors.js';
import { CHANNEL_OPTIONS, callMetadata, deadlineIn, unaryCall } from '../common/grpc-client.js';
import { clientCredentials } from '../common/grpc-server.js';
import { loadProto } from '../common/proto.js';
import { fromServiceError } from '../common/status.js';
import type { FilesClient } from '../gen/cairn/v1/Files.js';
import type { ReadFileResponse__Output } from '../gen/cairn/v1/ReadFileResponse.js';
import type { StatResponse__Output } from '../gen/cairn/v1/StatResponse.js';
import type { UploadFileResponse__Output } from '../gen/cairn/v1/UploadFileResponse.js';
import type { ClientSettings } from './config.js';
import { toInfo, type FileInfo } from './info.js';
import { TreeClient } from './tree.js';
import { PARALLEL_MIN_BYTES, parallelGet } from './download.js';
import { DeltaUploader, type DeltaPutOptions, type DeltaResult } from './upload.js';
import { SessionCalls, type StartUploadOptions, type UploadSessionState, type WriteUploadOptions } from './sessions.js';

export { resolveClientSettings, userConfigPath, type ClientSettings } from './config.js';
export { CairnError, isCairnError, type ErrorCode } from '../common/errors.js';
export type { Change, ChangeBatch, ChangesPage, ChangeType, ListOptions, ListPage, TreeEntry, Usage, VersionEntry, VersionsPage, WatchOptions } from './tree.js';

export type { FileInfo } from './info.js';
export { CairnSharing, sharedTreeOptions, OWNER_HEADER, type ClusterNodeStatus, type ClusterStatus, type LinkShareResult, type PresignedUrl, type Share, type ShareAccessLevel } from './sharing.js';
export { CairnMedia, THUMBNAIL_SIZES, checkThumbnailSize, type MediaInfo, type MediaState, type Thumbnail, type ThumbnailEntry, type ThumbnailOptions, type ThumbnailPage, type ThumbnailSize, type WaitOptions } from './media.js';
export type { StartUploadOptions, UploadSessionState, WriteUploadOptions } from './sessions.js';
export { defaultCacheDir } from './cache.js';

export type ProgressFn = (doneBytes: number, totalBytes: number | undefined) => void;

export interface PutOptions {
  /** Commit only if the path is at this version (0: must not exist). */
  readonly baseVersion?: number;
  readonly mtimeMs?: number;
  readonly onProgress?: ProgressFn;
  readonly signal?: AbortSignal;
}

/** Options of `upload`: those of `put`, plus the chunk cache, parallelism and retries. */
export type UploadOptions = PutOptions & {
  /** Chunk cache directory (default $XDG_CACHE_HOME/cairn or ~/.cache/cairn). */
  cacheDir?: string;
  /** Parallel UploadChunks streams (default 16). */
  streams?: number;
  /** Retries per call on retryable errors (default 6), exponential backoff with full jitter. */
  retries?: number;
} & Pick<DeltaPutOptions, 'batchBytes' | 'onSent'>;

export type UploadResult = DeltaResult;

export interface GetOptions {
  readonly version?: number;
  readonly offset?: number;
  readonly limit?: number;
  readonly onProgress?: ProgressFn;
  readonly signal?: AbortSignal;
  /** ReadFile streams for reads of 32 MiB or more to a file (default 1: with the 16 MiB flow-control window one stream is fastest; more split the read into ranged windows). */
  readonly streams?: number;
}

const MESSAGE_BYTES = 1024 * 1024;

function connect(settings: Pick<ClientSettings, 'endpoint' | 'tlsCa' | 'tlsCert' | 'tlsKey'>, channelOptions: grpc.ChannelOptions): FilesClient {
  const Ctor = loadProto().proto.cairn.v1.Files;
  return new Ctor(settings.endpoint, clientCredentials({ ca: settings.tlsCa, cert: settings.tlsCert, key: settings.tlsKey }), { ...CHANNEL_OPTIONS, ...channelOptions });
}

/** The SDK client: file data calls here, tree calls (list, versions, move, watch, …) from TreeClient. */
/** Bytes a download buffers for the file before it waits for the disk. */
const WRITE_BUFFER_BYTES = 8 * 1024 * 1024;

export class CairnClient extends TreeClient {
  readonly endpoint: string;
  readonly #client: FilesClient;
  readonly #token: string;
  readonly #sessions: SessionCalls;

  constructor(settings: Pick<ClientSettings, 'endpoint' | 'token' | 'tlsCa' | 'tlsCert' | 'tlsKey'>, channelOptions: grpc.ChannelOptions = {}) {
    super(connect(settings, channelOptions), settings.token);
    this.endpoint = settings.endpoint;
    this.#token = settings.token;
    this.#client = this.files;
    this.#sessions = new SessionCalls(this.files, settings.token);
  }

  /**
   * Delta upload of a local file: chunks and hashes it here, sends only the chunks the tenant
   * lacks over parallel streams, and commits a diff against the version last synced from this
   * machine (kept in the chunk cache). An interrupted upload resumes on the next call.
   */
  async upload(localPath: string, remotePath: string, options: UploadOptions = {}): Promise<UploadResult> {
    return new DeltaUploader({ files: this.#client, token: this.#token, endpoint: this.endpoint }).upload(localPath, remotePath, options);
  }

  /** Opens a resumable byte upload (ByteStream semantics); see `writeUpload`. */
  startUpload(remotePath: string, options: StartUploadOptions = {}): Promise<{ uploadId: string; expiresMs: number }> {
    return this.#sessions.start(remotePath, options);
  }

  /** Where a resumable upload continues (its committed offset, a chunk boundary). */
  queryUpload(uploadId: string): Promise<UploadSessionState> {
    return this.#sessions.query(uploadId);
  }

  /** Writes bytes at `offset` (the committed offset); returns the committed offset afterwards. */
  writeUpload(uploadId: string, offset: number, source: AsyncIterable<Uint8Array> | Uint8Array, options: WriteUploadOptions = {}): Promise<number> {
    return this.#sessions.write(uploadId, offset, source, options);
  }

  finishUpload(uploadId: string, size?: number): Promise<FileInfo> {
    return this.#sessions.finish(uploadId, size);
  }

  abortUpload(uploadId: string): Promise<void> {
    return this.#sessions.abort(uploadId);
  }

  /** Uploads a local file through a resumable session, continuing after retryable failures. */
  putResumable(localPath: string, remotePath: string, options: PutOptions & { uploadId?: string; retries?: number; onStarted?: (uploadId: string) => void } = {}): Promise<FileInfo> {
    return this.#sessions.putFile(localPath, remotePath, options);
  }

  /** Uploads a local file to `remotePath` in one UploadFile stream (the gateway chunks it). */
  async put(localPath: string, remotePath: string, options: PutOptions = {}): Promise<FileInfo> {
    const st = await fsStat(localPath);
    if (!st.isFile()) throw new CairnError('CAIRN_INVALID_ARGUMENT', `${localPath} is not a regular file`);
    return this.putStream(createReadStream(localPath, { highWaterMark: MESSAGE_BYTES }), remotePath, { ...options, size: st.size, mtimeMs: options.mtimeMs ?? Math.floor(st.mtimeMs) });
  }

  /** Uploads a byte stream; `size`, when given, is checked by the server. */
  async putStream(source: Readable, remotePath: string, options: PutOptions & { size?: number } = {}): Promise<FileInfo> {
    const md = await callMetadata(() => this.#token);
    let done = 0;
    const response = new Promise<UploadFileResponse__Output>((resolve, reject) => {
      const call = this.#client.UploadFile(md, (err, res) => {
        if (err) reject(fromServiceError(err));
        else if (res) resolve(res);
        else reject(new CairnError('CAIRN_INTERNAL', 'empty UploadFile response'));
      });
      const onAbort = (): void => call.cancel();
      options.signal?.addEventListener('abort', onAbort, { once: true });
      const pump = async (): Promise<void> => {
        call.write({ header: { path: remotePath, mtime_ms: options.mtimeMs ?? Date.now(), ...(options.size !== undefined ? { size: options.size } : {}), ...(options.baseVersion !== undefined ? { base_version: options.baseVersion } : {}) } });
        for await (const piece of source as AsyncIterable<Buffer>) {
          for (let i = 0; i < piece.length; i += MESSAGE_BYTES) {
            const data = piece.subarray(i, i + MESSAGE_BYTES);
            if (!call.write({ data })) await once(call, 'drain');
            done += data.length;
            options.onProgress?.(done, options.size);
          }
        }
        call.end();
      };
      pump().catch((err: unknown) => {
        call.cancel();
        reject(err instanceof CairnError ? err : new CairnError('CAIRN_INTERNAL', `reading the upload source failed: ${(err as Error).message}`, { cause: err }));
      });
    });
    try {
      return toInfo((await response).file);
    } finally {
      source.destroy();
    }
  }

  /** Streams a file (or a range): yields the description first, then data in order. */
  async *read(remotePath: string, options: GetOptions = {}): AsyncGenerator<{ info: FileInfo } | { data: Buffer; offset: number }> {
    const md = await callMetadata(() => this.#token);
    const call = this.#client.ReadFile({ path: remotePath, version: options.version ?? 0, offset: options.offset ?? 0, limit: options.limit ?? 0 }, md);
    const onAbort = (): void => call.cancel();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const msg of call as AsyncIterable<ReadFileResponse__Output>) {
        if (msg.file) yield { info: toInfo(msg.file) };
        else yield { data: msg.data, offset: Number(msg.offset) };
      }
    } catch (err) {
      throw fromServiceError(err);
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Downloads to `localPath` through a temporary file renamed into place, so a partial
   * download is never visible under the final name. `-` writes to stdout.
   */
  async get(remotePath: string, localPath: string, options: GetOptions = {}): Promise<FileInfo> {
    const toStdout = localPath === '-';
    const streams = options.streams ?? 1;
    if (!Number.isInteger(streams) || streams < 1 || streams > 64) throw new RangeError('options.streams must be an integer in 1..64');
    if (!toStdout && streams > 1) {
      const info = await this.stat(remotePath, options.version ?? 0);
      const start = options.offset ?? 0;
      if (start > info.size) throw new CairnError('CAIRN_OUT_OF_RANGE', `offset ${start} is past the end of ${remotePath} (${info.size} bytes)`);
      const end = options.limit ? Math.min(info.size, start + options.limit) : info.size;
      if (end - start >= PARALLEL_MIN_BYTES) {
        return parallelGet((path, o) => this.read(path, o), info, localPath, start, end, streams, { ...(options.signal ? { signal: options.signal } : {}), ...(options.onProgress ? { onProgress: options.onProgress } : {}) });
      }
    }
    const tmp = toStdout ? '' : `${localPath}.cairn-${randomBytes(4).toString('hex')}.part`;
    // A deep write buffer: fs.WriteStream then flushes what piled up with one writev, instead of
    // one write per (≈ 64 KiB) message with the read waiting for each — that cost a third of a
    // download's time.
    const out = toStdout ? process.stdout : createWriteStream(tmp, { highWaterMark: WRITE_BUFFER_BYTES });
    let info: FileInfo | undefined;
    let written = 0;
    try {
      for await (const part of this.read(remotePath, options)) {
        if ('info' in part) {
          info = part.info;
          continue;
        }
        if (!out.write(part.data)) await once(out, 'drain');
        written += part.data.length;
        const total = info === undefined ? undefined : Math.min(info.size - (options.offset ?? 0), options.limit || Infinity);
        options.onProgress?.(written, total);
      }
      if (info === undefined) throw new CairnError('CAIRN_INTERNAL', 'server sent no file description');
      const expected = Math.min(info.size - (options.offset ?? 0), options.limit || Infinity);
      if (written !== expected) throw new CairnError('CAIRN_DATA_LOSS', `received ${written} bytes, expected ${expected}`);
      if (!toStdout) {
        const file = out as ReturnType<typeof createWriteStream>;
        await new Promise<void>((resolve, reject) => file.end((err?: Error | null) => (err ? reject(err) : resolve())));
        await rename(tmp, localPath);
      }
      return info;
    } catch (err) {
      if (!toStdout) {
        (out as ReturnType<typeof createWriteStream>).destroy();
        await rm(tmp, { force: true });
      }
      throw err;
    }
  }

  async stat(remotePath: string, version = 0): Promise<FileInfo> {
    const md = await callMetadata(() => this.#token);
    try {
      const res = await unaryCall<{ path: string; version: number }, StatResponse__Output>(this.#client.Stat.bind(this.#client), { path: remotePath, version }, md, deadlineIn(30_000));
      return toInfo(res.file);
    } catch (err) {
      throw fromServiceError(err);
    }
  }

  close(): void {
    this.#client.close();
  }
}
