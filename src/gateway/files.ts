// The public Files service: UploadFile chunks a byte stream (FastCDC), stores each chunk as a
// block and commits the version in metadata; ReadFile streams a byte range back, fetching
// blocks ahead of the client and verifying every block against its address.
import { createHash } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { Chunker, type ChunkerOptions } from '../chunking/index.js';
import { CairnError } from '../common/errors.js';
import { clientStream, principalOf, send, serverStream, unary, type CallContext } from '../common/grpc-server.js';
import { normalizePath } from '../common/paths.js';
import { wireInt } from '../common/wire.js';
import type { ChunkRef } from '../gen/cairn/v1/ChunkRef.js';
import type { FileInfo } from '../gen/cairn/v1/FileInfo.js';
import type { FileVersion__Output } from '../gen/cairn/v1/FileVersion.js';
import type { UploadFileRequest__Output } from '../gen/cairn/v1/UploadFileRequest.js';
import type { UploadFileResponse } from '../gen/cairn/v1/UploadFileResponse.js';
import type { BlockAccess } from '../blocknode/index.js';
import type { FilesDataHandlers } from './tree.js';
import type { MetadataClient } from '../metadata/index.js';

export const MAX_DATA_MESSAGE_BYTES = 1024 * 1024;
/** Bytes of blocks sent to block nodes per PutBlocks call. */
const FLUSH_BYTES = 8 * 1024 * 1024;
/** PutBlocks calls in flight per upload: overlaps chunking/hashing with block-node fsyncs. */
const MAX_INFLIGHT_FLUSHES = 3;
/** Blocks requested per GetBlocks call, and batches fetched ahead of the one being sent. */
const READ_BATCH = 32;
const READ_AHEAD = 2;

export interface FilesServiceOptions {
  readonly metadata: MetadataClient;
  readonly blocks: BlockAccess;
  readonly maxFileBytes: number;
  readonly chunker?: ChunkerOptions;
}

function sha256(data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest();
}

export function toFileInfo(v: FileVersion__Output): FileInfo {
  return {
    path: v.path,
    version: v.version,
    size: v.size,
    content_hash: v.content_hash.toString('hex'),
    mtime_ms: v.mtime_ms,
    created_ms: v.created_ms,
    chunk_count: v.chunks.length,
    revision: v.revision,
  };
}

class BlockUploader {
  readonly #blocks: BlockAccess;
  readonly #seen = new Set<string>();
  #pending: Array<{ address: Buffer; data: Buffer }> = [];
  #pendingBytes = 0;
  readonly #inflight = new Set<Promise<void>>();
  #failure: unknown;

  constructor(blocks: BlockAccess) {
    this.#blocks = blocks;
  }

