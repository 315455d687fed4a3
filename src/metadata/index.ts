// The metadata service: Cairn's strongly consistent source of truth (files, versions, chunk
// index) over an ordered transactional KV. `createMetadataService` builds and starts one.
import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { CairnGrpcServer } from '../common/grpc-server.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { loadProto } from '../common/proto.js';
import { openKv } from './kv/index.js';
import type { Kv } from './kv/types.js';
import { createContext, type ModelOptions } from './model/index.js';
import { METADATA_PERMISSIONS, metadataHandlers } from './service.js';
import { Sweeper } from './sweeper.js';
import { ChangeHub } from './watch.js';
import { ADMIN_PERMISSIONS, createAdminService } from './admin.js';
import { DEFAULT_GC_INTERVAL_MS, GcWorker, type GcNode } from './gc.js';
import { claimDeletions, claimOrphans, DEFAULT_ORPHAN_GRACE_MS, DEFAULT_ORPHAN_TOMBSTONE_MS, endOrphanClaims, finishDeletions, forgetOrphans, listTenantIds, noteOrphans, recountUncounted, referencedAddresses, releaseDeletions } from './model/index.js';

const DEFAULT_ORPHAN_INTERVAL_MS = 60 * 60 * 1000;
import { getClusterMap } from './model/cluster.js';
import type { TokenProvider } from '../common/grpc-client.js';

export { MetadataClient, type MetadataClientOptions } from './client.js';
export { AdminClient, type AdminClientOptions, type AdminDeletion, type AdminGcResult, type AdminRetentionPolicy, type AdminUsage, type AdminUser, type AdminNode, type AdminJob, type AdminLease, type AdminTenant, type RegisterNodeInput, type DrainStatus, type NodeStats, type QueueDepth } from './admin-client.js';
export { enqueueJob, type EnqueueInput, type JobRecord } from './model/jobs.js';
export { MEDIA_JOB_KIND, NOT_MEDIA, type MediaDerivative, type MediaJobPayload } from './model/files.js';
export { DEFAULT_ORPHAN_TOMBSTONE_MS, MAX_UPLOAD_BLOCKS_AGE_MS } from './model/orphans.js';
export { GcWorker, DEFAULT_GC_INTERVAL_MS, type DeletionSource, type GcNode, type GcRunResult, type GcWorkerOptions, type OrphanSource, type OrphanSweepResult } from './gc.js';
export { exportStore, importStore, openExportSource, openImportTarget, openMetadataStore, saveStreamedExport, verifyExport, type ExportSummary, type ImportSummary, type MetadataStoreTarget } from './export.js';

export interface MetadataServiceOptions {
  readonly dataDir: string;
  readonly host: string;
  readonly port: number;
  readonly credentials: grpc.ServerCredentials;
  readonly authSecret: Uint8Array;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly maxFileBytes?: number;
  /** PostgreSQL connection string; when absent, LevelDB under dataDir/metadata. */
  readonly postgresUrl?: string | undefined;
  /** Cluster map settings: replication factor of a new cluster, failure detector delay and period. */
  readonly cluster?: { readonly replicationFactor?: number; readonly failoverDelayMs?: number; readonly detectIntervalMs?: number } | undefined;
  /** Model settings (retention defaults, TTLs, clock, commit hook); maxFileBytes above wins. */
  readonly model?: ModelOptions;
  /** Period of the maintenance sweep (retention, trash, sessions, feed); default 60 s. */
  readonly sweepIntervalMs?: number;
  /** How often a change watch re-reads without a notification; default 5 s. */
  readonly watchPollMs?: number;
  /**
   * The block GC: how to reach block nodes, and how often to run (default 60 s; 0 = only on
   * Admin.RunGarbageCollection). Its nodes are the cluster map's unless `nodes` names them
   * (the embedded server's one node). Absent: this process collects nothing.
   */
  readonly gc?: {
    readonly credentials: grpc.ChannelCredentials;
    readonly token: TokenProvider;
    readonly intervalMs?: number;
    readonly nodes?: () => Promise<readonly GcNode[]>;
    /** Orphan blocks (named by no chunk) are deleted after this long unreferenced; default 1 day. */
    readonly orphanGraceMs?: number;
    /**
     * How long a deleted orphan's address stays refused to commits whose writer began writing
     * blocks before the deletion; default 7 days. Keep it above MAX_UPLOAD_BLOCKS_AGE_MS (6 days),
     * the age past which gateways refuse to commit an upload.
     */
    readonly orphanTombstoneMs?: number;
    /** Periodic runs sweep orphans at most this often (default 1 h; 0 = only on request). */
    readonly orphanIntervalMs?: number;
  } | undefined;
}

