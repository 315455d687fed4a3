// Local content hashes computed the way the server does: FastCDC chunks (the gateway's default
// sizes), SHA-256 per chunk, SHA-256 over the chunk hashes. Equal hashes mean equal content, so
// the sync client can compare a local file with a remote version without downloading it.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Chunker } from '../chunking/index.js';

export interface LocalHash {
  /** Hex SHA-256 over the chunk hashes (the server's content hash). */
  readonly hash: string;
  /** The chunk hashes, 32 bytes each, in order. */
  readonly chunks: Buffer;
  readonly size: number;
}

export async function hashFile(path: string, signal?: AbortSignal): Promise<LocalHash> {
  const chunker = new Chunker();
  const whole = createHash('sha256');
  const list: Buffer[] = [];
  let size = 0;
  const take = (pieces: Buffer[]): void => {
    for (const c of pieces) {
      const h = createHash('sha256').update(c).digest();
      whole.update(h);
      list.push(h);
    }
  };
  for await (const piece of createReadStream(path, { highWaterMark: 1024 * 1024, ...(signal !== undefined ? { signal } : {}) }) as AsyncIterable<Buffer>) {
    size += piece.length;
    take(chunker.push(piece));
  }
  take(chunker.finish());
  return { hash: whole.digest('hex'), chunks: Buffer.concat(list), size };
}

/** How many chunks of `next` are not in `previous` (both lists of 32-byte hashes). */
export function newChunkCount(previous: Buffer | undefined, next: Buffer): number {
  const known = new Set<string>();
  if (previous !== undefined) for (let i = 0; i + 32 <= previous.length; i += 32) known.add(previous.subarray(i, i + 32).toString('hex'));
  let n = 0;
  for (let i = 0; i + 32 <= next.length; i += 32) if (!known.has(next.subarray(i, i + 32).toString('hex'))) n++;
  return n;
}
