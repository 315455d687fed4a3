// Parallel ranged downloads: a large read is split into windows fetched over several ReadFile
// streams at once (each pinned to one version) and written in place, so the gateway's block
// fetches for different windows overlap.
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { CairnError } from '../common/errors.js';
import type { FileInfo } from './info.js';

/** Reads below this size use one stream. */
export const PARALLEL_MIN_BYTES = 32 * 1024 * 1024;
const WINDOW_BYTES = 16 * 1024 * 1024;
const WRITE_RUN_BYTES = 1024 * 1024;

type Read = (path: string, options: { version: number; offset: number; limit: number; signal?: AbortSignal }) => AsyncGenerator<{ info: FileInfo } | { data: Buffer; offset: number }>;

export async function parallelGet(read: Read, info: FileInfo, localPath: string, start: number, end: number, streams: number, options: { signal?: AbortSignal; onProgress?: (done: number, total: number | undefined) => void }): Promise<FileInfo> {
  const tmp = `${localPath}.cairn-${randomBytes(4).toString('hex')}.part`;
  const fh = await open(tmp, 'w');
  let ok = false;
  try {
    const windows: Array<[number, number]> = [];
    for (let at = start; at < end; at += WINDOW_BYTES) windows.push([at, Math.min(end, at + WINDOW_BYTES)]);
    let next = 0;
    let done = 0;
    const worker = async (): Promise<void> => {
      for (let w = windows[next++]; w !== undefined; w = windows[next++]) {
        const [from, to] = w;
        let at = from;
        // Pieces are written in runs of up to WRITE_RUN_BYTES with one writev, not one write each.
        let run: Buffer[] = [];
        let runAt = at;
        let runBytes = 0;
        const flush = async (): Promise<void> => {
          if (runBytes === 0) return;
          const bufs = run;
          let position = runAt - start;
          run = [];
          runAt += runBytes;
          runBytes = 0;
          while (bufs.length > 0) {
            const { bytesWritten } = await fh.writev(bufs, position);
            if (bytesWritten === 0) throw new CairnError('CAIRN_INTERNAL', `could not write ${localPath}`);
            position += bytesWritten;
            // A short write: keep what is left.
            for (let skip = bytesWritten; skip > 0; ) {
              const head = bufs[0]!;
              if (head.length <= skip) {
                skip -= head.length;
                bufs.shift();
              } else {
                bufs[0] = head.subarray(skip);
                skip = 0;
              }
            }
          }
        };
        for await (const part of read(info.path, { version: info.version, offset: from, limit: to - from, ...(options.signal ? { signal: options.signal } : {}) })) {
          if ('info' in part) continue;
          if (part.offset !== at) throw new CairnError('CAIRN_DATA_LOSS', `expected bytes at ${at}, got ${part.offset}`);
          run.push(part.data);
          runBytes += part.data.length;
          at += part.data.length;
          if (runBytes >= WRITE_RUN_BYTES) await flush();
          done += part.data.length;
          options.onProgress?.(done, end - start);
        }
        await flush();
        if (at !== to) throw new CairnError('CAIRN_DATA_LOSS', `window ${from}-${to} ended at ${at}`);
      }
    };
    await Promise.all(Array.from({ length: Math.min(streams, windows.length) }, worker));
    await fh.close();
    await rename(tmp, localPath);
    ok = true;
    return info;
  } finally {
    if (!ok) {
      await fh.close().catch(() => undefined);
      await rm(tmp, { force: true });
    }
  }
}
