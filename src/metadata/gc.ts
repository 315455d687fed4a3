// The block garbage collector: claims chunks whose refs and pins stayed at zero past the grace
// period, deletes their blocks (with GC tombstones) on every live block node, then finishes the
// claims — or hands them back when a node could not be reached, so nothing is half-deleted.
import type * as grpc from '@grpc/grpc-js';
import { Counter, type Registry } from 'prom-client';
import { BlockClient } from '../blocknode/index.js';
import type { TokenProvider } from '../common/grpc-client.js';
import { isCairnError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { NodeState } from '../placement/index.js';
import { DEFAULT_ORPHAN_TOMBSTONE_MS } from './model/orphans.js';

export const DEFAULT_GC_INTERVAL_MS = 60_000;
const DEFAULT_BATCH = 256;
/** DeleteBlocks takes at most this many addresses per call. */
const DELETE_CALL = 4096;
const RELEASE_RETRY_MS = 60_000;

export type GcState = 'idle' | 'running' | 'backoff' | 'stopped';
export const GC_STATES: readonly GcState[] = ['idle', 'running', 'backoff', 'stopped'];

export interface GcClaim {
  readonly tenant: string;
  readonly plainHash: Buffer;
  readonly address: Buffer;
}

/** Where claims come from: the model in-process, or the Admin API (ClaimDeletions/FinishDeletions). */
export interface DeletionSource {
  claim(max: number): Promise<readonly GcClaim[]>;
  finish(done: readonly GcClaim[]): Promise<number>;
  release(claims: readonly GcClaim[], retryAfterMs: number): Promise<number>;
}

/** The orphan sweep's view of the index (model/orphans.ts), in-process. */
export interface OrphanSource {
  /** Every address (hex) the chunk index names. */
  referenced(): Promise<Set<string>>;
  /** Records this sweep's candidates; returns those unreferenced for the grace period. */
  note(candidates: ReadonlySet<string>, graceMs: number): Promise<string[]>;
  claim(addresses: readonly string[], holdMs: number): Promise<string[]>;
  /** Ends claims; `keepHoldMs` > 0 (deleted) also records a deletion tombstone kept `tombstoneMs`. */
  end(addresses: readonly string[], keepHoldMs: number, tombstoneMs: number): Promise<void>;
  forget(addresses: readonly string[]): Promise<void>;
}

export interface OrphanSweepResult {
  /** Addresses found on some node that no chunk names (now). */
  readonly seen: number;
  /** Orphans unreferenced past the grace period, deleted on every live node. */
  readonly deleted: number;
  /** Due orphans handed back because a node could not be reached. */
  readonly released: number;
}

/** The block address space is listed in this many partitions (the first 12 bits). */
const PARTITIONS = 4096;
const LIST_PAGE = 4096;

export interface GcNode {
  readonly id: string;
  readonly addr: string;
  readonly state: NodeState;
}

export interface GcWorkerOptions {
  readonly source: DeletionSource;
  /** Every block node that may hold a copy (the cluster map's nodes). */
  readonly nodes: () => Promise<readonly GcNode[]>;
  readonly credentials: grpc.ChannelCredentials;
  readonly token: TokenProvider;
  readonly log: Logger;
  /** Pause between runs (0 = no timer; runOnce only). */
  readonly intervalMs: number;
  /** Claims per round (default 256). */
  readonly batch?: number;
  readonly registry?: Registry | undefined;
  readonly now?: () => number;
  /**
   * The orphan-block sweep: blocks no chunk names are deleted once unreferenced for `graceMs`;
   * a deleted address stays refused to every commit for `holdMs`, and for `tombstoneMs` to commits
   * whose writer began writing blocks before the deletion (it must upload again; default 7 days,
   * which must exceed the gateways' MAX_UPLOAD_BLOCKS_AGE_MS). Periodic runs sweep at most every
   * `intervalMs`.
   */
  readonly orphans?: { readonly source: OrphanSource; readonly graceMs: number; readonly holdMs: number; readonly tombstoneMs?: number; readonly intervalMs: number } | undefined;
}

export interface GcRunResult {
  readonly claimed: number;
  /** Claims whose blocks are gone from every live node and whose index entries were removed. */
  readonly finished: number;
  /** Claims handed back because a node failed (due again after a minute). */
  readonly released: number;
  /** Block copies the nodes reported deleted. */
  readonly blocksDeleted: number;
}

export class GcWorker {
  readonly #o: GcWorkerOptions;
  readonly #clients = new Map<string, BlockClient>();
  readonly #counters: { finished?: Counter; released?: Counter; deleted?: Counter };
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<GcRunResult> | undefined;
  #stopped = false;
  #state: GcState = 'idle';
  #failures = 0;
  #lastOrphanSweep = 0;
  #sweeping: Promise<OrphanSweepResult> | undefined;

  constructor(options: GcWorkerOptions) {
    if (!Number.isSafeInteger(options.intervalMs) || options.intervalMs < 0) throw new RangeError('options.intervalMs must be a non-negative integer');
    const batch = options.batch ?? DEFAULT_BATCH;
    if (!Number.isInteger(batch) || batch < 1 || batch > 1000) throw new RangeError('options.batch must be an integer in 1..1000');
    this.#o = options;
    // The first periodic orphan sweep comes an interval after start, not with the first GC run.
    this.#lastOrphanSweep = (options.now ?? Date.now)();
    const registers = options.registry !== undefined ? [options.registry] : [];
    this.#counters = options.registry === undefined
      ? {}
      : {
          finished: new Counter({ name: 'cairn_gc_chunks_deleted_total', help: 'Chunks whose blocks GC deleted from every live block node.', registers }),
          released: new Counter({ name: 'cairn_gc_claims_released_total', help: 'GC claims handed back because a block node could not be reached.', registers }),
          deleted: new Counter({ name: 'cairn_gc_block_copies_deleted_total', help: 'Block copies block nodes reported deleted for GC.', registers }),
        };
  }

  get state(): GcState {
    return this.#state;
  }

  start(): void {
    if (this.#o.intervalMs === 0 || this.#stopped || this.#timer !== undefined) return;
    this.#schedule(this.#o.intervalMs);
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    // Full jitter keeps several metadata replicas from claiming in lockstep.
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.runOnce()
        .then(async () => {
          const o = this.#o.orphans;
          if (o !== undefined && o.intervalMs > 0 && (this.#o.now ?? Date.now)() - this.#lastOrphanSweep >= o.intervalMs) await this.sweepOrphans();
        })
        .then(() => {
          this.#failures = 0;
          this.#schedule(this.#o.intervalMs / 2 + Math.random() * this.#o.intervalMs);
        })
        .catch((err: unknown) => {
          this.#failures++;
          this.#state = 'backoff';
          this.#o.log.warn({ err, failures: this.#failures }, 'GC run failed');
          this.#schedule(Math.min(this.#o.intervalMs * 2 ** Math.min(this.#failures, 5), 30 * 60_000) * (0.5 + Math.random() / 2));
        });
    }, ms);
    this.#timer.unref();
  }

  /** One full collection: claims and deletes until nothing is due. Concurrent calls share a run. */
  runOnce(): Promise<GcRunResult> {
    if (this.#running !== undefined) return this.#running;
    this.#running = this.#run().finally(() => {
      this.#running = undefined;
      if (!this.#stopped) this.#state = 'idle';
    });
    return this.#running;
  }

  async #run(): Promise<GcRunResult> {
    this.#state = 'running';
    const batch = this.#o.batch ?? DEFAULT_BATCH;
    const total = { claimed: 0, finished: 0, released: 0, blocksDeleted: 0 };
    while (!this.#stopped) {
      const claims = await this.#o.source.claim(batch);
      if (claims.length === 0) break;
      total.claimed += claims.length;
      const outcome = await this.#deleteEverywhere(claims);
      total.blocksDeleted += outcome.deleted;
      if (outcome.ok) {
        const finished = await this.#o.source.finish(claims);
        total.finished += finished;
        this.#counters.finished?.inc(finished);
      } else {
        const released = await this.#o.source.release(claims, RELEASE_RETRY_MS);
        total.released += released;
        this.#counters.released?.inc(released);
        // A node is down or failing: try again on the next run rather than spinning on it.
        break;
      }
      if (claims.length < batch) break;
    }
    if (total.claimed > 0) this.#o.log.info(total, 'GC run done');
    return total;
  }

  /**
   * One orphan sweep: lists every node's blocks, compares them with the index, records candidates
   * and deletes those unreferenced past the grace period (claim, re-read the index, delete on every
   * live node, then hold). Concurrent calls share a sweep.
   */
  sweepOrphans(): Promise<OrphanSweepResult> {
    const o = this.#o.orphans;
    if (o === undefined) return Promise.reject(new Error('this GC worker has no orphan sweep configured'));
    if (this.#sweeping !== undefined) return this.#sweeping;
    this.#sweeping = this.#sweep(o).finally(() => {
      this.#sweeping = undefined;
    });
    return this.#sweeping;
  }

  async #sweep(o: NonNullable<GcWorkerOptions['orphans']>): Promise<OrphanSweepResult> {
    const started = (this.#o.now ?? Date.now)();
    const nodes = (await this.#o.nodes()).filter((n) => n.state !== 'removed' && n.state !== 'down');
    // List the nodes first, then read the index: a block committed in between is seen referenced,
    // and one written after the listing is not a candidate at all.
    const onNodes = new Set<string>();
    for (const node of nodes) {
      const client = this.#client(node.addr);
      // One digest call tells which partitions hold anything; only those are listed.
      const digests = await client.partitionDigests(Array.from({ length: PARTITIONS }, (_, p) => p));
      for (const p of digests.filter((d) => d.count > 0).map((d) => d.partition)) {
        if (this.#stopped) break;
        let cursor = '';
        do {
          const page = await client.listPartition(p, cursor, LIST_PAGE);
          for (const a of page.addresses) onNodes.add(a.toString('hex'));
          cursor = page.cursor;
        } while (cursor !== '');
      }
    }
    const referenced = await o.source.referenced();
    const candidates = new Set([...onNodes].filter((hex) => !referenced.has(hex)));
    const due = await o.source.note(candidates, o.graceMs);
    let deleted = 0;
    let released = 0;
    if (due.length > 0 && !this.#stopped) {
      const claimed = await o.source.claim(due, o.holdMs);
      // Claimed addresses can no longer be adopted; anything adopted before the claim is in the index now.
      const now = await o.source.referenced();
      const adopted = claimed.filter((hex) => now.has(hex));
      const doomed = claimed.filter((hex) => !now.has(hex));
      if (adopted.length > 0) await o.source.forget(adopted);
      if (doomed.length > 0) {
        const outcome = await this.#deleteEverywhere(doomed.map((hex) => ({ tenant: '', plainHash: Buffer.alloc(0), address: Buffer.from(hex, 'hex') })));
        if (outcome.ok) {
          await o.source.end(doomed, o.holdMs, o.tombstoneMs ?? DEFAULT_ORPHAN_TOMBSTONE_MS);
          deleted = doomed.length;
        } else {
          await o.source.end(doomed, 0, 0);
          released = doomed.length;
        }
      }
    }
    this.#lastOrphanSweep = started;
    const result = { seen: candidates.size, deleted, released };
    if (candidates.size > 0) this.#o.log.info(result, 'orphan sweep done');
    return result;
  }

  /** Deletes the claimed blocks on every node that is not down or removed; ok only if all succeeded. */
  async #deleteEverywhere(claims: readonly GcClaim[]): Promise<{ ok: boolean; deleted: number }> {
    const nodes = (await this.#o.nodes()).filter((n) => n.state !== 'removed' && n.state !== 'down');
    if (nodes.length === 0) {
      this.#o.log.warn({ claims: claims.length }, 'GC knows no block nodes: handing the claims back');
      return { ok: false, deleted: 0 };
    }
    const unique = [...new Map(claims.map((c) => [c.address.toString('hex'), c.address])).values()];
    const tombstoneMs = (this.#o.now ?? Date.now)();
    const results = await Promise.all(nodes.map(async (node) => {
      let deleted = 0;
      try {
        const client = this.#client(node.addr);
        for (let i = 0; i < unique.length; i += DELETE_CALL) {
          const n = await client.deleteBlocks(unique.slice(i, i + DELETE_CALL), { tombstoneMs });
          deleted += n;
        }
        return { ok: true, deleted };
      } catch (err) {
        this.#o.log.warn({ node: node.id, addr: node.addr, err: isCairnError(err) ? err.code : String(err) }, 'GC could not delete blocks on a node');
        return { ok: false, deleted };
      }
    }));
    const deleted = results.reduce((sum, r) => sum + r.deleted, 0);
    this.#counters.deleted?.inc(deleted);
    return { ok: results.every((r) => r.ok), deleted };
  }

  #client(addr: string): BlockClient {
    let c = this.#clients.get(addr);
    if (c === undefined) {
      c = new BlockClient({ address: addr, credentials: this.#o.credentials, token: this.#o.token, timeoutMs: 60_000 });
      this.#clients.set(addr, c);
    }
    return c;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#state = 'stopped';
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    await this.#running?.catch(() => undefined);
    await this.#sweeping?.catch(() => undefined);
    for (const c of this.#clients.values()) c.close();
    this.#clients.clear();
  }
}
