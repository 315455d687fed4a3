// The BlockNode gRPC service: batched puts (acknowledged after fsync), streamed gets, presence
// checks, deletes, partition listing and digests, stats and on-demand scrub over the node's
// BlockStore. Input is validated before anything is stored; calls share one concurrency limit.
import type * as grpc from '@grpc/grpc-js';
import { CairnError } from '../common/errors.js';
import type { BufferPool } from '../common/buffer-pool.js';
import { clientStream, send, serverStream, unary } from '../common/grpc-server.js';
import { wireInt } from '../common/wire.js';
import type { BlockNodeHandlers } from '../gen/cairn/v1/BlockNode.js';
import type { PutBlocksRequest__Output } from '../gen/cairn/v1/PutBlocksRequest.js';
import type { PutBlocksResponse } from '../gen/cairn/v1/PutBlocksResponse.js';
import { PARTITION_COUNT } from '../placement/index.js';
import { decodeCursor, encodeCursor } from './cursor.js';
import type { PartitionDigests } from './digests.js';
import type { BlockStore } from './engine/index.js';
import type { ConcurrencyLimit } from './limits.js';
import type { GcTombstones } from './tombstones.js';
import type { LocalBlockPeer, StoredBlock } from './client.js';

export const MAX_GET_ADDRESSES = 1024;
export const MAX_HAS_ADDRESSES = 4096;
export const MAX_DELETE_ADDRESSES = 4096;
export const MAX_PUT_BLOCKS_PER_MESSAGE = 1024;
export const MAX_LIST_LIMIT = 4096;
export const DEFAULT_LIST_LIMIT = 1024;
export const MAX_DIGEST_PARTITIONS = PARTITION_COUNT;

/** What the node reports about its background work (anti-entropy, scrub, map). */
export interface NodeStatus {
  readonly nodeId: string;
  readonly mapEpoch: number;
  /** The epoch the anti-entropy figures below were computed against (0: none yet). */
  readonly reportEpoch: number;
  readonly underReplicatedPartitions: number;
  readonly bytesToMove: number;
  readonly soleCopies: number;
  readonly antientropyPasses: number;
  readonly antientropyState: string;
  readonly scrubErrors: number;
}

export interface ScrubOutcome {
  readonly checked: number;
  readonly corrupt: Buffer[];
  readonly repaired: number;
  readonly unrepaired: number;
}

export interface BlockNodeServiceDeps {
  readonly store: BlockStore;
  readonly digests: PartitionDigests;
  readonly limit: ConcurrencyLimit;
  readonly tombstones: GcTombstones;
  status(): NodeStatus;
  scrub(maxBytesPerSecond: number | undefined, signal: AbortSignal): Promise<ScrubOutcome>;
  /** Blocks stored here for an owner that could not take them. */
  onHandoff(addresses: readonly Buffer[]): void;
  observePut?(seconds: number, blocks: number, bytes: number): void;
  observeGet?(seconds: number): void;
}

function checkAddresses(addresses: readonly Buffer[], max: number): void {
  if (addresses.length > max) throw new CairnError('CAIRN_INVALID_ARGUMENT', `at most ${max} addresses per request, got ${addresses.length}`);
  for (const a of addresses) {
    if (a.length !== 32) throw new CairnError('CAIRN_INVALID_HASH', `block address must be 32 bytes, got ${a.length}`);
  }
}

function checkPartition(partition: number): void {
  if (!Number.isInteger(partition) || partition < 0 || partition >= PARTITION_COUNT) {
    throw new CairnError('CAIRN_OUT_OF_RANGE', `partition ${partition} is outside 0..${PARTITION_COUNT - 1}`, { fieldViolations: [{ field: 'partition', description: 'out of range' }] });
  }
}

/** Blocks read from the store at once per GetBlocks call: one index lookup, one pread per run of neighbours. */
const READ_GROUP = 32;

/** Validates and stores one batch durably; repair copies of blocks GC deleted here are refused. */
async function storeBatch(deps: BlockNodeServiceDeps, blocks: StoredBlock[], flags: { handoff: boolean; repair: boolean; callerHashed?: boolean }): Promise<{ blocks: number; bytes: number; refused: number }> {
  const { store, digests, tombstones } = deps;
  let batch = blocks;
  checkAddresses(batch.map((b) => b.address), MAX_PUT_BLOCKS_PER_MESSAGE);
  let refused = 0;
  if (flags.repair && tombstones.size > 0) {
    const dead = await tombstones.lookup(batch.map((b) => b.address));
    refused = dead.filter(Boolean).length;
    batch = batch.filter((_, i) => dead[i] !== true);
  }
  if (batch.length === 0) return { blocks: 0, bytes: 0, refused };
  const started = performance.now();
  await store.put(batch, flags.callerHashed === true ? { callerHashed: true } : {});
  // A fresh write of a block GC deleted here wins: the tombstone goes once the block is durable.
  if (!flags.repair) await tombstones.clear(batch.map((b) => b.address));
  const batchBytes = batch.reduce((n, b) => n + b.data.length, 0);
  deps.observePut?.((performance.now() - started) / 1000, batch.length, batchBytes);
  digests.invalidate(batch.map((b) => b.address));
  if (flags.handoff) deps.onHandoff(batch.map((b) => b.address));
  return { blocks: batch.length, bytes: batchBytes, refused };
}

