// The Admin gRPC service: cluster map and node life cycle (service tokens: block nodes, gateways,
// operator), the durable job queue (media workers), tenants and tokens (admin tokens), plus the
// failure detector's timer.
import { ROLES, signToken, validateTenant, type Permission, type Role } from '../common/auth.js';
import { CairnError } from '../common/errors.js';
import { principalOf, send, serverStream, unary } from '../common/grpc-server.js';
import type { Logger } from '../common/log.js';
import { Gauge, type Registry } from 'prom-client';
import { wireInt } from '../common/wire.js';
import type { AdminHandlers } from '../gen/cairn/v1/Admin.js';
import type { NodeStats__Output } from '../gen/cairn/v1/NodeStats.js';
import type { Kv } from './kv/types.js';
import { createTenant, getTenant, listTenants } from './admin-tenants.js';
import { getOrCreateTenantKey } from './admin-tenant-keys.js';
import { jobToWire, mapToWire, nodeToWire, stateToWire } from './admin-wire.js';
import {
  DEFAULT_FAILOVER_DELAY_MS,
  detectFailures,
  drainNode,
  getClusterMap,
  getCurrentAndPrevious,
  getDrainStatus,
  heartbeat,
  listNodes,
  markNodeDown,
  markNodeUp,
  registerNode,
  removeNode,
  watchClusterMap,
  type ClusterOptions,
  type NodeStats,
} from './model/cluster.js';
import { completeJob, failJob, leaseJobsWaiting, listDeadLetters, queueDepth, retryDeadLetter } from './model/jobs.js';
import { claimDeletions, deleteUser, finishDeletions, getPolicy, getUsage, listUsers, putUser, recountUsage, releaseDeletions, setPolicy, setQuota, type ModelContext, type RetentionPolicy, type TenantUsage, type UserRecord } from './model/index.js';
import type { RetentionPolicy as WirePolicy, RetentionPolicy__Output as WirePolicyIn } from '../gen/cairn/v1/RetentionPolicy.js';
import { validateUser } from './model/context.js';
import type { TenantUsage as WireUsage } from '../gen/cairn/v1/TenantUsage.js';
import type { UserInfo } from '../gen/cairn/v1/UserInfo.js';
import type { GcWorker } from './gc.js';
import { exportStore } from './export.js';
import { mkdtemp, open as openFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The tenant whose admins administer the cluster (create tenants, mint tokens for any tenant). */
export const SYSTEM_TENANT = 'system';
const DEFAULT_LEASE_MS = 60_000;
const MAX_TOKEN_TTL_S = 365 * 24 * 3600;
const DEFAULT_TOKEN_TTL_S = 30 * 24 * 3600;

export const ADMIN_PERMISSIONS = Object.freeze({
  GetClusterMap: 'service',
  WatchClusterMap: 'service',
  RegisterNode: 'service',
  Heartbeat: 'service',
  DrainNode: 'service',
  RemoveNode: 'service',
  MarkNodeUp: 'service',
  MarkNodeDown: 'service',
  GetDrainStatus: 'service',
  ListNodes: 'service',
  LeaseJobs: 'service',
  CompleteJob: 'service',
  FailJob: 'service',
  ListDeadLetters: 'service',
  RetryDeadLetter: 'service',
  GetQueueDepth: 'service',
  CreateTenant: 'admin',
  ListTenants: 'admin',
  CreateToken: 'admin',
  GetOrCreateTenantKey: 'service',
  SetTenantQuota: 'admin',
  GetTenantUsage: 'admin',
  RecountUsage: 'admin',
  SetRetentionPolicy: 'admin',
  GetRetentionPolicy: 'admin',
  CreateUser: 'admin',
  ListUsers: 'admin',
  DeleteUser: 'admin',
  ClaimDeletions: 'service',
  FinishDeletions: 'service',
  RunGarbageCollection: 'admin',
  Export: 'admin',
} satisfies Record<string, Permission>);

export interface AdminServiceOptions {
  readonly kv: Kv;
  /** The model (users, quotas and GC claims go through its write lanes and settings). */
  readonly model: ModelContext;
  /** This process's block GC, when it runs one (RunGarbageCollection). */
  readonly gc?: GcWorker | undefined;
  /** Which backend `kv` is (written into export headers). */
  readonly backend?: 'level' | 'postgres';
  /** Signs the tokens CreateToken mints. */
  readonly authSecret: Uint8Array;
  readonly log: Logger;
  /** Replication factor a new cluster starts with (default 3). */
  readonly replicationFactor?: number | undefined;
  /** How long a node may be silent before the detector marks it down (default 5 min). */
  readonly failoverDelayMs?: number | undefined;
  /** How often the detector runs (default failoverDelayMs / 10, between 1 s and 30 s). */
  readonly detectIntervalMs?: number | undefined;
  readonly now?: () => number;
  /** Where to register the queue and cluster gauges (none when absent). */
  readonly registry?: Registry | undefined;
}

export interface AdminService {
  readonly handlers: AdminHandlers;
  /** Starts the failure detector's timer. */
  start(): void;
  /** Stops the detector and ends every open watch, so server shutdown need not wait for them. */
  stop(): Promise<void>;
}

function pageSize(value: number, field = 'page_size'): number {
  if (value === 0) return 100;
  if (!Number.isInteger(value) || value < 1 || value > 1000) throw new CairnError('CAIRN_INVALID_ARGUMENT', `${field} must be in 1..1000`, { fieldViolations: [{ field, description: 'out of range' }] });
  return value;
}

const DEFAULT_CLAIMS = 256;
const MAX_CLAIMS = 1000;
const DEFAULT_RELEASE_RETRY_MS = 60_000;

function usageToWire(u: TenantUsage): WireUsage {
  return { tenant: u.tenant, version_bytes: String(u.versionBytes), versions: String(u.versions), stored_bytes: String(u.storedBytes), chunks: String(u.chunks), quota_bytes: String(u.quotaBytes) };
}

function policyToWire(p: RetentionPolicy): WirePolicy {
  return {
    ...(p.keepLast !== undefined ? { keep_last: p.keepLast } : {}),
    ...(p.keepDays !== undefined ? { keep_days: p.keepDays } : {}),
    ...(p.trashDays !== undefined ? { trash_days: p.trashDays } : {}),
  };
}

function policyFromWire(p: WirePolicyIn | null): RetentionPolicy {
  if (p === null) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'policy is required', { fieldViolations: [{ field: 'policy', description: 'missing' }] });
  return {
    ...(p.keep_last !== undefined ? { keepLast: p.keep_last } : {}),
    ...(p.keep_days !== undefined ? { keepDays: p.keep_days } : {}),
    ...(p.trash_days !== undefined ? { trashDays: p.trash_days } : {}),
  };
}

