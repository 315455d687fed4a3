// The block node's storage engine: payloads appended to segment files with group-commit fsync,
// a LevelDB index (address → location) that is rebuilt from the segments whenever it lags or is lost.
import { mkdir, open, readdir, rm, statfs, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Level } from 'level';
import { CairnError } from '../../common/errors.js';
import type { BufferPool } from '../../common/buffer-pool.js';
import { type BlockStoreOptions, type ResolvedOptions, resolveOptions } from './options.js';
import {
  ADDRESS_BYTES,
  FLAG_TOMBSTONE,
  HEADER_BYTES,
  KEY_BLOCK,
  KEY_HWM,
  KEY_QUARANTINE,
  type Location,
  META_FORMAT_KEY,
  META_FORMAT_VALUE,
  META_SCRUBBED_KEY,
  blockKey,
  decodeHeader,
  decodeHwm,
  decodeLocation,
  digest,
  encodeHeader,
  encodeHwm,
  encodeLocation,
  hwmKey,
  quarantineKey,
  recordBytes,
  sha256,
} from './record.js';
import { type Group, Planner } from './planner.js';
import { Segment, parseSegmentFileName, readFully, scanSegment, segmentFileName, writeAll } from './segment.js';

type Db = Level<Buffer, Buffer>;
type BatchOp = { type: 'put'; key: Buffer; value: Buffer } | { type: 'del'; key: Buffer };

export interface PutBlock {
  readonly address: Buffer;
  readonly data: Buffer;
}

export interface ScrubOptions {
  /** Read budget; the scrub sleeps to stay under it. */
  maxBytesPerSecond?: number;
  /** Stops the scrub early; it then resolves with what it checked so far. */
  signal?: AbortSignal;
  /** Progress hook, e.g. for metrics; called after each record is checked. */
  onRecord?: (record: { address: Buffer; bytes: number; ok: boolean }) => void;
}

export interface BlockStoreStats {
  blocks: number;
  bytes: number;
  deadBytes: number;
  segments: number;
  diskBytes: number;
  capacityBytes: number | null;
  fsyncBatches: number;
  fsyncBlocks: number;
}

interface CopyRecord {
  readonly address: Buffer;
  readonly from: number;
  readonly offset: number;
  /** undefined for a tombstone. */
  readonly data: Buffer | undefined;
  readonly aux: number;
}

interface Deferred<T> {
  resolve(value: T): void;
  reject(err: unknown): void;
}

type Op =
  | ({ kind: 'put'; blocks: PutBlock[] } & Deferred<{ stored: number; bytes: number }>)
  | ({ kind: 'delete'; addresses: Buffer[] } & Deferred<number>)
  | ({ kind: 'copy'; records: CopyRecord[] } & Deferred<number>)
  | ({ kind: 'quarantine'; address: Buffer; loc: Location; reason: string } & Deferred<boolean>)
  | ({ kind: 'roll' } & Deferred<undefined>);

interface Appended {
  readonly seq: number;
  readonly ops: Op[];
  readonly results: Map<Op, unknown>;
  readonly failures: Map<Op, unknown>;
  readonly groups: Group[];
  readonly index: BatchOp[];
  readonly effects: (() => void)[];
}

const PARTITIONS = 4096;
const COPY_BATCH_BYTES = 8 * 1024 * 1024;
/** getMany reads neighbouring records with one pread when the gap between them is at most this, */
const RUN_GAP_BYTES = 64 * 1024;
/** and the read at most this long. */
const RUN_MAX_BYTES = 4 * 1024 * 1024;

// Boolean, not a type guard: narrowing would widen the declared element type to any.
function isArray(value: unknown): boolean {
  return Array.isArray(value);
}

function hex(address: Buffer): string {
  return address.toString('hex');
}

function assertAddress(value: unknown, name: string): asserts value is Buffer {
  if (!Buffer.isBuffer(value)) throw new TypeError(`${name} must be a Buffer`);
  if (value.length !== ADDRESS_BYTES) throw new RangeError(`${name} must be ${ADDRESS_BYTES} bytes, got ${value.length}`);
}

function assertAddressList(value: unknown, name: string): asserts value is readonly Buffer[] {
  if (!Array.isArray(value)) throw new TypeError(`${name} must be an array of Buffers`);
  value.forEach((a, i) => assertAddress(a, `${name}[${i}]`));
}

function diskFull(message: string, metadata: Record<string, string>): CairnError {
  return new CairnError('CAIRN_DISK_FULL', message, { metadata, retryAfterMs: 60_000 });
}

function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}

export class BlockStore {
  private readonly segments = new Map<number, Segment>();
  /** Retired segments whose file may still be on disk (readers hold it, or the unlink is pending). */
  private readonly retiring = new Set<number>();
  private active!: Segment;
  private nextSegmentId = 1;
  private blocks = 0;
  private liveBytes = 0;
  private fsyncBatches = 0;
  private fsyncBlocks = 0;

  private pending: Op[] = [];
  private appending: Promise<void> | undefined;
  private unsynced: Appended[] = [];
  private syncing: Promise<void> | undefined;
  /** Records appended but not yet in the index, so later batches plan against them. */
  private readonly overlay = new Map<string, { loc: Location | null; seq: number }>();
  private appendSeq = 0;
  private indexedSeq = 0;
  private failed: unknown;
  private compacting: Promise<{ segmentsRewritten: number; bytesReclaimed: number }> | undefined;
  private readonly background = new Set<Promise<unknown>>();
  private readers = 0;
  private readersIdle: (() => void) | undefined;
  private closing = false;
  /** Cuts background sleeps (scrub's rate limit) short when the store closes. */
  private readonly closingSignal = new AbortController();
  private closed: Promise<void> | undefined;

  private constructor(
    private readonly opts: ResolvedOptions,
    private db: Db,
    private readonly segmentDir: string,
  ) {}

  static async open(options: BlockStoreOptions): Promise<BlockStore> {
    const opts = resolveOptions(options);
    const segmentDir = join(opts.dir, 'segments');
    const indexDir = join(opts.dir, 'index');
    await mkdir(segmentDir, { recursive: true });
    const { db, fresh } = await openIndex(indexDir, opts);
    const store = new BlockStore(opts, db, segmentDir);
    try {
      await store.recover(fresh);
    } catch (err) {
      await store.closeHandles();
      throw err;
    }
    return store;
  }

