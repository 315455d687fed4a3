// The per-tenant chunk index: plain hash → stored block with a ref count (one per occurrence in a
// live version) and a pin count (one per upload session holding it). At zero of both a chunk
// enters the delete queue for a grace period; GC claims due chunks under a lease, then finishes.
import { CairnError } from '../../common/errors.js';
import type { KvTx } from '../kv/types.js';
import { json, parseJson, type ChunkRecord } from './codec.js';
import { invalid, type ModelContext } from './context.js';
import { keys, tuple, u64, under } from './keys.js';
import { adoptAddress, orphanKey } from './orphans.js';
import { decodeChunk, encodeChunk, type StoredChunk } from './records.js';
import { adjustUsage, type UsageDelta } from './usage.js';

interface QueueEntry {
  t: string;
  h: string;
}

/**
 * Counts occurrences per plain hash, keeping the first record seen for each. `hexes`, when given,
 * receives each chunk's hash in hex, in order (for a caller that needs them again).
 */
export function countChunks(chunks: Iterable<ChunkRecord>, hexes?: string[]): Map<string, { chunk: ChunkRecord; count: number }> {
  const out = new Map<string, { chunk: ChunkRecord; count: number }>();
  for (const c of chunks) {
    const hex = c.plainHash.toString('hex');
    hexes?.push(hex);
    const e = out.get(hex);
    if (e) e.count++;
    else out.set(hex, { chunk: c, count: 1 });
  }
  return out;
}

function beingDeleted(hex: string): CairnError {
  return new CairnError('CAIRN_UNAVAILABLE', `chunk ${hex} is being garbage-collected; upload it again after a short wait`, { retryAfterMs: 1000, metadata: { plain_hash: hex } });
}

async function load(tx: KvTx, tenant: string, hash: Buffer): Promise<StoredChunk | undefined> {
  const raw = await tx.get(keys.chunk(tenant, hash));
  return raw === undefined ? undefined : decodeChunk(raw);
}

function unqueue(tx: KvTx, tenant: string, hash: Buffer, entry: StoredChunk): void {
  if (entry.q === undefined) return;
  tx.del(keys.deleteQueue(entry.q, tenant, hash));
  delete entry.q;
}

function store(tx: KvTx, ctx: ModelContext, tenant: string, hash: Buffer, entry: StoredChunk): void {
  if (entry.r === 0 && entry.n === 0 && entry.q === undefined) {
    const due = ctx.now() + ctx.deleteGraceMs;
    tx.put(keys.deleteQueue(due, tenant, hash), json({ t: tenant, h: hash.toString('hex') } satisfies QueueEntry));
    entry.q = due;
  }
  tx.put(keys.chunk(tenant, hash), encodeChunk(entry));
}

/** The keys `acquire` reads for `chunks`: their index entries, and orphan records of their addresses. */
export function chunkReadKeys(tenant: string, chunks: readonly ChunkRecord[]): Buffer[] {
  const wanted: Buffer[] = [];
  for (const { chunk } of countChunks(chunks).values()) {
    wanted.push(keys.chunk(tenant, chunk.plainHash));
    if (chunk.address.length === 32) wanted.push(orphanKey(chunk.address));
  }
  return wanted;
}

/**
 * Takes a ref (or a pin) for each chunk occurrence. Chunks new to the index are recorded with the
 * caller's address; for known chunks the index's address wins (both name the same plain bytes),
 * and the returned records carry it. A chunk that GC has claimed is CAIRN_UNAVAILABLE, and so is a
 * new address the orphan sweep deleted after `blocksSinceMs` (when the writer began writing the
 * blocks it names; 0 = unknown, refused while the deletion tombstone lives: orphans.ts).
 * `usage`: a change of the tenant's counters the caller makes anyway, written with the chunks' own
 * (one write of the tenant record per commit instead of two).
 */