export interface MetadataService {
  readonly port: number;
  readonly kv: Kv;
  readonly gc: GcWorker | undefined;
  stop(timeoutMs?: number): Promise<void>;
}

export async function createMetadataService(options: MetadataServiceOptions): Promise<MetadataService> {
  const log = options.log.child({ component: 'metadata' });
  const kv = options.postgresUrl !== undefined
    ? await openKv({ backend: 'postgres', url: options.postgresUrl })
    : await openKv({ backend: 'level', dir: join(options.dataDir, 'metadata') });
  const ctx = createContext(kv, { ...options.model, ...(options.maxFileBytes !== undefined ? { maxFileBytes: options.maxFileBytes } : {}) });
  try {
    // Stores written before the usage counters existed are counted once, before serving.
    const recounted = await recountUncounted(ctx, (after) => listTenantIds(ctx, after));
    if (recounted.length > 0) log.info({ tenants: recounted.length }, 'usage counters recounted for tenants written before they existed');
  } catch (err) {
    await kv.close();
    throw err;
  }
  const { definition, proto } = loadProto();
  const server = new CairnGrpcServer({ name: 'metadata', log, metrics: options.metrics, authSecret: options.authSecret, packageDefinition: definition });
  const hub = new ChangeHub(kv);
  const metadata = metadataHandlers(ctx, { secret: options.authSecret, hub, ...(options.watchPollMs !== undefined ? { watchPollMs: options.watchPollMs } : {}) });
  server.addService(proto.cairn.v1.Metadata.service, metadata.handlers, METADATA_PERMISSIONS);
  const sweeper = new Sweeper(ctx, { intervalMs: options.sweepIntervalMs ?? 60_000, log: log.child({ task: 'sweep' }), registry: options.metrics.registry });
  const gc = options.gc === undefined
    ? undefined
    : new GcWorker({
        source: {
          claim: (max) => claimDeletions(ctx, max),
          finish: (done) => finishDeletions(ctx, done),
          release: (claims, retryAfterMs) => releaseDeletions(ctx, claims, retryAfterMs),
        },
        nodes: options.gc.nodes ?? (async () => (await getClusterMap(kv)).nodes),
        credentials: options.gc.credentials,
        token: options.gc.token,
        log: log.child({ task: 'gc' }),
        intervalMs: options.gc.intervalMs ?? DEFAULT_GC_INTERVAL_MS,
        registry: options.metrics.registry,
        orphans: {
          source: {
            referenced: () => referencedAddresses(ctx),
            note: (candidates, graceMs) => noteOrphans(ctx, candidates, graceMs),
            claim: (addresses, holdMs) => claimOrphans(ctx, addresses, holdMs),
            end: (addresses, holdMs, tombstoneMs) => endOrphanClaims(ctx, addresses, holdMs, tombstoneMs),
            forget: (addresses) => forgetOrphans(ctx, addresses),
          },
          graceMs: options.gc.orphanGraceMs ?? DEFAULT_ORPHAN_GRACE_MS,
          holdMs: ctx.deletionLeaseMs,
          tombstoneMs: options.gc.orphanTombstoneMs ?? DEFAULT_ORPHAN_TOMBSTONE_MS,
          intervalMs: options.gc.orphanIntervalMs ?? DEFAULT_ORPHAN_INTERVAL_MS,
        },
      });
  const admin = createAdminService({ kv, model: ctx, gc, backend: options.postgresUrl !== undefined ? 'postgres' : 'level', authSecret: options.authSecret, log: log.child({ service: 'admin' }), registry: options.metrics.registry, ...options.cluster });
  server.addService(proto.cairn.v1.Admin.service, admin.handlers, ADMIN_PERMISSIONS);
  let port: number;
  try {
    port = await server.listen(options.host, options.port, options.credentials);
  } catch (err) {
    hub.close();
    await kv.close();
    throw err;
  }
  admin.start();
  sweeper.start();
  gc?.start();
  return {
    port,
    kv,
    gc,
    async stop(timeoutMs?: number) {
      await gc?.stop();
      await admin.stop();
      await sweeper.stop();
      // Watches never end by themselves; end them so in-flight calls can drain.
      metadata.close();
      await server.shutdown(timeoutMs);
      hub.close();
      await kv.close();
    },
  };
}
