// The embedded metadata KV on LevelDB: serializable transactions by optimistic concurrency
// control in a single process, with group commit of synced atomic batches.
import { Level } from 'level';
import { CairnError } from '../../common/errors.js';
import {
  checkChannel,
  checkFn,
  checkKey,
  checkListener,
  backoffMs,
  dedupeNotifications,
  deliver,
  inRange,
  keyId,
  maxRetriesOf,
  mergeScan,
  onAcceptedOf,
  normalizeRange,
  sleep,
  writesInRange,
  type Bound,
  type NormalRange,
  type Write,
  BufferedTx,
} from './internal.js';
import type { Kv, KvEntry, KvListener, KvRange, KvReader, KvTx, TransactOptions } from './types.js';

export interface LevelKvOptions {
  /** Directory holding the LevelDB files (created if missing). */
  readonly dir: string;
  /** Memtable size before it is flushed to a table file (default 64 MiB). */
  readonly writeBufferBytes?: number;
  /** LevelDB's block cache (default 64 MiB). */
  readonly cacheBytes?: number;
  /** Target size of one table file (default 8 MiB). */
  readonly maxFileBytes?: number;
  /** Bytes of recently read and written values kept in the process (default 16 MiB; 0 = none). */
  readonly readCacheBytes?: number;
}

/**
 * LevelDB's own defaults (4 MiB memtable, 8 MiB cache, 2 MiB tables) are sized for small
 * embedded stores. A commit writes ~1.5 KB, so a busy metadata service switched memtables every
 * few hundred ms, kept several level-0 tables (each a probe on every read, and a write stall
 * when they pile up) and compacted without pause. With these, `bench -- metadata` spent 81-89 µs
 * of CPU per commit instead of 127-156 µs and the commit p99 fell from 17 to 8-12 ms. The memory
 * is taken as it is used: a small store stays small.
 *
 * Exported for the benchmark's engine floor, which writes with the same tuning.
 */
export const LEVEL_DEFAULTS = { writeBufferBytes: 64 << 20, cacheBytes: 64 << 20, maxFileBytes: 8 << 20, readCacheBytes: 16 << 20 } as const;

function sizeOption(options: LevelKvOptions, name: keyof typeof LEVEL_DEFAULTS, min: number): number {
  const value = options[name] ?? LEVEL_DEFAULTS[name];
  // classic-level reads these as uint32.
  if (!Number.isSafeInteger(value) || value < min || value > 0xffffffff) {
    throw new RangeError(`options.${name} must be an integer from ${min} to ${0xffffffff}`);
  }
  return value;
}

type Db = Level<Buffer, Buffer>;
type Snapshot = ReturnType<Db['snapshot']>;

/** A transaction accepted by validation, in commit order; durable once its group is written. */
interface CommitRecord {
  readonly seq: number;
  readonly writes: ReadonlyMap<string, Write>;
  readonly notifications: ReadonlyArray<readonly [string, string]>;
  readonly done: Promise<void>;
  resolve(): void;
  reject(error: unknown): void;
}

interface ReadRange {
  readonly lower: Bound | undefined;
  readonly upper: Bound | undefined;
}

function deferredRecord(seq: number, writes: ReadonlyMap<string, Write>, notifications: ReadonlyArray<readonly [string, string]>): CommitRecord {
  let resolve!: () => void;
  let reject!: (error: unknown) => void;
  const done = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Committers and read-only readers await `done` themselves; a failed write must never also
  // surface as an unhandled rejection of this shared promise.
  done.catch(() => undefined);
  return { seq, writes, notifications, done, resolve, reject };
}

/** A value read from LevelDB, current since at most commit `seq`; `value` null once a later commit wrote the key. */
interface CacheEntry {
  value: Buffer | null;
  seq: number;
  readonly bytes: number;
  /** Read since eviction last passed it over (second chance). */
  hit: boolean;
}

/** What an entry costs besides its value: the map slot, the entry, the id string, the buffer's own allocation. */
const CACHE_ENTRY_OVERHEAD = 192;

