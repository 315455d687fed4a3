// Immutable file versions: a small header plus the chunk list in binary pages. Dropping a version
// (retention, purge) deletes header, pages and index entries and releases its chunk refs, in the
// caller's transaction, so a version's refs are released exactly once.
import { hash } from 'node:crypto';
import type { KvTx } from '../kv/types.js';
import { countChunks, release } from './chunks.js';
import { decodeChunks, encodeChunks, json, pages, type ChunkRecord } from './codec.js';
import { daysMs, type ModelContext, type RetentionPolicy } from './context.js';
import { keys, under } from './keys.js';
import { decodeVersion, encodeVersion, type StoredVersion } from './records.js';
import { adjustUsage } from './usage.js';

/** A media derivative as stored in its version's header: chunk records (80 bytes each) in base64. */
export type { StoredDerivative, StoredVersion } from './records.js';

export function contentHash(chunks: readonly ChunkRecord[]): Buffer {
  // One-shot: a Hash object is a native handle that every young-generation GC must process (with
  // one per commit, 0.4 ms of each 1.5 ms scavenge under `bench -- metadata`).
  if (chunks.length === 1) return hash('sha256', chunks[0]!.plainHash, 'buffer');
  return hash('sha256', Buffer.concat(chunks.map((c) => c.plainHash)), 'buffer');
}

/**
 * Chunk lists of at most this many chunks (1.25 KiB encoded) live in the version header instead of
 * a page record of their own: one write and one LevelDB entry less for every small file, and one
 * read less to list its chunks.
 */
export const INLINE_CHUNKS = 16;

/**
 * Writes a version's header and chunk list. Takes `header` over and completes it in place (the
 * callers pass a fresh literal): copying every field into a new object cost a commit more than
 * the header's encoding.
 */
export function writeVersion(tx: KvTx, tenant: string, nodeId: string, header: Omit<StoredVersion, 'n' | 'po' | 'inline'>, chunks: readonly ChunkRecord[]): StoredVersion {
  const stored = header as StoredVersion;
  stored.n = chunks.length;
  if (chunks.length > 0 && chunks.length <= INLINE_CHUNKS) {
    stored.po = [chunks[0]!.offset];
    stored.inline = encodeChunks(chunks);
    tx.put(keys.version(tenant, nodeId, header.v), encodeVersion(stored));
    return stored;
  }
  const split = pages(chunks);
  stored.po = split.map((p) => p[0]!.offset);
  split.forEach((page, i) => tx.put(keys.versionPage(tenant, nodeId, header.v, i), encodeChunks(page)));
  tx.put(keys.version(tenant, nodeId, header.v), encodeVersion(stored));
  return stored;
}

export async function readHeader(tx: Pick<KvTx, 'get'>, tenant: string, nodeId: string, version: number): Promise<StoredVersion | undefined> {
  const raw = await tx.get(keys.version(tenant, nodeId, version));
  return raw === undefined ? undefined : decodeVersion(raw);
}

/**
 * The chunks of a version from the one containing byte `fromOffset`, at most `max` of them
 * (0 = all). Only the pages needed are read.
 */