function userToWire(u: UserRecord): UserInfo {
  return { tenant: u.tenant, user: u.user, display_name: u.displayName, created_ms: String(u.createdMs) };
}

/**
 * The tenant a tenant-scoped admin call acts on: the caller's own (empty = it), or any tenant for
 * admins of tenant "system".
 */
function scopedTenant(principal: { tenant: string }, requested: string): string {
  const tenant = requested === '' ? principal.tenant : requested;
  validateTenant(tenant);
  if (tenant !== principal.tenant && principal.tenant !== SYSTEM_TENANT) {
    throw new CairnError('CAIRN_PERMISSION_DENIED', `an admin of tenant ${principal.tenant} may not act on tenant ${tenant}`);
  }
  return tenant;
}

function deletionRefs(refs: ReadonlyArray<{ tenant: string; plain_hash: Buffer }>, field: string): Array<{ tenant: string; plainHash: Buffer }> {
  if (refs.length > MAX_CLAIMS) throw new CairnError('CAIRN_INVALID_ARGUMENT', `at most ${MAX_CLAIMS} entries in ${field}`);
  return refs.map((r, i) => {
    validateTenant(r.tenant);
    if (r.plain_hash.length !== 32) throw new CairnError('CAIRN_INVALID_HASH', `${field}[${i}].plain_hash must be 32 bytes`, { fieldViolations: [{ field: `${field}[${i}].plain_hash`, description: 'must be 32 bytes' }] });
    return { tenant: r.tenant, plainHash: r.plain_hash };
  });
}