  // ---------------------------------------------------------------- recovery

  private async recover(fresh: boolean): Promise<void> {
    const names = await readdir(this.segmentDir);
    const ids = names.map(parseSegmentFileName).filter((id): id is number => id !== undefined).sort((a, b) => a - b);
    for (const id of ids) {
      const path = join(this.segmentDir, segmentFileName(id));
      const fh = await open(path, 'r+');
      const { size } = await fh.stat();
      this.segments.set(id, new Segment(id, path, fh, size));
    }
    let full = fresh && ids.length > 0;
    if (fresh && ids.length > 0) this.opts.logger.warn({ segments: ids.length }, 'block index missing: rebuilding from segments');
    const starts = new Map<number, number>();
    if (!full) {
      for (const seg of this.segments.values()) {
        const v = await this.db.get(hwmKey(seg.id));
        const hwm = v === undefined ? 0 : decodeHwm(v);
        if (hwm > seg.size) {
          this.opts.logger.warn({ segment: seg.id, hwm, size: seg.size }, 'segment shorter than the index says: rebuilding index');
          full = true;
          break;
        }
        starts.set(seg.id, hwm);
      }
    }
    if (full) await this.clearIndex();
    else await this.dropStaleMarks();
    await this.replay(full ? new Map() : starts);
    if (!(await this.loadStats())) {
      if (full) throw new CairnError('CAIRN_DATA_LOSS', 'index rebuilt from segments still references missing records');
      this.opts.logger.warn({}, 'index references missing segment records: rebuilding index');
      await this.clearIndex();
      await this.replay(new Map());
      if (!(await this.loadStats())) throw new CairnError('CAIRN_DATA_LOSS', 'index rebuilt from segments still references missing records');
    }
    const last = ids.length > 0 ? this.segments.get(ids[ids.length - 1] as number) : undefined;
    this.nextSegmentId = (ids[ids.length - 1] ?? 0) + 1;
    this.active = last ?? (await this.createSegment(this.nextSegmentId++));
    await this.db.put(META_FORMAT_KEY, META_FORMAT_VALUE);
  }

  /** Forgets high-water marks of segments that compaction removed. */
  private async dropStaleMarks(): Promise<void> {
    const stale: BatchOp[] = [];
    for await (const key of this.db.keys({ gte: Buffer.from([KEY_HWM]), lt: Buffer.from([KEY_QUARANTINE]) })) {
      if (!this.segments.has(key.readUInt32BE(1))) stale.push({ type: 'del', key });
    }
    if (stale.length > 0) await this.db.batch(stale);
  }

  private async clearIndex(): Promise<void> {
    await this.db.clear({ gte: Buffer.from([KEY_BLOCK]), lt: Buffer.from([KEY_QUARANTINE]) });
  }

  /** Re-applies every record past each segment's high-water mark, truncating torn tails. */
  private async replay(starts: ReadonlyMap<number, number>): Promise<void> {
    const ordered = [...this.segments.values()].sort((a, b) => a.id - b.id);
    for (const [i, seg] of ordered.entries()) {
      const start = starts.get(seg.id) ?? 0;
      if (start === seg.size && starts.has(seg.id)) continue;
      const isLast = i === ordered.length - 1;
      let ops: BatchOp[] = [];
      let validEnd = start;
      let truncateAt: number | undefined;
      let replayed = 0;
      for await (const ev of scanSegment(seg.fh, start, seg.size, true)) {
        if (ev.type === 'torn') {
          truncateAt = ev.offset;
          break;
        }
        if (ev.type === 'garbage') {
          this.opts.logger.warn({ segment: seg.id, offset: ev.offset, end: ev.end }, 'skipped unreadable bytes in segment');
          validEnd = ev.end;
          continue;
        }
        const { header } = ev;
        if (!ev.ok) {
          if (isLast && ev.end === seg.size) {
            truncateAt = ev.offset;
            break;
          }
          this.opts.logger.warn({ segment: seg.id, offset: ev.offset, address: hex(header.address) }, 'corrupt block record found during replay: quarantined');
          ops.push({ type: 'put', key: quarantineKey(header.address), value: quarantineValue(seg.id, ev.offset, header.length, 'replay') });
        } else if (header.flags & FLAG_TOMBSTONE) {
          ops.push({ type: 'del', key: blockKey(header.address) });
        } else {
          const payload = ev.payload as Buffer;
          const loc: Location = {
            segment: seg.id,
            offset: ev.offset,
            length: header.length,
            ...(header.length <= this.opts.inlineBytes ? { inline: payload } : {}),
          };
          ops.push({ type: 'put', key: blockKey(header.address), value: encodeLocation(loc) });
          ops.push({ type: 'del', key: quarantineKey(header.address) });
        }
        replayed++;
        validEnd = ev.end;
        if (ops.length >= 10_000) {
          await this.db.batch(ops);
          ops = [];
        }
      }
      if (truncateAt !== undefined) {
        this.opts.logger.warn({ segment: seg.id, offset: truncateAt, size: seg.size }, 'truncating torn segment tail');
        await seg.fh.truncate(truncateAt);
        await seg.fh.sync();
        seg.size = truncateAt;
        validEnd = truncateAt;
      }
      ops.push({ type: 'put', key: hwmKey(seg.id), value: encodeHwm(validEnd) });
      await this.db.batch(ops);
      if (replayed > 0) this.opts.logger.info({ segment: seg.id, from: start, records: replayed }, 'replayed segment tail into the index');
    }
  }

  /** Derives counters from the index; false when an entry points outside the segments. */
  private async loadStats(): Promise<boolean> {
    this.blocks = 0;
    this.liveBytes = 0;
    for (const seg of this.segments.values()) seg.live = 0;
    for await (const value of this.db.values({ gte: Buffer.from([KEY_BLOCK]), lt: Buffer.from([KEY_HWM]) })) {
      const loc = decodeLocation(value);
      const seg = this.segments.get(loc.segment);
      const rec = recordBytes(loc.length);
      if (!seg || loc.offset + rec > seg.size) return false;
      seg.live += rec;
      this.blocks++;
      this.liveBytes += loc.length;
    }
    return true;
  }

