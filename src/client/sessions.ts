// Resumable byte uploads (StartUpload / QueryUpload / WriteUpload / FinishUpload / AbortUpload):
// for clients that do not chunk themselves. The gateway reports a committed offset at a chunk
// boundary; a broken write continues from there, through any gateway.
import { createReadStream } from 'node:fs';
import { stat as fsStat } from 'node:fs/promises';
import { once } from 'node:events';
import type * as grpc from '@grpc/grpc-js';
import { CairnError } from '../common/errors.js';
import { callMetadata, deadlineIn, unaryCall } from '../common/grpc-client.js';
import { fromServiceError } from '../common/status.js';
import type { FilesClient } from '../gen/cairn/v1/Files.js';
import type { FinishUploadResponse__Output } from '../gen/cairn/v1/FinishUploadResponse.js';
import type { QueryUploadResponse__Output } from '../gen/cairn/v1/QueryUploadResponse.js';
import type { StartUploadRequest } from '../gen/cairn/v1/StartUploadRequest.js';
import type { StartUploadResponse__Output } from '../gen/cairn/v1/StartUploadResponse.js';
import type { WriteUploadResponse__Output } from '../gen/cairn/v1/WriteUploadResponse.js';
import { toInfo, type FileInfo } from './info.js';
import { withRetries } from './upload.js';

const MESSAGE_BYTES = 1024 * 1024;

export interface UploadSessionState {
  readonly uploadId: string;
  readonly committedOffset: number;
  readonly complete: boolean;
  readonly size: number | undefined;
  readonly path: string;
  readonly expiresMs: number;
}

export interface StartUploadOptions {
  readonly baseVersion?: number;
  readonly mtimeMs?: number;
  readonly size?: number;
}

export interface WriteUploadOptions {
  /** The last bytes of the file: the gateway stores the tail as the last chunk. */
  readonly finish?: boolean;
  readonly signal?: AbortSignal;
  /** Called with the offset after each message handed to the transport. */
  readonly onWritten?: (offset: number) => void;
}

export class SessionCalls {
  readonly #files: FilesClient;
  readonly #token: string;

  constructor(files: FilesClient, token: string) {
    this.#files = files;
    this.#token = token;
  }

