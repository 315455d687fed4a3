// Resumable uploads with ByteStream semantics: a session lives in the metadata service, so any
// gateway can continue it; bytes are cut by FastCDC and each batch of chunks is sealed, stored and
// appended to the session, whose offset (always a chunk boundary) is where the client resumes.
import { createHash } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { Chunker } from '../chunking/index.js';
import { CairnError } from '../common/errors.js';
import { clientStream, principalOf, unary, type CallContext } from '../common/grpc-server.js';
import { normalizePath } from '../common/paths.js';
import { wireInt } from '../common/wire.js';
import type { ChunkRef } from '../gen/cairn/v1/ChunkRef.js';
import type { FilesHandlers } from '../gen/cairn/v1/Files.js';
import type { UploadSession__Output } from '../gen/cairn/v1/UploadSession.js';
import type { WriteUploadRequest__Output } from '../gen/cairn/v1/WriteUploadRequest.js';
import type { WriteUploadResponse } from '../gen/cairn/v1/WriteUploadResponse.js';
import { BlockUploader, MAX_DATA_MESSAGE_BYTES, chunkHead, toFileInfo, type FilesServiceOptions } from './files.js';
import { sealMany, type SealInput } from './seal-pool.js';

/** The path chunk-level upload sessions record (chunks.ts); they are not byte sessions. */
export const CHUNK_SESSION_PATH = '/.cairn-chunk-upload';
/** Chunked bytes stored and appended to the session per checkpoint. */
const CHECKPOINT_BYTES = 4 * 1024 * 1024;
/** Checkpoints being stored at once (appends stay in order). */
const MAX_INFLIGHT_CHECKPOINTS = 2;
/** A stream quiet for this long gets its chunked bytes checkpointed, so QueryUpload sees them. */
const IDLE_CHECKPOINT_MS = 50;

export type SessionHandlers = Pick<FilesHandlers, 'StartUpload' | 'QueryUpload' | 'WriteUpload' | 'FinishUpload' | 'AbortUpload'>;

export const SESSION_PERMISSIONS = { StartUpload: 'write', QueryUpload: 'write', WriteUpload: 'write', FinishUpload: 'write', AbortUpload: 'write' } as const;

function sha256(data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest();
}

function checkUploadId(id: string): void {
  if (typeof id !== 'string' || id === '' || id.length > 64) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'upload_id must be the id StartUpload returned', { fieldViolations: [{ field: 'upload_id', description: 'malformed' }] });
}

/** The caller's byte session `id` (chunk-upload sessions and other tenants' sessions are NOT_FOUND). */
async function loadSession(options: FilesServiceOptions, tenant: string, id: string, requestId: string): Promise<UploadSession__Output> {
  checkUploadId(id);
  const res = await options.metadata.getUploadSession({ tenant, session_id: id }, requestId);
  if (res.session == null || res.session.path === CHUNK_SESSION_PATH) throw new CairnError('CAIRN_NOT_FOUND', `no upload ${id}`);
  return res.session;
}

interface Checkpoint {
  readonly start: number;
  readonly refs: ChunkRef[];
  readonly data: Buffer[];
  /** Wall clock before the checkpoint's first block write (sent with its pins). */
  blocksSinceMs?: number;
}

/**
 * Stores chunks of one session in order. Each checkpoint is deduplicated against the tenant's
 * index, sealed, written to the block nodes and then appended to the session; the next one is
 * prepared meanwhile, but appends happen strictly in file order.
 */
class SessionWriter {
  readonly #options: FilesServiceOptions;
  readonly #tenant: string;
  readonly #key: Buffer;
  readonly #id: string;
  readonly #requestId: string;
  /** Durable end of the session (advances as appends complete). */
  committed: number;
  /** End of the chunks handed to add(). */
  #end: number;
  #batch: Checkpoint;
  #batchBytes = 0;
  #lastAppend: Promise<void> = Promise.resolve();
  readonly #inflight: Array<Promise<void>> = [];
  storedBytes = 0;