export async function acquire(tx: KvTx, ctx: ModelContext, tenant: string, chunks: readonly ChunkRecord[], what: 'ref' | 'pin', blocksSinceMs = 0, usage?: UsageDelta): Promise<ChunkRecord[]> {
  const resolved = new Map<string, ChunkRecord>();
  let newStored = 0;
  let newChunks = 0;
  const hexes: string[] = [];
  const counted = countChunks(chunks, hexes);
  // One round trip for every index entry (and orphan record) the loop below reads.
  if (tx.getMany !== undefined && counted.size > 0) await tx.getMany(chunkReadKeys(tenant, chunks));
  for (const [hex, { chunk, count }] of counted) {
    let entry = await load(tx, tenant, chunk.plainHash);
    if (entry?.x !== undefined) throw beingDeleted(hex);
    // A new entry records the caller's address, whose bytes the result can name as they are.
    let address: Buffer | undefined;
    if (entry === undefined) {
      if (chunk.address.length !== 32) throw new CairnError('CAIRN_FAILED_PRECONDITION', `chunk ${hex} is not stored yet: upload it first`, { metadata: { plain_hash: hex } });
      await adoptAddress(tx, ctx, chunk.address, hex, blocksSinceMs);
      entry = { a: chunk.address.toString('hex'), p: chunk.size, s: chunk.storedSize, r: 0, n: 0 };
      address = chunk.address;
      newStored += chunk.storedSize;
      newChunks++;
    } else if (entry.p !== chunk.size) {
      throw invalid('chunks', `chunk ${hex} has ${entry.p} plain bytes, not ${chunk.size}`);
    }
    if (what === 'ref') entry.r += count;
    else entry.n += count;
    unqueue(tx, tenant, chunk.plainHash, entry);
    store(tx, ctx, tenant, chunk.plainHash, entry);
    resolved.set(hex, { ...chunk, address: address ?? Buffer.from(entry.a, 'hex'), storedSize: entry.s });
  }
  if (newChunks > 0 || usage !== undefined) await adjustUsage(tx, tenant, { ...usage, storedBytes: (usage?.storedBytes ?? 0) + newStored, chunks: (usage?.chunks ?? 0) + newChunks });
  return chunks.map((c, i) => {
    const r = resolved.get(hexes[i]!);
    return r === undefined ? c : { ...r, offset: c.offset };
  });
}

/** Drops refs (or pins) taken by `acquire`; chunks left with neither enter the delete queue. */
export async function release(tx: KvTx, ctx: ModelContext, tenant: string, counts: ReadonlyMap<string, number>, what: 'ref' | 'pin'): Promise<void> {
  for (const [hex, count] of counts) {
    const hash = Buffer.from(hex, 'hex');
    const entry = await load(tx, tenant, hash);
    // Absent only if the store was damaged; there is nothing left to release.
    if (entry === undefined) continue;
    if (what === 'ref') entry.r = Math.max(0, entry.r - count);
    else entry.n = Math.max(0, entry.n - count);
    store(tx, ctx, tenant, hash, entry);
  }
}

export interface IndexedChunk {
  readonly plainHash: Buffer;
  readonly address: Buffer;
  readonly plainSize: number;
  readonly storedSize: number;
  readonly refs: number;
  readonly pins: number;
  /** GC has claimed the chunk: a commit naming it fails (retryably) until GC is done with it. */
  readonly beingDeleted: boolean;
}

/**
 * The index entries of those `hashes` the tenant has, in one snapshot. Chunks GC has claimed are
 * included (flagged): a caller that took one for missing would write its block again while GC
 * may still be deleting that very address on the block nodes, and commit it after GC finished —
 * with the block gone. Naming a claimed chunk instead fails the commit with CAIRN_UNAVAILABLE,
 * and a retry after GC finished finds the chunk missing and uploads it afresh.
 */
export async function findChunks(ctx: ModelContext, tenant: string, hashes: readonly Buffer[]): Promise<IndexedChunk[]> {
  return ctx.kv.transact(async (tx) => {
    const out: IndexedChunk[] = [];
    const seen = new Set<string>();
    for (const h of hashes) {
      const hex = h.toString('hex');
      if (seen.has(hex)) continue;
      seen.add(hex);
      const e = await load(tx, tenant, h);
      if (e === undefined) continue;
      out.push({ plainHash: h, address: Buffer.from(e.a, 'hex'), plainSize: e.p, storedSize: e.s, refs: e.r, pins: e.n, beingDeleted: e.x !== undefined });
    }
    return out;
  });
}

