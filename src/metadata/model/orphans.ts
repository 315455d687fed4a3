// Orphan blocks: blocks on block nodes that no chunk-index entry names, e.g. written by an upload
// that crashed before committing or pinning them. The sweep (gc.ts) lists every node's blocks and
// compares them with the index; an address stays a candidate while it is unreferenced, and is
// deleted only once it has been seen unreferenced for the orphan grace period. A record per
// candidate address holds when it was first seen and, while it is being deleted, a claim:
// `acquire` (chunks.ts) refuses to create an index entry for a claimed address (CAIRN_UNAVAILABLE,
// retryable) and otherwise drops the address's record in the same transaction, so a commit or pin
// always restarts the grace clock and a deletion never races a commit that names the block.
import { CairnError } from '../../common/errors.js';
import type { KvTx } from '../kv/types.js';
import { json, parseJson } from './codec.js';
import type { ModelContext } from './context.js';
import { tuple, under } from './keys.js';

/** Default time an unreferenced block waits before the orphan sweep deletes it (1 day). */
export const DEFAULT_ORPHAN_GRACE_MS = 24 * 60 * 60 * 1000;
const PAGE = 1000;

interface OrphanRecord {
  /** When the sweep first saw the address unreferenced. */
  f: number;
  /** Claimed for deletion until this time: commits and pins of the address are refused. */
  x?: number;
}

export const orphanKey = (address: Buffer): Buffer => tuple('o', address);

/**
 * Called by `acquire` for an address new to a tenant's index: refuses it while an orphan deletion
 * holds it, else forgets it as a candidate (it is referenced from now on).
 */
export async function adoptAddress(tx: KvTx, ctx: ModelContext, address: Buffer, hex: string): Promise<void> {
  const key = orphanKey(address);
  const raw = await tx.get(key);
  if (raw === undefined) return;
  const rec = parseJson<OrphanRecord>(raw);
  if (rec.x !== undefined && rec.x > ctx.now()) {
    throw new CairnError('CAIRN_UNAVAILABLE', `the block of chunk ${hex} is being deleted as an orphan; upload it again after a short wait`, { retryAfterMs: Math.max(1000, Math.min(60_000, rec.x - ctx.now())), metadata: { plain_hash: hex } });
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
    for (const [, v] of rows) out.add(parseJson<{ a: string }>(v).a);
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
 * get a first-seen time, and records of addresses that are no longer candidates are dropped.
 * Returns the candidates unreferenced for at least `graceMs` and not claimed.
 */
export async function noteOrphans(ctx: ModelContext, candidates: ReadonlySet<string>, graceMs: number): Promise<string[]> {
  const existing = await allRecords(ctx);
  const now = ctx.now();
  const due: string[] = [];
  const work: Array<{ hex: string; rec: OrphanRecord | undefined }> = [];
  for (const hex of candidates) work.push({ hex, rec: existing.get(hex) });
  for (const [hex, rec] of existing) if (!candidates.has(hex)) work.push({ hex, rec });
  for (let i = 0; i < work.length; i += PAGE) {
    const slice = work.slice(i, i + PAGE);
    await ctx.kv.transact(async (tx) => {
      for (const { hex } of slice) {
        const key = orphanKey(Buffer.from(hex, 'hex'));
        const raw = await tx.get(key);
        const rec = raw === undefined ? undefined : parseJson<OrphanRecord>(raw);
        if (!candidates.has(hex)) {
          // Gone from every node, or referenced again: forget it (a live claim is its sweep's to end).
          if (rec !== undefined && (rec.x === undefined || rec.x <= now)) tx.del(key);
        } else if (rec === undefined) {
          tx.put(key, json({ f: now } satisfies OrphanRecord));
        }
      }
    });
    for (const { hex, rec } of slice) if (candidates.has(hex) && rec !== undefined && now - rec.f >= graceMs && (rec.x === undefined || rec.x <= now)) due.push(hex);
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
        tx.put(key, json({ f: rec.f, x: now + holdMs } satisfies OrphanRecord));
        out.push(hex);
      }
      return out;
    }));
  }
  return claimed;
}

/**
 * Ends claims. `keepHoldMs` > 0 (the blocks were deleted) keeps each address refused for that
 * long, so an upload that wrote the block before the deletion cannot commit it afterwards; 0
 * hands the claims back (first-seen time kept).
 */
export async function endOrphanClaims(ctx: ModelContext, addresses: readonly string[], keepHoldMs: number): Promise<void> {
  for (let i = 0; i < addresses.length; i += PAGE) {
    const slice = addresses.slice(i, i + PAGE);
    await ctx.kv.transact(async (tx) => {
      const now = ctx.now();
      for (const hex of slice) {
        const key = orphanKey(Buffer.from(hex, 'hex'));
        const raw = await tx.get(key);
        if (raw === undefined) continue;
        const rec = parseJson<OrphanRecord>(raw);
        tx.put(key, json(keepHoldMs > 0 ? { f: rec.f, x: now + keepHoldMs } : { f: rec.f }));
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
