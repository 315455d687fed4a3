// Per-tenant write lanes. Every change of a tenant bumps the tenant's revision, so concurrent
// writers of one tenant always conflict; under optimistic retries a busy tenant would burn its
// retries. Instead, a tenant's writes queue in this process and run in batches: each batch is one
// KV transaction (one durable write), each operation in a child transaction whose writes join the
// batch only if it succeeds, so one operation's error never affects the others. On a KV that
// detects conflicts per page (PostgreSQL), createContext gives every tenant the same lane.
import { BufferedTx, checkKey, checkValue, keyId, mergeScan, normalizeRange, writesInRange, type IdReader, type Write } from '../kv/internal.js';
import type { Kv, KvEntry, KvRange, KvTx } from '../kv/types.js';

/**
 * Most operations one batch (one transaction) carries, by default. Where reads are round trips
 * (PostgreSQL) a batch's cost is mostly its round trips, so big batches pay.
 */
const MAX_BATCH = 64;
/** Most batches of one lane accepted but not yet durable. */
const MAX_IN_FLIGHT = 4;

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/** What an operation's prefetch may read: point reads, coalesced across the batch. */
export type PrefetchReader = Pick<KvTx, 'get'> & { getMany(keys: readonly Buffer[]): Promise<Array<Buffer | undefined>> };

/**
 * Reads an operation will make, declared ahead so a batch can fetch them together. It may read
 * in steps (a path's entries, each naming the next folder): every step of every operation in the
 * batch that is waiting at the same moment goes to the KV as one `getMany`.
 */
export type Prefetch = (reader: PrefetchReader) => Promise<void>;

interface Op {
  readonly fn: (tx: KvTx) => Promise<unknown>;
  readonly prefetch: Prefetch | undefined;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
}

/** A transaction inside a batch: reads see the batch so far plus its own writes, which it buffers. */
class ChildTx implements KvTx {
  readonly #parent: KvTx;
  readonly #writes = new Map<string, Write>();
  readonly #notes: Array<[string, string]> = [];

  /** A prefetch through the parent's, when it has one (own writes answer first). */
  readonly getMany: KvTx['getMany'];
  /** The parent, when it reads by key and id too: the id is computed once per read. */
  readonly #idReader: IdReader | undefined;

  constructor(parent: KvTx) {
    this.#parent = parent;
    this.#idReader = typeof (parent as Partial<IdReader>).getWithId === 'function' ? (parent as KvTx & IdReader) : undefined;
    const many = parent.getMany;
    this.getMany = many === undefined
      ? undefined
      : async (keys) => {
          const out = new Array<Buffer | undefined>(keys.length);
          const rest: number[] = [];
          keys.forEach((key, i) => {
            const w = this.#writes.get(keyId(key));
            if (w === undefined) rest.push(i);
            else out[i] = w.value === undefined ? undefined : Buffer.from(w.value);
          });
          if (rest.length > 0) {
            const values = await many(rest.map((i) => keys[i]!));
            rest.forEach((i, j) => {
              out[i] = values[j];
            });
          }
          return out;
        };
  }

  // Not async: a read the batch answers passes the batch's promise through, one promise a read
  // less (a commit makes about seven).
  get(key: Buffer): Promise<Buffer | undefined> {
    // A bad key is the parent's to reject (a rejected promise, never a synchronous throw).
    if (!Buffer.isBuffer(key)) return this.#parent.get(key);
    const id = keyId(key);
    const w = this.#writes.get(id);
    if (w !== undefined) return Promise.resolve(w.value === undefined ? undefined : Buffer.from(w.value));
    return this.#idReader === undefined ? this.#parent.get(key) : this.#idReader.getWithId(key, id);
  }

  async scan(range: KvRange): Promise<KvEntry[]> {
    const r = normalizeRange(range);
    const own = writesInRange(this.#writes.values(), r);
    // Each own write can hide at most one stored entry: read that many more.
    const stored = await this.#parent.scan(range.limit === undefined ? range : { ...range, limit: range.limit + own.length });
    return mergeScan(stored, own, r);
  }

  put(key: Buffer, value: Buffer): void {
    // Checked here so that merging into the batch cannot fail halfway.
    checkKey(key);
    checkValue(value);
    this.#writes.set(keyId(key), { key: Buffer.from(key), value: Buffer.from(value) });
  }

  del(key: Buffer): void {
    checkKey(key);
    this.#writes.set(keyId(key), { key: Buffer.from(key), value: undefined });
  }

  notify(channel: string, payload: string): void {
    this.#notes.push([channel, payload]);
  }

  mergeInto(parent: KvTx): void {
    if (parent instanceof BufferedTx) {
      // The child is dropped after merging, so its checked copies can pass to the batch as they are.
      for (const [id, w] of this.#writes) parent.adopt(id, w);
    } else {
      for (const w of this.#writes.values()) {
        if (w.value === undefined) parent.del(w.key);
        else parent.put(w.key, w.value);
      }
    }
    for (const [channel, payload] of this.#notes) parent.notify(channel, payload);
  }
}

export class WriteLanes {
  readonly #kv: Kv;
  readonly #maxBatch: number;
  readonly #queues = new Map<string, Op[]>();

  /**
   * `maxBatch` bounds the operations of one batch (default 64). Where reads are synchronous
   * (LevelDB's `getSync`) it should be about half the committers a busy lane has in flight, so
   * that one batch runs while the one before it is written and synced. With 64 and 64 committers
   * on LevelDB, every committer landed in the same batch and the service alternated between
   * running it and waiting for its sync (35% idle).
   */
  constructor(kv: Kv, options: { readonly maxBatch?: number } = {}) {
    const maxBatch = options.maxBatch ?? MAX_BATCH;
    if (!Number.isSafeInteger(maxBatch) || maxBatch < 1) throw new RangeError('maxBatch must be a positive integer');
    this.#kv = kv;
    this.#maxBatch = maxBatch;
  }

  /**
   * Runs `fn` as one serializable unit of `lane`'s writes; like Kv.transact, it may run several
   * times. `prefetch`, where reads are round trips (the KV transaction has getMany), runs before
   * the batch's operations, together with the other operations' prefetches.
   */
  run<T>(lane: string, fn: (tx: KvTx) => Promise<T>, prefetch?: Prefetch): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const op: Op = { fn, prefetch, resolve: resolve as (value: unknown) => void, reject };
      const queue = this.#queues.get(lane);
      if (queue !== undefined) {
        queue.push(op);
        return;
      }
      this.#queues.set(lane, [op]);
      void this.#drain(lane);
    });
  }

