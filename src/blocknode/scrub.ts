// Background scrub: re-verify every stored record at a configured byte rate, quarantine the
// corrupt ones (the engine does) and restore them from replicas; quarantines found on reads
// are repaired here too. `cairn_blocknode_scrub_errors_total` counts what it finds.
import { setTimeout as sleep } from 'node:timers/promises';
import { createHash } from 'node:crypto';
import type { Counter } from 'prom-client';
import { isCairnError } from '../common/errors.js';
import type { PartitionDigests } from './digests.js';
import type { BlockStore } from './engine/index.js';
import type { MapSource } from './map-source.js';
import { addrOf, readCandidates, type PeerPool } from './peers.js';
import type { ScrubOutcome } from './service.js';

export interface ScrubLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export interface ScrubberOptions {
  readonly store: BlockStore;
  readonly digests: PartitionDigests;
  readonly map: MapSource;
  readonly selfId: string;
  readonly peers: PeerPool;
  readonly log: ScrubLogger;
  /** Read budget of the background scrub (bytes/s, default 8 MiB/s). */
  readonly bytesPerSecond?: number;
  /** Pause between background scrubs (ms); 0 disables the loop (Scrub RPC still works). */
  readonly intervalMs: number;
  readonly errors?: Counter;
  readonly repaired?: Counter;
}

export class Scrubber {
  readonly #o: ScrubberOptions;
  readonly #abort = new AbortController();
  #chain: Promise<unknown> = Promise.resolve();
  #repairChain: Promise<unknown> = Promise.resolve();
  #loop: Promise<void> | undefined;
  #errors = 0;

  constructor(options: ScrubberOptions) {
    this.#o = options;
  }

  get errors(): number {
    return this.#errors;
  }

  start(): void {
    if (this.#o.intervalMs <= 0 || this.#loop) return;
    this.#loop = this.#run();
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#loop;
    await this.#chain.catch(() => undefined);
  }

  async #run(): Promise<void> {
    const signal = this.#abort.signal;
    const { store, intervalMs } = this.#o;
    // The schedule survives restarts: the next scrub is due a full interval after the last
    // complete one (a never-scrubbed store starts its clock now, having verified every write),
    // so a node that restarts often does not re-read its whole disk each time. At least a few
    // seconds pass first, for the node to settle and its peers to start.
    let last: number | undefined;
    try {
      last = await store.lastScrubbedMs();
      if (last === undefined) {
        last = Date.now();
        await store.markScrubbed(last);
      }
    } catch (err) {
      if (!signal.aborted) this.#o.log.warn({ err }, 'cannot read the scrub schedule; scrubbing a full interval from now');
      last = Date.now();
    }
    const firstIn = Math.max(Math.min(intervalMs, 5_000), Math.min(intervalMs, last + intervalMs - Date.now()));
    await sleep(firstIn, undefined, { signal }).catch(() => undefined);
    while (!signal.aborted) {
      try {
        await this.scrubNow(undefined, signal);
      } catch (err) {
        if (!signal.aborted) this.#o.log.warn({ err }, 'scrub failed');
      }
      await sleep(this.#o.intervalMs, undefined, { signal }).catch(() => undefined);
    }
  }

  /** One full scrub, then repair of everything quarantined; scrubs never overlap. */
  scrubNow(maxBytesPerSecond: number | undefined, signal: AbortSignal): Promise<ScrubOutcome> {
    const run = async (): Promise<ScrubOutcome> => {
      const merged = AbortSignal.any([signal, this.#abort.signal]);
      const rate = maxBytesPerSecond ?? this.#o.bytesPerSecond ?? 8 * 1024 * 1024;
      const { checked, corrupt } = await this.#o.store.scrub({
        maxBytesPerSecond: rate,
        signal: merged,
        onRecord: (r) => {
          if (r.ok) return;
          this.#errors++;
          this.#o.errors?.inc();
        },
      });
      this.#o.digests.invalidate(corrupt);
      if (corrupt.length > 0) this.#o.log.warn({ corrupt: corrupt.length, checked }, 'scrub found corrupt blocks');
      const { unrepaired } = await this.repairQuarantined(merged);
      // Anti-entropy may have restored some of them already: count what is intact now.
      const present = corrupt.length === 0 ? [] : await this.#o.store.has(corrupt);
      return { checked, corrupt, repaired: present.filter(Boolean).length, unrepaired };
    };
    const p = this.#chain.then(run, run);
    this.#chain = p.catch(() => undefined);
    return p;
  }

  /** Fetches an intact copy of every quarantined block from another replica and stores it; calls never overlap. */
  repairQuarantined(signal?: AbortSignal): Promise<{ repaired: number; unrepaired: number }> {
    const run = (): Promise<{ repaired: number; unrepaired: number }> => this.#repair(signal);
    const p = this.#repairChain.then(run, run);
    this.#repairChain = p.catch(() => undefined);
    return p;
  }

  async #repair(signal?: AbortSignal): Promise<{ repaired: number; unrepaired: number }> {
    const { store, map: source, selfId, peers, log } = this.#o;
    const addresses = await store.quarantined();
    let repaired = 0;
    let unrepaired = 0;
    for (const address of addresses) {
      if (signal?.aborted) break;
      const map = source.current();
      const previous = source.previous();
      let restored = false;
      for (const id of readCandidates(map, previous, address)) {
        if (id === selfId) continue;
        const addr = addrOf(map, previous, id);
        if (addr === undefined) continue;
        try {
          let data: Buffer | undefined;
          for await (const b of peers.get(addr).getBlocks([address])) data = b.data;
          if (data === undefined || !createHash('sha256').update(data).digest().equals(address)) continue;
          await store.put([{ address, data }]);
          this.#o.digests.invalidate([address]);
          restored = true;
          break;
        } catch (err) {
          log.warn({ node: id, address: address.toString('hex'), err: isCairnError(err) ? err.code : String(err) }, 'could not fetch a replica for repair');
        }
      }
      if (restored) {
        repaired++;
        this.#o.repaired?.inc();
      } else {
        unrepaired++;
      }
    }
    if (repaired + unrepaired > 0) log.info({ repaired, unrepaired }, 'quarantined blocks repaired from replicas');
    return { repaired, unrepaired };
  }
}
