// Chunk-level uploads for clients that chunk themselves: FindMissingChunks asks the tenant's own
// chunk index, UploadChunks verifies, seals, stores and pins chunks under an upload session, and
// CommitFile turns a list of the tenant's chunks into a version.
import { createHash } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { CairnError } from '../common/errors.js';
import { clientStream, principalOf, unary, type CallContext } from '../common/grpc-server.js';
import { normalizePath } from '../common/paths.js';
import { wireInt } from '../common/wire.js';
import type { ChunkRef } from '../gen/cairn/v1/ChunkRef.js';
import type { UploadChunksRequest__Output } from '../gen/cairn/v1/UploadChunksRequest.js';
import type { UploadChunksResponse } from '../gen/cairn/v1/UploadChunksResponse.js';
import type { FilesHandlers } from '../gen/cairn/v1/Files.js';
import type { MetadataClient } from '../metadata/index.js';
import { BlockUploader, chunkHead, toFileInfo, type FilesServiceOptions } from './files.js';
import { sealMany, type SealInput } from './seal-pool.js';
import { CHUNK_SESSION_PATH, SESSION_PERMISSIONS, sessionHandlers, type SessionHandlers } from './sessions.js';

export const MAX_FIND_HASHES = 4096;
export const MAX_CHUNK_BYTES = 4 * 1024 * 1024;
export const MAX_COMMIT_CHUNKS = 1_000_000;
/** Hashes per metadata FindChunks call (its limit is 10,000). */
const FIND_BATCH = 4096;
/** The path recorded on chunk-upload sessions; they only hold pins and are never committed. */
const SESSION_PATH = CHUNK_SESSION_PATH;
/** Splices per diff commit. */
export const MAX_SPLICES = 100_000;

/** Chunk-level uploads and (from sessions.ts) resumable byte sessions. */
export type ChunkHandlers = Pick<FilesHandlers, 'FindMissingChunks' | 'UploadChunks' | 'CommitFile'> & SessionHandlers;

export const CHUNK_PERMISSIONS = { FindMissingChunks: 'write', UploadChunks: 'write', CommitFile: 'write', ...SESSION_PERMISSIONS } as const;

function sha256(data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest();
}

function checkHash(hash: Buffer, field: string): void {
  if (hash.length !== 32) throw new CairnError('CAIRN_INVALID_HASH', `${field} must be 32 bytes`, { fieldViolations: [{ field, description: 'must be 32 bytes' }] });
}

function hashMismatch(i: number, hash: Buffer): CairnError {
  return new CairnError('CAIRN_HASH_MISMATCH', `chunks[${i}]: sha256(data) is not plain_hash ${hash.toString('hex')}`, { metadata: { plain_hash: hash.toString('hex') } });
}

/** The subset of `hashes` the tenant's chunk index lacks, in order, each once. */
async function missingOf(metadata: MetadataClient, tenant: string, hashes: readonly Buffer[], requestId: string): Promise<Buffer[]> {
  const unique = [...new Map(hashes.map((h) => [h.toString('hex'), h])).values()];
  const have = new Set<string>();
  for (let i = 0; i < unique.length; i += FIND_BATCH) {
    const found = await metadata.findChunks({ tenant, plain_hashes: unique.slice(i, i + FIND_BATCH) }, requestId);
    for (const c of found.chunks) have.add(c.plain_hash.toString('hex'));
  }
  return unique.filter((h) => !have.has(h.toString('hex')));
}

