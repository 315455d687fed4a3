// ReplicatedBlockClient: what gateways use to store and fetch blocks across the cluster. Writes
// go to a block's RF owners in parallel (one PutBlocks stream per node per batch) and are
// acknowledged after W durable copies; owners that fail are replaced by handoff nodes. Reads try
// owners, then the previous epoch's owners, verify every block and repair the copies that were bad.
import { createHash } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { Counter, type Registry } from 'prom-client';
import { CairnError, isCairnError } from '../common/errors.js';
import type { TokenProvider } from '../common/grpc-client.js';
import { partitionOf, type ClusterMap } from '../placement/index.js';
import type { BlockPeer, GetBlocksOptions, LocalBlockPeer, StoredBlock } from './client.js';
import type { MapSource } from './map-source.js';
import { PeerPool, addrOf, handoffOrder, readCandidates } from './peers.js';

export interface PutOptions {
  readonly callerHashed?: boolean;
}

/** What a gateway needs from block storage: one node or a replicated cluster. */
export interface BlockAccess {
  /**
   * `callerHashed`: the caller computed every address from these very bytes in this process (the
   * gateway's sealing does), so a node in this process need not hash them again. Nodes reached
   * over the network always do: the bytes crossed a wire.
   */
  putBlocks(blocks: readonly StoredBlock[], options?: PutOptions): Promise<unknown>;
  getBlocks(addresses: readonly Buffer[], signal?: AbortSignal, options?: GetBlocksOptions): AsyncGenerator<{ address: Buffer; data: Buffer | undefined }>;
  close(): void;
}