  async #drain(lane: string): Promise<void> {
    const queue = this.#queues.get(lane)!;
    const inFlight = new Set<Promise<void>>();
    while (queue.length > 0) {
      if (inFlight.size >= MAX_IN_FLIGHT) await Promise.race(inFlight);
      const batch = queue.splice(0, this.#maxBatch);
      let accept!: () => void;
      const accepted = new Promise<void>((resolve) => {
        accept = resolve;
      });
      const done = this.#run(batch, accept);
      inFlight.add(done);
      void done.then(() => inFlight.delete(done));
      // The next batch may begin once this one is visible to new transactions: it then reads this
      // batch's writes while the KV writes and syncs this one.
      await Promise.race([accepted, done]);
      // One event-loop turn before the next batch. Where reads are synchronous (LevelDB), a batch
      // runs without a break from start to acceptance, so without the turn the write of this batch
      // would start, and the writes before it would be acknowledged, only after the next batch:
      // never side by side. Where acceptance is the commit (PostgreSQL), the committers this
      // batch acknowledged queue again only after the turn: without it the next batch took the
      // one operation queued at that moment, and every other transaction carried one commit
      // (5,200-6,300 commits/s against 6,600-6,800 with the turn, 64 committers). It also lets
      // network I/O in between batches.
      await yieldTurn();
    }
    this.#queues.delete(lane);
  }

  /** Runs one batch as one transaction and settles its operations; never rejects. */
  async #run(batch: readonly Op[], onAccepted: () => void): Promise<void> {
    if (batch.length === 1) {
      // Alone: no child transaction needed; errors abort the transaction as usual.
      const op = batch[0]!;
      await this.#kv.transact(op.fn, { onAccepted }).then(op.resolve, op.reject);
      return;
    }
    let outcomes: Outcome[] = [];
    try {
      await this.#kv.transact(async (tx) => {
        // Re-run from scratch on a KV retry: only the committed attempt's outcomes count.
        outcomes = [];
        await prefetchBatch(tx, batch);
        for (const op of batch) {
          const child = new ChildTx(tx);
          try {
            const value = await op.fn(child);
            child.mergeInto(tx);
            outcomes.push({ ok: true, value });
          } catch (error) {
            outcomes.push({ ok: false, error });
          }
        }
      }, { onAccepted });
      batch.forEach((op, i) => {
        const o = outcomes[i]!;
        if (o.ok) op.resolve(o.value);
        else op.reject(o.error);
      });
    } catch (error) {
      for (const op of batch) op.reject(error);
    }
  }
}

function yieldTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Runs the batch's prefetches side by side through one coalescing reader: the reads they are all
 * waiting for at once become one getMany of the transaction, whose read cache then answers the
 * operations themselves. A batch of 64 commits on PostgreSQL resolves its paths in as many round
 * trips as the deepest path has levels, instead of each commit walking its own path. A prefetch
 * is only a hint: its errors are dropped, and the operation meets them again when it reads.
 */
async function prefetchBatch(tx: KvTx, batch: readonly Op[]): Promise<void> {
  const many = tx.getMany;
  if (many === undefined || batch.filter((op) => op.prefetch !== undefined).length < 2) return;
  let waiting: Array<{ keys: readonly Buffer[]; settle: (values: Array<Buffer | undefined> | undefined) => void }> = [];
  let failed = false;
  const flush = (): void => {
    const group = waiting;
    waiting = [];
    const all = group.flatMap((w) => w.keys);
    many(all).then(
      (values) => {
        let at = 0;
        for (const w of group) {
          w.settle(values.slice(at, at + w.keys.length));
          at += w.keys.length;
        }
      },
      () => {
        // The transaction reports the failure again where it matters; stop prefetching.
        failed = true;
        for (const w of group) w.settle(undefined);
      },
    );
  };
  const getMany = (keys: readonly Buffer[]): Promise<Array<Buffer | undefined>> =>
    new Promise((resolve, reject) => {
      if (failed) {
        reject(new Error('prefetch stopped'));
        return;
      }
      // A macrotask later, every prefetch that continues after the previous step has asked.
      if (waiting.length === 0) setImmediate(flush);
      waiting.push({ keys, settle: (values) => (values === undefined ? reject(new Error('prefetch stopped')) : resolve(values)) });
    });
  const reader: PrefetchReader = { getMany, get: async (key) => (await getMany([key]))[0] };
  await Promise.all(batch.flatMap((op) => (op.prefetch === undefined ? [] : [op.prefetch(reader).catch(() => undefined)])));
}
