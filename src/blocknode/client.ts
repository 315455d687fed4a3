// Typed client for one block node, used by the replication client and by peers (repair,
// anti-entropy). Puts are batched into ≤ 4 MiB messages on one client stream; gets stream back in order.
import type * as grpc from '@grpc/grpc-js';
import type { BufferPool } from '../common/buffer-pool.js';
import { CHANNEL_OPTIONS, callMetadata, deadlineIn, unaryCall, type TokenProvider } from '../common/grpc-client.js';
import { fromServiceError } from '../common/status.js';
import { loadProto } from '../common/proto.js';
import type { BlockNodeClient as GenClient } from '../gen/cairn/v1/BlockNode.js';
import type { GetBlocksResponse__Output } from '../gen/cairn/v1/GetBlocksResponse.js';
import type { HasBlocksResponse__Output } from '../gen/cairn/v1/HasBlocksResponse.js';
import type { PutBlocksResponse__Output } from '../gen/cairn/v1/PutBlocksResponse.js';
import type { DeleteBlocksResponse__Output } from '../gen/cairn/v1/DeleteBlocksResponse.js';
import type { ListPartitionResponse__Output } from '../gen/cairn/v1/ListPartitionResponse.js';
import type { PartitionDigestResponse__Output } from '../gen/cairn/v1/PartitionDigestResponse.js';
import type { ScrubResponse__Output } from '../gen/cairn/v1/ScrubResponse.js';
import type { StatsResponse__Output } from '../gen/cairn/v1/StatsResponse.js';

const MESSAGE_BYTES = 4 * 1024 * 1024;
const MESSAGE_BLOCKS = 1024;

export interface BlockClientOptions {
  readonly address: string;
  readonly credentials: grpc.ChannelCredentials;
  readonly token: TokenProvider;
  /** Deadline for one put or get stream (ms). */
  readonly timeoutMs?: number;
}

export interface StoredBlock {
  readonly address: Buffer;
  readonly data: Buffer;
}

/** What the replication client asks of one node: a BlockClient, or the node in this very process. */
export interface BlockPeer {
  /** `callerHashed` (see BlockAccess.putBlocks) is for a node in this process; BlockClient ignores it. */
  putBlocks(blocks: readonly StoredBlock[], options?: { handoff?: boolean; repair?: boolean; timeoutMs?: number; callerHashed?: boolean }): Promise<PutBlocksResponse__Output>;
  getBlocks(addresses: readonly Buffer[], signal?: AbortSignal, options?: GetBlocksOptions): AsyncGenerator<{ address: Buffer; data: Buffer | undefined }>;
}

export interface GetBlocksOptions {
  /**
   * The caller authenticates every block itself (the gateway's AES-GCM, whose key and nonce derive
   * from the chunk's plain hash) and asks again without this option when one fails: the payload's
   * SHA-256 need not be checked on the way. A store still checks the record's header and address.
   */
  readonly callerVerifies?: boolean;
  /**
   * A node in this process reads blocks into buffers taken from this pool; the caller hands each
   * block's buffer back (`pool.release`) once it is done with it. A remote node ignores it.
   */
  readonly pool?: BufferPool;
}

/** A block node in this process: what it returns was verified against its address by its store. */
export interface LocalBlockPeer extends BlockPeer {
  readonly verified: true;
}

export class BlockClient implements BlockPeer {
  readonly address: string;
  readonly #client: GenClient;
  readonly #token: TokenProvider;
  readonly #timeoutMs: number;

  constructor(options: BlockClientOptions) {
    this.address = options.address;
    const Ctor = loadProto().proto.cairn.v1.BlockNode;
    this.#client = new Ctor(options.address, options.credentials, CHANNEL_OPTIONS);
    this.#token = options.token;
    this.#timeoutMs = options.timeoutMs ?? 120_000;
  }