async function uploadChunks(call: grpc.ServerReadableStream<UploadChunksRequest__Output, UploadChunksResponse>, ctx: CallContext, options: FilesServiceOptions): Promise<UploadChunksResponse> {
  const { tenant, subject } = principalOf(ctx);
  const key = await options.keys.get(tenant);
  let sessionId = '';
  let offset = 0;
  let received = 0;
  let stored = 0;
  let storedBytes = 0;
  let first = true;
  for await (const msg of call as AsyncIterable<UploadChunksRequest__Output>) {
    if (!first && msg.upload_id !== '') throw new CairnError('CAIRN_INVALID_ARGUMENT', 'only the first UploadChunks message may carry upload_id');
    if (first && msg.upload_id !== '') {
      const res = await options.metadata.getUploadSession({ tenant, session_id: msg.upload_id }, ctx.requestId);
      if (res.session?.path !== SESSION_PATH) throw new CairnError('CAIRN_NOT_FOUND', `no chunk upload ${msg.upload_id}`);
      sessionId = msg.upload_id;
      offset = wireInt(res.session.offset, 'offset');
    }
    first = false;
    // Check the whole message before storing any of it: shapes here; each chunk's hash below, in
    // the seal worker for the chunks it seals and here for the rest, before the first block write.
    msg.chunks.forEach((c, i) => {
      checkHash(c.plain_hash, `chunks[${i}].plain_hash`);
      if (c.data.length === 0 || c.data.length > MAX_CHUNK_BYTES) throw new CairnError('CAIRN_INVALID_ARGUMENT', `chunks[${i}].data must be 1..${MAX_CHUNK_BYTES} bytes`, { fieldViolations: [{ field: `chunks[${i}].data`, description: 'size out of range' }] });
    });
    if (msg.chunks.length === 0) continue;
    received += msg.chunks.length;
    // Before this message's block writes: the pins tell metadata since when they were written.
    const blocksSinceMs = Date.now();
    const missing = new Set((await missingOf(options.metadata, tenant, msg.chunks.map((c) => c.plain_hash), ctx.requestId)).map((h) => h.toString('hex')));
    const uploader = new BlockUploader(options.blocks);
    const refs: ChunkRef[] = [];
    const toSeal: SealInput[] = [];
    const sealedFrom: number[] = [];
    const slot = new Map<string, number>();
    msg.chunks.forEach((c, i) => {
      const hex = c.plain_hash.toString('hex');
      if (missing.has(hex) && !slot.has(hex)) {
        slot.set(hex, toSeal.length);
        toSeal.push({ hash: c.plain_hash, data: c.data });
        sealedFrom.push(i);
      } else if (!sha256(c.data).equals(c.plain_hash)) {
        // Known chunks and repeats are not sealed, but their bytes must match their names too.
        throw hashMismatch(i, c.plain_hash);
      }
    });
    const sealed = await sealMany(key, toSeal, { mismatch: (k) => hashMismatch(sealedFrom[k]!, toSeal[k]!.hash) });
    for (const s of sealed) {
      await uploader.add(s.address, s.sealed);
      stored++;
      storedBytes += s.sealed.length;
    }
    for (const c of msg.chunks) {
      const k = slot.get(c.plain_hash.toString('hex'));
      const s = k === undefined ? undefined : sealed[k];
      // Known chunks are pinned too (empty address: the index's entry), so they outlive the
      // tenant's other references until the commit.
      refs.push({ plain_hash: c.plain_hash, offset, size: c.data.length, address: s?.address ?? Buffer.alloc(0), stored_size: s?.sealed.length ?? 0 });
      offset += c.data.length;
    }
    // Blocks are durable before the index names them.
    await uploader.finish();
    if (sessionId === '') {
      const created = await options.metadata.createUploadSession({ tenant, path: SESSION_PATH, mtime_ms: 0, author_device: subject }, ctx.requestId);
      if (created.session == null) throw new CairnError('CAIRN_INTERNAL', 'CreateUploadSession returned no session');
      sessionId = created.session.session_id;
    }
    const start = offset - refs.reduce((n, r) => n + Number(r.size), 0);
    await options.metadata.appendUploadChunks({ tenant, session_id: sessionId, offset: start, chunks: refs, blocks_since_ms: blocksSinceMs }, ctx.requestId);
  }
  if (ctx.signal.aborted) throw new CairnError('CAIRN_CANCELLED', 'upload cancelled');
  return { upload_id: sessionId, chunks_received: received, chunks_stored: stored, stored_bytes: storedBytes };
}

/** The base list with the splices applied; splices are checked for order and bounds first. */
export function applySplices<T>(base: readonly T[], splices: ReadonlyArray<{ start: number; delete_count: number; insert: readonly T[] }>): T[] {
  if (splices.length > MAX_SPLICES) throw new CairnError('CAIRN_INVALID_ARGUMENT', `at most ${MAX_SPLICES} splices per diff`, { fieldViolations: [{ field: 'diff.splices', description: 'too many' }] });
  const out: T[] = [];
  let next = 0;
  splices.forEach((sp, i) => {
    if (sp.start < next || sp.start + sp.delete_count > base.length) {
      throw new CairnError('CAIRN_INVALID_ARGUMENT', `diff.splices[${i}] (start ${sp.start}, delete ${sp.delete_count}) overlaps an earlier splice or runs past the base list of ${base.length} chunks`, { fieldViolations: [{ field: `diff.splices[${i}]`, description: 'out of order or out of range' }] });
    }
    for (let j = next; j < sp.start; j++) out.push(base[j]!);
    out.push(...sp.insert);
    next = sp.start + sp.delete_count;
  });
  for (let j = next; j < base.length; j++) out.push(base[j]!);
  return out;
}