export async function readChunks(tx: Pick<KvTx, 'get'>, tenant: string, nodeId: string, header: StoredVersion, fromOffset = 0, max = 0): Promise<ChunkRecord[]> {
  if (header.n === 0) return [];
  let page = 0;
  let lo = 0;
  let hi = header.po.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (header.po[mid]! <= fromOffset) {
      page = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  const out: ChunkRecord[] = [];
  for (; page < header.po.length; page++) {
    const raw = page === 0 && header.inline !== undefined ? header.inline : await tx.get(keys.versionPage(tenant, nodeId, header.v, page));
    if (raw === undefined) break;
    for (const c of decodeChunks(raw)) {
      if (c.offset + c.size <= fromOffset) continue;
      out.push(c);
      if (max > 0 && out.length >= max) return out;
    }
  }
  return out;
}

/** Records that `version` stopped being current at `at` (what time-based retention counts from). */
export async function markReplaced(tx: KvTx, tenant: string, nodeId: string, version: number, at: number): Promise<void> {
  const header = await readHeader(tx, tenant, nodeId, version);
  if (header === undefined || header.replaced !== undefined) return;
  header.replaced = at;
  tx.put(keys.version(tenant, nodeId, version), encodeVersion(header));
  tx.put(keys.replaced(tenant, at, nodeId, version), json({ id: nodeId, v: version }));
}

/** Deletes a version and releases its refs; false when it was already gone. */
export async function dropVersion(tx: KvTx, ctx: ModelContext, tenant: string, nodeId: string, version: number): Promise<boolean> {
  const header = await readHeader(tx, tenant, nodeId, version);
  if (header === undefined) return false;
  const chunks = await readChunks(tx, tenant, nodeId, header);
  const counts = new Map<string, number>();
  for (const [hex, { count }] of countChunks(chunks)) counts.set(hex, count);
  for (const d of header.der ?? []) for (const [hex, { count }] of countChunks(decodeChunks(Buffer.from(d.c, 'base64')))) counts.set(hex, (counts.get(hex) ?? 0) + count);
  await release(tx, ctx, tenant, counts, 'ref');
  await adjustUsage(tx, tenant, { versionBytes: -header.size, versions: -1 });
  for (let i = header.inline === undefined ? 0 : 1; i < header.po.length; i++) tx.del(keys.versionPage(tenant, nodeId, version, i));
  tx.del(keys.version(tenant, nodeId, version));
  if (header.replaced !== undefined) tx.del(keys.replaced(tenant, header.replaced, nodeId, version));
  return true;
}

/** Whether the time rule of `policy` still keeps a replaced version. */
export function keptByTime(header: StoredVersion, policy: RetentionPolicy, now: number): boolean {
  if (header.replaced === undefined) return true;
  if (policy.keepDays === undefined) return policy.keepLast === undefined;
  return header.replaced + daysMs(policy.keepDays) > now;
}

/** Versions of a node, newest first, starting below `before` (exclusive) when given. */
export async function listVersionHeaders(tx: Pick<KvTx, 'scan'>, tenant: string, nodeId: string, options: { before?: number | undefined; limit: number }): Promise<StoredVersion[]> {
  const range = under('v', tenant, nodeId);
  const rows = await tx.scan({ gt: range.gt, lt: options.before !== undefined ? keys.version(tenant, nodeId, options.before) : range.lt, limit: options.limit, reverse: true });
  return rows.map(([, v]) => decodeVersion(v));
}

/** Most versions one commit prunes; a policy change that frees more is worked off by later commits. */
const PRUNE_PER_COMMIT = 64;

/**
 * Applies the keep-last rule after a commit: versions beyond the newest `keepLast` are dropped
 * unless the time rule still keeps them (those go when the retention sweep reaches them).
 */
export async function pruneByCount(tx: KvTx, ctx: ModelContext, tenant: string, nodeId: string, head: number, policy: RetentionPolicy): Promise<number> {
  if (policy.keepLast === undefined) return 0;
  const range = under('v', tenant, nodeId);
  const newest = await tx.scan({ ...range, limit: policy.keepLast, reverse: true });
  const boundary = newest.at(-1);
  if (newest.length < policy.keepLast || boundary === undefined) return 0;
  const older = await tx.scan({ gt: range.gt, lt: boundary[0], limit: PRUNE_PER_COMMIT, reverse: true });
  const now = ctx.now();
  let dropped = 0;
  for (const [, raw] of older) {
    const header = decodeVersion(raw);
    if (header.v === head || keptByTime(header, policy, now)) continue;
    if (await dropVersion(tx, ctx, tenant, nodeId, header.v)) dropped++;
  }
  return dropped;
}