  /**
   * Stores blocks durably; resolves once the node has fsynced all of them. `callerHashed` is
   * ignored: the bytes cross the network, and the node verifies every address.
   */
  async putBlocks(blocks: readonly StoredBlock[], options: { handoff?: boolean; repair?: boolean; timeoutMs?: number; callerHashed?: boolean } = {}): Promise<PutBlocksResponse__Output> {
    const handoff = options.handoff === true;
    // Repair copies (anti-entropy, read repair) must not resurrect blocks GC deleted on the receiver.
    const repair = options.repair === true;
    const md = await callMetadata(this.#token);
    return new Promise<PutBlocksResponse__Output>((resolve, reject) => {
      const call = this.#client.PutBlocks(md, deadlineIn(options.timeoutMs ?? this.#timeoutMs), (err, res) => {
        if (err) reject(fromServiceError(err));
        else if (res) resolve(res);
        else reject(new Error('empty PutBlocks response'));
      });
      let batch: StoredBlock[] = [];
      let size = 0;
      for (const block of blocks) {
        if ((size + block.data.length > MESSAGE_BYTES || batch.length >= MESSAGE_BLOCKS) && batch.length > 0) {
          call.write({ blocks: batch, handoff, repair });
          batch = [];
          size = 0;
        }
        batch.push(block);
        size += block.data.length + 40;
      }
      if (batch.length > 0) call.write({ blocks: batch, handoff, repair });
      call.end();
    });
  }

  /** Streams the requested blocks in order; a block the node lacks comes back with data undefined. */
  async *getBlocks(addresses: readonly Buffer[], signal?: AbortSignal): AsyncGenerator<{ address: Buffer; data: Buffer | undefined }> {
    const md = await callMetadata(this.#token);
    const call = this.#client.GetBlocks({ addresses: [...addresses] }, md, deadlineIn(this.#timeoutMs));
    const onAbort = (): void => call.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const msg of call as AsyncIterable<GetBlocksResponse__Output>) {
        yield { address: msg.address, data: msg.found ? msg.data : undefined };
      }
    } catch (err) {
      throw fromServiceError(err);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      call.cancel();
    }
  }

  async hasBlocks(addresses: readonly Buffer[]): Promise<boolean[]> {
    const res = await this.#unary<{ addresses: Buffer[] }, HasBlocksResponse__Output>('HasBlocks', { addresses: [...addresses] });
    return res.present;
  }

  /** Which addresses the node holds, and which it holds a GC tombstone for (deleted by GC). */
  async presence(addresses: readonly Buffer[]): Promise<{ present: boolean[]; tombstoned: boolean[] }> {
    const res = await this.#unary<{ addresses: Buffer[] }, HasBlocksResponse__Output>('HasBlocks', { addresses: [...addresses] });
    return { present: res.present, tombstoned: res.tombstoned.length === res.present.length ? res.tombstoned : res.present.map(() => false) };
  }

  /** Deletes blocks; with `tombstoneMs` (GC) the node also records tombstones against resurrection. */
  async deleteBlocks(addresses: readonly Buffer[], options: { tombstoneMs?: number } = {}): Promise<number> {
    const res = await this.#unary<{ addresses: Buffer[]; tombstone_ms: string }, DeleteBlocksResponse__Output>('DeleteBlocks', { addresses: [...addresses], tombstone_ms: String(options.tombstoneMs ?? 0) });
    return Number(res.deleted);
  }

  /** One page of a partition's addresses; `cursor` is '' for the first page, and the result's '' marks the last. */
  async listPartition(partition: number, cursor = '', limit = 0): Promise<{ addresses: Buffer[]; cursor: string }> {
    const res = await this.#unary<{ partition: number; cursor: string; limit: number }, ListPartitionResponse__Output>('ListPartition', { partition, cursor, limit });
    return { addresses: res.addresses, cursor: res.next_cursor };
  }

  async partitionDigests(partitions: readonly number[]): Promise<Array<{ partition: number; count: number; digest: Buffer }>> {
    const res = await this.#unary<{ partitions: number[] }, PartitionDigestResponse__Output>('PartitionDigest', { partitions: [...partitions] }, 120_000);
    return res.digests.map((d) => ({ partition: d.partition, count: Number(d.count), digest: d.digest }));
  }

  async stats(): Promise<StatsResponse__Output> {
    return this.#unary<Record<string, never>, StatsResponse__Output>('Stats', {});
  }

  async scrub(maxBytesPerSecond = 0, timeoutMs = 600_000): Promise<ScrubResponse__Output> {
    return this.#unary<{ max_bytes_per_second: number }, ScrubResponse__Output>('Scrub', { max_bytes_per_second: maxBytesPerSecond }, timeoutMs);
  }

  async #unary<Req, Res>(method: 'HasBlocks' | 'DeleteBlocks' | 'ListPartition' | 'PartitionDigest' | 'Stats' | 'Scrub', req: Req, timeoutMs = 30_000): Promise<Res> {
    const md = await callMetadata(this.#token);
    const client = this.#client as unknown as Record<string, Parameters<typeof unaryCall<Req, Res>>[0]>;
    const fn = client[method];
    if (fn === undefined) throw new TypeError(`no method ${method}`);
    try {
      return await unaryCall<Req, Res>(fn.bind(this.#client), req, md, deadlineIn(timeoutMs));
    } catch (err) {
      throw fromServiceError(err);
    }
  }

  close(): void {
    this.#client.close();
  }
}