  async add(address: Buffer, data: Buffer): Promise<void> {
    this.#throwIfFailed();
    const key = address.toString('hex');
    if (this.#seen.has(key)) return;
    this.#seen.add(key);
    this.#pending.push({ address, data });
    this.#pendingBytes += data.length;
    if (this.#pendingBytes >= FLUSH_BYTES) await this.#flush();
  }

  async finish(): Promise<void> {
    await this.#flush();
    await Promise.allSettled([...this.#inflight]);
    this.#throwIfFailed();
  }

  async #flush(): Promise<void> {
    if (this.#pending.length === 0) return;
    const batch = this.#pending;
    this.#pending = [];
    this.#pendingBytes = 0;
    while (this.#inflight.size >= MAX_INFLIGHT_FLUSHES) await Promise.race(this.#inflight);
    this.#throwIfFailed();
    const p: Promise<void> = this.#blocks.putBlocks(batch).then(
      () => undefined,
      (err: unknown) => {
        this.#failure ??= err;
      },
    ).finally(() => this.#inflight.delete(p));
    this.#inflight.add(p);
  }

  #throwIfFailed(): void {
    const failure = this.#failure;
    if (failure === undefined) return;
    throw failure instanceof Error ? failure : new CairnError('CAIRN_INTERNAL', 'block upload failed');
  }
}

async function upload(call: grpc.ServerReadableStream<UploadFileRequest__Output, UploadFileResponse>, ctx: CallContext, options: FilesServiceOptions): Promise<UploadFileResponse> {
  const principal = principalOf(ctx);
  const iterator = (call as AsyncIterable<UploadFileRequest__Output>)[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done === true || first.value.header == null) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'the first UploadFile message must be a header');
  const header = first.value.header;
  // Validate everything knowable up front, so bad input stores nothing.
  const path = normalizePath(header.path);
  const expectedSize = header.size === undefined ? undefined : wireInt(header.size, 'header.size');
  const baseVersion = header.base_version === undefined ? undefined : wireInt(header.base_version, 'header.base_version');
  const mtimeMs = wireInt(header.mtime_ms, 'header.mtime_ms');
  if (expectedSize !== undefined && expectedSize > options.maxFileBytes) {
    throw new CairnError('CAIRN_FILE_TOO_LARGE', `file of ${expectedSize} bytes exceeds the limit of ${options.maxFileBytes} bytes`);
  }

  const chunker = new Chunker(options.chunker);
  const uploader = new BlockUploader(options.blocks);
  const chunks: ChunkRef[] = [];
  let offset = 0;
  const addChunk = async (chunk: Buffer): Promise<void> => {
    const plainHash = sha256(chunk);
    // Blocks are stored as plain chunks for now, so the block address is the plain hash;
    // sealing (compress + encrypt) changes the stored bytes and thus the address.
    chunks.push({ plain_hash: plainHash, offset, size: chunk.length, address: plainHash, stored_size: chunk.length });
    offset += chunk.length;
    await uploader.add(plainHash, chunk);
  };

  let received = 0;
  for (let next = await iterator.next(); next.done !== true; next = await iterator.next()) {
    const msg = next.value;
    if (msg.header != null) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'only the first UploadFile message may be a header');
    const data = msg.data ?? Buffer.alloc(0);
    if (data.length > MAX_DATA_MESSAGE_BYTES) throw new CairnError('CAIRN_INVALID_ARGUMENT', `data messages are limited to ${MAX_DATA_MESSAGE_BYTES} bytes`);
    received += data.length;
    if (received > options.maxFileBytes) throw new CairnError('CAIRN_FILE_TOO_LARGE', `file exceeds the limit of ${options.maxFileBytes} bytes`);
    if (expectedSize !== undefined && received > expectedSize) throw new CairnError('CAIRN_SIZE_MISMATCH', `received more than the announced ${expectedSize} bytes`);
    for (const chunk of chunker.push(data)) await addChunk(chunk);
  }
  if (ctx.signal.aborted) throw new CairnError('CAIRN_CANCELLED', 'upload cancelled');
  if (expectedSize !== undefined && received !== expectedSize) throw new CairnError('CAIRN_SIZE_MISMATCH', `announced ${expectedSize} bytes, received ${received}`);
  for (const chunk of chunker.finish()) await addChunk(chunk);
  await uploader.finish();

  const version = await options.metadata.commitFile({
    tenant: principal.tenant,
    path,
    ...(baseVersion !== undefined ? { base_version: baseVersion } : {}),
    size: received,
    mtime_ms: mtimeMs,
    author_device: principal.subject,
    chunks,
  }, ctx.requestId);
  ctx.log.info({ path, version: version.version, bytes: received, chunks: chunks.length }, 'file committed');
  return { file: toFileInfo(version) };
}

/** Index of the chunk containing byte `offset` (chunks are sorted and contiguous). */
function chunkIndexAt(chunks: readonly { offset: string }[], offset: number): number {
  let lo = 0;
  let hi = chunks.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (Number(chunks[mid]?.offset) <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

async function fetchBatch(blocks: BlockAccess, addresses: Buffer[], signal: AbortSignal): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for await (const b of blocks.getBlocks(addresses, signal)) {
    if (b.data === undefined) continue;
    if (!sha256(b.data).equals(b.address)) continue; // a bad copy counts as missing
    out.set(b.address.toString('hex'), b.data);
  }
  return out;
}

/** The data half of Files; the tree half (List, Move, …) is `treeHandlers` in tree.ts. */
export function filesHandlers(options: FilesServiceOptions): FilesDataHandlers {
  return {
    UploadFile: clientStream((call, ctx) => upload(call, ctx, options)),

    ReadFile: serverStream(async (req, call, ctx) => {
      const principal = principalOf(ctx);
      const path = normalizePath(req.path);
      const offset = wireInt(req.offset, 'offset');
      const limit = wireInt(req.limit, 'limit');
      const version = await options.metadata.getFile({ tenant: principal.tenant, path, version: wireInt(req.version, 'version') }, ctx.requestId);
      const size = Number(version.size);
      if (offset > size) throw new CairnError('CAIRN_OUT_OF_RANGE', `offset ${offset} is past the end of ${path} (${size} bytes)`);
      const end = limit === 0 ? size : Math.min(size, offset + limit);
      await send(call, { file: toFileInfo(version) }, ctx.signal);
      if (end === offset) return;

      const chunks = version.chunks;
      const first = chunkIndexAt(chunks, offset);
      const wanted: typeof chunks = [];
      for (let i = first; i < chunks.length && Number(chunks[i]?.offset) < end; i++) wanted.push(chunks[i]!);
      const batches: Array<typeof chunks> = [];
      for (let i = 0; i < wanted.length; i += READ_BATCH) batches.push(wanted.slice(i, i + READ_BATCH));

      const fetches: Array<Promise<Map<string, Buffer>>> = [];
      const start = (i: number): void => {
        const batch = batches[i];
        if (batch === undefined || fetches[i] !== undefined) return;
        const p = fetchBatch(options.blocks, [...new Map(batch.map((c) => [c.address.toString('hex'), c.address])).values()], ctx.signal);
        p.catch(() => undefined); // awaited in order below; avoid an unhandled rejection meanwhile
        fetches[i] = p;
      };
      for (let i = 0; i <= READ_AHEAD; i++) start(i);
      for (let i = 0; i < batches.length; i++) {
        start(i + READ_AHEAD);
        const got = await fetches[i]!;
        for (const c of batches[i]!) {
          const data = got.get(c.address.toString('hex'));
          if (data === undefined) throw new CairnError('CAIRN_DATA_LOSS', `block ${c.address.toString('hex')} of ${path} is unavailable or corrupt on every replica`);
          const chunkStart = Number(c.offset);
          const from = Math.max(offset, chunkStart) - chunkStart;
          const to = Math.min(end, chunkStart + data.length) - chunkStart;
          await send(call, { data: data.subarray(from, to), offset: chunkStart + from }, ctx.signal);
        }
        fetches[i] = Promise.resolve(new Map<string, Buffer>()); // release the batch's memory
      }
    }),

    Stat: unary(async (req, ctx) => {
      const principal = principalOf(ctx);
      const version = await options.metadata.getFile({ tenant: principal.tenant, path: normalizePath(req.path), version: wireInt(req.version, 'version') }, ctx.requestId);
      return { file: toFileInfo(version) };
    }),
  };
}
