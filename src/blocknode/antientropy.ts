// Anti-entropy and rebalance on one block node. A pass walks all 4096 partitions: for those the
// node owns it compares digests with the other owners and pushes what they lack; data it holds
// but does not own (moved away, drained, or handed off) goes to the owners and is deleted only
// once every owner confirms it. Rate-limited, resumable from a persisted cursor, with jittered backoff.
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { writeFileAtomic } from '../common/auth.js';
import { isCairnError } from '../common/errors.js';
import { PARTITION_COUNT, type ClusterMap } from '../placement/index.js';
import type { StoredBlock } from './client.js';
import type { PartitionDigests } from './digests.js';
import type { BlockStore } from './engine/index.js';
import { TokenBucket, backoffMs, pool } from './limits.js';
import type { MapSource } from './map-source.js';
import { addrOf, type PeerPool } from './peers.js';

export type AntiEntropyState = 'idle' | 'walking' | 'backoff' | 'stopped';
export const ANTIENTROPY_STATES: readonly AntiEntropyState[] = ['idle', 'walking', 'backoff', 'stopped'];

export interface AntiEntropyLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export interface AntiEntropyOptions {
  readonly store: BlockStore;
  readonly digests: PartitionDigests;
  readonly map: MapSource;
  readonly selfId: string;
  readonly peers: PeerPool;
  readonly log: AntiEntropyLogger;
  /** Bytes pushed to peers per second (0 = unlimited). */
  readonly bytesPerSecond: number;
  /** Pause between passes (ms); 0 disables the loop. */
  readonly intervalMs: number;
  /** Data a node no longer owns is deleted only once the map has been stable this long (ms). */
  readonly settleMs?: number;
  /** Where the resumable cursor lives. */
  readonly stateFile?: string;
  /** Called after every repair of quarantined blocks (the scrubber owns it). */
  readonly repairQuarantined?: () => Promise<unknown>;
  readonly onPushed?: (bytes: number, blocks: number) => void;
  readonly onDeleted?: (blocks: number) => void;
}

/** Figures of the last completed pass. */
export interface AntiEntropyReport {
  /** The map epoch the pass worked against (0: no pass yet). */
  readonly epoch: number;
  readonly underReplicatedPartitions: number;
  readonly bytesToMove: number;
  readonly soleCopies: number;
}

interface PassTotals {
  underReplicated: number;
  bytesToMove: number;
  soleCopies: number;
}

const DIGEST_BATCH = 512;
const PAGE = 1024;
const PUSH_BYTES = 4 * 1024 * 1024;
const PARALLEL_PARTITIONS = 8;
const PUSH_QUEUE_BLOCKS = 512;

function hex(b: Buffer): string {
  return b.toString('hex');
}

export class AntiEntropy {
  readonly #o: AntiEntropyOptions;
  readonly #bucket: TokenBucket;
  readonly #abort = new AbortController();
  #state: AntiEntropyState = 'idle';
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #kicked = false;
  #passes = 0;
  #cursor = 0;
  #cursorEpoch = 0;
  #report: AntiEntropyReport = { epoch: 0, underReplicatedPartitions: 0, bytesToMove: 0, soleCopies: 0 };
  #totals: PassTotals = { underReplicated: 0, bytesToMove: 0, soleCopies: 0 };
  #mapChangedAt = performance.now();
  #unsubscribe: (() => void) | undefined;
  /** Peers that failed this pass are skipped until the next one. */
  readonly #failedPeers = new Set<string>();
  /** Blocks waiting to be pushed, per peer id. */
  readonly #pushQueue = new Map<string, { addr: string; addresses: Buffer[] }>();
  /** Partitions progressed in the current pass (for metrics). */
  #done = 0;

  constructor(options: AntiEntropyOptions) {
    this.#o = options;
    this.#bucket = new TokenBucket(options.bytesPerSecond);
    this.#loadCursor();
  }

  get state(): AntiEntropyState {
    return this.#state;
  }

  get passes(): number {
    return this.#passes;
  }

  get partitionsDone(): number {
    return this.#done;
  }

  get report(): AntiEntropyReport {
    return this.#report;
  }

