// Orphan blocks: blocks on block nodes that no chunk-index entry names, e.g. written by an upload
// that crashed before committing or pinning them. The sweep (gc.ts) lists every node's blocks and
// compares them with the index; an address stays a candidate while it is unreferenced, and is
// deleted only once it has been seen unreferenced for the orphan grace period. A record per
// candidate address holds when it was first seen and, while it is being deleted, a claim:
// `acquire` (chunks.ts) refuses to create an index entry for a claimed address (CAIRN_UNAVAILABLE,
// retryable) and otherwise drops the address's record in the same transaction, so a commit or pin
// always restarts the grace clock and a deletion never races a commit that names the block.
//
// Once the sweep has deleted an address, its record becomes a deletion tombstone (`d`, kept until
// `k`, default 7 days — the upload-session TTL): an upload that wrote the block before the
// deletion may commit long after it, so writers say since when they have been writing blocks
// (`blocksSinceMs`, the gateway's wall clock before its first block write) and `acquire` refuses
// an address deleted at `d` unless the writer started after `d + BLOCKS_SINCE_SKEW_MS` (then it
// wrote the block afresh, and the tombstone goes). No `blocksSinceMs` (old gateways, internal
// callers) is refused while the tombstone lives. Gateways refuse to commit an upload whose first
// block write is older than MAX_UPLOAD_BLOCKS_AGE_MS, so a tombstone never expires under a live
// upload: the two must be changed together (the retention must exceed that age).
import { CairnError } from '../../common/errors.js';
import type { KvTx } from '../kv/types.js';
import { json, parseJson } from './codec.js';
import type { ModelContext } from './context.js';
import { tuple, under } from './keys.js';
import { decodeChunk } from './records.js';

/** Default time an unreferenced block waits before the orphan sweep deletes it (1 day). */
export const DEFAULT_ORPHAN_GRACE_MS = 24 * 60 * 60 * 1000;
/** Default time a deletion tombstone refuses writers that started before the deletion (7 days). */
export const DEFAULT_ORPHAN_TOMBSTONE_MS = 7 * 24 * 60 * 60 * 1000;
/**
 * Gateways refuse to commit an upload (UploadFile, HTTP PUT) whose first block write is older than
 * this (6 days): one day less than the default tombstone retention, so a tombstone outlives every
 * upload that could name its block. A smaller orphanTombstoneMs must stay above it.
 */
export const MAX_UPLOAD_BLOCKS_AGE_MS = DEFAULT_ORPHAN_TOMBSTONE_MS - 24 * 60 * 60 * 1000;
/** Allowance for clocks of different hosts between a gateway's blocksSinceMs and a deletion time. */
export const BLOCKS_SINCE_SKEW_MS = 5 * 60_000;
const PAGE = 1000;

interface OrphanRecord {
  /** When the sweep first saw the address unreferenced. */
  f: number;
  /** Claimed for deletion until this time: commits and pins of the address are refused. */
  x?: number;
  /** Deletion tombstone: when the sweep deleted the address's blocks, and until when that is remembered. */
  d?: number;
  k?: number;
}

const tombstoned = (rec: OrphanRecord, now: number): boolean => rec.d !== undefined && rec.k !== undefined && rec.k > now;

export const orphanKey = (address: Buffer): Buffer => tuple('o', address);

/**
 * Called by `acquire` for an address new to a tenant's index: refuses it while an orphan deletion
 * holds it, or while a deletion tombstone says it was deleted after the writer began writing
 * blocks (`blocksSinceMs`, 0 = unknown); else forgets it as a candidate (it is referenced from now
 * on, and a writer that started after the deletion wrote it afresh).
 */
export async function adoptAddress(tx: KvTx, ctx: ModelContext, address: Buffer, hex: string, blocksSinceMs = 0): Promise<void> {
  const key = orphanKey(address);
  const raw = await tx.get(key);
  if (raw === undefined) return;
  const rec = parseJson<OrphanRecord>(raw);
  const now = ctx.now();
  if (rec.x !== undefined && rec.x > now) {
    throw new CairnError('CAIRN_UNAVAILABLE', `the block of chunk ${hex} is being deleted as an orphan; upload it again after a short wait`, { retryAfterMs: Math.max(1000, Math.min(60_000, rec.x - now)), metadata: { plain_hash: hex } });
  }
  if (tombstoned(rec, now) && !(blocksSinceMs > rec.d! + BLOCKS_SINCE_SKEW_MS)) {
    const since = blocksSinceMs > 0 ? `this upload began writing blocks at ${new Date(blocksSinceMs).toISOString()}` : 'the writer did not say when it began writing blocks';
    // A writer that starts again now is accepted once its clock is past the deletion + allowance.
    const retryAfterMs = Math.max(1000, Math.min(BLOCKS_SINCE_SKEW_MS + 1000, rec.d! + BLOCKS_SINCE_SKEW_MS + 1000 - now));
    throw new CairnError('CAIRN_UNAVAILABLE', `the block of chunk ${hex} was deleted as an orphan at ${new Date(rec.d!).toISOString()} and ${since}: upload the file again`, { retryAfterMs, metadata: { plain_hash: hex, orphan_deleted_ms: String(rec.d) } });
  }
  tx.del(key);
}

/** Every address (hex) the chunk index names, in any tenant, claimed for GC or not. */
export async function referencedAddresses(ctx: ModelContext): Promise<Set<string>> {
  const out = new Set<string>();
  const range = under('c');
  let gt = range.gt;
  for (;;) {
    const rows = await ctx.kv.scan({ gt, lt: range.lt, limit: PAGE });
    for (const [, v] of rows) out.add(decodeChunk(v).a);
    const last = rows.at(-1);
    if (last === undefined || rows.length < PAGE) return out;
    gt = last[0];
  }
}

