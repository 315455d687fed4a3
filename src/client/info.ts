// A file version as the SDK returns it: the wire's FileInfo with sizes and times as numbers.
// Shared by the data calls (index.ts) and the tree calls (tree.ts).
import { CairnError } from '../common/errors.js';
import type { FileInfo__Output } from '../gen/cairn/v1/FileInfo.js';

/** A file version as the SDK returns it (sizes and times as numbers). */
export interface FileInfo {
  readonly path: string;
  readonly version: number;
  readonly size: number;
  readonly contentHash: string;
  readonly mtimeMs: number;
  readonly createdMs: number;
  readonly chunkCount: number;
  readonly revision: number;
}

export function toInfo(f: FileInfo__Output | null | undefined): FileInfo {
  if (!f) throw new CairnError('CAIRN_INTERNAL', 'server sent no file description');
  return {
    path: f.path,
    version: Number(f.version),
    size: Number(f.size),
    contentHash: f.content_hash,
    mtimeMs: Number(f.mtime_ms),
    createdMs: Number(f.created_ms),
    chunkCount: f.chunk_count,
    revision: Number(f.revision),
  };
}
