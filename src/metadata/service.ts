// The Metadata gRPC service: translates wire messages to model calls. Gateways call it on
// behalf of an authenticated tenant, so the tenant travels in the request.
import { unary } from '../common/grpc-server.js';
import { wireInt } from '../common/wire.js';
import type { ChunkRef } from '../gen/cairn/v1/ChunkRef.js';
import type { FileVersion } from '../gen/cairn/v1/FileVersion.js';
import type { MetadataHandlers } from '../gen/cairn/v1/Metadata.js';
import type { Kv } from './kv/types.js';
import { commitFile, getFile, type VersionRecord } from './model/files.js';

export function toWireVersion(v: VersionRecord): FileVersion {
  return {
    tenant: v.tenant,
    path: v.path,
    version: v.version,
    size: v.size,
    content_hash: v.contentHash,
    mtime_ms: v.mtimeMs,
    created_ms: v.createdMs,
    author_device: v.authorDevice,
    revision: v.revision,
    chunks: v.chunks.map((c): ChunkRef => ({ plain_hash: c.plainHash, offset: c.offset, size: c.size, address: c.address, stored_size: c.storedSize })),
  };
}

export function metadataHandlers(kv: Kv, options: { maxFileBytes?: number } = {}): MetadataHandlers {
  return {
    CommitFile: unary(async (req) => {
      const record = await commitFile(kv, {
        tenant: req.tenant,
        path: req.path,
        baseVersion: req.base_version === undefined ? undefined : wireInt(req.base_version, 'base_version'),
        size: wireInt(req.size, 'size'),
        mtimeMs: wireInt(req.mtime_ms, 'mtime_ms'),
        authorDevice: req.author_device,
        chunks: req.chunks.map((c, i) => ({
          plainHash: c.plain_hash,
          offset: wireInt(c.offset, `chunks[${i}].offset`),
          size: c.size,
          address: c.address,
          storedSize: c.stored_size,
        })),
      }, options.maxFileBytes);
      return { file: toWireVersion(record) };
    }),
    GetFile: unary(async (req) => {
      const record = await getFile(kv, req.tenant, req.path, wireInt(req.version, 'version'));
      return { file: toWireVersion(record) };
    }),
  };
}