async function allRecords(ctx: ModelContext): Promise<Map<string, OrphanRecord>> {
  const out = new Map<string, OrphanRecord>();
  const range = under('o');
  let gt = range.gt;
  for (;;) {
    const rows = await ctx.kv.scan({ gt, lt: range.lt, limit: PAGE });
    for (const [k, v] of rows) out.set(k.subarray(2).toString('hex'), parseJson<OrphanRecord>(v));
    const last = rows.at(-1);
    if (last === undefined || rows.length < PAGE) return out;
    gt = last[0];
  }
}

/**
 * Records this sweep's candidates (addresses on some node that the index did not name): new ones
 * get a first-seen time, and records of addresses that are no longer candidates are dropped unless
 * a claim or a deletion tombstone is live (an expired tombstone goes). A tombstoned address on a
 * node again (written afresh) starts a new grace clock and keeps its tombstone.
 * Returns the candidates unreferenced for at least `graceMs` and not claimed.
 */
export async function noteOrphans(ctx: ModelContext, candidates: ReadonlySet<string>, graceMs: number): Promise<string[]> {
  const existing = await allRecords(ctx);
  const due: string[] = [];
  const work: string[] = [...candidates];
  for (const hex of existing.keys()) if (!candidates.has(hex)) work.push(hex);
  for (let i = 0; i < work.length; i += PAGE) {
    const slice = work.slice(i, i + PAGE);
    due.push(...await ctx.kv.transact(async (tx) => {
      const now = ctx.now();
      const out: string[] = [];
      for (const hex of slice) {
        const key = orphanKey(Buffer.from(hex, 'hex'));
        const raw = await tx.get(key);
        const rec = raw === undefined ? undefined : parseJson<OrphanRecord>(raw);
        const claimed = rec?.x !== undefined && rec.x > now;
        if (!candidates.has(hex)) {
          // Gone from every node, or referenced again: forget it (a live claim is its sweep's to
          // end; a live tombstone still refuses writers that started before the deletion).
          if (rec !== undefined && !claimed && !tombstoned(rec, now)) tx.del(key);
        } else if (rec === undefined) {
          tx.put(key, json({ f: now } satisfies OrphanRecord));
        } else if (rec.d !== undefined && rec.f <= rec.d && !claimed) {
          // Deleted, and on a node again: a new block, with a new grace clock.
          tx.put(key, json(tombstoned(rec, now) ? { f: now, d: rec.d, k: rec.k! } satisfies OrphanRecord : { f: now } satisfies OrphanRecord));
        } else if (now - rec.f >= graceMs && !claimed) {
          out.push(hex);
        }
      }
      return out;
    }));
  }
  return due;
}

/**
 * Claims due candidates for deletion until now + `holdMs` (re-checking in the same transaction
 * that each still has its record, i.e. no commit or pin adopted it since). The caller must then
 * re-read the index and drop claims of addresses it names before deleting anything.
 */
export async function claimOrphans(ctx: ModelContext, addresses: readonly string[], holdMs: number): Promise<string[]> {
  const claimed: string[] = [];
  for (let i = 0; i < addresses.length; i += PAGE) {
    const slice = addresses.slice(i, i + PAGE);
    claimed.push(...await ctx.kv.transact(async (tx) => {
      const out: string[] = [];
      const now = ctx.now();
      for (const hex of slice) {
        const key = orphanKey(Buffer.from(hex, 'hex'));
        const raw = await tx.get(key);
        if (raw === undefined) continue;
        const rec = parseJson<OrphanRecord>(raw);
        if (rec.x !== undefined && rec.x > now) continue;
        tx.put(key, json({ ...rec, x: now + holdMs } satisfies OrphanRecord));
        out.push(hex);
      }
      return out;
    }));
  }
  return claimed;
}

/**
 * Ends claims. `keepHoldMs` > 0 (the blocks were deleted) keeps each address refused to everyone
 * for that long and records a deletion tombstone kept for `tombstoneMs`, so an upload that wrote
 * the block before the deletion cannot commit it afterwards; 0 hands the claims back (first-seen
 * time and any earlier tombstone kept).
 */
export async function endOrphanClaims(ctx: ModelContext, addresses: readonly string[], keepHoldMs: number, tombstoneMs = DEFAULT_ORPHAN_TOMBSTONE_MS): Promise<void> {
  if (!Number.isSafeInteger(tombstoneMs) || tombstoneMs < 0) throw new RangeError('tombstoneMs must be a non-negative integer');
  for (let i = 0; i < addresses.length; i += PAGE) {
    const slice = addresses.slice(i, i + PAGE);
    await ctx.kv.transact(async (tx) => {
      const now = ctx.now();
      for (const hex of slice) {
        const key = orphanKey(Buffer.from(hex, 'hex'));
        const raw = await tx.get(key);
        if (raw === undefined) continue;
        const rec = parseJson<OrphanRecord>(raw);
        delete rec.x;
        tx.put(key, json(keepHoldMs > 0 ? { f: rec.f, x: now + keepHoldMs, d: now, k: now + Math.max(tombstoneMs, keepHoldMs) } satisfies OrphanRecord : rec));
      }
    });
  }
}

/** Drops records (addresses found referenced after all). */
export async function forgetOrphans(ctx: ModelContext, addresses: readonly string[]): Promise<void> {
  for (let i = 0; i < addresses.length; i += PAGE) {
    const slice = addresses.slice(i, i + PAGE);
    await ctx.kv.transact(async (tx) => {
      for (const hex of slice) tx.del(orphanKey(Buffer.from(hex, 'hex')));
    });
  }
}