  async #unary<Req, Res>(method: 'StartUpload' | 'QueryUpload' | 'FinishUpload' | 'AbortUpload', req: Req): Promise<Res> {
    const md = await callMetadata(() => this.#token);
    const fn = (this.#files[method] as (...args: unknown[]) => unknown).bind(this.#files) as (req: Req, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => unknown;
    try {
      return await unaryCall<Req, Res>(fn, req, md, deadlineIn(120_000));
    } catch (err) {
      throw fromServiceError(err);
    }
  }

  async start(remotePath: string, options: StartUploadOptions = {}): Promise<{ uploadId: string; expiresMs: number }> {
    const req: StartUploadRequest = {
      path: remotePath,
      mtime_ms: options.mtimeMs ?? Date.now(),
      ...(options.baseVersion !== undefined ? { base_version: options.baseVersion } : {}),
      ...(options.size !== undefined ? { size: options.size } : {}),
    };
    const res = await this.#unary<StartUploadRequest, StartUploadResponse__Output>('StartUpload', req);
    return { uploadId: res.upload_id, expiresMs: Number(res.expires_ms) };
  }

  async query(uploadId: string): Promise<UploadSessionState> {
    const res = await this.#unary<{ upload_id: string }, QueryUploadResponse__Output>('QueryUpload', { upload_id: uploadId });
    return { uploadId, committedOffset: Number(res.committed_offset), complete: res.complete, size: res.size === undefined ? undefined : Number(res.size), path: res.path, expiresMs: Number(res.expires_ms) };
  }

  /** Streams `source` starting at `offset` (the committed offset); returns the new committed offset. */
  async write(uploadId: string, offset: number, source: AsyncIterable<Uint8Array> | Uint8Array, options: WriteUploadOptions = {}): Promise<number> {
    const md = await callMetadata(() => this.#token);
    return new Promise<number>((resolve, reject) => {
      const call = this.#files.WriteUpload(md, (err, res?: WriteUploadResponse__Output) => {
        options.signal?.removeEventListener('abort', onAbort);
        if (err) reject(fromServiceError(err));
        else if (res) resolve(Number(res.committed_offset));
        else reject(new CairnError('CAIRN_INTERNAL', 'empty WriteUpload response'));
      });
      const onAbort = (): void => call.cancel();
      options.signal?.addEventListener('abort', onAbort, { once: true });
      const pump = async (): Promise<void> => {
        let at = offset;
        let first = true;
        const send = async (data: Uint8Array, finish: boolean): Promise<void> => {
          const ok = call.write({ ...(first ? { upload_id: uploadId, write_offset: offset } : {}), data, finish_write: finish });
          first = false;
          at += data.length;
          options.onWritten?.(at);
          if (!ok) await once(call, 'drain');
        };
        const pieces = source instanceof Uint8Array ? [source] : source;
        // Bytes go out as they come (a held-back last message would stall a paused source);
        // finish_write rides on an empty message at the end.
        for await (const piece of pieces) {
          for (let i = 0; i < piece.length; i += MESSAGE_BYTES) await send(piece.subarray(i, i + MESSAGE_BYTES), false);
        }
        if (first || options.finish === true) await send(new Uint8Array(0), options.finish === true);
        call.end();
      };
      pump().catch((err: unknown) => {
        call.cancel();
        reject(err instanceof CairnError ? err : new CairnError('CAIRN_INTERNAL', `reading the upload source failed: ${(err as Error).message}`, { cause: err }));
      });
    });
  }

  async finish(uploadId: string, size?: number): Promise<FileInfo> {
    const res = await this.#unary<{ upload_id: string; size?: number }, FinishUploadResponse__Output>('FinishUpload', { upload_id: uploadId, ...(size !== undefined ? { size } : {}) });
    return toInfo(res.file);
  }

  async abort(uploadId: string): Promise<void> {
    await this.#unary<{ upload_id: string }, unknown>('AbortUpload', { upload_id: uploadId });
  }

  /**
   * Uploads a local file through a session (a new one, or `uploadId` to continue), continuing
   * from the committed offset after retryable failures.
   */
  async putFile(localPath: string, remotePath: string, options: StartUploadOptions & { uploadId?: string; retries?: number; signal?: AbortSignal; onStarted?: (uploadId: string) => void } = {}): Promise<FileInfo> {
    const st = await fsStat(localPath);
    if (!st.isFile()) throw new CairnError('CAIRN_INVALID_ARGUMENT', `${localPath} is not a regular file`);
    const retries = options.retries ?? 6;
    const uploadId = options.uploadId ?? (await this.start(remotePath, { ...options, size: st.size, mtimeMs: options.mtimeMs ?? Math.floor(st.mtimeMs) })).uploadId;
    options.onStarted?.(uploadId);
    await withRetries(async () => {
      const { committedOffset } = await this.query(uploadId);
      if (committedOffset === st.size && st.size > 0) return;
      const source = createReadStream(localPath, { start: committedOffset, highWaterMark: MESSAGE_BYTES, ...(options.signal ? { signal: options.signal } : {}) }) as AsyncIterable<Buffer>;
      const end = await this.write(uploadId, committedOffset, st.size === committedOffset ? new Uint8Array(0) : source, { finish: true, ...(options.signal ? { signal: options.signal } : {}) });
      if (end !== st.size) throw new CairnError('CAIRN_UNAVAILABLE', `upload ${uploadId} stopped at ${end} of ${st.size} bytes`);
    }, retries, options.signal);
    return this.finish(uploadId, st.size);
  }
}