function statsFromWire(s: NodeStats__Output | null | undefined): NodeStats {
  if (s === null || s === undefined) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'stats are required', { fieldViolations: [{ field: 'stats', description: 'missing' }] });
  return {
    blocks: wireInt(s.blocks, 'stats.blocks'),
    bytes: wireInt(s.bytes, 'stats.bytes'),
    capacityBytes: wireInt(s.capacity_bytes, 'stats.capacity_bytes'),
    underReplicatedPartitions: wireInt(s.under_replicated_partitions, 'stats.under_replicated_partitions'),
    bytesToMove: wireInt(s.bytes_to_move, 'stats.bytes_to_move'),
    soleCopies: wireInt(s.sole_copies, 'stats.sole_copies'),
    mapEpoch: wireInt(s.map_epoch, 'stats.map_epoch'),
  };
}

/** Gauges read from the KV at scrape time, so every metadata replica reports the same figures. */
function registerGauges(registry: Registry, kv: Kv, now: () => number, held: () => number): void {
  const registers = [registry];
  new Gauge({
    name: 'cairn_jobs',
    help: 'Jobs in the durable queue by kind and state (ready, delayed, leased, dead).',
    labelNames: ['kind', 'state'] as const,
    registers,
    async collect() {
      const depth = await queueDepth(kv, { now }).catch(() => undefined);
      if (depth === undefined) return;
      this.reset();
      for (const [kind, d] of Object.entries(depth)) {
        for (const state of ['ready', 'delayed', 'leased', 'dead'] as const) this.set({ kind, state }, d[state]);
      }
    },
  });
  new Gauge({
    name: 'cairn_cluster_epoch',
    help: 'Epoch of the current cluster map.',
    registers,
    async collect() {
      const map = await getClusterMap(kv).catch(() => undefined);
      if (map !== undefined) this.set(map.epoch);
    },
  });
  new Gauge({
    name: 'cairn_cluster_nodes',
    help: 'Registered block nodes by state.',
    labelNames: ['state'] as const,
    registers,
    async collect() {
      const nodes = await listNodes(kv).catch(() => undefined);
      if (nodes === undefined) return;
      this.reset();
      for (const state of ['joining', 'up', 'draining', 'down', 'removed']) this.set({ state }, nodes.filter((n) => n.state === state).length);
    },
  });
  new Gauge({
    name: 'cairn_cluster_held_silent_nodes',
    help: 'Silent nodes the failure detector left up because replication factor − 1 nodes are already down.',
    registers,
    collect() {
      this.set(held());
    },
  });
}