  constructor(options: FilesServiceOptions, tenant: string, key: Buffer, id: string, offset: number, requestId: string) {
    this.#options = options;
    this.#tenant = tenant;
    this.#key = key;
    this.#id = id;
    this.#requestId = requestId;
    this.committed = offset;
    this.#end = offset;
    this.#batch = { start: offset, refs: [], data: [] };
  }

  get pending(): boolean {
    return this.#batch.refs.length > 0;
  }

  async add(chunk: Buffer): Promise<void> {
    this.#batch.refs.push({ plain_hash: sha256(chunk), offset: this.#end, size: chunk.length });
    this.#batch.data.push(chunk);
    this.#end += chunk.length;
    this.#batchBytes += chunk.length;
    if (this.#batchBytes >= CHECKPOINT_BYTES) await this.checkpoint();
  }

  /** Starts storing the current batch; waits while too many are in flight. */
  async checkpoint(): Promise<void> {
    if (this.#batch.refs.length === 0) return;
    const batch = this.#batch;
    this.#batch = { start: this.#end, refs: [], data: [] };
    this.#batchBytes = 0;
    const stored = this.#store(batch);
    stored.catch(() => undefined);
    const previous = this.#lastAppend;
    const appended = (async () => {
      await stored;
      await previous;
      await this.#options.metadata.appendUploadChunks({ tenant: this.#tenant, session_id: this.#id, offset: batch.start, chunks: batch.refs, blocks_since_ms: batch.blocksSinceMs ?? 0 }, this.#requestId).catch((err: unknown) => {
        // Another stream moved the session meanwhile: say where it is now.
        if (err instanceof CairnError && err.code === 'CAIRN_FAILED_PRECONDITION' && err.metadata['offset'] !== undefined) {
          throw new CairnError('CAIRN_FAILED_PRECONDITION', `upload ${this.#id} was written by another stream; it continues at offset ${err.metadata['offset']}`, { metadata: { committed_offset: err.metadata['offset'] } });
        }
        throw err;
      });
      this.committed = batch.start + batch.refs.reduce((n, r) => n + Number(r.size), 0);
    })();
    appended.catch(() => undefined);
    this.#lastAppend = appended;
    this.#inflight.push(appended);
    while (this.#inflight.length > MAX_INFLIGHT_CHECKPOINTS) await this.#inflight.shift();
  }

  /** Stores everything added so far; rejects with the first failure. */
  async drain(): Promise<void> {
    await this.checkpoint();
    while (this.#inflight.length > 0) await this.#inflight.shift();
  }

  async #store(batch: Checkpoint): Promise<void> {
    batch.blocksSinceMs = Date.now();
    const unique = new Map(batch.refs.map((r) => [(r.plain_hash as Buffer).toString('hex'), r.plain_hash as Buffer]));
    const found = await this.#options.metadata.findChunks({ tenant: this.#tenant, plain_hashes: [...unique.values()] }, this.#requestId);
    const known = new Set(found.chunks.map((c) => c.plain_hash.toString('hex')));
    const uploader = new BlockUploader(this.#options.blocks);
    const toSeal: SealInput[] = [];
    const slot = new Map<string, number>();
    for (let i = 0; i < batch.refs.length; i++) {
      const hash = batch.refs[i]!.plain_hash as Buffer;
      const hex = hash.toString('hex');
      if (known.has(hex) || slot.has(hex)) continue;
      slot.set(hex, toSeal.length);
      toSeal.push({ hash, data: batch.data[i]! });
    }
    const sealed = await sealMany(this.#key, toSeal);
    for (const s of sealed) {
      this.storedBytes += s.sealed.length;
      await uploader.add(s.address, s.sealed);
    }
    for (const ref of batch.refs) {
      const k = slot.get((ref.plain_hash as Buffer).toString('hex'));
      // Known chunks are pinned through the index entry (empty address), like UploadFile's.
      const s = k === undefined ? undefined : sealed[k];
      ref.address = s?.address ?? Buffer.alloc(0);
      ref.stored_size = s?.sealed.length ?? 0;
    }
    // Blocks are durable before the session names them.
    await uploader.finish();
    batch.data.length = 0;
  }
}

const IDLE = Symbol('idle');

async function writeUpload(call: grpc.ServerReadableStream<WriteUploadRequest__Output, WriteUploadResponse>, ctx: CallContext, options: FilesServiceOptions): Promise<WriteUploadResponse> {
  const { tenant } = principalOf(ctx);
  const iterator = (call as AsyncIterable<WriteUploadRequest__Output>)[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done === true) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'WriteUpload needs a first message naming the upload');
  const head = first.value;
  const session = await loadSession(options, tenant, head.upload_id, ctx.requestId);
  const committed = wireInt(session.offset, 'offset');
  const writeOffset = wireInt(head.write_offset, 'write_offset');
  if (writeOffset !== committed) {
    throw new CairnError('CAIRN_OUT_OF_RANGE', `upload ${head.upload_id} continues at offset ${committed}, not ${writeOffset}`, { metadata: { committed_offset: String(committed) } });
  }
  const expected = session.expected_size == null ? undefined : wireInt(session.expected_size, 'expected_size');
  const key = await options.keys.get(tenant);
  const chunker = new Chunker(options.chunker);
  const writer = new SessionWriter(options, tenant, key, head.upload_id, committed, ctx.requestId);
  let received = committed;
  let finished = false;

  const accept = async (msg: WriteUploadRequest__Output, isFirst: boolean): Promise<void> => {
    if (finished) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'no message may follow one with finish_write');
    if (!isFirst && (msg.upload_id !== '' || wireInt(msg.write_offset, 'write_offset') !== 0)) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'only the first WriteUpload message may carry upload_id and write_offset');
    const data = msg.data;
    if (data.length > MAX_DATA_MESSAGE_BYTES) throw new CairnError('CAIRN_INVALID_ARGUMENT', `data messages are limited to ${MAX_DATA_MESSAGE_BYTES} bytes`);
    if (received + data.length > options.maxFileBytes) throw new CairnError('CAIRN_FILE_TOO_LARGE', `file exceeds the limit of ${options.maxFileBytes} bytes`);
    if (expected !== undefined && received + data.length > expected) throw new CairnError('CAIRN_SIZE_MISMATCH', `upload announced ${expected} bytes; this write ends at ${received + data.length}`, { metadata: { committed_offset: String(writer.committed) } });
    if (msg.finish_write && expected !== undefined && received + data.length !== expected) {
      throw new CairnError('CAIRN_SIZE_MISMATCH', `upload announced ${expected} bytes; finish_write at ${received + data.length}`, { metadata: { committed_offset: String(writer.committed) } });
    }
    received += data.length;
    for (const chunk of chunker.push(data)) await writer.add(chunk);
    if (msg.finish_write) {
      finished = true;
      for (const chunk of chunker.finish()) await writer.add(chunk);
    }
  };