/**
 * Values of keys read recently, so hot keys (a busy folder's entry, read by every commit under it)
 * skip LevelDB's lookup. This process is LevelDB's only writer and every commit passes through
 * `LevelKv.commit`, so the cache is exact:
 *
 * - an entry holds a key's value and a commit sequence number at or after the key's last write; a
 *   transaction that began at `startSeq` uses it only if `seq <= startSeq` (then the value is what
 *   its snapshot holds), and reads LevelDB otherwise;
 * - a commit that writes a cached key marks the entry stale (with the commit's number) until a
 *   reader whose snapshot includes the write refreshes it; one that writes an uncached key raises
 *   `floor`, and so does eviction, to the newest write the cache no longer knows about;
 * - a read may add an entry only if it began at or after `floor`: no newer write can be unknown.
 *
 * It keeps the buffers LevelDB returned (each has its own allocation, so its size is its cost) and
 * hands out copies. Absent keys are not cached: most reads of one precede a write of it.
 */
class ReadCache {
  readonly #entries = new Map<string, CacheEntry>();
  #bytes = 0;
  #floor = 0;

  constructor(private readonly maxBytes: number) {}

  /** The value as of `startSeq`, or undefined when the cache cannot say. */
  lookup(id: string, startSeq: number): Buffer | undefined {
    const e = this.#entries.get(id);
    if (e === undefined || e.value === null || e.seq > startSeq) return undefined;
    e.hit = true;
    return e.value;
  }