export function createAdminService(options: AdminServiceOptions): AdminService {
  const { kv, log } = options;
  const now = options.now ?? Date.now;
  const failoverDelayMs = options.failoverDelayMs ?? DEFAULT_FAILOVER_DELAY_MS;
  if (!Number.isSafeInteger(failoverDelayMs) || failoverDelayMs <= 0) throw new RangeError('options.failoverDelayMs must be a positive integer');
  const rf = options.replicationFactor;
  if (rf !== undefined && (!Number.isInteger(rf) || rf < 1 || rf > 16)) throw new RangeError('options.replicationFactor must be an integer in 1..16');
  const intervalMs = options.detectIntervalMs ?? Math.min(30_000, Math.max(1_000, Math.floor(failoverDelayMs / 10)));
  const cluster: ClusterOptions = { ...(rf !== undefined ? { replicationFactor: rf } : {}), now };
  const stopping = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let startedMs = 0;
  let lastHeld = '';
  let heldCount = 0;
  if (options.registry !== undefined) registerGauges(options.registry, kv, now, () => heldCount);

  const detect = async (): Promise<void> => {
    try {
      const result = await detectFailures(kv, now(), { ...cluster, failoverDelayMs, sinceMs: startedMs });
      if (result.markDown.length > 0) log.warn({ nodes: result.markDown, epoch: result.map?.epoch }, 'failure detector marked silent nodes down');
      const held = result.held.join(',');
      if (held !== '' && held !== lastHeld) log.error({ nodes: result.held }, 'silent nodes left up: replication factor − 1 nodes are already down');
      lastHeld = held;
      heldCount = result.held.length;
    } catch (err) {
      log.error({ err }, 'failure detector pass failed');
    }
  };

  const schedule = (): void => {
    if (stopping.signal.aborted) return;
    timer = setTimeout(() => {
      running = detect().finally(() => {
        running = undefined;
        schedule();
      });
    }, intervalMs);
    timer.unref();
  };

  const handlers: AdminHandlers = {
    GetClusterMap: unary(async (req) => {
      const epoch = wireInt(req.epoch, 'epoch');
      if (epoch === 0) {
        const { current, previous } = await getCurrentAndPrevious(kv);
        return { map: mapToWire(current), ...(previous !== undefined ? { previous: mapToWire(previous) } : {}) };
      }
      return { map: mapToWire(await getClusterMap(kv, epoch)) };
    }),
    WatchClusterMap: serverStream(async (req, call, ctx) => {
      const since = wireInt(req.since_epoch, 'since_epoch');
      const signal = AbortSignal.any([ctx.signal, stopping.signal]);
      for await (const map of watchClusterMap(kv, since, { signal })) {
        await send(call, { map: mapToWire(map) }, signal);
      }
    }),
    RegisterNode: unary(async (req) => {
      const result = await registerNode(kv, {
        id: req.node_id,
        incarnation: req.incarnation,
        addr: req.addr,
        zone: req.zone,
        weight: req.weight,
        capacityBytes: wireInt(req.capacity_bytes, 'capacity_bytes'),
      }, cluster);
      return { node: nodeToWire(result.node), new_incarnation: result.newIncarnation, epoch: String(result.map.epoch) };
    }),
    Heartbeat: unary(async (req) => {
      const result = await heartbeat(kv, req.node_id, req.incarnation, statsFromWire(req.stats), cluster);
      return { epoch: String(result.epoch), state: stateToWire(result.node.state) };
    }),
    DrainNode: unary(async (req) => {
      const { node, map } = await drainNode(kv, req.node_id, cluster);
      return { node: nodeToWire(node), epoch: String(map.epoch) };
    }),
    RemoveNode: unary(async (req) => {
      const { node, map } = await removeNode(kv, req.node_id, cluster);
      return { node: nodeToWire(node), epoch: String(map.epoch) };
    }),
    MarkNodeUp: unary(async (req) => {
      const { node, map } = await markNodeUp(kv, req.node_id, cluster);
      return { node: nodeToWire(node), epoch: String(map.epoch) };
    }),
    MarkNodeDown: unary(async (req, ctx) => {
      const { node, map } = await markNodeDown(kv, req.node_id, cluster);
      ctx.log.warn({ node: node.id, epoch: map.epoch, by: principalOf(ctx).subject }, 'node marked down by hand');
      return { node: nodeToWire(node), epoch: String(map.epoch) };
    }),
    GetDrainStatus: unary(async (req) => {
      const s = await getDrainStatus(kv, req.node_id);
      return { status: { draining: s.draining, sole_copies: String(s.soleCopies), bytes_to_move: String(s.bytesToMove), done: s.done } };
    }),
    ListNodes: unary(async () => ({ nodes: (await listNodes(kv)).map(nodeToWire) })),
    LeaseJobs: unary(async (req, ctx) => {
      const input = { kinds: req.kinds, worker: req.worker, max: req.max === 0 ? 1 : req.max, leaseMs: req.lease_ms === 0 ? DEFAULT_LEASE_MS : req.lease_ms };
      const leased = await leaseJobsWaiting(kv, input, req.wait_ms, AbortSignal.any([ctx.signal, stopping.signal]), { now });
      return { jobs: leased.map((l) => ({ job: jobToWire(l.job), lease_token: l.leaseToken, lease_expires_ms: String(l.job.lease?.expiresMs ?? 0) })) };
    }),
    CompleteJob: unary(async (req) => {
      await completeJob(kv, req.job_id, req.lease_token);
      return {};
    }),
    FailJob: unary(async (req) => {
      const { job, deadLettered } = await failJob(kv, req.job_id, req.lease_token, req.reason, { now }, { permanent: req.permanent });
      return { dead_lettered: deadLettered, retry_at_ms: String(deadLettered ? 0 : job.readyAtMs) };
    }),
    ListDeadLetters: unary(async (req) => {
      const limit = pageSize(req.page_size);
      const jobs = await listDeadLetters(kv, { kind: req.kind === '' ? undefined : req.kind, limit, after: req.page_token === '' ? undefined : req.page_token });
      return { jobs: jobs.map(jobToWire), next_page_token: jobs.length === limit ? (jobs.at(-1)?.id ?? '') : '' };
    }),
    RetryDeadLetter: unary(async (req) => ({ job: jobToWire(await retryDeadLetter(kv, req.job_id, { now })) })),
    GetQueueDepth: unary(async () => {
      const depth = await queueDepth(kv, { now });
      return {
        kinds: Object.entries(depth)
          .sort(([a], [b]) => (a < b ? -1 : 1))
          .map(([kind, d]) => ({ kind, ready: String(d.ready), delayed: String(d.delayed), leased: String(d.leased), dead: String(d.dead) })),
      };
    }),
    CreateTenant: unary(async (req, ctx) => {
      if (principalOf(ctx).tenant !== SYSTEM_TENANT) throw new CairnError('CAIRN_PERMISSION_DENIED', `only admins of tenant "${SYSTEM_TENANT}" may create tenants`);
      const t = await createTenant(kv, req.name, req.display_name, now());
      return { tenant: { name: t.name, display_name: t.displayName, created_ms: String(t.createdMs) } };
    }),
    ListTenants: unary(async (req, ctx) => {
      if (principalOf(ctx).tenant !== SYSTEM_TENANT) throw new CairnError('CAIRN_PERMISSION_DENIED', `only admins of tenant "${SYSTEM_TENANT}" may list tenants`);
      const limit = pageSize(req.page_size);
      let after: string | undefined;
      if (req.page_token !== '') {
        after = Buffer.from(req.page_token, 'base64url').toString('utf8');
        try {
          validateTenant(after);
        } catch {
          throw new CairnError('CAIRN_INVALID_PAGE_TOKEN', 'page_token is malformed');
        }
      }
      const tenants = await listTenants(kv, limit, after);
      const last = tenants.at(-1);
      return {
        tenants: tenants.map((t) => ({ name: t.name, display_name: t.displayName, created_ms: String(t.createdMs) })),
        next_page_token: tenants.length === limit && last !== undefined ? Buffer.from(last.name, 'utf8').toString('base64url') : '',
      };
    }),
    CreateToken: unary(async (req, ctx) => {
      const principal = principalOf(ctx);
      validateTenant(req.tenant);
      if (!(ROLES as readonly string[]).includes(req.role)) throw new CairnError('CAIRN_INVALID_ARGUMENT', `role must be one of reader, user, admin; got "${req.role}"`, { fieldViolations: [{ field: 'role', description: 'unknown role' }] });
      const role = req.role as Role;
      if (role === 'service') throw new CairnError('CAIRN_PERMISSION_DENIED', 'service tokens are not minted through the API');
      const ttl = req.ttl_seconds === 0 ? DEFAULT_TOKEN_TTL_S : req.ttl_seconds;
      if (ttl > MAX_TOKEN_TTL_S) throw new CairnError('CAIRN_INVALID_ARGUMENT', `ttl_seconds must be at most ${MAX_TOKEN_TTL_S}`, { fieldViolations: [{ field: 'ttl_seconds', description: 'too long' }] });
      if (req.subject.length > 200 || [...req.subject].some((c) => c.charCodeAt(0) < 0x20)) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'subject must be at most 200 characters without control characters', { fieldViolations: [{ field: 'subject', description: 'invalid' }] });
      if (req.tenant !== principal.tenant) {
        if (principal.tenant !== SYSTEM_TENANT) throw new CairnError('CAIRN_PERMISSION_DENIED', `an admin of tenant ${principal.tenant} may not mint tokens for tenant ${req.tenant}`);
        if ((await getTenant(kv, req.tenant)) === undefined) throw new CairnError('CAIRN_NOT_FOUND', `no tenant ${req.tenant}: create it first`);
      }
      const expiresMs = Date.now() + ttl * 1000;
      const token = await signToken(options.authSecret, { tenant: req.tenant, role, ttlSeconds: ttl, ...(req.subject !== '' ? { subject: req.subject } : {}) });
      ctx.log.info({ tenant: req.tenant, role, by: principal.subject }, 'token minted');
      return { token, expires_ms: String(expiresMs) };
    }),
    GetOrCreateTenantKey: unary(async (req, ctx) => {
      const { wrapped, created } = await getOrCreateTenantKey(kv, req.tenant, req.candidate_wrapped_key);
      if (created) ctx.log.info({ tenant: req.tenant }, 'tenant data key created');
      return { wrapped_key: wrapped, created };
    }),
    SetTenantQuota: unary(async (req, ctx) => {
      if (principalOf(ctx).tenant !== SYSTEM_TENANT) throw new CairnError('CAIRN_PERMISSION_DENIED', `only admins of tenant "${SYSTEM_TENANT}" may set quotas`);
      const usage = await setQuota(kv, req.tenant, wireInt(req.quota_bytes, 'quota_bytes'));
      ctx.log.info({ tenant: req.tenant, quotaBytes: usage.quotaBytes }, 'tenant quota set');
      return { usage: usageToWire(usage) };
    }),
    GetTenantUsage: unary(async (req, ctx) => ({ usage: usageToWire(await getUsage(kv, scopedTenant(principalOf(ctx), req.tenant))) })),
    RecountUsage: unary(async (req, ctx) => {
      if (principalOf(ctx).tenant !== SYSTEM_TENANT) throw new CairnError('CAIRN_PERMISSION_DENIED', `only admins of tenant "${SYSTEM_TENANT}" may recount usage`);
      const usage = await recountUsage(options.model, req.tenant);
      ctx.log.info({ tenant: req.tenant, versionBytes: usage.versionBytes, storedBytes: usage.storedBytes }, 'tenant usage recounted');
      return { usage: usageToWire(usage) };
    }),
    SetRetentionPolicy: unary(async (req, ctx) => {
      const tenant = scopedTenant(principalOf(ctx), req.tenant);
      const policy = await setPolicy(options.model, tenant, policyFromWire(req.policy));
      ctx.log.info({ tenant, policy }, 'retention policy set');
      return { tenant, policy: policyToWire(policy) };
    }),
    GetRetentionPolicy: unary(async (req, ctx) => {
      const tenant = scopedTenant(principalOf(ctx), req.tenant);
      return { tenant, policy: policyToWire(await getPolicy(options.model, tenant)) };
    }),
    CreateUser: unary(async (req, ctx) => ({ user: userToWire(await putUser(options.model, scopedTenant(principalOf(ctx), req.tenant), req.user, req.display_name)) })),
    ListUsers: unary(async (req, ctx) => {
      const tenant = scopedTenant(principalOf(ctx), req.tenant);
      const limit = pageSize(req.page_size);
      let after = '';
      if (req.page_token !== '') {
        after = Buffer.from(req.page_token, 'base64url').toString('utf8');
        try {
          validateUser(after);
        } catch {
          throw new CairnError('CAIRN_INVALID_PAGE_TOKEN', 'page_token is malformed');
        }
      }
      const users = await listUsers(options.model, tenant, after, limit);
      const last = users.at(-1);
      return { users: users.map(userToWire), next_page_token: users.length === limit && last !== undefined ? Buffer.from(last.user, 'utf8').toString('base64url') : '' };
    }),
    DeleteUser: unary(async (req, ctx) => {
      const tenant = scopedTenant(principalOf(ctx), req.tenant);
      validateUser(req.user);
      await deleteUser(options.model, tenant, req.user);
      return {};
    }),
    ClaimDeletions: unary(async (req) => {
      const max = req.max === 0 ? DEFAULT_CLAIMS : req.max;
      if (max > MAX_CLAIMS) throw new CairnError('CAIRN_INVALID_ARGUMENT', `max must be at most ${MAX_CLAIMS}`, { fieldViolations: [{ field: 'max', description: 'too large' }] });
      const claimed = await claimDeletions(options.model, max);
      return {
        deletions: claimed.map((c) => ({ tenant: c.tenant, plain_hash: c.plainHash, address: c.address, stored_size: c.storedSize })),
        lease_expires_ms: String(options.model.now() + options.model.deletionLeaseMs),
      };
    }),
    Export: serverStream(async (_req, call, ctx) => {
      if (principalOf(ctx).tenant !== SYSTEM_TENANT) throw new CairnError('CAIRN_PERMISSION_DENIED', `only admins of tenant "${SYSTEM_TENANT}" may export the metadata store`);
      // The snapshot goes to a private temporary file first (the format writes its header last),
      // then streams out; the snapshot never blocks or conflicts with the service's writers.
      const dir = await mkdtemp(join(tmpdir(), 'cairn-export-'));
      try {
        const file = join(dir, 'metadata.export');
        const summary = await exportStore(kv, file, { backend: options.backend ?? 'level' });
        ctx.log.info({ entries: summary.entries, bytes: summary.bytes, by: principalOf(ctx).subject }, 'metadata export streamed');
        const fh = await openFile(file, 'r');
        try {
          const chunk = Buffer.allocUnsafe(1024 * 1024);
          for (;;) {
            const { bytesRead } = await fh.read(chunk, 0, chunk.length, null);
            if (bytesRead === 0) break;
            await send(call, { data: Buffer.from(chunk.subarray(0, bytesRead)) }, ctx.signal);
          }
        } finally {
          await fh.close();
        }
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }),
    RunGarbageCollection: unary(async (req, ctx) => {
      if (principalOf(ctx).tenant !== SYSTEM_TENANT) throw new CairnError('CAIRN_PERMISSION_DENIED', `only admins of tenant "${SYSTEM_TENANT}" may run the garbage collector`);
      if (options.gc === undefined) throw new CairnError('CAIRN_FAILED_PRECONDITION', 'this metadata process runs no block GC (start it with a GC interval and reachable block nodes)');
      const r = await options.gc.runOnce();
      const o = req.sweep_orphans ? await options.gc.sweepOrphans() : { seen: 0, deleted: 0, released: 0 };
      ctx.log.info({ ...r, orphansSeen: o.seen, orphansDeleted: o.deleted }, 'GC run on request');
      return { claimed: String(r.claimed), finished: String(r.finished), released: String(r.released + o.released), blocks_deleted: String(r.blocksDeleted), orphans_seen: String(o.seen), orphans_deleted: String(o.deleted) };
    }),
    FinishDeletions: unary(async (req) => {
      const done = deletionRefs(req.done, 'done');
      const release = deletionRefs(req.release, 'release');
      const removed = done.length > 0 ? await finishDeletions(options.model, done) : 0;
      const released = release.length > 0 ? await releaseDeletions(options.model, release, req.retry_after_ms === 0 ? DEFAULT_RELEASE_RETRY_MS : req.retry_after_ms) : 0;
      return { removed, released };
    }),
  };

  return {
    handlers,
    start() {
      if (timer !== undefined || stopping.signal.aborted) return;
      startedMs = now();
      schedule();
    },
    async stop() {
      stopping.abort();
      if (timer !== undefined) clearTimeout(timer);
      await running;
    },
  };
}