  try {
    await accept(head, true);
    for (;;) {
      const next = iterator.next();
      next.catch(() => undefined);
      let r: IteratorResult<WriteUploadRequest__Output> | typeof IDLE;
      if (writer.pending) {
        let timer: NodeJS.Timeout | undefined;
        r = await Promise.race([next, new Promise<typeof IDLE>((resolve) => (timer = setTimeout(() => resolve(IDLE), IDLE_CHECKPOINT_MS)))]);
        clearTimeout(timer);
        if (r === IDLE) {
          await writer.checkpoint();
          r = await next;
        }
      } else {
        r = await next;
      }
      if (r.done === true) break;
      await accept(r.value, false);
    }
  } catch (err) {
    // A broken connection keeps what was already cut into chunks, so the client resends at most
    // the unchunked tail; bad input stores nothing more.
    if (!(err instanceof CairnError) || err.code === 'CAIRN_CANCELLED') await writer.drain().catch(() => undefined);
    throw err;
  }
  // Without finish_write the unchunked tail is dropped: its cut point is not known yet.
  await writer.drain();
  if (ctx.signal.aborted) throw new CairnError('CAIRN_CANCELLED', 'upload cancelled');
  ctx.log.info({ upload_id: head.upload_id, from: committed, to: writer.committed, sealedBytes: writer.storedBytes, finished }, 'upload written');
  return { committed_offset: writer.committed };
}