/**
 * Reads blocks in request order, READ_GROUP at a time with the next group read ahead: each group
 * is one index lookup, and a pread per run of neighbouring records (BlockStore.getMany). A corrupt
 * copy is quarantined by the store and reads as missing, so the reader moves on to another
 * replica (and repairs this one) instead of failing the stream. `verify: false` skips the payload
 * hash for a caller that authenticates the bytes itself.
 */
async function* readBlocks(deps: BlockNodeServiceDeps, addresses: readonly Buffer[], log: { warn(obj: object, msg: string): void }, verify = true, pool?: BufferPool): AsyncGenerator<{ address: Buffer; data: Buffer | undefined }> {
  const read = async (group: readonly Buffer[]): Promise<Array<Buffer | undefined>> => {
    const started = performance.now();
    const got = await deps.store.getMany(group, pool ? { verify, pool } : { verify });
    const seconds = (performance.now() - started) / 1000 / group.length;
    const corrupt: Buffer[] = [];
    const out = got.map((g, i) => {
      deps.observeGet?.(seconds);
      if (g.corrupt) corrupt.push(group[i]!);
      return g.data;
    });
    if (corrupt.length > 0) {
      deps.digests.invalidate(corrupt);
      for (const a of corrupt) log.warn({ address: a.toString('hex') }, 'corrupt block quarantined on read');
    }
    return out;
  };
  let ahead: Promise<Array<Buffer | undefined>> | undefined;
  try {
    for (let at = 0; at < addresses.length; at += READ_GROUP) {
      const group = addresses.slice(at, at + READ_GROUP);
      const current = ahead ?? read(group);
      ahead = undefined;
      if (at + READ_GROUP < addresses.length) {
        ahead = read(addresses.slice(at + READ_GROUP, at + 2 * READ_GROUP));
        ahead.catch(() => undefined); // awaited on the next turn
      }
      const data = await current;
      for (let i = 0; i < group.length; i++) yield { address: group[i]!, data: data[i] };
    }
  } finally {
    // A consumer that stopped early leaves a read in flight: let it settle quietly.
    ahead?.catch(() => undefined);
  }
}

/**
 * The node's own blocks as a peer, for a gateway in the same process (the embedded server): the
 * same validation, limits, tombstone rules and metrics as the gRPC service, without serialising
 * every block through a loopback HTTP/2 connection. Blocks it returns are verified by the store.
 */
export function localBlockPeer(deps: BlockNodeServiceDeps, log: { warn(obj: object, msg: string): void }): LocalBlockPeer {
  return {
    verified: true,
    async putBlocks(blocks, options = {}) {
      let stored = 0;
      let bytes = 0;
      let refused = 0;
      await deps.limit.run(async () => {
        for (let i = 0; i < blocks.length; i += MAX_PUT_BLOCKS_PER_MESSAGE) {
          // callerHashed: the gateway in this process hashed these bytes into their addresses moments ago.
          const r = await storeBatch(deps, blocks.slice(i, i + MAX_PUT_BLOCKS_PER_MESSAGE), { handoff: options.handoff === true, repair: options.repair === true, callerHashed: options.callerHashed === true });
          stored += r.blocks;
          bytes += r.bytes;
          refused += r.refused;
        }
      });
      return { blocks_stored: String(stored), bytes_stored: String(bytes), blocks_tombstoned: String(refused) };
    },
    async *getBlocks(addresses, signal, options) {
      for (let i = 0; i < addresses.length; i += MAX_GET_ADDRESSES) {
        const slice = addresses.slice(i, i + MAX_GET_ADDRESSES);
        checkAddresses(slice, MAX_GET_ADDRESSES);
        // Hold a slot only while reading, not while the consumer works through the results.
        const got = await deps.limit.run(async () => {
          const out: Array<{ address: Buffer; data: Buffer | undefined }> = [];
          for await (const b of readBlocks(deps, slice, log, options?.callerVerifies !== true, options?.pool)) {
            signal?.throwIfAborted();
            out.push(b);
          }
          return out;
        });
        yield* got;
      }
    },
  };
}