export interface ClaimedDeletion {
  readonly tenant: string;
  readonly plainHash: Buffer;
  readonly address: Buffer;
  readonly storedSize: number;
}

/**
 * Claims up to `limit` due chunks for deletion: from now on commits and pins refuse them, so the
 * caller may delete their blocks and then call `finishDeletions`. A claim not finished within the
 * deletion lease becomes due again, so a crashed collector loses nothing.
 */
export async function claimDeletions(ctx: ModelContext, limit: number): Promise<ClaimedDeletion[]> {
  return ctx.kv.transact(async (tx) => {
    const now = ctx.now();
    const rows = await tx.scan({ gt: under('q').gt, lt: tuple('q', u64(now + 1)), limit });
    const out: ClaimedDeletion[] = [];
    for (const [k, v] of rows) {
      tx.del(k);
      const { t, h } = parseJson<QueueEntry>(v);
      const hash = Buffer.from(h, 'hex');
      const entry = await load(tx, t, hash);
      if (entry === undefined) continue;
      delete entry.q;
      if (entry.r > 0 || entry.n > 0) {
        tx.put(keys.chunk(t, hash), encodeChunk(entry));
        continue;
      }
      const due = now + ctx.deletionLeaseMs;
      tx.put(keys.deleteQueue(due, t, hash), v);
      entry.q = due;
      entry.x = 1;
      tx.put(keys.chunk(t, hash), encodeChunk(entry));
      out.push({ tenant: t, plainHash: hash, address: Buffer.from(entry.a, 'hex'), storedSize: entry.s });
    }
    return out;
  });
}

/** Removes the index entries of claimed chunks whose blocks the caller has deleted. */
export async function finishDeletions(ctx: ModelContext, done: readonly Pick<ClaimedDeletion, 'tenant' | 'plainHash'>[]): Promise<number> {
  return ctx.kv.transact(async (tx) => {
    let removed = 0;
    for (const { tenant, plainHash } of done) {
      const entry = await load(tx, tenant, plainHash);
      if (entry?.x === undefined || entry.r > 0 || entry.n > 0) continue;
      if (entry.q !== undefined) tx.del(keys.deleteQueue(entry.q, tenant, plainHash));
      tx.del(keys.chunk(tenant, plainHash));
      await adjustUsage(tx, tenant, { storedBytes: -entry.s, chunks: -1 });
      removed++;
    }
    return removed;
  });
}

/**
 * Hands claims back that GC could not complete (a replica was unreachable): they become due again
 * after `retryAfterMs` and commits may use them again at once.
 */
export async function releaseDeletions(ctx: ModelContext, claims: readonly Pick<ClaimedDeletion, 'tenant' | 'plainHash'>[], retryAfterMs: number): Promise<number> {
  return ctx.kv.transact(async (tx) => {
    let released = 0;
    for (const { tenant, plainHash } of claims) {
      const entry = await load(tx, tenant, plainHash);
      if (entry?.x === undefined) continue;
      unqueue(tx, tenant, plainHash, entry);
      delete entry.x;
      if (entry.r === 0 && entry.n === 0) {
        const due = ctx.now() + retryAfterMs;
        tx.put(keys.deleteQueue(due, tenant, plainHash), json({ t: tenant, h: plainHash.toString('hex') } satisfies QueueEntry));
        entry.q = due;
      }
      tx.put(keys.chunk(tenant, plainHash), encodeChunk(entry));
      released++;
    }
    return released;
  });
}

/** Due time of the earliest queued deletion (for tests and metrics); undefined when empty. */
export async function nextDeletionDue(ctx: ModelContext): Promise<number | undefined> {
  const [row] = await ctx.kv.scan({ ...under('q'), limit: 1 });
  return row === undefined ? undefined : Number(row[0].readBigUInt64BE(2));
}

