// Background sweeps over the model, each a series of small transactions so they never hold up
// commits: time-based version retention, purging deleted entries after the trash window,
// expiring upload sessions and trimming the change feed. Safe to run on several replicas at once.
import type { KvTx } from '../kv/types.js';
import { trimChanges } from './changes.js';
import { parseJson } from './codec.js';
import { daysMs, type ModelContext } from './context.js';
import { keys, tuple, u64, under } from './keys.js';
import { decodeNode } from './records.js';
import { expireSessions } from './sessions.js';
import { dropShares } from './shares.js';
import { listTenantIds, policyOf } from './tenants.js';
import { getEntry, locate, type NodeRecord } from './tree.js';
import { dropVersion, listVersionHeaders, readHeader } from './versions.js';

const BATCH = 64;

/**
 * Drops a batch of versions replaced longer ago than the tenant's keepDays (and outside its
 * keepLast); `more` says whether another batch may be due.
 */
export async function pruneExpiredVersions(ctx: ModelContext, tenant: string): Promise<{ dropped: number; more: boolean }> {
  return ctx.kv.transact(async (tx) => {
    const policy = await policyOf(tx, ctx, tenant);
    if (policy.keepDays === undefined) return { dropped: 0, more: false };
    const cutoff = ctx.now() - daysMs(policy.keepDays);
    const rows = await tx.scan({ gt: under('p', tenant).gt, lt: tuple('p', tenant, u64(cutoff)), limit: BATCH });
    let dropped = 0;
    for (const [k, v] of rows) {
      const { id, v: version } = parseJson<{ id: string; v: number }>(v);
      const header = await readHeader(tx, tenant, id, version);
      if (header === undefined) {
        tx.del(k);
        continue;
      }
      if (policy.keepLast !== undefined) {
        const newer = await tx.scan({ gt: keys.version(tenant, id, version), lt: under('v', tenant, id).lt, limit: policy.keepLast });
        if (newer.length < policy.keepLast) {
          // Still among the newest N: the keep-last rule drops it at a later commit.
          tx.del(k);
          continue;
        }
      }
      if (await dropVersion(tx, ctx, tenant, id, version)) dropped++;
    }
    return { dropped, more: rows.length === BATCH };
  });
}

async function entryOf(tx: Pick<KvTx, 'get'>, tenant: string, id: string): Promise<{ parent: string; name: string; node: NodeRecord } | undefined> {
  const loc = await locate(tx, tenant, id);
  if (loc === undefined) return undefined;
  const node = await getEntry(tx, tenant, loc.p, loc.n);
  return node === undefined ? undefined : { parent: loc.p, name: loc.n, node };
}

/** Removes one node's entry, location, shares, versions (releasing refs) and trash index entry. */
async function purgeNode(tx: KvTx, ctx: ModelContext, tenant: string, e: { parent: string; name: string; node: NodeRecord }): Promise<void> {
  if (e.node.kind === 'file') {
    for (let batch = await listVersionHeaders(tx, tenant, e.node.id, { limit: BATCH }); batch.length > 0; batch = await listVersionHeaders(tx, tenant, e.node.id, { limit: BATCH })) {
      for (const h of batch) await dropVersion(tx, ctx, tenant, e.node.id, h.v);
    }
  }
  await dropShares(tx, tenant, e.node.id);
  if (e.node.deletedMs !== undefined) tx.del(keys.deleted(tenant, e.node.deletedMs, e.node.id));
  tx.del(keys.dentry(tenant, e.parent, e.name));
  tx.del(keys.node(tenant, e.node.id));
}

/**
 * One bounded step of purging the subtree of `rootId`: descends to a folder without subfolders,
 * purges up to BATCH of its files (or the folder itself once empty). True once `rootId` is gone.
 */
async function purgeStep(tx: KvTx, ctx: ModelContext, tenant: string, rootId: string): Promise<boolean> {
  let at = await entryOf(tx, tenant, rootId);
  if (at === undefined) return true;
  for (;;) {
    if (at.node.kind === 'file') {
      await purgeNode(tx, ctx, tenant, at);
      return at.node.id === rootId;
    }
    const range = under('d', tenant, at.node.id);
    const rows = await tx.scan({ ...range, limit: BATCH });
    const children = rows.map(([k, v]) => ({ parent: at!.node.id, name: k.subarray(range.gt.length).toString('utf8'), node: decodeNode(v) }));
    const folder = children.find((c) => c.node.kind === 'dir');
    if (folder !== undefined) {
      at = folder;
      continue;
    }
    if (children.length === 0) {
      await purgeNode(tx, ctx, tenant, at);
      return at.node.id === rootId;
    }
    for (const child of children) await purgeNode(tx, ctx, tenant, child);
    return false;
  }
}

/** Purges entries deleted longer ago than the tenant's trash window; returns how many roots. */
export async function purgeDeleted(ctx: ModelContext, tenant: string): Promise<number> {
  const due = await ctx.kv.transact(async (tx) => {
    const policy = await policyOf(tx, ctx, tenant);
    const cutoff = ctx.now() - daysMs(policy.trashDays);
    return tx.scan({ gt: under('D', tenant).gt, lt: tuple('D', tenant, u64(cutoff)), limit: BATCH });
  });
  let purged = 0;
  for (const [k, v] of due) {
    const id = v.toString('utf8');
    const deletedMs = Number(k.readBigUInt64BE(under('D', tenant).gt.length));
    for (let done = false; !done;) {
      done = await ctx.kv.transact(async (tx) => {
        const e = await entryOf(tx, tenant, id);
        // Restored (or restored and deleted again later) since the index entry was written.
        if (e === undefined || e.node.deletedMs !== deletedMs) {
          tx.del(k);
          return true;
        }
        return purgeStep(tx, ctx, tenant, id);
      });
    }
    purged++;
  }
  return purged;
}

export interface MaintenanceStats {
  sessionsExpired: number;
  versionsPruned: number;
  entriesPurged: number;
  changesTrimmed: number;
}

/** Runs every sweep to completion over every tenant. */
export async function runMaintenance(ctx: ModelContext): Promise<MaintenanceStats> {
  const stats: MaintenanceStats = { sessionsExpired: 0, versionsPruned: 0, entriesPurged: 0, changesTrimmed: 0 };
  for (let n = BATCH; n === BATCH;) stats.sessionsExpired += n = await expireSessions(ctx, BATCH);
  for (let tenants = await listTenantIds(ctx); tenants.length > 0; tenants = await listTenantIds(ctx, tenants.at(-1))) {
    for (const tenant of tenants) {
      for (let more = true; more;) {
        const r = await pruneExpiredVersions(ctx, tenant);
        stats.versionsPruned += r.dropped;
        more = r.more;
      }
      for (let n = 1; n > 0;) stats.entriesPurged += n = await purgeDeleted(ctx, tenant);
      for (let n = 1; n > 0;) stats.changesTrimmed += n = await trimChanges(ctx, tenant);
    }
  }
  return stats;
}
