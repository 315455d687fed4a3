// Per-partition digests of the addresses a node holds (count + XOR), cached and invalidated by
// every local write path, so anti-entropy compares 4096 partitions without rescanning them.
import type { BlockStore } from './engine/index.js';
import { PARTITION_COUNT, partitionOf } from '../placement/index.js';

export interface PartitionSummary {
  readonly partition: number;
  readonly count: number;
  /** 32-byte XOR of the addresses. */
  readonly digest: Buffer;
}

const PAGE = 4096;
/** A cached digest is recomputed after this long even without an invalidation: a safety net for write paths that bypass us (quarantine inside the engine). */
const TTL_MS = 5 * 60_000;

export class PartitionDigests {
  readonly #store: BlockStore;
  readonly #cache = new Map<number, { summary: PartitionSummary; at: number }>();
  /** Bumped on every invalidation, so a scan that raced a write does not cache its result. */
  readonly #generation = new Uint32Array(PARTITION_COUNT);

  constructor(store: BlockStore) {
    this.#store = store;
  }

  /** Forget cached digests of the partitions these addresses fall in. */
  invalidate(addresses: Iterable<Buffer>): void {
    for (const a of addresses) this.invalidatePartition(partitionOf(a));
  }

  invalidatePartition(partition: number): void {
    this.#cache.delete(partition);
    this.#generation[partition]!++;
  }

  async summary(partition: number): Promise<PartitionSummary> {
    if (!Number.isInteger(partition) || partition < 0 || partition >= PARTITION_COUNT) throw new RangeError(`partition must be in [0, ${PARTITION_COUNT - 1}]`);
    const hit = this.#cache.get(partition);
    if (hit && performance.now() - hit.at < TTL_MS) return hit.summary;
    const started = performance.now();
    const generation = this.#generation[partition];
    const digest = Buffer.alloc(32);
    let count = 0;
    let after: Buffer | undefined;
    for (;;) {
      const page = await this.#store.listAddresses({ partition, limit: PAGE, ...(after ? { after } : {}) });
      for (const a of page) for (let i = 0; i < 32; i++) digest[i]! ^= a[i]!;
      count += page.length;
      if (page.length < PAGE) break;
      after = page[page.length - 1];
    }
    const summary = { partition, count, digest };
    if (this.#generation[partition] === generation) this.#cache.set(partition, { summary, at: started });
    return summary;
  }
}