  /** A value LevelDB returned to a transaction that began at `startSeq`. */
  remember(id: string, value: Buffer, startSeq: number): void {
    if (this.maxBytes === 0 || startSeq < this.#floor) return;
    const e = this.#entries.get(id);
    if (e === undefined) {
      // No write since the floor is unknown to the cache, so the key's last write is at or before it.
      this.#add(id, value, this.#floor);
    } else if (e.value === null && e.seq <= startSeq) {
      // Stale since commit e.seq, and this reader's snapshot includes that commit.
      e.value = value;
    }
  }

  /** A write accepted as commit `seq`. */
  written(id: string, seq: number): void {
    const e = this.#entries.get(id);
    if (e === undefined) {
      this.#floor = seq;
    } else {
      e.value = null;
      e.seq = seq;
    }
  }

  clear(seq: number): void {
    this.#entries.clear();
    this.#bytes = 0;
    this.#floor = seq;
  }

  #add(id: string, value: Buffer, seq: number): void {
    const bytes = id.length + value.length + CACHE_ENTRY_OVERHEAD;
    if (bytes > this.maxBytes) return;
    this.#entries.set(id, { value, seq, bytes, hit: false });
    this.#bytes += bytes;
    if (this.#bytes <= this.maxBytes) return;
    // Oldest first; an entry read since eviction last passed it goes to the back once instead.
    for (const [old, e] of this.#entries) {
      if (this.#bytes <= this.maxBytes) break;
      this.#entries.delete(old);
      if (e.hit) {
        e.hit = false;
        this.#entries.set(old, e);
        continue;
      }
      this.#bytes -= e.bytes;
      if (e.seq > this.#floor) this.#floor = e.seq;
    }
  }
}

/** Most keys a sparse prefix may hold before it is given up (≈ 100 bytes of memory each). */
const SPARSE_MAX_KEYS = 100_000;

/**
 * Every key under a prefix the model says holds few keys (orphan records: usually none), so that
 * a read of an absent one skips LevelDB. A miss walks the memtable and probes each table's
 * filter, mostly cache misses: 0.6 µs with 10,000 keys in the memtable, 1.8 µs with 300,000 (a
 * busy commit load fills the 64 MiB memtable with about that many). Exact because this process is
 * LevelDB's only writer and every commit passes through `LevelKv.commit`:
 *
 * - loading lists the prefix's keys in a snapshot, then replays, in order, every commit that may
 *   be missing from it (those pending when the snapshot was taken, and all accepted since):
 *   replaying one the snapshot already holds changes nothing;
 * - from then on every accepted commit updates the set, which is therefore the state as of the
 *   newest accepted commit;
 * - a transaction that began earlier trusts an absence only if no key under the prefix has been
 *   deleted since it began: a key absent now and not deleted since was absent then too. A key
 *   present now (perhaps added since) is read from LevelDB as before;
 * - past `SPARSE_MAX_KEYS` keys the prefix is given up, and reads go to LevelDB.
 */
class SparsePrefix {
  /** The keys (ids) under the prefix as of the newest accepted commit; undefined until loaded, or given up. */
  ids: Set<string> | undefined;
  /** Commits to replay once the listing is read; undefined once loaded. */
  journal: CommitRecord[] | undefined;
  /** The last commit that deleted a key under the prefix. */
  lastDelete = 0;
  given = false;

  constructor(readonly prefix: string, pending: readonly CommitRecord[]) {
    this.journal = pending.slice();
  }

  /** Whether the key `id` (under the prefix) is surely absent for a transaction that began at `startSeq`. */
  absent(id: string, startSeq: number): boolean {
    return this.ids !== undefined && this.lastDelete <= startSeq && !this.ids.has(id);
  }

  accepted(record: CommitRecord): void {
    if (this.given) return;
    if (this.journal !== undefined) {
      this.journal.push(record);
      return;
    }
    this.apply(record);
  }

  loaded(ids: Set<string>): void {
    const journal = this.journal ?? [];
    this.journal = undefined;
    this.ids = ids;
    for (const record of journal) this.apply(record);
  }

  giveUp(): void {
    this.given = true;
    this.ids = undefined;
    this.journal = undefined;
  }

  private apply(record: CommitRecord): void {
    const ids = this.ids;
    if (ids === undefined) return;
    // Ids only, and a write's value only under the prefix: this runs for every write of every commit.
    for (const id of record.writes.keys()) {
      if (!id.startsWith(this.prefix)) continue;
      if (record.writes.get(id)!.value !== undefined) {
        ids.add(id);
      } else if (ids.delete(id)) {
        this.lastDelete = record.seq;
      }
    }
    if (ids.size > SPARSE_MAX_KEYS) this.giveUp();
  }
}

/** The first key after every key that starts with `prefix` (undefined: there is none). */
function prefixEnd(prefix: Buffer): Buffer | undefined {
  for (let i = prefix.length - 1; i >= 0; i--) {
    if (prefix[i]! < 0xff) {
      const end = Buffer.from(prefix.subarray(0, i + 1));
      end[i] = prefix[i]! + 1;
      return end;
    }
  }
  return undefined;
}

function closedError(): CairnError {
  return new CairnError('CAIRN_SHUTTING_DOWN', 'metadata KV is closed');
}

class LevelTx extends BufferedTx implements KvTx {
  readonly points = new Set<string>();
  readonly ranges: ReadRange[] = [];
  /** One options object for every point read, naming the encodings so level does not clone it per read. */
  private readonly readOptions: { snapshot: Snapshot; keyEncoding: 'buffer'; valueEncoding: 'buffer' };

  constructor(
    private readonly db: Db,
    private readonly cache: ReadCache,
    private readonly sparse: readonly SparsePrefix[],
    readonly snapshot: Snapshot,
    /** Accepted but not yet durable commits visible to this transaction, oldest first. */
    readonly overlay: readonly CommitRecord[],
    readonly startSeq: number,
    /** False for snapshot views: they never validate, so recording their reads would only cost memory. */
    private readonly tracked = true,
  ) {
    super();
    this.readOptions = { snapshot, keyEncoding: 'buffer', valueEncoding: 'buffer' };
  }

  get(key: Buffer): Promise<Buffer | undefined> {
    try {
      this.checkOpen('get');
      checkKey(key);
      return Promise.resolve(this.read(key, keyId(key)));
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  /** `get` for a caller that has the key's id already (a lane's child transaction). */
  getWithId(key: Buffer, id: string): Promise<Buffer | undefined> {
    try {
      this.checkOpen('get');
      checkKey(key);
      return Promise.resolve(this.read(key, id));
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  private read(key: Buffer, id: string): Buffer | undefined {
    const own = this.writes.get(id);
    if (own !== undefined) return own.value === undefined ? undefined : Buffer.from(own.value);
    if (this.tracked) this.points.add(id);
    for (let i = this.overlay.length - 1; i >= 0; i--) {
      const w = this.overlay[i]?.writes.get(id);
      if (w !== undefined) return w.value === undefined ? undefined : Buffer.from(w.value);
    }
    for (const p of this.sparse) if (id.startsWith(p.prefix) && p.absent(id, this.startSeq)) return undefined;
    const cached = this.cache.lookup(id, this.startSeq);
    if (cached !== undefined) return Buffer.from(cached);
    // Synchronous: a model operation makes ~10 dependent point reads, and an async get is a round
    // trip through the libuv thread pool each, which left a lane batch of 64 commits mostly
    // waiting (74% idle in a CPU profile). Metadata values are small and their blocks hot.
    const value = this.db.getSync(key, this.readOptions);
    if (value === undefined) return undefined;
    this.cache.remember(id, value, this.startSeq);
    return Buffer.from(value);
  }

  async scan(range: KvRange): Promise<KvEntry[]> {
    this.checkOpen('scan');
    const r = normalizeRange(range);
    // Later layers override earlier ones: pending commits in order, then our own writes.
    const layered = new Map<string, Write>();
    for (const record of this.overlay) {
      for (const [id, w] of record.writes) if (inRange(w.key, r.lower, r.upper)) layered.set(id, w);
    }
    for (const [id, w] of this.writes) if (inRange(w.key, r.lower, r.upper)) layered.set(id, w);
    const upper = writesInRange(layered.values(), r);
    const entries = await readStored(this.db, r, upper, this.snapshot);
    // Record what was actually observed: a scan cut short by its limit depends only on keys up
    // to the last one returned, so writes beyond it must not conflict.
    let lower = r.lower;
    let upperBound = r.upper;
    const last = entries.at(-1);
    if (last !== undefined && entries.length === r.limit) {
      if (r.reverse) lower = { key: last[0], inclusive: true };
      else upperBound = { key: last[0], inclusive: true };
    }
    if (this.tracked) this.ranges.push({ lower, upper: upperBound });
    return entries;
  }

  /** Whether any of `writes` touches something this transaction read. */
  conflictsWith(writes: ReadonlyMap<string, Write>): boolean {
    if (this.points.size === 0 && this.ranges.length === 0) return false;
    for (const [id, w] of writes) {
      if (this.points.has(id)) return true;
      for (const r of this.ranges) if (inRange(w.key, r.lower, r.upper)) return true;
    }
    return false;
  }
}

/**
 * Reads stored entries of `range` that survive the buffered `upper` writes. Each buffered delete
 * can hide at most one stored entry, so fetching limit + deletes entries is always enough.
 */
async function readStored(db: Db, r: NormalRange, upper: readonly Write[], snapshot?: Snapshot): Promise<KvEntry[]> {
  let fetch = r.limit;
  if (Number.isFinite(fetch)) for (const w of upper) if (w.value === undefined) fetch++;
  const iterator = db.iterator({
    ...(r.lower === undefined ? {} : r.lower.inclusive ? { gte: r.lower.key } : { gt: r.lower.key }),
    ...(r.upper === undefined ? {} : r.upper.inclusive ? { lte: r.upper.key } : { lt: r.upper.key }),
    reverse: r.reverse,
    ...(Number.isFinite(fetch) ? { limit: fetch } : {}),
    ...(snapshot === undefined ? {} : { snapshot }),
  });
  const stored = (await iterator.all()) as KvEntry[];
  return upper.length === 0 && !Number.isFinite(r.limit) ? stored : mergeScan(stored, upper, r);
}

type BatchOp = { type: 'put'; key: Buffer; value: Buffer } | { type: 'del'; key: Buffer };

/** classic-level's chained batch, driven through its implementor methods (see writeGroup). */
interface RawChainedBatch {
  _put(key: Buffer, value: Buffer): void;
  _del(key: Buffer): void;
  _write(options: { sync: boolean }): Promise<void>;
  close(): Promise<void>;
}

/**
 * Writes a group of commits as one synced batch. Where classic-level's implementor API is there,
 * each write goes to the native batch with one call (`_put`/`_del`, two Buffer arguments): the
 * array form (`_batch`) made the native side read `type`, `key` and `value` back from every
 * operation object by name, six N-API property calls a write, and `batch()`'s public forms clone,
 * validate and encode keys and values that were validated Buffers already (checkKey/checkValue at
 * put time). The chained batch is made by `_chainedBatch()`, whose constructor registers it with
 * the database (so a close waits for it), and closed once written. Falls back to `batch()`.
 */
function writeGroup(db: Db, group: readonly CommitRecord[]): Promise<void> {
  const make = (db as unknown as { _chainedBatch?: () => RawChainedBatch })._chainedBatch;
  if (typeof make === 'function' && db.status === 'open') {
    const batch = make.call(db);
    if (typeof batch._put === 'function' && typeof batch._del === 'function' && typeof batch._write === 'function') {
      for (const record of group) {
        for (const w of record.writes.values()) {
          if (w.value === undefined) batch._del(w.key);
          else batch._put(w.key, w.value);
        }
      }
      return batch._write({ sync: true }).finally(() => batch.close().catch(() => undefined));
    }
    void batch.close().catch(() => undefined);
  }
  const ops: BatchOp[] = [];
  for (const record of group) {
    for (const w of record.writes.values()) ops.push(w.value === undefined ? { type: 'del', key: w.key } : { type: 'put', key: w.key, value: w.value });
  }
  return db.batch(ops, { sync: true });
}

class LevelKv implements Kv {
  readonly conflictGranularity = 'key' as const;
  private readonly listeners = new Map<string, Set<KvListener>>();
  /** Sequence number of the last commit accepted by validation. */
  private acceptedSeq = 0;
  /** Accepted commits that a running transaction may still have to validate against. */
  private log: CommitRecord[] = [];
  /** Accepted commits not yet durable (the in-flight group and the queue). */
  private pending: CommitRecord[] = [];
  private queue: CommitRecord[] = [];
  private writing = false;
  private flushScheduled = false;
  /** Start sequence numbers of running transactions (with multiplicity), bounding the log. */
  private readonly activeStarts = new Map<number, number>();
  private running = 0;
  private idleWaiters: Array<() => void> = [];
  private readonly snapshotCloses = new Set<Promise<void>>();
  /** Prefixes whose keys are all known (indexSparsePrefix), and their listings still being read. */
  private readonly sparse: SparsePrefix[] = [];
  private readonly sparseLoads = new Set<Promise<void>>();
  private failure: unknown;
  private closing: Promise<void> | undefined;

  constructor(
    private readonly db: Db,
    private readonly cache: ReadCache,
  ) {}

  async get(key: Buffer): Promise<Buffer | undefined> {
    checkKey(key);
    this.checkUsable(true);
    return this.db.get(key);
  }

  async scan(range: KvRange): Promise<KvEntry[]> {
    const r = normalizeRange(range);
    this.checkUsable(true);
    return readStored(this.db, r, []);
  }

  async transact<T>(fn: (tx: KvTx) => Promise<T>, options?: TransactOptions): Promise<T> {
    checkFn(fn);
    const maxRetries = maxRetriesOf(options);
    const accepted = onAcceptedOf(options);
    this.checkUsable(true);
    this.running++;
    try {
      for (let attempt = 0; ; attempt++) {
        const tx = this.begin();
        let result: T;
        try {
          result = await fn(tx);
        } catch (error) {
          this.finish(tx);
          throw error;
        }
        const committed = this.commit(tx);
        if (committed !== undefined) {
          // Accepted: transactions that begin from now on read it through the pending overlay.
          accepted();
          await committed;
          return result;
        }
        if (attempt >= maxRetries) {
          throw new CairnError('CAIRN_TX_CONFLICT', `transaction conflicted ${attempt + 1} times`, {
            retryAfterMs: 10,
          });
        }
        await sleep(backoffMs(attempt));
        this.checkUsable(false);
      }
    } finally {
      this.running--;
      if (this.running === 0) this.wakeIdle();
    }
  }

  async snapshot<T>(fn: (view: KvReader) => Promise<T>): Promise<T> {
    checkFn(fn);
    this.checkUsable(true);
    this.running++;
    // Not registered as a running transaction: a view never validates, so a long export must not
    // hold back pruning of the commit log. Snapshot + overlay taken in one synchronous step, as in begin().
    const tx = new LevelTx(this.db, this.cache, this.sparse, this.db.snapshot(), this.pending.slice(), this.acceptedSeq, false);
    try {
      const view: KvReader = { get: (key) => tx.get(key), scan: (range) => tx.scan(range) };
      const result = await fn(view);
      // The view may include accepted commits whose batch is still being written.
      await tx.overlay.at(-1)?.done;
      return result;
    } finally {
      tx.finished = true;
      const closing = tx.snapshot.close().catch(() => undefined);
      this.snapshotCloses.add(closing);
      void closing.then(() => this.snapshotCloses.delete(closing));
      this.running--;
      if (this.running === 0) this.wakeIdle();
    }
  }

  indexSparsePrefix(prefix: Buffer): void {
    checkKey(prefix, 'prefix');
    this.checkUsable(true);
    const id = keyId(prefix);
    if (this.sparse.some((p) => p.prefix === id)) return;
    // The commits pending now and the snapshot, taken in one synchronous step (see SparsePrefix).
    const entry = new SparsePrefix(id, this.pending);
    this.sparse.push(entry);
    const snapshot = this.db.snapshot();
    const upper = prefixEnd(prefix);
    const load = this.db
      .keys({ gte: prefix, ...(upper === undefined ? {} : { lt: upper }), limit: SPARSE_MAX_KEYS + 1, snapshot })
      .all()
      .then(
        (found) => (found.length > SPARSE_MAX_KEYS ? entry.giveUp() : entry.loaded(new Set(found.map((k) => keyId(k))))),
        () => entry.giveUp(),
      )
      .finally(() => snapshot.close().catch(() => undefined));
    this.sparseLoads.add(load);
    void load.then(() => this.sparseLoads.delete(load));
  }

  subscribe(channel: string, listener: KvListener): () => void {
    checkChannel(channel);
    checkListener(listener);
    let set = this.listeners.get(channel);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(channel, set);
    }
    // A wrapper makes each subscription distinct even when the same function subscribes twice.
    const entry: KvListener = (payload) => {
      listener(payload);
    };
    set.add(entry);
    return () => {
      const current = this.listeners.get(channel);
      current?.delete(entry);
      if (current?.size === 0) this.listeners.delete(channel);
    };
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    // Running transactions (and their retries) may finish; nothing new starts.
    while (this.running > 0 || this.writing || this.queue.length > 0 || this.flushScheduled) {
      await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    }
    await Promise.all([...this.snapshotCloses, ...this.sparseLoads]);
    this.listeners.clear();
    await this.db.close();
  }

  private wakeIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }

  /** `fresh`: new work from the caller, refused once close() was called; retries may go on. */
  private checkUsable(fresh: boolean): void {
    if (fresh && this.closing !== undefined) throw closedError();
    if (this.failure !== undefined) {
      throw new CairnError('CAIRN_UNAVAILABLE', 'metadata KV failed to write and stopped accepting work', {
        cause: this.failure,
      });
    }
  }

  private begin(): LevelTx {
    const startSeq = this.acceptedSeq;
    this.activeStarts.set(startSeq, (this.activeStarts.get(startSeq) ?? 0) + 1);
    // Taken in the same synchronous step as the overlay copy: whether or not the in-flight batch
    // has reached LevelDB yet, snapshot + overlay is exactly the state as of `startSeq`.
    return new LevelTx(this.db, this.cache, this.sparse, this.db.snapshot(), this.pending.slice(), startSeq);
  }

  private finish(tx: LevelTx): void {
    tx.finished = true;
    this.release(tx.startSeq);
    const closing = tx.snapshot.close().catch(() => undefined);
    this.snapshotCloses.add(closing);
    void closing.then(() => this.snapshotCloses.delete(closing));
  }

  /**
   * Validates `tx` against every commit accepted since it started and, if none touched what it
   * read, accepts it. Synchronous, so validation and acceptance are atomic. Returns undefined on
   * conflict, else a promise settled when the commit is durable.
   */
  private commit(tx: LevelTx): Promise<void> | undefined {
    const notifications = dedupeNotifications(tx.notifications);
    if (tx.writes.size === 0 && notifications.length === 0) {
      // Read-only: it read one consistent state (as of its start), so it serializes there and
      // needs no validation; but it may have read commits that are not durable yet, and must
      // not report them before they are.
      this.finish(tx);
      const lastSeen = tx.overlay.at(-1);
      return lastSeen === undefined ? Promise.resolve() : lastSeen.done;
    }
    // Validate before finishing: releasing the start point may prune records we must check.
    const conflicted = this.validate(tx);
    this.finish(tx);
    if (conflicted) return undefined;
    if (this.failure !== undefined) return Promise.reject(this.unavailable());
    const record = deferredRecord(++this.acceptedSeq, tx.writes, notifications);
    for (const id of tx.writes.keys()) this.cache.written(id, record.seq);
    for (const p of this.sparse) p.accepted(record);
    this.log.push(record);
    this.pending.push(record);
    this.queue.push(record);
    this.scheduleFlush();
    return record.done;
  }

  private validate(tx: LevelTx): boolean {
    if (tx.points.size === 0 && tx.ranges.length === 0) return false;
    for (let i = this.log.length - 1; i >= 0; i--) {
      const record = this.log[i];
      if (record === undefined || record.seq <= tx.startSeq) break;
      if (tx.conflictsWith(record.writes)) return true;
    }
    return false;
  }

  private release(startSeq: number): void {
    const count = (this.activeStarts.get(startSeq) ?? 1) - 1;
    if (count === 0) this.activeStarts.delete(startSeq);
    else this.activeStarts.set(startSeq, count);
    let horizon = this.acceptedSeq;
    for (const seq of this.activeStarts.keys()) if (seq < horizon) horizon = seq;
    let drop = 0;
    while (drop < this.log.length && (this.log[drop]?.seq ?? Infinity) <= horizon) drop++;
    if (drop > 0) this.log = this.log.slice(drop);
  }

  private scheduleFlush(): void {
    if (this.writing || this.flushScheduled) return;
    this.flushScheduled = true;
    // Waiting one macrotask turn lets every committer that validates in this tick join the batch.
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.writing) return;
    if (this.queue.length === 0) {
      this.wakeIdle();
      return;
    }
    const group = this.queue;
    this.queue = [];
    this.writing = true;
    const write = group.some((record) => record.writes.size > 0) ? writeGroup(this.db, group) : Promise.resolve();
    write.then(
      () => {
        this.pending = this.pending.slice(group.length);
        for (const record of group) {
          for (const [channel, payload] of record.notifications) deliver(this.listeners.get(channel), payload);
        }
        for (const record of group) record.resolve();
        this.writing = false;
        this.flush();
      },
      (error: unknown) => {
        // LevelDB refuses further writes after a failed synced write, and later groups may have
        // read this one's data: fail everything queued and stop accepting commits.
        this.failure = error;
        this.cache.clear(this.acceptedSeq);
        const failed = [...group, ...this.queue];
        this.queue = [];
        this.pending = [];
        this.writing = false;
        const reason = this.unavailable();
        for (const record of failed) record.reject(reason);
        this.wakeIdle();
      },
    );
  }

  private unavailable(): CairnError {
    return new CairnError('CAIRN_UNAVAILABLE', 'metadata KV write failed', { cause: this.failure });
  }
}

export async function openLevelKv(options: LevelKvOptions): Promise<Kv> {
  if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object');
  if (typeof options.dir !== 'string' || options.dir.length === 0) {
    throw new TypeError('options.dir must be a non-empty string');
  }
  const tuning = {
    writeBufferSize: sizeOption(options, 'writeBufferBytes', 64 << 10),
    cacheSize: sizeOption(options, 'cacheBytes', 0),
    maxFileSize: sizeOption(options, 'maxFileBytes', 64 << 10),
  };
  const readCacheBytes = sizeOption(options, 'readCacheBytes', 0);
  const db: Db = new Level<Buffer, Buffer>(options.dir, { keyEncoding: 'buffer', valueEncoding: 'buffer', ...tuning });
  try {
    await db.open();
  } catch (error) {
    throw new CairnError('CAIRN_UNAVAILABLE', `cannot open metadata KV at ${options.dir}`, { cause: error });
  }
  return new LevelKv(db, new ReadCache(readCacheBytes));
}