export interface ReplicationLogger {
  warn(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export interface ReplicatedBlockClientOptions {
  readonly map: MapSource;
  readonly credentials: grpc.ChannelCredentials;
  readonly token: TokenProvider;
  /** Durable copies before a put is acknowledged (default 2, capped at the map's RF). */
  readonly writeQuorum?: number;
  /** Deadline of one node's put or get stream (ms, default 60 000). */
  readonly timeoutMs?: number;
  readonly log?: ReplicationLogger;
  readonly registry?: Registry;
  /** Read repairs queued at once; more are dropped (anti-entropy repairs them later). */
  readonly maxPendingRepairs?: number;
  /** Block nodes in this process, by the address the map gives them: called directly, not over gRPC. */
  readonly localPeers?: ReadonlyMap<string, LocalBlockPeer>;
}

interface WriteState {
  readonly block: StoredBlock;
  readonly partition: number;
  readonly acked: Set<string>;
  readonly tried: Set<string>;
  /** Copies still owed because an owner failed. */
  owed: number;
  lastError: unknown;
}

const silent: ReplicationLogger = { warn() {}, debug() {} };
/** How long a node that failed a call is asked last on reads. */
const SUSPECT_MS = 5_000;

function hex(b: Buffer): string {
  return b.toString('hex');
}

function sha256(data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest();
}

function isBadInput(err: unknown): boolean {
  return isCairnError(err) && (err.code === 'CAIRN_HASH_MISMATCH' || err.code === 'CAIRN_BLOCK_TOO_LARGE' || err.code === 'CAIRN_INVALID_HASH' || err.code === 'CAIRN_INVALID_ARGUMENT');
}

export class ReplicatedBlockClient implements BlockAccess {
  readonly #map: MapSource;
  readonly #peers: PeerPool;
  readonly #local: ReadonlyMap<string, LocalBlockPeer>;
  readonly #w: number;
  readonly #log: ReplicationLogger;
  readonly #suspect = new Map<string, number>();
  readonly #repairs = new Set<Promise<void>>();
  readonly #maxRepairs: number;
  readonly #counters: { handoffs?: Counter; repairs?: Counter; failures?: Counter };
  #closed = false;

  constructor(options: ReplicatedBlockClientOptions) {
    const w = options.writeQuorum ?? 2;
    if (!Number.isInteger(w) || w < 1) throw new RangeError('options.writeQuorum must be an integer ≥ 1');
    this.#map = options.map;
    this.#w = w;
    this.#log = options.log ?? silent;
    this.#maxRepairs = options.maxPendingRepairs ?? 64;
    this.#local = options.localPeers ?? new Map();
    this.#peers = new PeerPool({ credentials: options.credentials, token: options.token, timeoutMs: options.timeoutMs ?? 60_000 });
    const registers = options.registry ? [options.registry] : undefined;
    this.#counters = registers
      ? {
          handoffs: new Counter({ name: 'cairn_replication_handoff_blocks_total', help: 'Block copies written to a handoff node because an owner could not take them.', registers }),
          repairs: new Counter({ name: 'cairn_replication_read_repairs_total', help: 'Block copies rewritten to an owner after a read found them missing or corrupt.', registers }),
          failures: new Counter({ name: 'cairn_replication_node_failures_total', help: 'Block node calls that failed, by operation.', labelNames: ['op'], registers }),
        }
      : {};
  }

  /** Copies each block to its owners; resolves once every block has W durable copies. */
  async putBlocks(blocks: readonly StoredBlock[], options: PutOptions = {}): Promise<{ blocks: number; copies: number }> {
    const callerHashed = options.callerHashed === true;
    const map = this.#map.current();
    if (map.epoch === 0 || map.nodes.length === 0) throw new CairnError('CAIRN_INSUFFICIENT_REPLICAS', 'no cluster map yet: no block node to write to', { retryAfterMs: 1000 });
    const w = Math.min(this.#w, map.replicationFactor);
    const states = new Map<string, WriteState>();
    for (const block of blocks) {
      const key = hex(block.address);
      if (!states.has(key)) states.set(key, { block, partition: partitionOf(block.address), acked: new Set(), tried: new Set(), owed: 0, lastError: undefined });
    }
    if (states.size === 0) return { blocks: 0, copies: 0 };

    // Round one: every owner of every block, one stream per node.
    const plan = new Map<string, WriteState[]>();
    for (const s of states.values()) {
      for (const id of map.partitions[s.partition] ?? []) {
        s.tried.add(id);
        let list = plan.get(id);
        if (!list) plan.set(id, (list = []));
        list.push(s);
      }
    }
    await this.#sendRound(map, plan, false, callerHashed);

    // Handoff rounds: each failed owner's copy goes to the next node in the partition's handoff order.
    for (let round = 0; round < 3; round++) {
      const next = new Map<string, WriteState[]>();
      for (const s of states.values()) {
        if (s.owed === 0) continue;
        const order = handoffOrder(map, s.partition).filter((id) => !s.tried.has(id));
        const picks = order.slice(0, s.owed);
        for (const id of picks) {
          s.tried.add(id);
          let list = next.get(id);
          if (!list) next.set(id, (list = []));
          list.push(s);
        }
      }
      if (next.size === 0) break;
      for (const s of states.values()) s.owed = 0;
      await this.#sendRound(map, next, true, callerHashed);
    }

    let copies = 0;
    for (const s of states.values()) {
      copies += s.acked.size;
      if (s.acked.size < w) {
        const cause = s.lastError;
        throw new CairnError('CAIRN_INSUFFICIENT_REPLICAS', `block ${hex(s.block.address)} has ${s.acked.size} durable copies, ${w} needed${isCairnError(cause) ? ` (last error: ${cause.code})` : ''}`, {
          retryAfterMs: 1000,
          metadata: { address: hex(s.block.address), acked: String(s.acked.size), needed: String(w) },
          cause,
        });
      }
    }
    return { blocks: states.size, copies };
  }

  async #sendRound(map: ClusterMap, plan: Map<string, WriteState[]>, handoff: boolean, callerHashed: boolean): Promise<void> {
    const results = await Promise.allSettled(
      [...plan.entries()].map(async ([id, list]) => {
        const addr = addrOf(map, this.#map.previous(), id);
        if (addr === undefined) throw new CairnError('CAIRN_UNAVAILABLE', `node ${id} has no address in the map`);
        try {
          await this.#peer(addr).putBlocks(list.map((s) => s.block), callerHashed ? { handoff, callerHashed } : { handoff });
        } catch (err) {
          this.#counters.failures?.inc({ op: 'put' });
          this.#log.warn({ node: id, blocks: list.length, handoff, err: isCairnError(err) ? err.code : String(err) }, 'block put to node failed');
          throw err;
        }
      }),
    );
    const entries = [...plan.entries()];
    results.forEach((r, i) => {
      const [id, list] = entries[i]!;
      for (const s of list) {
        if (r.status === 'fulfilled') {
          s.acked.add(id);
          if (handoff) this.#counters.handoffs?.inc();
        } else {
          if (isBadInput(r.reason)) throw r.reason;
          s.lastError = r.reason;
          s.owed++;
        }
      }
      if (r.status === 'rejected') this.#suspect.set(id, performance.now() + SUSPECT_MS);
    });
  }

  /**
   * Streams the requested blocks in request order, each verified against its address (unless
   * the caller verifies them itself: `callerVerifies`); a block no replica holds intact comes back
   * with data undefined. Bad or missing copies on owners are repaired in the background.
   */
  async *getBlocks(addresses: readonly Buffer[], signal?: AbortSignal, options: GetBlocksOptions = {}): AsyncGenerator<{ address: Buffer; data: Buffer | undefined }> {
    const map = this.#map.current();
    const previous = this.#map.previous();
    const found = new Map<string, Buffer>();
    const misses = new Map<string, string[]>();
    const candidates = new Map<string, { address: Buffer; order: string[] }>();
    const now = performance.now();
    for (const address of addresses) {
      const key = hex(address);
      if (candidates.has(key)) continue;
      const order = readCandidates(map, previous, address);
      // Nodes that just failed are asked last, so one dead owner does not slow every read.
      const healthy = order.filter((id) => (this.#suspect.get(id) ?? 0) <= now);
      const sick = order.filter((id) => (this.#suspect.get(id) ?? 0) > now);
      candidates.set(key, { address, order: [...healthy, ...sick] });
    }
    for (let round = 0; ; round++) {
      const plan = new Map<string, Buffer[]>();
      for (const [key, c] of candidates) {
        if (found.has(key)) continue;
        const id = c.order[round];
        if (id === undefined) continue;
        let list = plan.get(id);
        if (!list) plan.set(id, (list = []));
        list.push(c.address);
      }
      if (plan.size === 0) break;
      signal?.throwIfAborted();
      await Promise.all(
        [...plan.entries()].map(async ([id, list]) => {
          const addr = addrOf(map, previous, id);
          if (addr === undefined) return;
          const answered = new Set<string>();
          const peer = this.#peer(addr);
          // A node in this process hands back what its store just verified: hashing again buys
          // nothing; nor does it for a caller that authenticates each block itself.
          const verified = options.callerVerifies === true || ('verified' in peer && peer.verified);
          try {
            for await (const b of peer.getBlocks(list, signal, options)) {
              const key = hex(b.address);
              answered.add(key);
              if (b.data !== undefined && (verified || sha256(b.data).equals(b.address))) found.set(key, b.data);
              else (misses.get(key) ?? misses.set(key, []).get(key)!).push(id);
            }
          } catch (err) {
            if (signal?.aborted) throw err;
            this.#counters.failures?.inc({ op: 'get' });
            this.#suspect.set(id, performance.now() + SUSPECT_MS);
            this.#log.debug({ node: id, err: isCairnError(err) ? err.code : String(err) }, 'block get from node failed');
          }
        }),
      );
    }
    this.#scheduleRepair(map, found, misses);
    for (const address of addresses) yield { address, data: found.get(hex(address)) };
  }

  #peer(addr: string): BlockPeer {
    return this.#local.get(addr) ?? this.#peers.get(addr);
  }

  /** Rewrites intact copies to the current owners that answered "missing" (or had a bad copy). */
  #scheduleRepair(map: ClusterMap, found: Map<string, Buffer>, misses: Map<string, string[]>): void {
    const perNode = new Map<string, StoredBlock[]>();
    for (const [key, ids] of misses) {
      const data = found.get(key);
      if (data === undefined) continue;
      const address = Buffer.from(key, 'hex');
      const owners = map.partitions[partitionOf(address)] ?? [];
      for (const id of ids) {
        if (!owners.includes(id)) continue;
        let list = perNode.get(id);
        if (!list) perNode.set(id, (list = []));
        // A copy: the reader may hand the block's buffer back to its pool (options.pool) as soon
        // as it has used it, while this put runs in the background.
        list.push({ address, data: Buffer.from(data) });
      }
    }
    for (const [id, blocks] of perNode) {
      if (this.#closed || this.#repairs.size >= this.#maxRepairs) return;
      const addr = addrOf(map, undefined, id);
      if (addr === undefined) continue;
      const p: Promise<void> = this.#peer(addr)
        .putBlocks(blocks, { repair: true })
        .then(
          () => {
            this.#counters.repairs?.inc(blocks.length);
            this.#log.debug({ node: id, blocks: blocks.length }, 'read repair done');
          },
          (err: unknown) => this.#log.warn({ node: id, blocks: blocks.length, err: isCairnError(err) ? err.code : String(err) }, 'read repair failed'),
        )
        .finally(() => this.#repairs.delete(p));
      this.#repairs.add(p);
    }
  }

  /** Waits for queued read repairs (tests, shutdown). */
  async settled(): Promise<void> {
    while (this.#repairs.size > 0) await Promise.allSettled([...this.#repairs]);
  }

  close(): void {
    this.#closed = true;
    this.#peers.close();
  }
}
