// Per-tenant usage counters and the storage quota. The quota limits the logical bytes of every
// version retention keeps (current, older, deleted-but-restorable), counted where versions are
// written and dropped, in the same transactions; stored bytes (sealed, deduplicated) are reported.
// They live in the tenant record, which every commit reads anyway (its retention policy), so on
// PostgreSQL they cost no extra round trip.
import { validateTenant } from '../../common/auth.js';
import { CairnError } from '../../common/errors.js';
import type { Kv, KvReader, KvTx } from '../kv/types.js';
import { invalid, type ModelContext } from './context.js';
import { under } from './keys.js';
import { decodeChunk, decodeVersion } from './records.js';
import { cachedTenantRecord, loadTenantRecord, readTenantRecord, storeTenantRecord, type TenantRecordData } from './tenant-record.js';

interface StoredUsage {
  /** Logical bytes and count of kept versions (tombstones are versions of 0 bytes). */
  b: number;
  v: number;
  /** Stored (sealed) bytes and count of the tenant's chunk-index entries. */
  s: number;
  c: number;
  /** Quota on `b`, when set. */
  q?: number;
}

export interface TenantUsage {
  readonly tenant: string;
  /** Logical bytes of every version retention keeps: what the quota limits. */
  readonly versionBytes: number;
  readonly versions: number;
  /** Sealed bytes of the tenant's distinct chunks (deduplicated, before replication). */
  readonly storedBytes: number;
  readonly chunks: number;
  /** 0 = no quota. */
  readonly quotaBytes: number;
}

export interface UsageDelta {
  readonly versionBytes?: number;
  readonly versions?: number;
  readonly storedBytes?: number;
  readonly chunks?: number;
}

const empty = (): StoredUsage => ({ b: 0, v: 0, s: 0, c: 0 });

/** The counters in a tenant record (a copy, safe to change). */
function usageIn(record: TenantRecordData): StoredUsage {
  const u = record.u as StoredUsage | undefined;
  return u === undefined ? empty() : { ...u };
}

function toUsage(tenant: string, u: StoredUsage): TenantUsage {
  return { tenant, versionBytes: u.b, versions: u.v, storedBytes: u.s, chunks: u.c, quotaBytes: u.q ?? 0 };
}

/** Applies `delta` to the tenant's counters inside `tx` (see enforceQuota for the limit). */
export async function adjustUsage(tx: KvTx, tenant: string, delta: UsageDelta): Promise<void> {
  const record = cachedTenantRecord(tx, tenant) ?? (await loadTenantRecord(tx, tenant));
  const u = usageIn(record);
  u.b = Math.max(0, u.b + (delta.versionBytes ?? 0));
  u.v = Math.max(0, u.v + (delta.versions ?? 0));
  u.s = Math.max(0, u.s + (delta.storedBytes ?? 0));
  u.c = Math.max(0, u.c + (delta.chunks ?? 0));
  storeTenantRecord(tx, tenant, { ...record, u });
}

/**
 * Refuses a change that grew the tenant's version bytes from `before` to past its quota (called
 * at the end of a commit, after keep-last pruning, so a commit that replaces what it prunes fits).
 */
export async function enforceQuota(tx: KvTx, tenant: string, before: number): Promise<void> {
  // Read in place (the record is frozen): no copy for the common case of no quota.
  const u = (cachedTenantRecord(tx, tenant) ?? (await loadTenantRecord(tx, tenant))).u as StoredUsage | undefined;
  if (u?.q === undefined || u.b <= before || u.b <= u.q) return;
  throw new CairnError('CAIRN_QUOTA_EXCEEDED', `tenant ${tenant} would use ${u.b} bytes, over its quota of ${u.q} bytes (${before} used)`, {
    metadata: { tenant, quota_bytes: String(u.q), used_bytes: String(before), requested_bytes: String(u.b - before) },
  });
}

/** The tenant's version bytes as seen by `tx`. */
export async function versionBytes(tx: Pick<KvTx, 'get'>, tenant: string): Promise<number> {
  return ((cachedTenantRecord(tx, tenant) ?? (await loadTenantRecord(tx, tenant))).u as StoredUsage | undefined)?.b ?? 0;
}

export async function getUsage(kv: KvReader, tenant: string): Promise<TenantUsage> {
  validateTenant(tenant);
  const u = (await readTenantRecord(kv, tenant)).u as StoredUsage | undefined;
  return toUsage(tenant, u ?? empty());
}

/** Sets (bytes > 0) or removes (0) a tenant's quota; usage above a new quota only blocks growth. */
export async function setQuota(kv: Kv, tenant: string, quotaBytes: number): Promise<TenantUsage> {
  validateTenant(tenant);
  if (!Number.isSafeInteger(quotaBytes) || quotaBytes < 0) throw invalid('quota_bytes', 'quota_bytes must be a non-negative integer (0 = no quota)');
  return kv.transact(async (tx) => {
    const record = await loadTenantRecord(tx, tenant);
    const u = usageIn(record);
    if (quotaBytes === 0) delete u.q;
    else u.q = quotaBytes;
    storeTenantRecord(tx, tenant, { ...record, u });
    return toUsage(tenant, u);
  });
}

const RECOUNT_PAGE = 1000;

/** Sums a tenant's kept versions (headers) and chunk-index entries as `tx` sees them. */
async function countStored(tx: Pick<KvReader, 'scan'>, tenant: string): Promise<Omit<StoredUsage, 'q'>> {
  const u = { b: 0, v: 0, s: 0, c: 0 };
  const sumRange = async (range: { gt: Buffer; lt: Buffer }, add: (value: Buffer) => void): Promise<void> => {
    let gt = range.gt;
    for (;;) {
      const rows = await tx.scan({ gt, lt: range.lt, limit: RECOUNT_PAGE });
      for (const [, v] of rows) add(v);
      const last = rows.at(-1);
      if (last === undefined || rows.length < RECOUNT_PAGE) return;
      gt = last[0];
    }
  };
  await sumRange(under('v', tenant), (v) => {
    u.b += decodeVersion(v).size;
    u.v++;
  });
  await sumRange(under('c', tenant), (v) => {
    u.s += decodeChunk(v).s;
    u.c++;
  });
  return u;
}

/**
 * Recomputes a tenant's counters from its versions and chunk index in one transaction on the
 * tenant's write lane (so no commit of the tenant interleaves), keeping its quota.
 */
export async function recountUsage(ctx: ModelContext, tenant: string): Promise<TenantUsage> {
  validateTenant(tenant);
  return ctx.write(tenant, async (tx) => {
    const counted = await countStored(tx, tenant);
    const record = await loadTenantRecord(tx, tenant);
    const q = (record.u as StoredUsage | undefined)?.q;
    const u: StoredUsage = { ...counted, ...(q !== undefined ? { q } : {}) };
    storeTenantRecord(tx, tenant, { ...record, u });
    return toUsage(tenant, u);
  });
}

/**
 * Recounts every tenant that has data but no counters yet: stores written before the counters
 * existed. A tenant's first commit creates its counters, so this finds work only once per store.
 */
export async function recountUncounted(ctx: ModelContext, listTenants: (after: string) => Promise<string[]>): Promise<string[]> {
  const recounted: string[] = [];
  let after = '';
  for (;;) {
    const tenants = await listTenants(after);
    for (const tenant of tenants) {
      if ((await readTenantRecord(ctx.kv, tenant)).u !== undefined) continue;
      await recountUsage(ctx, tenant);
      recounted.push(tenant);
    }
    const last = tenants.at(-1);
    if (last === undefined) return recounted;
    after = last;
  }
}
