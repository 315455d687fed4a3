// The read pipeline shared by ReadFile (gRPC) and the HTTP routes: the plain bytes of a byte range
// of a version, in order, fetching batches of blocks ahead of the one being unsealed.
import type { BlockAccess } from '../blocknode/index.js';
import { BufferPool } from '../common/buffer-pool.js';
import { CairnError } from '../common/errors.js';
import type { TenantKeys } from './keys.js';
import { unseal } from './seal.js';

/** Blocks requested per GetBlocks call, and batches fetched ahead of the one being sent. */
const READ_BATCH = 32;
const READ_AHEAD = 2;

/**
 * Buffers for the blocks a block node in this process reads: a batch of 32 blocks of about
 * 74 KiB (the chunker's real mean) with the gaps its runs read fits one slab; a batch that does
 * not gets a fresh buffer. A read holds READ_AHEAD + 1 slabs; idle slabs go after 10 s.
 * Reused, they save a GiB read a GiB of allocations and the full collections those cost.
 */
const blockBuffers = new BufferPool({ slabBytes: 4 * 1024 * 1024, maxFree: 8 });

export interface ReadableChunk {
  readonly plain_hash: Buffer;
  readonly address: Buffer;
  readonly offset: string;
}

export interface ReadDeps {
  readonly blocks: BlockAccess;
  readonly keys: TenantKeys;
}

/**
 * Fetches blocks by address. BlockAccess hands back only blocks verified against their address
 * (a bad copy is retried on another replica and reads as missing when none is intact) — unless
 * `callerVerifies`, for a caller that authenticates each block and asks again when one fails.
 */
export async function fetchBlocks(blocks: BlockAccess, addresses: Buffer[], signal?: AbortSignal, callerVerifies = false, pool?: BufferPool): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for await (const b of blocks.getBlocks(addresses, signal, pool ? { callerVerifies, pool } : { callerVerifies })) {
    if (b.data !== undefined) out.set(b.address.toString('hex'), b.data);
  }
  return out;
}

/**
 * The plain bytes of a block fetched without the block layer's hash check. A block that fails
 * AES-GCM (or did not come back) is fetched again with verification, which quarantines a corrupt
 * copy, reads another replica and repairs; only when that fails too is the chunk lost.
 */
async function openBlock(blocks: BlockAccess, key: Buffer, c: ReadableChunk, block: Buffer | undefined, path: string, signal: AbortSignal): Promise<Buffer> {
  if (block !== undefined) {
    try {
      return unseal(key, c.plain_hash, block);
    } catch (err) {
      if (!(err instanceof CairnError && err.code === 'CAIRN_DATA_LOSS')) throw err;
    }
  }
  const again = (await fetchBlocks(blocks, [c.address], signal)).get(c.address.toString('hex'));
  if (again === undefined) throw new CairnError('CAIRN_DATA_LOSS', `block ${c.address.toString('hex')} of ${path} is unavailable or corrupt on every replica`);
  return unseal(key, c.plain_hash, again);
}

/** Index of the chunk containing byte `offset` (chunks are sorted and contiguous). */
export function chunkIndexAt(chunks: readonly { offset: string }[], offset: number): number {
  let lo = 0;
  let hi = chunks.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (Number(chunks[mid]?.offset) <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * The plain bytes [start, end) of a version as pieces with their file offsets. Every block is
 * authenticated by AES-GCM under a key derived from the tenant key and the chunk's plain hash,
 * so a block of another tenant or another chunk cannot pass; a block no replica holds intact
 * fails the read with CAIRN_DATA_LOSS.
 */
export async function* readRange(deps: ReadDeps, tenant: string, version: { readonly path: string; readonly chunks: readonly ReadableChunk[] }, start: number, end: number, signal: AbortSignal): AsyncGenerator<{ data: Buffer; offset: number }> {
  if (end <= start) return;
  const key = await deps.keys.get(tenant);
  const chunks = version.chunks;
  const wanted: ReadableChunk[] = [];
  for (let i = chunkIndexAt(chunks, start); i < chunks.length && Number(chunks[i]?.offset) < end; i++) wanted.push(chunks[i]!);
  const batches: ReadableChunk[][] = [];
  for (let i = 0; i < wanted.length; i += READ_BATCH) batches.push(wanted.slice(i, i + READ_BATCH));
  const fetches: Array<Promise<Map<string, Buffer>> | undefined> = [];
  const begin = (i: number): void => {
    const batch = batches[i];
    if (batch === undefined || fetches[i] !== undefined) return;
    // AES-GCM authenticates every block below, so the block layer need not hash them on the way.
    const p = fetchBlocks(deps.blocks, [...new Map(batch.map((c) => [c.address.toString('hex'), c.address])).values()], signal, true, blockBuffers);
    p.catch(() => undefined); // awaited in order below; avoid an unhandled rejection meanwhile
    fetches[i] = p;
  };
  for (let i = 0; i <= READ_AHEAD; i++) begin(i);
  for (let i = 0; i < batches.length; i++) {
    begin(i + READ_AHEAD);
    const got = await fetches[i]!;
    fetches[i] = Promise.resolve(new Map()); // release the batch's memory
    for (const c of batches[i]!) {
      const data = await openBlock(deps.blocks, key, c, got.get(c.address.toString('hex')), version.path, signal);
      const at = Number(c.offset);
      const from = Math.max(start, at) - at;
      yield { data: data.subarray(from, Math.min(end, at + data.length) - at), offset: at + from };
    }
    // Every piece above is unseal's own output, never a view of a block: the blocks' buffers
    // can go back to the pool. (A read abandoned midway leaves its buffers to the collector.)
    for (const block of got.values()) blockBuffers.release(block);
  }
}
