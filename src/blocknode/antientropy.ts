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
import { TokenBucket, backoffMs } from './limits.js';
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
  #report: AntiEntropyReport = { underReplicatedPartitions: 0, bytesToMove: 0, soleCopies: 0 };
  #totals: PassTotals = { underReplicated: 0, bytesToMove: 0, soleCopies: 0 };
  #mapChangedAt = performance.now();
  #unsubscribe: (() => void) | undefined;
  /** Peers that failed this pass are skipped until the next one. */
  readonly #failedPeers = new Set<string>();
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
    await this.#o.repairQuarantined?.().catch((err: unknown) => this.#o.log.warn({ err }, 'quarantine repair failed'));
    while (this.#cursor < PARTITION_COUNT) {
      if (signal.aborted) return this.#report;
      if (this.#o.map.current().epoch !== map.epoch) {
        // The map moved under us: start over with the new one.
        this.#cursor = 0;
        return this.pass(signal);
      }
      const end = Math.min(PARTITION_COUNT, this.#cursor + DIGEST_BATCH);
      await this.#batch(map, this.#cursor, end, signal);
      this.#cursor = end;
      this.#done = end;
      this.#saveCursor();
    }
    this.#report = { underReplicatedPartitions: this.#totals.underReplicated, bytesToMove: this.#totals.bytesToMove, soleCopies: this.#totals.soleCopies };
    this.#passes++;
    this.#cursor = 0;
    this.#saveCursor();
    this.#o.log.debug({ ...this.#report, passes: this.#passes }, 'anti-entropy pass done');
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
    /** Per partition: addresses no other owner is known to hold (undefined = every owner agrees). */
    const unconfirmed = new Map<number, Set<string> | 'all'>();
    const under = new Set<number>();
    for (const [id, partitions] of byPeer) {
      if (signal.aborted) return;
      const addr = addrOf(map, undefined, id);
      let remote: Map<number, { count: number; digest: Buffer }> | undefined;
      if (addr !== undefined && !this.#failedPeers.has(id)) {
        try {
          remote = new Map((await this.#o.peers.get(addr).partitionDigests(partitions)).map((d) => [d.partition, d]));
        } catch (err) {
          this.#peerFailed(id, err);
        }
      }
      for (const p of partitions) {
        const mine = local.get(p)!;
        const theirs = remote?.get(p);
        if (theirs && theirs.count === mine.count && theirs.digest.equals(mine.digest)) {
          unconfirmed.set(p, new Set());
          continue;
        }
        under.add(p);
        let lacking: Set<string> | 'all' = 'all';
        if (addr !== undefined && remote !== undefined) {
          try {
            lacking = await this.#reconcile(p, id, addr, signal);
          } catch (err) {
            this.#peerFailed(id, err);
          }
        }
        const prev = unconfirmed.get(p);
        if (prev === undefined) unconfirmed.set(p, lacking);
        else if (prev !== 'all') unconfirmed.set(p, lacking === 'all' ? prev : new Set([...prev].filter((k) => lacking.has(k))));
        else unconfirmed.set(p, lacking);
      }
    }
    this.#totals.underReplicated += under.size;
    for (const [p, set] of unconfirmed) this.#totals.soleCopies += set === 'all' ? (local.get(p)?.count ?? 0) : set.size;
    // With no other owner (RF = 1) every block held is the only copy.
    for (const p of owned) if ((map.partitions[p] ?? []).length === 1) this.#totals.soleCopies += local.get(p)?.count ?? 0;

    // Partitions we do not own: hand what we hold to the owners.
    for (const p of foreign) {
      if (signal.aborted) return;
      const any = await this.#o.store.listAddresses({ partition: p, limit: 1 });
      if (any.length === 0) continue;
      await this.#handOff(map, p, signal);
    }
  }

  /** Pushes to `id` what it lacks of partition p; returns the addresses it lacked. */
  async #reconcile(p: number, id: string, addr: string, signal: AbortSignal): Promise<Set<string>> {
    const peer = this.#o.peers.get(addr);
    const remote = new Set<string>();
    let cursor = '';
    do {
      const page = await peer.listPartition(p, cursor, PAGE);
      for (const a of page.addresses) remote.add(hex(a));
      cursor = page.cursor;
    } while (cursor !== '' && !signal.aborted);
    const lacking: Buffer[] = [];
    let after: Buffer | undefined;
    for (;;) {
      const page = await this.#o.store.listAddresses({ partition: p, limit: PAGE, ...(after ? { after } : {}) });
      for (const a of page) if (!remote.has(hex(a))) lacking.push(a);
      if (page.length < PAGE) break;
      after = page[page.length - 1];
    }
    if (lacking.length > 0) {
      this.#o.log.debug({ partition: p, node: id, blocks: lacking.length }, 'pushing blocks a replica lacks');
      await this.#push(addr, lacking, signal);
    }
    return new Set(lacking.map(hex));
  }

  /** Reads local blocks and streams them to a peer in ≈ 4 MiB puts, within the byte budget. */
  async #push(addr: string, addresses: readonly Buffer[], signal: AbortSignal, count = true): Promise<number> {
    let batch: StoredBlock[] = [];
    let size = 0;
    let pushed = 0;
    const flush = async (): Promise<void> => {
      if (batch.length === 0) return;
      await this.#bucket.take(size, signal);
      await this.#o.peers.get(addr).putBlocks(batch);
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
      if (count) this.#totals.bytesToMove += data.length;
      batch.push({ address, data });
      size += data.length;
      if (size >= PUSH_BYTES) await flush();
    }
    await flush();
    return pushed;
  }

  /** Moves a partition this node does not own to its owners, deleting local copies they all confirm. */
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
      const held = new Map<string, number>(page.map((a) => [hex(a), 0]));
      for (const id of owners) {
        const addr = addrOf(map, undefined, id);
        if (addr === undefined || this.#failedPeers.has(id)) {
          incomplete = true;
          continue;
        }
        try {
          const peer = this.#o.peers.get(addr);
          const present = await peer.hasBlocks(page);
          const missing = page.filter((_, i) => present[i] !== true);
          const before = new Set(page.filter((_, i) => present[i] === true).map(hex));
          if (missing.length > 0) {
            await this.#push(addr, missing, signal);
            // Delete only what the owner confirms it holds now, not what we think we sent.
            const again = await peer.hasBlocks(missing);
            missing.forEach((a, i) => {
              if (again[i] === true) before.add(hex(a));
            });
          }
          for (const k of before) held.set(k, (held.get(k) ?? 0) + 1);
          for (const a of page) if (!before.has(hex(a))) incomplete = true;
        } catch (err) {
          incomplete = true;
          this.#peerFailed(id, err);
        }
      }
      const confirmed = page.filter((a) => held.get(hex(a)) === owners.length);
      this.#totals.soleCopies += page.filter((a) => held.get(hex(a)) === 0).length;
      if (confirmed.length > 0 && stable) {
        await this.#o.store.delete(confirmed);
        this.#o.digests.invalidate(confirmed);
        this.#o.onDeleted?.(confirmed.length);
      } else if (confirmed.length > 0) {
        incomplete = true;
      }
      if (page.length < PAGE) break;
    }
    if (incomplete) {
      this.#totals.underReplicated++;
      // Come back soon: a pass with leftovers should not wait a whole interval.
      if (!stable) this.#kicked = true;
    }
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