  private async createSegment(id: number): Promise<Segment> {
    const path = join(this.segmentDir, segmentFileName(id));
    const fh = await open(path, 'wx+');
    const seg = new Segment(id, path, fh, 0);
    // The new directory entry must be durable before records in it are acknowledged.
    await this.syncDir();
    this.segments.set(id, seg);
    return seg;
  }

  private async syncDir(): Promise<void> {
    const dh = await open(this.segmentDir, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  }

  // ---------------------------------------------------------------- public API

  /**
   * Stores blocks; resolves once they are fsynced and indexed. Blocks already present are not
   * rewritten (`stored` counts the new ones). Payload buffers are written as given, without a
   * copy, so callers must not modify them until the promise settles.
   *
   * Each payload must hash to its address: checked here unless the caller says it computed the
   * addresses from these very bytes in this process (`callerHashed`, the embedded gateway's
   * sealing), where hashing again only repeats the same computation — a quarter of the SHA-256
   * work of an upload. Scrub and reads still verify every stored payload.
   */
  async put(blocks: ReadonlyArray<PutBlock>, options: { callerHashed?: boolean } = {}): Promise<{ stored: number; bytes: number }> {
    if (!isArray(blocks)) throw new TypeError('blocks must be an array of { address, data }');
    const list = blocks as readonly unknown[];
    list.forEach((b, i) => {
      if (typeof b !== 'object' || b === null) throw new TypeError(`blocks[${i}] must be an object`);
      const { address, data } = b as { address?: unknown; data?: unknown };
      assertAddress(address, `blocks[${i}].address`);
      if (!Buffer.isBuffer(data)) throw new TypeError(`blocks[${i}].data must be a Buffer`);
    });
    this.assertOpen();
    // The whole call is validated before anything is queued, so a bad block writes nothing.
    blocks.forEach((b, i) => {
      if (b.data.length > this.opts.maxBlockBytes) {
        throw new CairnError('CAIRN_BLOCK_TOO_LARGE', `block ${i} is ${b.data.length} bytes, more than the ${this.opts.maxBlockBytes} allowed`, {
          metadata: { index: String(i), address: hex(b.address), maxBlockBytes: String(this.opts.maxBlockBytes) },
        });
      }
    });
    const digests = options.callerHashed === true ? undefined : await Promise.all(blocks.map((b) => digest(b.data)));
    const unique = new Map<string, PutBlock>();
    blocks.forEach((b, i) => {
      if (digests !== undefined && !(digests[i] as Buffer).equals(b.address)) {
        throw new CairnError('CAIRN_HASH_MISMATCH', `block ${i} does not hash to its address ${hex(b.address)}`, {
          metadata: { index: String(i), address: hex(b.address) },
        });
      }
      unique.set(hex(b.address), b);
    });
    if (unique.size === 0) return { stored: 0, bytes: 0 };
    this.assertOpen();
    return new Promise((resolve, reject) => this.enqueue({ kind: 'put', blocks: [...unique.values()], resolve, reject }));
  }

  /** The verified block, or undefined; a block failing verification is quarantined and throws CAIRN_CORRUPT_BLOCK. */
  async get(address: Buffer): Promise<Buffer | undefined> {
    assertAddress(address, 'address');
    this.assertOpen();
    this.readers++;
    try {
      // A miss on the segment map means compaction moved the block since the lookup: look again.
      for (let attempt = 0; attempt < 8; attempt++) {
        const value = await this.db.get(blockKey(address));
        if (value === undefined) return undefined;
        const loc = decodeLocation(value);
        if (loc.inline) {
          if (sha256(loc.inline).equals(address)) return loc.inline;
          await this.quarantine(address, loc, 'inline copy does not match its address');
          throw corruptBlock(address);
        }
        const seg = this.acquire(loc.segment);
        if (!seg) continue;
        let data: Buffer | undefined;
        try {
          data = await readRecord(seg, loc, address);
        } finally {
          this.release(seg);
        }
        if (data) return data;
        await this.quarantine(address, loc, 'segment record does not match its address');
        throw corruptBlock(address);
      }
      throw new CairnError('CAIRN_UNAVAILABLE', `block ${hex(address)} kept moving during compaction`, { retryAfterMs: 100 });
    } finally {
      this.readerDone();
    }
  }

  /**
   * Several blocks at once, in request order: one index lookup for all of them, and records that
   * lie next to each other in a segment (a file's blocks, written in order) read with one pread.
   * With `verify: false` the payload's SHA-256 is not checked (header, length and address still
   * are): for a caller that authenticates the bytes itself (the gateway's AES-GCM) and asks again
   * with verification when that fails. A block that fails verification is quarantined and comes
   * back as `corrupt`. With a `pool`, the payloads read from segments are views of one buffer
   * taken from it, which the caller hands back once it is done with every one of them.
   */
  async getMany(addresses: readonly Buffer[], options: { verify?: boolean; pool?: BufferPool } = {}): Promise<Array<{ data: Buffer | undefined; corrupt?: true }>> {
    assertAddressList(addresses, 'addresses');
    this.assertOpen();
    const verify = options.verify !== false;
    const out: Array<{ data: Buffer | undefined; corrupt?: true }> = addresses.map(() => ({ data: undefined }));
    if (addresses.length === 0) return out;
    this.readers++;
    const held: Segment[] = [];
    try {
      const values = await this.db.getMany(addresses.map(blockKey));
      // Records to read, grouped into runs of neighbours within one segment.
      const wanted: Array<{ i: number; seg: Segment; loc: Location }> = [];
      const retry: number[] = [];
      for (let i = 0; i < addresses.length; i++) {
        const value = values[i];
        if (value === undefined) continue;
        const loc = decodeLocation(value);
        if (loc.inline) {
          retry.push(i); // rare (tiny blocks): the single-block path verifies and quarantines
          continue;
        }
        const seg = this.acquire(loc.segment);
        if (!seg) {
          retry.push(i); // compaction moved it since the lookup
          continue;
        }
        held.push(seg);
        wanted.push({ i, seg, loc });
      }
      wanted.sort((a, b) => a.seg.id - b.seg.id || a.loc.offset - b.loc.offset);
      const runs: Array<typeof wanted> = [];
      for (const w of wanted) {
        const run = runs[runs.length - 1];
        const last = run?.[run.length - 1];
        const first = run?.[0];
        if (run && last && first && last.seg === w.seg && w.loc.offset >= last.loc.offset + recordBytes(last.loc.length) && w.loc.offset - (last.loc.offset + recordBytes(last.loc.length)) <= RUN_GAP_BYTES && w.loc.offset + recordBytes(w.loc.length) - first.loc.offset <= RUN_MAX_BYTES) run.push(w);
        else runs.push([w]);
      }
      // One buffer for every run of the call, from the caller's pool when it has one.
      const sizes = runs.map((run) => run[run.length - 1]!.loc.offset + recordBytes(run[run.length - 1]!.loc.length) - run[0]!.loc.offset);
      const total = sizes.reduce((sum, n) => sum + n, 0);
      const slab = total === 0 ? Buffer.alloc(0) : options.pool ? options.pool.take(total) : Buffer.allocUnsafe(total);
      let next = 0;
      const starts = sizes.map((n) => (next += n) - n);
      await Promise.all(
        runs.map(async (run, r) => {
          const first = run[0]!;
          const buf = slab.subarray(starts[r], starts[r]! + sizes[r]!);
          if (!(await readFully(first.seg.fh, buf, first.loc.offset))) {
            for (const w of run) retry.push(w.i);
            return;
          }
          for (const w of run) {
            const at = w.loc.offset - first.loc.offset;
            const header = decodeHeader(buf, at);
            const payload = buf.subarray(at + HEADER_BYTES, at + HEADER_BYTES + w.loc.length);
            const address = addresses[w.i]!;
            if (!header || header.flags & FLAG_TOMBSTONE || header.length !== w.loc.length || !header.address.equals(address) || (verify && !sha256(payload).equals(address))) retry.push(w.i);
            else out[w.i]!.data = payload;
          }
        }),
      );
      // Anything unusual goes through get(): it looks again after compaction, verifies, quarantines.
      for (const i of retry) {
        try {
          out[i]!.data = await this.get(addresses[i]!);
        } catch (err) {
          if (!(err instanceof CairnError && err.code === 'CAIRN_CORRUPT_BLOCK')) throw err;
          out[i] = { data: undefined, corrupt: true };
        }
      }
      return out;
    } finally {
      for (const seg of held) this.release(seg);
      this.readerDone();
    }
  }

  async has(addresses: readonly Buffer[]): Promise<boolean[]> {
    assertAddressList(addresses, 'addresses');
    this.assertOpen();
    if (addresses.length === 0) return [];
    const values = await this.db.getMany(addresses.map(blockKey));
    return values.map((v) => v !== undefined);
  }

  /** Durably deletes blocks (tombstones keep a rebuild from resurrecting them); returns how many existed. */
  async delete(addresses: readonly Buffer[]): Promise<number> {
    assertAddressList(addresses, 'addresses');
    this.assertOpen();
    const unique = new Map(addresses.map((a) => [hex(a), a]));
    if (unique.size === 0) return 0;
    return new Promise((resolve, reject) => this.enqueue({ kind: 'delete', addresses: [...unique.values()], resolve, reject }));
  }

  /** Addresses in ascending order, optionally within one 12-bit partition and after a cursor. */
  async listAddresses(opts: { partition?: number; after?: Buffer; limit: number }): Promise<Buffer[]> {
    if (typeof opts !== 'object' || opts === null) throw new TypeError('opts must be an object');
    const { partition, after, limit } = opts;
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError('opts.limit must be an integer ≥ 1');
    if (partition !== undefined && (!Number.isInteger(partition) || partition < 0 || partition >= PARTITIONS)) {
      throw new RangeError(`opts.partition must be an integer in [0, ${PARTITIONS - 1}]`);
    }
    if (after !== undefined) assertAddress(after, 'opts.after');
    this.assertOpen();
    let lower = Buffer.from([KEY_BLOCK]);
    let upper = Buffer.from([KEY_HWM]);
    if (partition !== undefined) {
      lower = Buffer.from([KEY_BLOCK, partition >> 4, (partition & 0xf) << 4]);
      if (partition + 1 < PARTITIONS) upper = Buffer.from([KEY_BLOCK, (partition + 1) >> 4, ((partition + 1) & 0xf) << 4]);
    }
    const afterKey = after === undefined ? undefined : blockKey(after);
    const range = afterKey && Buffer.compare(afterKey, lower) >= 0 ? { gt: afterKey, lt: upper, limit } : { gte: lower, lt: upper, limit };
    const keys = await this.db.keys(range).all();
    return keys.map((k) => Buffer.from(k.subarray(1)));
  }

  /** Addresses pulled from the index because their bytes failed verification, awaiting repair. */
  async quarantined(): Promise<Buffer[]> {
    this.assertOpen();
    const keys = await this.db.keys({ gte: Buffer.from([KEY_QUARANTINE]), lt: Buffer.from([KEY_QUARANTINE + 1]) }).all();
    return keys.map((k) => Buffer.from(k.subarray(1)));
  }

  /** When the last complete scrub finished (ms since the epoch), or undefined if none has. */
  async lastScrubbedMs(): Promise<number | undefined> {
    this.assertOpen();
    const v = await this.db.get(META_SCRUBBED_KEY);
    return v === undefined || v.length !== 8 ? undefined : Number(v.readBigUInt64BE(0));
  }

  /** Records `ms` as the last complete scrub (also the schedule's start on a never-scrubbed store). */
  async markScrubbed(ms: number): Promise<void> {
    if (!Number.isSafeInteger(ms) || ms < 0) throw new RangeError('ms must be a non-negative integer');
    this.assertOpen();
    const v = Buffer.alloc(8);
    v.writeBigUInt64BE(BigInt(ms));
    await this.db.put(META_SCRUBBED_KEY, v);
  }

  /**
   * Re-reads every indexed record and checks it against its address; corrupt ones are
   * quarantined. An aborted scrub returns what it checked so far; a complete one records its
   * finishing time (`lastScrubbedMs`).
   */
  async scrub(opts: ScrubOptions = {}): Promise<{ checked: number; corrupt: Buffer[] }> {
    const rate = opts.maxBytesPerSecond;
    if (rate !== undefined && !(typeof rate === 'number' && rate > 0)) throw new RangeError('opts.maxBytesPerSecond must be a number > 0');
    if (opts.onRecord !== undefined && typeof opts.onRecord !== 'function') throw new TypeError('opts.onRecord must be a function');
    this.assertOpen();
    const task = this.runScrub(rate, opts.signal, opts.onRecord);
    return this.track(task);
  }

  /**
   * Rewrites segments whose dead ratio exceeds compactDeadRatio (any dead bytes with `force`),
   * moving live records to the active segment; reads keep working throughout.
   */
  async compact(opts: { force?: boolean } = {}): Promise<{ segmentsRewritten: number; bytesReclaimed: number }> {
    this.assertOpen();
    // One compaction at a time; a second caller shares the running one.
    this.compacting ??= this.track(this.runCompaction(opts.force === true)).finally(() => {
      this.compacting = undefined;
    });
    return this.compacting;
  }

  stats(): BlockStoreStats {
    let diskBytes = 0;
    let live = 0;
    for (const seg of this.segments.values()) {
      diskBytes += seg.size;
      live += seg.live;
    }
    return {
      blocks: this.blocks,
      bytes: this.liveBytes,
      deadBytes: diskBytes - live,
      segments: this.segments.size,
      diskBytes,
      capacityBytes: this.opts.capacityBytes,
      fsyncBatches: this.fsyncBatches,
      fsyncBlocks: this.fsyncBlocks,
    };
  }

  async close(): Promise<void> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  private async shutdown(): Promise<void> {
    this.closing = true;
    this.closingSignal.abort();
    await Promise.allSettled([...this.background]);
    while (this.appending ?? this.syncing) await (this.appending ?? this.syncing);
    if (this.readers > 0) await new Promise<void>((resolve) => (this.readersIdle = resolve));
    await this.closeHandles();
  }

  private async closeHandles(): Promise<void> {
    for (const seg of this.segments.values()) await seg.fh.close().catch(() => undefined);
    this.segments.clear();
    await this.db.close();
  }

  private assertOpen(): void {
    if (this.closing) throw new CairnError('CAIRN_SHUTTING_DOWN', 'block store is closed');
  }

  private track<T>(task: Promise<T>): Promise<T> {
    this.background.add(task);
    void task.finally(() => this.background.delete(task)).catch(() => undefined);
    return task;
  }

  private readerDone(): void {
    this.readers--;
    if (this.readers === 0 && this.readersIdle) {
      const idle = this.readersIdle;
      this.readersIdle = undefined;
      idle();
    }
  }

  private acquire(id: number): Segment | undefined {
    const seg = this.segments.get(id);
    if (seg) seg.refs++;
    return seg;
  }

  private release(seg: Segment): void {
    seg.refs--;
    if (seg.retired && seg.refs === 0) this.track(this.destroy(seg)).catch(() => undefined);
  }

  private async destroy(seg: Segment): Promise<void> {
    try {
      await seg.fh.close();
      await unlink(seg.path);
      await this.syncDir();
      this.retiring.delete(seg.id);
    } catch (err) {
      this.opts.logger.warn({ segment: seg.id, err }, 'could not remove compacted segment');
    }
  }

  private async quarantine(address: Buffer, loc: Location, reason: string): Promise<void> {
    this.opts.logger.warn({ address: hex(address), segment: loc.segment, offset: loc.offset, reason }, 'corrupt block quarantined');
    if (this.closing) return;
    await new Promise<boolean>((resolve, reject) => this.enqueue({ kind: 'quarantine', address, loc, reason, resolve, reject }));
  }

  // ---------------------------------------------------------------- group commit

  private enqueue(op: Op): void {
    this.pending.push(op);
    this.kick();
  }

  private kick(): void {
    this.appending ??= this.appendLoop().finally(() => {
      this.appending = undefined;
      // Ops queued between the loop's last check and this callback would otherwise wait forever.
      if (this.pending.length > 0) this.kick();
    });
  }

  private async appendLoop(): Promise<void> {
    while (this.pending.length > 0) {
      const ops = this.pending;
      this.pending = [];
      await this.append(ops);
    }
  }

  private kickSync(): void {
    this.syncing ??= this.syncLoop().finally(() => {
      this.syncing = undefined;
      if (this.unsynced.length > 0) this.kickSync();
    });
  }

  /**
   * Stage one of group commit: plan every op against the index (plus what earlier, not yet
   * indexed batches changed) and append the records without syncing. Appending the next batch
   * overlaps with the previous batch's fdatasync, which is what keeps sequential puts near disk speed.
   */
  private async append(ops: Op[]): Promise<void> {
    if (this.failed !== undefined) {
      for (const op of ops) op.reject(this.failedError());
      return;
    }
    const seq = ++this.appendSeq;
    for (const [k, v] of this.overlay) if (v.seq <= this.indexedSeq) this.overlay.delete(k);
    const results = new Map<Op, unknown>();
    const failures = new Map<Op, unknown>();
    const effects: (() => void)[] = [];
    const local = new Map<string, Location | null>();
    let groups: Group[] = [];
    const created: Segment[] = [];
    try {
      const keys = new Map<string, Buffer>();
      for (const op of ops) {
        if (op.kind === 'put') for (const b of op.blocks) keys.set(hex(b.address), b.address);
        else if (op.kind === 'delete') for (const a of op.addresses) keys.set(hex(a), a);
        else if (op.kind === 'copy') for (const r of op.records) keys.set(hex(r.address), r.address);
        else if (op.kind === 'quarantine') keys.set(hex(op.address), op.address);
      }
      const addrs = [...keys.keys()].filter((k) => !this.overlay.has(k)).map((k) => keys.get(k) as Buffer);
      const values = addrs.length > 0 ? await this.db.getMany(addrs.map(blockKey)) : [];
      const indexed = new Map<string, Location | null>();
      addrs.forEach((a, i) => {
        const v = values[i];
        indexed.set(hex(a), v === undefined ? null : decodeLocation(v));
      });
      const lookup = (a: Buffer): Location | null => {
        const k = hex(a);
        const l = local.get(k);
        if (l !== undefined) return l;
        const o = this.overlay.get(k);
        if (o !== undefined) return o.loc;
        return indexed.get(k) ?? null;
      };
      const freeBytes = this.opts.reserveBytes > 0 ? await this.freeBytes() : Infinity;
      const planner = new Planner(this.active, this.nextSegmentId, this.opts.segmentBytes);
      const index: BatchOp[] = [];
      const live = (id: number, delta: number) =>
        effects.push(() => {
          const seg = this.segments.get(id);
          if (seg) seg.live += delta;
        });

      for (const op of ops) {
        switch (op.kind) {
          case 'put': {
            const fresh = op.blocks.filter((b) => !lookup(b.address));
            const need = fresh.reduce((n, b) => n + recordBytes(b.data.length), 0);
            const refusal = this.refuseSpace(planner.total + need, freeBytes);
            if (refusal) {
              failures.set(op, refusal);
              break;
            }
            let bytes = 0;
            for (const b of fresh) {
              const header = encodeHeader(Buffer.allocUnsafe(HEADER_BYTES), 0, b.data.length, 0, b.address);
              const at = planner.add(header, b.data);
              const loc: Location = { ...at, length: b.data.length, ...(b.data.length <= this.opts.inlineBytes ? { inline: b.data } : {}) };
              local.set(hex(b.address), loc);
              index.push({ type: 'put', key: blockKey(b.address), value: encodeLocation(loc) });
              index.push({ type: 'del', key: quarantineKey(b.address) });
              live(at.segment, recordBytes(b.data.length));
              bytes += b.data.length;
            }
            effects.push(() => {
              this.blocks += fresh.length;
              this.liveBytes += bytes;
            });
            results.set(op, { stored: fresh.length, bytes });
            break;
          }
          case 'delete': {
            let n = 0;
            for (const a of op.addresses) {
              const cur = lookup(a);
              if (!cur) continue;
              planner.add(encodeHeader(Buffer.allocUnsafe(HEADER_BYTES), FLAG_TOMBSTONE, 0, cur.segment, a), undefined);
              local.set(hex(a), null);
              index.push({ type: 'del', key: blockKey(a) });
              live(cur.segment, -recordBytes(cur.length));
              effects.push(() => {
                this.blocks--;
                this.liveBytes -= cur.length;
              });
              n++;
            }
            results.set(op, n);
            break;
          }
          case 'copy': {
            let copied = 0;
            for (const r of op.records) {
              const cur = lookup(r.address);
              if (r.data === undefined) {
                // A tombstone still matters while the record it kills exists in another segment.
                if (!cur && r.aux !== r.from && (this.segments.has(r.aux) || this.retiring.has(r.aux))) {
                  planner.add(encodeHeader(Buffer.allocUnsafe(HEADER_BYTES), FLAG_TOMBSTONE, 0, r.aux, r.address), undefined);
                }
                continue;
              }
              if (!cur || cur.segment !== r.from || cur.offset !== r.offset) continue;
              const header = encodeHeader(Buffer.allocUnsafe(HEADER_BYTES), 0, r.data.length, 0, r.address);
              const at = planner.add(header, r.data);
              const loc: Location = { ...at, length: r.data.length, ...(cur.inline ? { inline: r.data } : {}) };
              local.set(hex(r.address), loc);
              index.push({ type: 'put', key: blockKey(r.address), value: encodeLocation(loc) });
              live(r.from, -recordBytes(r.data.length));
              live(at.segment, recordBytes(r.data.length));
              copied += recordBytes(r.data.length);
            }
            results.set(op, copied);
            break;
          }
          case 'quarantine': {
            const cur = lookup(op.address);
            const same = !!cur && cur.segment === op.loc.segment && cur.offset === op.loc.offset;
            if (same) {
              local.set(hex(op.address), null);
              index.push({ type: 'del', key: blockKey(op.address) });
              index.push({ type: 'put', key: quarantineKey(op.address), value: quarantineValue(cur.segment, cur.offset, cur.length, op.reason) });
              live(cur.segment, -recordBytes(cur.length));
              effects.push(() => {
                this.blocks--;
                this.liveBytes -= cur.length;
              });
            }
            results.set(op, same);
            break;
          }
          case 'roll':
            planner.roll();
            results.set(op, undefined);
            break;
        }
      }

      groups = planner.finish();
      const nextId = planner.nextSegmentId;
      for (const g of groups) {
        let seg = g.existing;
        if (!seg) {
          seg = await this.createSegment(g.segmentId);
          created.push(seg);
          g.existing = seg;
        }
        await writeAll(seg.fh, g.buffers, g.start);
      }
      // A roll with nothing after it still has to open the next segment, or compaction could not seal the old one.
      if (nextId > this.nextSegmentId && !groups.some((g) => g.segmentId === nextId - 1)) {
        created.push(await this.createSegment(nextId - 1));
      }
      for (const g of groups) (g.existing as Segment).size = g.start + g.bytes;
      this.nextSegmentId = nextId;
      this.active = this.segments.get(nextId - 1) ?? this.active;
      for (const [k, loc] of local) this.overlay.set(k, { loc, seq });
      this.unsynced.push({ seq, ops, results, failures, groups, index, effects });
      this.kickSync();
    } catch (err) {
      await this.undo(groups, created);
      const error = isErrno(err, 'ENOSPC') ? diskFull('no space left on the device', {}) : err;
      for (const op of ops) op.reject(error);
    }
  }

  /** Stage two: one fdatasync per touched segment for everything appended so far, then the index, then answers. */
  private async syncLoop(): Promise<void> {
    while (this.unsynced.length > 0) {
      const batches = this.unsynced;
      this.unsynced = [];
      const ends = new Map<Segment, number>();
      let records = 0;
      for (const b of batches) {
        for (const g of b.groups) {
          ends.set(g.existing as Segment, g.start + g.bytes);
          records += g.records;
        }
      }
      try {
        for (const seg of ends.keys()) await seg.fh.datasync();
        const index = batches.flatMap((b) => b.index);
        for (const [seg, end] of ends) index.push({ type: 'put', key: hwmKey(seg.id), value: encodeHwm(end) });
        if (index.length > 0) await this.db.batch(index);
      } catch (err) {
        // After a failed fsync the page cache may already have dropped the data (fsyncgate):
        // nothing appended can be trusted any more, so the store stops until it is reopened and replayed.
        this.failed = err;
        this.opts.logger.warn({ err }, 'segment sync or index update failed: block store stopped');
        for (const b of batches) for (const op of b.ops) op.reject(this.failedError());
        continue;
      }
      this.indexedSeq = (batches[batches.length - 1] as Appended).seq;
      this.fsyncBatches += ends.size;
      this.fsyncBlocks += records;
      for (const b of batches) {
        for (const effect of b.effects) effect();
        for (const op of b.ops) {
          const failure = b.failures.get(op);
          if (failure !== undefined) op.reject(failure);
          else (op.resolve as (v: unknown) => void)(b.results.get(op));
        }
      }
    }
  }

  private failedError(): CairnError {
    return new CairnError('CAIRN_UNAVAILABLE', 'block store stopped after a failed disk sync; reopen it to recover', { cause: this.failed });
  }

  /** After a failed batch, cut every touched segment back so no half-written record remains. */
  private async undo(groups: readonly Group[], created: readonly Segment[]): Promise<void> {
    for (const seg of created) {
      this.segments.delete(seg.id);
      await seg.fh.close().catch(() => undefined);
      await unlink(seg.path).catch(() => undefined);
    }
    for (const g of groups) {
      const seg = g.existing;
      if (!seg || created.includes(seg)) continue;
      try {
        await seg.fh.truncate(g.start);
        seg.size = g.start;
      } catch (err) {
        this.opts.logger.warn({ segment: seg.id, err }, 'could not truncate segment after a failed write');
      }
    }
  }

  private refuseSpace(bytes: number, freeBytes: number): CairnError | undefined {
    const cap = this.opts.capacityBytes;
    if (cap !== null) {
      const used = this.stats().diskBytes;
      if (used + bytes > cap) {
        return diskFull(`put needs ${bytes} bytes but only ${Math.max(0, cap - used)} of the ${cap}-byte capacity are left`, {
          capacityBytes: String(cap),
          usedBytes: String(used),
        });
      }
    }
    if (freeBytes - bytes < this.opts.reserveBytes) {
      return diskFull(`put would leave less than the ${this.opts.reserveBytes}-byte reserve free on the filesystem`, {
        freeBytes: String(freeBytes),
        reserveBytes: String(this.opts.reserveBytes),
      });
    }
    return undefined;
  }

  private async freeBytes(): Promise<number> {
    const s = await statfs(this.segmentDir);
    return Number(s.bavail) * Number(s.bsize);
  }

  // ---------------------------------------------------------------- scrub

  private async runScrub(rate: number | undefined, signal: AbortSignal | undefined, onRecord: ScrubOptions['onRecord']): Promise<{ checked: number; corrupt: Buffer[] }> {
    const started = performance.now();
    let checked = 0;
    let bytes = 0;
    const corrupt: Buffer[] = [];
    for await (const [key, value] of this.db.iterator({ gte: Buffer.from([KEY_BLOCK]), lt: Buffer.from([KEY_HWM]) })) {
      if (this.closing || signal?.aborted) break;
      const address = Buffer.from(key.subarray(1));
      let loc: Location | undefined = decodeLocation(value);
      let verdict = await this.verifyStored(address, loc);
      if (verdict === 'moved') {
        const now = await this.db.get(blockKey(address));
        loc = now === undefined ? undefined : decodeLocation(now);
        verdict = loc ? await this.verifyStored(address, loc) : 'moved';
      }
      if (verdict === 'moved') continue;
      checked++;
      bytes += recordBytes(loc?.length ?? 0);
      if (verdict === 'corrupt' && loc) {
        corrupt.push(address);
        await this.quarantine(address, loc, 'scrub found a record that does not match its address');
      }
      onRecord?.({ address, bytes: loc?.length ?? 0, ok: verdict === 'ok' });
      if (rate !== undefined) {
        const due = (bytes / rate) * 1000 - (performance.now() - started);
        const stop = signal ? AbortSignal.any([signal, this.closingSignal.signal]) : this.closingSignal.signal;
        if (due > 1) await sleep(due, undefined, { signal: stop }).catch(() => undefined);
      }
    }
    if (!this.closing && signal?.aborted !== true) await this.markScrubbed(Date.now());
    return { checked, corrupt };
  }

  private async verifyStored(address: Buffer, loc: Location): Promise<'ok' | 'corrupt' | 'moved'> {
    if (loc.inline && !sha256(loc.inline).equals(address)) return 'corrupt';
    const seg = this.acquire(loc.segment);
    if (!seg) return 'moved';
    try {
      return (await readRecord(seg, loc, address)) ? 'ok' : 'corrupt';
    } finally {
      this.release(seg);
    }
  }

  // ---------------------------------------------------------------- compaction

  private async runCompaction(force: boolean): Promise<{ segmentsRewritten: number; bytesReclaimed: number }> {
    const qualifies = (s: Segment): boolean => {
      const dead = s.size - s.live;
      return s.size > 0 && dead > 0 && (force || dead / s.size > this.opts.compactDeadRatio);
    };
    if (qualifies(this.active)) {
      await new Promise<undefined>((resolve, reject) => this.enqueue({ kind: 'roll', resolve, reject }));
    }
    const candidates = [...this.segments.values()].filter((s) => s !== this.active && qualifies(s)).sort((a, b) => a.id - b.id);
    let segmentsRewritten = 0;
    let bytesReclaimed = 0;
    for (const seg of candidates) {
      if (this.closing) break;
      const reclaimed = await this.compactSegment(seg);
      if (reclaimed !== undefined) {
        segmentsRewritten++;
        bytesReclaimed += reclaimed;
      }
    }
    if (segmentsRewritten > 0) this.opts.logger.info({ segmentsRewritten, bytesReclaimed }, 'compaction finished');
    return { segmentsRewritten, bytesReclaimed };
  }

  /** Moves a sealed segment's live records to the active one, then retires it; bytes reclaimed or undefined. */
  private async compactSegment(seg: Segment): Promise<number | undefined> {
    seg.refs++;
    let copied = 0;
    try {
      let batch: CopyRecord[] = [];
      let batchBytes = 0;
      for await (const ev of scanSegment(seg.fh, 0, seg.size, false)) {
        if (ev.type !== 'record') {
          this.opts.logger.warn({ segment: seg.id, offset: ev.offset }, 'segment has unreadable bytes: not compacting it');
          return undefined;
        }
        if (this.closing) return undefined;
        batch.push({ address: ev.header.address, from: seg.id, offset: ev.offset, data: ev.payload, aux: ev.header.aux });
        batchBytes += ev.end - ev.offset;
        if (batchBytes >= COPY_BATCH_BYTES) {
          copied += await this.copyBatch(batch);
          batch = [];
          batchBytes = 0;
        }
      }
      copied += await this.copyBatch(batch);
      if (seg.live !== 0) {
        this.opts.logger.warn({ segment: seg.id, live: seg.live }, 'segment still has live records after compaction: keeping it');
        return undefined;
      }
      // Sync the index so the moved locations are durable before the old records disappear. The
      // high-water mark is pinned to the end rather than deleted: should the unlink not happen, a
      // missing mark would replay the old segment from 0 and undo later deletes and re-puts.
      await this.db.batch([{ type: 'put', key: hwmKey(seg.id), value: encodeHwm(seg.size) }], { sync: true });
      this.segments.delete(seg.id);
      this.retiring.add(seg.id);
      seg.retired = true;
      return seg.size - copied;
    } finally {
      seg.refs--;
      // Unlink now unless a reader still holds the file (its release does it then), so that
      // tombstones aimed at this segment can be dropped by the next segment's rewrite.
      if (seg.retired && seg.refs === 0) await this.destroy(seg);
    }
  }

  private async copyBatch(batch: CopyRecord[]): Promise<number> {
    if (batch.length === 0) return 0;
    // Check liveness first so dead payloads are neither hashed nor copied.
    const puts = batch.filter((r) => r.data !== undefined);
    const values = puts.length > 0 ? await this.db.getMany(puts.map((r) => blockKey(r.address))) : [];
    const keep: CopyRecord[] = batch.filter((r) => r.data === undefined);
    for (const [i, r] of puts.entries()) {
      const v = values[i];
      if (v === undefined) continue;
      const loc = decodeLocation(v);
      if (loc.segment !== r.from || loc.offset !== r.offset) continue;
      if (!sha256(r.data as Buffer).equals(r.address)) {
        await this.quarantine(r.address, loc, 'compaction found a record that does not match its address');
        continue;
      }
      keep.push(r);
    }
    if (keep.length === 0) return 0;
    keep.sort((a, b) => a.offset - b.offset);
    return new Promise<number>((resolve, reject) => this.enqueue({ kind: 'copy', records: keep, resolve, reject }));
  }
}

function corruptBlock(address: Buffer): CairnError {
  return new CairnError('CAIRN_CORRUPT_BLOCK', `block ${hex(address)} is corrupt on disk and was quarantined`, {
    metadata: { address: hex(address) },
  });
}

function quarantineValue(segment: number, offset: number, length: number, reason: string): Buffer {
  return Buffer.from(JSON.stringify({ segment, offset, length, reason, at: new Date().toISOString() }));
}

/** Reads a record and returns its payload only if header and payload both match the address. */
async function readRecord(seg: Segment, loc: Location, address: Buffer): Promise<Buffer | undefined> {
  const buf = Buffer.allocUnsafe(HEADER_BYTES + loc.length);
  if (!(await readFully(seg.fh, buf, loc.offset))) return undefined;
  const header = decodeHeader(buf);
  if (!header || header.flags & FLAG_TOMBSTONE || header.length !== loc.length || !header.address.equals(address)) return undefined;
  const payload = buf.subarray(HEADER_BYTES);
  // Reads hash on the calling thread: measured on the embedded read path, WebCrypto's copy and
  // job hand-off cost the event loop about as much as the hash itself and ~15% more CPU overall.
  return sha256(payload).equals(address) ? payload : undefined;
}

async function openIndex(dir: string, opts: ResolvedOptions): Promise<{ db: Db; fresh: boolean }> {
  const make = () => new Level<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  let db = make();
  try {
    await db.open();
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    const cause = (err as { cause?: { code?: unknown } }).cause?.code;
    if (code === 'LEVEL_LOCKED' || cause === 'LEVEL_LOCKED') {
      throw new CairnError('CAIRN_FAILED_PRECONDITION', `block store ${opts.dir} is already open`, { cause: err });
    }
    // Only damage justifies discarding: anything else (permissions, a lock) is the operator's to fix.
    const damaged = [code, cause].some((c) => c === 'LEVEL_CORRUPTION' || c === 'LEVEL_IO_ERROR');
    if (!damaged) throw err;
    // The index is only a cache of the segments: a damaged one is discarded and rebuilt.
    opts.logger.warn({ err, dir }, 'block index unreadable: discarding it');
    await rm(dir, { recursive: true, force: true });
    db = make();
    await db.open();
    return { db, fresh: true };
  }
  const format = await db.get(META_FORMAT_KEY);
  if (format !== undefined && !format.equals(META_FORMAT_VALUE)) {
    await db.close();
    throw new CairnError('CAIRN_FAILED_PRECONDITION', `block index in ${dir} has an unknown format`);
  }
  return { db, fresh: format === undefined };
}
