// Moving file contents: uploads through the SDK, downloads into a temporary file (chunked and
// hashed on the way, checked against the server's content hash) that is renamed into place only
// when complete, with the remote mtime — a partial download is never under a final name.
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rm, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import { Chunker } from '../chunking/index.js';
import { CairnError, type CairnClient, type FileInfo } from '../client/index.js';

export interface UploadResult {
  readonly info: FileInfo;
  /** Chunk bytes sent to the gateway (chunks the tenant already had are not sent). */
  readonly bytesSent: number;
  readonly chunksSent: number;
  /** Request and response bytes on the wire. */
  readonly wireBytes: number;
}

/**
 * Uploads `localPath` to `remotePath` through the SDK's delta path (local chunking, only missing
 * chunks sent, a chunk-list diff committed), committing only on top of `baseVersion`.
 */
export async function uploadFile(client: CairnClient, localPath: string, remotePath: string, options: { baseVersion: number; mtimeMs: number; size: number; cacheDir: string; signal?: AbortSignal; onProgress?: (delta: number, done: number) => void }): Promise<UploadResult> {
  let done = 0;
  const res = await client.upload(localPath, remotePath, {
    baseVersion: options.baseVersion,
    mtimeMs: options.mtimeMs,
    cacheDir: options.cacheDir,
    // Parallel chunk streams only pay off for large files; small ones are one batch anyway.
    streams: options.size > 8 * 1024 * 1024 ? 4 : 1,
    ...(options.signal !== undefined ? { signal: options.signal } : {}),
    // Called as chunk batches are acknowledged (durable on the server).
    onProgress: (n) => {
      const delta = n - done;
      done = n;
      options.onProgress?.(delta, done);
    },
  });
  return { info: res.info, bytesSent: res.bytesSent, chunksSent: res.chunksSent, wireBytes: res.wireBytes };
}

export interface Downloaded {
  readonly info: FileInfo;
  /** The complete temporary file, ready to be renamed into place. */
  readonly tmpPath: string;
  readonly chunks: Buffer;
}

/**
 * Downloads the current version of `remotePath` into a new file in `tmpDir`, verifying the
 * content hash and setting the remote mtime. The caller renames it into place (or removes it).
 */
export async function downloadToTemp(client: CairnClient, remotePath: string, tmpDir: string, options: { signal?: AbortSignal; onProgress?: (delta: number) => void } = {}): Promise<Downloaded> {
  const tmpPath = join(tmpDir, `${randomBytes(8).toString('hex')}.part`);
  const out = createWriteStream(tmpPath);
  const chunker = new Chunker();
  const whole = createHash('sha256');
  const list: Buffer[] = [];
  const take = (pieces: Buffer[]): void => {
    for (const c of pieces) {
      const h = createHash('sha256').update(c).digest();
      whole.update(h);
      list.push(h);
    }
  };
  let info: FileInfo | undefined;
  let written = 0;
  try {
    for await (const part of client.read(remotePath, options.signal !== undefined ? { signal: options.signal } : {})) {
      if ('info' in part) {
        info = part.info;
        continue;
      }
      // Each message's buffer is fresh, so the chunker may keep views of it.
      take(chunker.push(part.data));
      if (!out.write(part.data)) await once(out, 'drain');
      written += part.data.length;
      options.onProgress?.(part.data.length);
    }
    take(chunker.finish());
    if (options.signal?.aborted === true) throw new CairnError('CAIRN_CANCELLED', 'download cancelled');
    if (info === undefined) throw new CairnError('CAIRN_INTERNAL', 'server sent no file description');
    if (written !== info.size) throw new CairnError('CAIRN_DATA_LOSS', `received ${written} bytes of ${remotePath}, expected ${info.size}`);
    const hash = whole.digest('hex');
    if (hash !== info.contentHash) throw new CairnError('CAIRN_DATA_LOSS', `content hash of ${remotePath} is ${hash}, the server says ${info.contentHash}`);
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    const mtime = new Date(info.mtimeMs);
    await utimes(tmpPath, mtime, mtime);
    return { info, tmpPath, chunks: Buffer.concat(list) };
  } catch (err) {
    out.destroy();
    await rm(tmpPath, { force: true });
    throw err;
  }
}