  start(): void {
    if (this.#o.intervalMs <= 0 || this.#loop) return;
    this.#unsubscribe = this.#o.map.onChange(() => {
      this.#mapChangedAt = performance.now();
      this.kick();
    });
    this.#loop = this.#run();
  }

  /** Runs a pass soon (map change, handoff received). */
  kick(): void {
    this.#kicked = true;
    this.#wake?.();
  }

  async stop(): Promise<void> {
    this.#unsubscribe?.();
    this.#abort.abort();
    this.#wake?.();
    await this.#loop;
    this.#state = 'stopped';
  }

  async #pause(ms: number): Promise<void> {
    if (this.#kicked) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
    this.#wake = undefined;
  }

  async #run(): Promise<void> {
    const signal = this.#abort.signal;
    let failures = 0;
    while (!signal.aborted) {
      this.#kicked = false;
      this.#state = 'walking';
      try {
        await this.pass(signal);
        failures = 0;
        this.#state = 'idle';
        await this.#pause(this.#o.intervalMs);
      } catch (err) {
        if (signal.aborted) break;
        failures++;
        this.#state = 'backoff';
        const delay = backoffMs(failures, 500, 30_000);
        this.#o.log.warn({ err, failures, delayMs: delay }, 'anti-entropy pass failed; backing off');
        await sleep(delay, undefined, { signal }).catch(() => undefined);
      }
    }
    this.#state = 'stopped';
  }

  /** One pass over every partition, from the saved cursor to the end. */
  async pass(signal: AbortSignal = this.#abort.signal): Promise<AntiEntropyReport> {
    const map = this.#o.map.current();
    if (map.epoch === 0) return this.#report;
    if (this.#cursorEpoch !== map.epoch || this.#cursor === 0) {
      // A new map invalidates a half-done pass: its totals describe the old placement.
      this.#cursor = 0;
      this.#cursorEpoch = map.epoch;
      this.#totals = { underReplicated: 0, bytesToMove: 0, soleCopies: 0 };
      this.#failedPeers.clear();
      this.#done = 0;
    }
    const started = performance.now();
    await this.#o.repairQuarantined?.().catch((err: unknown) => this.#o.log.warn({ err }, 'quarantine repair failed'));
    while (this.#cursor < PARTITION_COUNT) {
      if (signal.aborted) return this.#report;
      if (this.#o.map.current().epoch !== map.epoch) {
        // The map moved under us: start over with the new one.
        this.#cursor = 0;
        return this.pass(signal);
      }
      const end = Math.min(PARTITION_COUNT, this.#cursor + DIGEST_BATCH);
      const batchStarted = performance.now();
      await this.#batch(map, this.#cursor, end, signal);
      this.#o.log.debug({ from: this.#cursor, to: end, ms: Math.round(performance.now() - batchStarted) }, 'anti-entropy batch done');
      this.#cursor = end;
      this.#done = end;
      this.#saveCursor();
    }
    this.#report = { epoch: map.epoch, underReplicatedPartitions: this.#totals.underReplicated, bytesToMove: this.#totals.bytesToMove, soleCopies: this.#totals.soleCopies };
    this.#passes++;
    this.#cursor = 0;
    this.#saveCursor();
    this.#o.log.debug({ ...this.#report, passes: this.#passes, ms: Math.round(performance.now() - started) }, 'anti-entropy pass done');
    return this.#report;
  }

  async #batch(map: ClusterMap, from: number, to: number, signal: AbortSignal): Promise<void> {
    const self = this.#o.selfId;
    const owned: number[] = [];
    const foreign: number[] = [];
    for (let p = from; p < to; p++) {
      if ((map.partitions[p] ?? []).includes(self)) owned.push(p);
      else foreign.push(p);
    }
    // Owned partitions: ask each other owner for the digests of the partitions it shares with us.
    const local = new Map<number, { count: number; digest: Buffer }>();
    for (const p of owned) local.set(p, await this.#o.digests.summary(p));
    const byPeer = new Map<string, number[]>();
    for (const p of owned) {
      if ((local.get(p)?.count ?? 0) === 0) continue;
      for (const id of map.partitions[p] ?? []) {
        if (id === self) continue;
        (byPeer.get(id) ?? byPeer.set(id, []).get(id)!).push(p);
      }
    }
    const remote = new Map<string, Map<number, { count: number; digest: Buffer }>>();
    for (const [id, partitions] of byPeer) {
      if (signal.aborted) return;
      const addr = addrOf(map, undefined, id);
      if (addr === undefined || this.#failedPeers.has(id)) continue;
      try {
        remote.set(id, new Map((await this.#o.peers.get(addr).partitionDigests(partitions)).map((d) => [d.partition, d])));
      } catch (err) {
        this.#peerFailed(id, err);
      }
    }
    // Partitions are worked on several at a time: each costs a few round trips and an fsync on
    // the receiver, and concurrent puts share the receiver's group commit.
    await pool(owned, PARALLEL_PARTITIONS, async (p) => {
      if (signal.aborted) return;
      const mine = local.get(p)!;
      const row = map.partitions[p] ?? [];
      if (mine.count === 0) return;
      if (row.length === 1) {
        // With no other owner (RF = 1) every block held is the only copy.
        this.#totals.soleCopies += mine.count;
        return;
      }
      await this.#reconcileOwned(map, p, row, mine, remote, signal);
    });
    await this.#flushPushes(signal);

    // Partitions we do not own: hand what we hold to the owners.
    const held: number[] = [];
    // The cached digest says whether we hold anything here without touching the index.
    for (const p of foreign) if ((await this.#o.digests.summary(p)).count > 0) held.push(p);
    await pool(held, PARALLEL_PARTITIONS, async (p) => {
      if (!signal.aborted) await this.#handOff(map, p, signal);
    });
  }

  /**
   * Brings the other owners of an owned partition up to what this node holds. To move each
   * block once, a node leaves a block to an owner earlier in the partition's preference order
   * that holds it too (that owner pushes it); a block only this node has is always pushed.
   */
  async #reconcileOwned(
    map: ClusterMap,
    p: number,
    row: readonly string[],
    mine: { count: number; digest: Buffer },
    remote: Map<string, Map<number, { count: number; digest: Buffer }>>,
    signal: AbortSignal,
  ): Promise<void> {
    const self = this.#o.selfId;
    const matched = new Set<string>();
    for (const id of row) {
      const d = remote.get(id)?.get(p);
      if (d && d.count === mine.count && d.digest.equals(mine.digest)) matched.add(id);
    }
    if (matched.size === row.length - 1) return;
    const listings = new Map<string, Set<string> | undefined>();
    const listing = async (id: string): Promise<Set<string> | undefined> => {
      if (listings.has(id)) return listings.get(id);
      // An owner that holds nothing here needs no listing (a joining node, typically).
      if (remote.get(id)?.get(p)?.count === 0) {
        listings.set(id, new Set());
        return listings.get(id);
      }
      let set: Set<string> | undefined;
      const addr = addrOf(map, undefined, id);
      if (addr !== undefined && remote.has(id) && !this.#failedPeers.has(id)) {
        try {
          set = await this.#listRemote(addr, p, signal);
        } catch (err) {
          this.#peerFailed(id, err);
        }
      }
      listings.set(id, set);
      return set;
    };
    const held = await this.#listLocal(p);
    const myIndex = row.indexOf(self);
    /** Blocks held here that no other owner is known to hold. */
    let sole: Set<string> | undefined = matched.size > 0 ? new Set() : undefined;
    for (const id of row) {
      if (id === self || matched.has(id) || signal.aborted) continue;
      const theirs = await listing(id);
      const lacking = theirs === undefined ? [...held.keys()] : [...held.keys()].filter((k) => !theirs.has(k));
      sole = sole === undefined ? new Set(lacking) : new Set([...sole].filter((k) => lacking.includes(k)));
      if (lacking.length === 0) continue;
      this.#totals.underReplicated++;
      const addr = addrOf(map, undefined, id);
      if (theirs === undefined || addr === undefined) continue;
      const toPush: Buffer[] = [];
      for (const k of lacking) {
        let deferred = false;
        for (const earlier of row.slice(0, myIndex)) {
          if (earlier === id) continue;
          if (matched.has(earlier) || (await listing(earlier))?.has(k) === true) {
            deferred = true;
            break;
          }
        }
        if (!deferred) toPush.push(held.get(k)!);
      }
      if (toPush.length > 0) await this.#enqueuePush(id, addr, toPush, signal);
    }
    this.#totals.soleCopies += sole?.size ?? 0;
  }

  async #listRemote(addr: string, p: number, signal: AbortSignal): Promise<Set<string>> {
    const peer = this.#o.peers.get(addr);
    const out = new Set<string>();
    let cursor = '';
    do {
      const page = await peer.listPartition(p, cursor, PAGE);
      for (const a of page.addresses) out.add(hex(a));
      cursor = page.cursor;
    } while (cursor !== '' && !signal.aborted);
    return out;
  }

  async #listLocal(p: number): Promise<Map<string, Buffer>> {
    const out = new Map<string, Buffer>();
    let after: Buffer | undefined;
    for (;;) {
      const page = await this.#o.store.listAddresses({ partition: p, limit: PAGE, ...(after ? { after } : {}) });
      for (const a of page) out.set(hex(a), a);
      if (page.length < PAGE) break;
      after = page[page.length - 1];
    }
    return out;
  }

  /**
   * Queues blocks for a peer; pushes go out in large batches across partitions (one fsync on the
   * receiver per batch instead of one per partition).
   */
  async #enqueuePush(id: string, addr: string, addresses: readonly Buffer[], signal: AbortSignal): Promise<void> {
    let q = this.#pushQueue.get(id);
    if (!q) this.#pushQueue.set(id, (q = { addr, addresses: [] }));
    q.addresses.push(...addresses);
    if (q.addresses.length >= PUSH_QUEUE_BLOCKS) await this.#flushPeer(id, signal);
  }

  async #flushPeer(id: string, signal: AbortSignal): Promise<void> {
    const q = this.#pushQueue.get(id);
    if (!q || q.addresses.length === 0) return;
    const list = q.addresses;
    q.addresses = [];
    if (this.#failedPeers.has(id)) return;
    this.#o.log.debug({ node: id, blocks: list.length }, 'pushing blocks a replica lacks');
    try {
      await this.#push(q.addr, list, signal);
    } catch (err) {
      this.#peerFailed(id, err);
    }
  }

  async #flushPushes(signal: AbortSignal): Promise<void> {
    await Promise.all([...this.#pushQueue.keys()].map((id) => this.#flushPeer(id, signal)));
    this.#pushQueue.clear();
  }

  /** Reads local blocks and streams them to a peer in ≈ 4 MiB puts, within the byte budget. */
  async #push(addr: string, addresses: readonly Buffer[], signal: AbortSignal): Promise<number> {
    let batch: StoredBlock[] = [];
    let size = 0;
    let pushed = 0;
    const flush = async (): Promise<void> => {
      if (batch.length === 0) return;
      await this.#bucket.take(size, signal);
      await this.#o.peers.get(addr).putBlocks(batch, { repair: true });
      this.#o.onPushed?.(size, batch.length);
      pushed += batch.length;
      batch = [];
      size = 0;
    };
    for (const address of addresses) {
      if (signal.aborted) break;
      let data: Buffer | undefined;
      try {
        data = await this.#o.store.get(address);
      } catch (err) {
        // A corrupt local copy is quarantined by the read; the scrubber restores it.
        if (!isCairnError(err, 'CAIRN_CORRUPT_BLOCK')) throw err;
        this.#o.digests.invalidate([address]);
      }
      if (data === undefined) continue;
      this.#totals.bytesToMove += data.length;
      batch.push({ address, data });
      size += data.length;
      if (size >= PUSH_BYTES) await flush();
    }
    await flush();
    return pushed;
  }

  /**
   * Moves a partition this node does not own to its owners and deletes local copies once every
   * owner confirms one. Blocks some owner already holds are left to the owners' own
   * anti-entropy (so each block moves once); blocks no owner holds are pushed to all of them.
   */
  async #handOff(map: ClusterMap, p: number, signal: AbortSignal): Promise<void> {
    const owners = (map.partitions[p] ?? []).filter((id) => id !== this.#o.selfId);
    if (owners.length === 0) return;
    const stable = performance.now() - this.#mapChangedAt >= (this.#o.settleMs ?? 10_000);
    let after: Buffer | undefined;
    let incomplete = false;
    for (;;) {
      if (signal.aborted) return;
      const page = await this.#o.store.listAddresses({ partition: p, limit: PAGE, ...(after ? { after } : {}) });
      if (page.length === 0) break;
      after = page[page.length - 1];
      const presence = new Map<string, boolean[] | undefined>();
      // An owner's GC tombstone is not a confirmation: this copy may be a leftover that missed
      // the deletion, or a fresh re-upload handed off here while the owners were away — the two
      // cannot be told apart without write times, and deleting the second would lose data. Such
      // a copy stays (counted as a sole copy) until the owners' tombstones expire.
      for (const id of owners) {
        const addr = addrOf(map, undefined, id);
        if (addr === undefined || this.#failedPeers.has(id)) {
          presence.set(id, undefined);
          continue;
        }
        try {
          presence.set(id, await this.#o.peers.get(addr).hasBlocks(page));
        } catch (err) {
          this.#peerFailed(id, err);
          presence.set(id, undefined);
        }
      }
      const heldBy = page.map((_, i) => owners.filter((id) => presence.get(id)?.[i] === true).length);
      const orphans = page.filter((_, i) => heldBy[i] === 0);
      if (orphans.length > 0) {
        for (const id of owners) {
          const addr = addrOf(map, undefined, id);
          const present = presence.get(id);
          if (addr === undefined || present === undefined) continue;
          try {
            await this.#push(addr, orphans, signal);
            // Count only what the owner confirms it holds now, not what we think we sent.
            const again = await this.#o.peers.get(addr).hasBlocks(orphans);
            orphans.forEach((a, k) => {
              if (again[k] === true) heldBy[page.indexOf(a)]!++;
            });
          } catch (err) {
            this.#peerFailed(id, err);
          }
        }
      }
      const confirmed = page.filter((_, i) => heldBy[i] === owners.length);
      // Data we no longer own counts as a sole copy until every owner holds it: removing this
      // node before then would leave the block below RF (or lose it).
      this.#totals.soleCopies += page.length - confirmed.length;
      if (confirmed.length < page.length) incomplete = true;
      if (confirmed.length > 0 && stable) {
        await this.#o.store.delete(confirmed);
        this.#o.digests.invalidate(confirmed);
        this.#o.onDeleted?.(confirmed.length);
      } else if (confirmed.length > 0) {
        incomplete = true;
      }
      if (page.length < PAGE) break;
    }
    if (incomplete) this.#totals.underReplicated++;
  }

  #peerFailed(id: string, err: unknown): void {
    this.#failedPeers.add(id);
    this.#o.log.debug({ node: id, err: isCairnError(err) ? err.code : String(err) }, 'anti-entropy: peer unavailable for the rest of this pass');
  }

  #loadCursor(): void {
    if (this.#o.stateFile === undefined) return;
    try {
      const saved = JSON.parse(readFileSync(this.#o.stateFile, 'utf8')) as { epoch?: unknown; partition?: unknown };
      if (typeof saved.epoch === 'number' && typeof saved.partition === 'number' && saved.partition >= 0 && saved.partition < PARTITION_COUNT) {
        this.#cursorEpoch = saved.epoch;
        this.#cursor = saved.partition;
      }
    } catch {
      // No cursor yet (or a torn one): start from partition 0.
    }
  }

  #saveCursor(): void {
    if (this.#o.stateFile === undefined) return;
    try {
      writeFileAtomic(this.#o.stateFile, JSON.stringify({ epoch: this.#cursorEpoch, partition: this.#cursor }) + '\n', 0o644);
    } catch (err) {
      this.#o.log.warn({ err }, 'could not save the anti-entropy cursor');
    }
  }
}