export function sessionHandlers(options: FilesServiceOptions): SessionHandlers {
  return {
    StartUpload: unary(async (req, ctx) => {
      const { tenant, subject } = principalOf(ctx);
      const path = normalizePath(req.path);
      if (path === CHUNK_SESSION_PATH) throw new CairnError('CAIRN_INVALID_PATH', `${CHUNK_SESSION_PATH} is reserved`);
      const size = req.size == null ? undefined : wireInt(req.size, 'size');
      if (size !== undefined && size > options.maxFileBytes) throw new CairnError('CAIRN_FILE_TOO_LARGE', `file of ${size} bytes exceeds the limit of ${options.maxFileBytes} bytes`);
      const baseVersion = req.base_version == null ? undefined : wireInt(req.base_version, 'base_version');
      const res = await options.metadata.createUploadSession({
        tenant,
        path,
        ...(baseVersion !== undefined ? { base_version: baseVersion } : {}),
        ...(size !== undefined ? { size } : {}),
        mtime_ms: wireInt(req.mtime_ms, 'mtime_ms', { min: -Number.MAX_SAFE_INTEGER }),
        author_device: subject,
      }, ctx.requestId);
      if (res.session == null) throw new CairnError('CAIRN_INTERNAL', 'CreateUploadSession returned no session');
      return { upload_id: res.session.session_id, expires_ms: res.session.expires_ms };
    }),

    QueryUpload: unary(async (req, ctx) => {
      const { tenant } = principalOf(ctx);
      const s = await loadSession(options, tenant, req.upload_id, ctx.requestId);
      const offset = wireInt(s.offset, 'offset');
      const size = s.expected_size == null ? undefined : wireInt(s.expected_size, 'expected_size');
      return { committed_offset: offset, complete: size !== undefined && size === offset, ...(size !== undefined ? { size } : {}), path: s.path, expires_ms: s.expires_ms };
    }),

    WriteUpload: clientStream((call, ctx) => writeUpload(call, ctx, options)),

    FinishUpload: unary(async (req, ctx) => {
      const { tenant, subject } = principalOf(ctx);
      const s = await loadSession(options, tenant, req.upload_id, ctx.requestId);
      const offset = wireInt(s.offset, 'offset');
      if (req.size != null && wireInt(req.size, 'size') !== offset) throw new CairnError('CAIRN_SIZE_MISMATCH', `upload ${req.upload_id} holds ${offset} bytes, not ${String(req.size)}`, { metadata: { offset: String(offset) } });
      // Sniff the first plain bytes as UploadFile does, so the commit enqueues the media job.
      const head = options.sniffMedia !== undefined && s.first_chunk_hash.length === 32 ? await chunkHead(options, tenant, s.first_chunk_hash, ctx.requestId, ctx.signal).catch(() => undefined) : undefined;
      const mediaKind = head !== undefined ? options.sniffMedia?.(head) : undefined;
      const version = await options.metadata.commitFile({ tenant, path: s.path, session_id: req.upload_id, size: 0, mtime_ms: 0, author_device: subject, chunks: [], ...(mediaKind !== undefined ? { media_kind: mediaKind } : {}) }, ctx.requestId);
      ctx.log.info({ path: version.path, version: version.version, bytes: offset, upload_id: req.upload_id }, 'upload committed');
      return { file: toFileInfo(version) };
    }),

    AbortUpload: unary(async (req, ctx) => {
      const { tenant } = principalOf(ctx);
      await loadSession(options, tenant, req.upload_id, ctx.requestId);
      await options.metadata.abortUploadSession({ tenant, session_id: req.upload_id }, ctx.requestId);
      return {};
    }),
  };
}
