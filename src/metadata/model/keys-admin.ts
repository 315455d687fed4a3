// Key layout of the job queue, the cluster map and the tenant registry. First tuple elements are
// whole words ('job…', 'cluster…', 'tenant') so they never share a prefix with keys.ts's one-letter ones.
import { u64 } from './keys.js';

const SEP = Buffer.from([0]);

function key(...parts: Array<string | Buffer>): Buffer {
  const out: Buffer[] = [];
  parts.forEach((p, i) => {
    if (i > 0) out.push(SEP);
    out.push(typeof p === 'string' ? Buffer.from(p, 'utf8') : p);
  });
  return Buffer.concat(out);
}

/** [gte, lt) covering every key that starts with the tuple `parts` followed by a separator. */
function under(...parts: Array<string | Buffer>): { gte: Buffer; lt: Buffer } {
  const base = key(...parts);
  return { gte: Buffer.concat([base, SEP]), lt: Buffer.concat([base, Buffer.from([1])]) };
}

export const adminKeys = {
  /** One job record, by id (ids sort by creation time). */
  job: (id: string) => key('job', id),
  /** Queue index: when a queued job of `kind` may next be leased (a lease's expiry while leased). */
  jobReady: (kind: string, readyAtMs: number, id: string) => key('jobready', kind, u64(readyAtMs), id),
  jobReadyKind: (kind: string) => under('jobready', kind),
  jobReadyUntil: (kind: string, atMs: number) => ({ gte: under('jobready', kind).gte, lt: key('jobready', kind, u64(atMs + 1)) }),
  jobReadyAll: () => under('jobready'),
  /** Queued jobs of `kind` that become ready at or after `atMs`. */
  jobReadyFrom: (kind: string, atMs: number) => ({ gte: key('jobready', kind, u64(atMs)), lt: under('jobready', kind).lt }),
  /** Dead-letter index of a kind, by job id. */
  jobDead: (kind: string, id: string) => key('jobdead', kind, id),
  jobDeadKind: (kind: string) => under('jobdead', kind),
  jobDeadAll: () => under('jobdead'),
  /** Live job with this (tenant, kind, dedupe key), so the same work is queued once. */
  jobDedupe: (tenant: string, kind: string, dedupeKey: string) => key('jobdedupe', tenant, kind, dedupeKey),

  /** Cluster-wide settings and counters (configured replication factor). */
  clusterConfig: () => key('cluster', 'config'),
  /** One registered node. */
  clusterNode: (id: string) => key('clusternode', id),
  clusterNodes: () => under('clusternode'),
  /** The map of one epoch; the newest is current, the one before it previous. */
  clusterMap: (epoch: number) => key('clustermap', u64(epoch)),
  clusterMaps: () => under('clustermap'),

  /** A tenant registered through the Admin API. */
  tenant: (name: string) => key('tenant', name),
  tenants: () => under('tenant'),
  tenantsAfter: (name: string) => ({ gt: key('tenant', name), lt: under('tenant').lt }),
};

/** Notify channel carrying the epoch of each new cluster map. */
export const CLUSTER_MAP_CHANNEL = 'cluster_map';
/** Notify channel carrying the kind of each newly ready job (wakes idle workers). */
export const JOBS_CHANNEL = 'jobs_ready';
