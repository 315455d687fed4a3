// GC tombstones: which blocks this node deleted for the metadata service's garbage collector, and
// when. Repair copies (anti-entropy, read repair) of such a block are refused, so a replica that
// missed the deletion cannot bring the block back; a fresh write clears the tombstone (a chunk
// uploaded again after its deletion wins). Tombstones expire after a TTL.
import { Level } from 'level';

export const DEFAULT_TOMBSTONE_TTL_MS = 24 * 3600_000;
const SWEEP_BATCH = 4096;

export interface TombstoneOptions {
  /** How long a tombstone refuses repair copies (default 24 h). */
  readonly ttlMs?: number;
  readonly now?: () => number;
}

export class GcTombstones {
  readonly #db: Level<Buffer, Buffer>;
  readonly #ttlMs: number;
  readonly #now: () => number;
  /** Cheap skip for the put path: no lookups while the node holds no tombstone at all. */
  #count = 0;

  private constructor(db: Level<Buffer, Buffer>, options: TombstoneOptions) {
    this.#db = db;
    this.#ttlMs = options.ttlMs ?? DEFAULT_TOMBSTONE_TTL_MS;
    this.#now = options.now ?? Date.now;
  }

  static async open(dir: string, options: TombstoneOptions = {}): Promise<GcTombstones> {
    const ttl = options.ttlMs ?? DEFAULT_TOMBSTONE_TTL_MS;
    if (!Number.isSafeInteger(ttl) || ttl <= 0) throw new RangeError('options.ttlMs must be a positive integer');
    const db = new Level<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open();
    const t = new GcTombstones(db, options);
    await t.sweep();
    return t;
  }

  get size(): number {
    return this.#count;
  }

  /** Durably records tombstones (before the blocks are deleted, so a crash in between is safe). */
  async record(addresses: readonly Buffer[], deletedMs: number): Promise<void> {
    if (addresses.length === 0) return;
    const value = Buffer.alloc(8);
    value.writeBigUInt64BE(BigInt(Math.max(0, Math.floor(deletedMs))));
    const existing = await this.#db.getMany([...addresses]);
    await this.#db.batch(addresses.map((key) => ({ type: 'put' as const, key, value })), { sync: true });
    this.#count += existing.filter((v) => v === undefined).length;
  }

  /** For each address: whether a live (unexpired) tombstone stands for it. */
  async lookup(addresses: readonly Buffer[]): Promise<boolean[]> {
    if (this.#count === 0 || addresses.length === 0) return addresses.map(() => false);
    const values = await this.#db.getMany([...addresses]);
    const cutoff = this.#now() - this.#ttlMs;
    return values.map((v) => v !== undefined && Number(v.readBigUInt64BE(0)) > cutoff);
  }

  /** Removes the tombstones of freshly written blocks (only those that exist). */
  async clear(addresses: readonly Buffer[]): Promise<number> {
    if (this.#count === 0 || addresses.length === 0) return 0;
    const values = await this.#db.getMany([...addresses]);
    const gone = addresses.filter((_, i) => values[i] !== undefined);
    if (gone.length === 0) return 0;
    await this.#db.batch(gone.map((key) => ({ type: 'del' as const, key })), { sync: true });
    this.#count -= gone.length;
    return gone.length;
  }

  /** Drops expired tombstones and recounts; run at open and periodically. */
  async sweep(): Promise<number> {
    const cutoff = this.#now() - this.#ttlMs;
    let live = 0;
    let dropped = 0;
    let batch: Buffer[] = [];
    for await (const [key, value] of this.#db.iterator()) {
      if (Number(value.readBigUInt64BE(0)) > cutoff) {
        live++;
        continue;
      }
      batch.push(key);
      if (batch.length >= SWEEP_BATCH) {
        await this.#db.batch(batch.map((k) => ({ type: 'del' as const, key: k })));
        dropped += batch.length;
        batch = [];
      }
    }
    if (batch.length > 0) await this.#db.batch(batch.map((k) => ({ type: 'del' as const, key: k })));
    dropped += batch.length;
    this.#count = live;
    return dropped;
  }

  async close(): Promise<void> {
    await this.#db.close();
  }
}