export function blockNodeHandlers(deps: BlockNodeServiceDeps): BlockNodeHandlers {
  const { store, digests, limit, tombstones } = deps;
  return {
    PutBlocks: clientStream(async (call: grpc.ServerReadableStream<PutBlocksRequest__Output, PutBlocksResponse>) =>
      limit.run(async () => {
        let blocks = 0;
        let bytes = 0;
        let refused = 0;
        // One batch per message; the for-await loop is the backpressure: the next message is
        // read only after this batch is durable.
        for await (const msg of call as AsyncIterable<PutBlocksRequest__Output>) {
          if (msg.blocks.length > MAX_PUT_BLOCKS_PER_MESSAGE) {
            throw new CairnError('CAIRN_INVALID_ARGUMENT', `at most ${MAX_PUT_BLOCKS_PER_MESSAGE} blocks per PutBlocks message, got ${msg.blocks.length}`);
          }
          const r = await storeBatch(deps, msg.blocks.map((b) => ({ address: b.address, data: b.data })), { handoff: msg.handoff, repair: msg.repair });
          blocks += r.blocks;
          bytes += r.bytes;
          refused += r.refused;
        }
        return { blocks_stored: blocks, bytes_stored: bytes, blocks_tombstoned: refused };
      }),
    ),
    GetBlocks: serverStream(async (req, call, ctx) => {
      checkAddresses(req.addresses, MAX_GET_ADDRESSES);
      await limit.run(async () => {
        for await (const { address, data } of readBlocks(deps, req.addresses, ctx.log)) {
          await send(call, data === undefined ? { address, found: false } : { address, data, found: true }, ctx.signal);
        }
      });
    }),
    HasBlocks: unary(async (req) => {
      checkAddresses(req.addresses, MAX_HAS_ADDRESSES);
      return limit.run(async () => ({ present: await store.has(req.addresses), tombstoned: await tombstones.lookup(req.addresses) }));
    }),
    DeleteBlocks: unary(async (req) => {
      checkAddresses(req.addresses, MAX_DELETE_ADDRESSES);
      const tombstoneMs = wireInt(req.tombstone_ms, 'tombstone_ms');
      const deleted = await limit.run(async () => {
        // Tombstones first: a crash between the two leaves a tombstone over a live block (GC
        // retries the delete), never a deleted block a repair copy could bring back.
        if (tombstoneMs > 0) await tombstones.record(req.addresses, tombstoneMs);
        return store.delete(req.addresses);
      });
      digests.invalidate(req.addresses);
      return { deleted };
    }),
    ListPartition: unary(async (req) => {
      checkPartition(req.partition);
      const pageSize = req.limit === 0 ? DEFAULT_LIST_LIMIT : req.limit;
      if (pageSize > MAX_LIST_LIMIT) throw new CairnError('CAIRN_INVALID_ARGUMENT', `limit must be at most ${MAX_LIST_LIMIT}, got ${pageSize}`, { fieldViolations: [{ field: 'limit', description: 'too large' }] });
      const after = req.cursor === '' ? undefined : decodeCursor(req.cursor, req.partition);
      const addresses = await limit.run(() => store.listAddresses({ partition: req.partition, limit: pageSize, ...(after ? { after } : {}) }));
      const last = addresses[addresses.length - 1];
      return { addresses, next_cursor: addresses.length === pageSize && last ? encodeCursor(req.partition, last) : '' };
    }),
    PartitionDigest: unary(async (req) => {
      if (req.partitions.length > MAX_DIGEST_PARTITIONS) throw new CairnError('CAIRN_INVALID_ARGUMENT', `at most ${MAX_DIGEST_PARTITIONS} partitions per request`);
      for (const p of req.partitions) checkPartition(p);
      const out = [];
      for (const p of req.partitions) {
        const s = await digests.summary(p);
        out.push({ partition: p, count: s.count, digest: s.digest });
      }
      return { digests: out };
    }),
    Stats: unary(async () => {
      const s = store.stats();
      const st = deps.status();
      const quarantined = (await store.quarantined()).length;
      return {
        node_id: st.nodeId,
        blocks: s.blocks,
        bytes: s.bytes,
        dead_bytes: s.deadBytes,
        disk_bytes: s.diskBytes,
        capacity_bytes: s.capacityBytes ?? 0,
        segments: s.segments,
        quarantined,
        fsync_batches: s.fsyncBatches,
        fsync_blocks: s.fsyncBlocks,
        map_epoch: st.mapEpoch,
        under_replicated_partitions: st.underReplicatedPartitions,
        bytes_to_move: st.bytesToMove,
        sole_copies: st.soleCopies,
        antientropy_passes: st.antientropyPasses,
        antientropy_state: st.antientropyState,
        scrub_errors: st.scrubErrors,
      };
    }),
    Scrub: unary(async (req, ctx) => {
      const rate = wireInt(req.max_bytes_per_second, 'max_bytes_per_second');
      const r = await deps.scrub(rate === 0 ? undefined : rate, ctx.signal);
      return { checked: r.checked, corrupt: r.corrupt, repaired: r.repaired, unrepaired: r.unrepaired };
    }),
  };
}