export function chunkHandlers(options: FilesServiceOptions): ChunkHandlers {
  return {
    FindMissingChunks: unary(async (req, ctx) => {
      const { tenant } = principalOf(ctx);
      if (req.plain_hashes.length > MAX_FIND_HASHES) throw new CairnError('CAIRN_INVALID_ARGUMENT', `at most ${MAX_FIND_HASHES} hashes per call`, { fieldViolations: [{ field: 'plain_hashes', description: 'too many' }] });
      req.plain_hashes.forEach((h, i) => checkHash(h, `plain_hashes[${i}]`));
      return { missing: await missingOf(options.metadata, tenant, req.plain_hashes, ctx.requestId) };
    }),

    UploadChunks: clientStream((call, ctx) => uploadChunks(call, ctx, options)),

    ...sessionHandlers(options),

    CommitFile: unary(async (req, ctx) => {
      const { tenant, subject } = principalOf(ctx);
      const path = normalizePath(req.path);
      const baseVersion = req.base_version === undefined ? undefined : wireInt(req.base_version, 'base_version');
      const mtimeMs = wireInt(req.mtime_ms, 'mtime_ms');
      let listed: Array<{ plain_hash: Buffer; size: number }>;
      let inserted: Buffer[];
      if (req.diff != null) {
        if (req.chunks.length > 0) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'give either chunks or diff, not both', { fieldViolations: [{ field: 'diff', description: 'with chunks' }] });
        if (baseVersion === undefined || baseVersion < 1) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'a diff commit needs base_version ≥ 1', { fieldViolations: [{ field: 'base_version', description: 'required with diff' }] });
        const base = await options.metadata.getFile({ tenant, path, version: baseVersion }, ctx.requestId).catch((err: unknown) => {
          if (err instanceof CairnError && err.code === 'CAIRN_NOT_FOUND') throw new CairnError('CAIRN_CONFLICT', `${path} has no version ${baseVersion} to apply the diff to`, { metadata: { current_version: '0' } });
          throw err;
        });
        listed = applySplices(base.chunks.map((c) => ({ plain_hash: c.plain_hash, size: c.size })), req.diff.splices);
        inserted = req.diff.splices.flatMap((sp) => sp.insert.map((c) => c.plain_hash));
      } else {
        listed = req.chunks;
        inserted = req.chunks.map((c) => c.plain_hash);
      }
      if (listed.length > MAX_COMMIT_CHUNKS) throw new CairnError('CAIRN_INVALID_ARGUMENT', `at most ${MAX_COMMIT_CHUNKS} chunks per file`, { fieldViolations: [{ field: 'chunks', description: 'too many' }] });
      let size = 0;
      const refs: ChunkRef[] = listed.map((c, i) => {
        checkHash(c.plain_hash, `chunks[${i}].plain_hash`);
        if (!Number.isInteger(c.size) || c.size < 1 || c.size > MAX_CHUNK_BYTES) throw new CairnError('CAIRN_INVALID_ARGUMENT', `chunks[${i}].size must be 1..${MAX_CHUNK_BYTES}`, { fieldViolations: [{ field: `chunks[${i}].size`, description: 'out of range' }] });
        const ref = { plain_hash: c.plain_hash, offset: size, size: c.size, address: Buffer.alloc(0), stored_size: 0 };
        size += c.size;
        return ref;
      });
      if (size > options.maxFileBytes) throw new CairnError('CAIRN_FILE_TOO_LARGE', `file of ${size} bytes exceeds the limit of ${options.maxFileBytes} bytes`);
      for (const id of req.upload_ids) if (typeof id !== 'string' || id === '' || id.length > 200) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'upload_ids must be non-empty ids', { fieldViolations: [{ field: 'upload_ids', description: 'invalid id' }] });
      // A diff's base chunks are held by the base version; metadata checks them again at commit.
      const missing = await missingOf(options.metadata, tenant, inserted, ctx.requestId);
      if (missing.length > 0) {
        const shown = missing.slice(0, 16).map((h) => h.toString('hex'));
        throw new CairnError('CAIRN_FAILED_PRECONDITION', `${missing.length} chunk(s) are not stored for this tenant; upload them first: ${shown.join(', ')}${missing.length > shown.length ? ', …' : ''}`, { metadata: { missing: shown.join(','), missing_count: String(missing.length) } });
      }
      const first = refs[0];
      const head = options.sniffMedia !== undefined && first !== undefined ? await chunkHead(options, tenant, first.plain_hash as Buffer, ctx.requestId, ctx.signal).catch(() => undefined) : undefined;
      const mediaKind = head !== undefined ? options.sniffMedia?.(head) : undefined;
      const version = await options.metadata.commitFile({
        tenant,
        path,
        ...(baseVersion !== undefined ? { base_version: baseVersion } : {}),
        size,
        mtime_ms: mtimeMs,
        author_device: subject,
        chunks: refs,
        ...(mediaKind !== undefined ? { media_kind: mediaKind } : {}),
      }, ctx.requestId);
      // The version holds refs now; the uploads' pins can go. A failure here only delays that to
      // the session's expiry, so it does not fail the commit.
      for (const id of new Set(req.upload_ids)) {
        await options.metadata.abortUploadSession({ tenant, session_id: id }, ctx.requestId).catch((err: unknown) => ctx.log.warn({ err, upload_id: id }, 'could not release an upload after commit'));
      }
      ctx.log.info({ path, version: version.version, bytes: size, chunks: refs.length }, 'file committed from chunks');
      return { file: toFileInfo(version) };
    }),
  };
}
