// Typed client for the metadata service's Admin API: what block nodes (register, heartbeat, watch
// the map), gateways (the map), media workers (jobs), the operator and the CLI (tenants, tokens) call.
import type * as grpc from '@grpc/grpc-js';
import { CairnError } from '../common/errors.js';
import { CHANNEL_OPTIONS, callMetadata, deadlineIn, unaryCall, type TokenProvider } from '../common/grpc-client.js';
import { loadProto } from '../common/proto.js';
import { fromServiceError } from '../common/status.js';
import type { ClusterMap, NodeState } from '../placement/index.js';
import type { AdminClient as GenClient } from '../gen/cairn/v1/Admin.js';
import type { CreateTenantResponse__Output } from '../gen/cairn/v1/CreateTenantResponse.js';
import type { CreateTokenResponse__Output } from '../gen/cairn/v1/CreateTokenResponse.js';
import type { GetOrCreateTenantKeyResponse__Output } from '../gen/cairn/v1/GetOrCreateTenantKeyResponse.js';
import type { DrainNodeResponse__Output } from '../gen/cairn/v1/DrainNodeResponse.js';
import type { FailJobResponse__Output } from '../gen/cairn/v1/FailJobResponse.js';
import type { GetClusterMapResponse__Output } from '../gen/cairn/v1/GetClusterMapResponse.js';
import type { GetDrainStatusResponse__Output } from '../gen/cairn/v1/GetDrainStatusResponse.js';
import type { GetQueueDepthResponse__Output } from '../gen/cairn/v1/GetQueueDepthResponse.js';
import type { HeartbeatResponse__Output } from '../gen/cairn/v1/HeartbeatResponse.js';
import type { LeaseJobsResponse__Output } from '../gen/cairn/v1/LeaseJobsResponse.js';
import type { ListDeadLettersResponse__Output } from '../gen/cairn/v1/ListDeadLettersResponse.js';
import type { ListNodesResponse__Output } from '../gen/cairn/v1/ListNodesResponse.js';
import type { ListTenantsResponse__Output } from '../gen/cairn/v1/ListTenantsResponse.js';
import type { NodeInfo__Output } from '../gen/cairn/v1/NodeInfo.js';
import type { QueuedJob__Output } from '../gen/cairn/v1/QueuedJob.js';
import type { RegisterNodeResponse__Output } from '../gen/cairn/v1/RegisterNodeResponse.js';
import type { RetryDeadLetterResponse__Output } from '../gen/cairn/v1/RetryDeadLetterResponse.js';
import type { TenantInfo__Output } from '../gen/cairn/v1/TenantInfo.js';
import type { WatchClusterMapResponse__Output } from '../gen/cairn/v1/WatchClusterMapResponse.js';
import type { TenantUsage__Output } from '../gen/cairn/v1/TenantUsage.js';
import type { UserInfo__Output } from '../gen/cairn/v1/UserInfo.js';
import type { SetTenantQuotaResponse__Output } from '../gen/cairn/v1/SetTenantQuotaResponse.js';
import type { CreateUserResponse__Output } from '../gen/cairn/v1/CreateUserResponse.js';
import type { ListUsersResponse__Output } from '../gen/cairn/v1/ListUsersResponse.js';
import type { ClaimDeletionsResponse__Output } from '../gen/cairn/v1/ClaimDeletionsResponse.js';
import type { FinishDeletionsResponse__Output } from '../gen/cairn/v1/FinishDeletionsResponse.js';
import type { RunGarbageCollectionResponse__Output } from '../gen/cairn/v1/RunGarbageCollectionResponse.js';
import type { ExportResponse__Output } from '../gen/cairn/v1/ExportResponse.js';
import type { RetentionPolicy__Output } from '../gen/cairn/v1/RetentionPolicy.js';
import type { SetRetentionPolicyResponse__Output } from '../gen/cairn/v1/SetRetentionPolicyResponse.js';
import { mapFromWire, stateFromWire } from './admin-wire.js';
import type { DrainStatus, NodeStats } from './model/cluster.js';
import type { QueueDepth } from './model/jobs.js';

export type { DrainStatus, NodeStats } from './model/cluster.js';
export type { QueueDepth } from './model/jobs.js';

export interface AdminClientOptions {
  readonly address: string;
  readonly credentials: grpc.ChannelCredentials;
  readonly token: TokenProvider;
  /** Per-call deadline of unary calls (default 30 s). */
  readonly timeoutMs?: number;
}

export interface AdminNode {
  readonly id: string;
  readonly addr: string;
  readonly zone: string;
  readonly weight: number;
  readonly state: NodeState;
  readonly incarnation: string;
  readonly capacityBytes: number;
  readonly registeredMs: number;
  readonly lastHeartbeatMs: number;
  readonly stats: NodeStats | undefined;
  readonly drain: DrainStatus;
}

export interface AdminJob {
  readonly id: string;
  readonly tenant: string;
  readonly kind: string;
  readonly payload: string;
  readonly attempts: number;
  readonly maxAttempts: number;
  readonly createdMs: number;
  readonly lastError: string;
  readonly deadMs: number;
}

export interface AdminLease {
  readonly job: AdminJob;
  readonly leaseToken: string;
  readonly leaseExpiresMs: number;
}

export interface AdminTenant {
  readonly name: string;
  readonly displayName: string;
  readonly createdMs: number;
}

/** A tenant's version retention policy (absent fields: no such rule). */
export interface AdminRetentionPolicy {
  readonly keepLast?: number;
  readonly keepDays?: number;
  readonly trashDays?: number;
}

export interface AdminGcResult {
  readonly claimed: number;
  readonly finished: number;
  readonly released: number;
  readonly blocksDeleted: number;
  readonly orphansSeen: number;
  readonly orphansDeleted: number;
}

export interface AdminUsage {
  readonly tenant: string;
  readonly versionBytes: number;
  readonly versions: number;
  readonly storedBytes: number;
  readonly chunks: number;
  /** 0 = no quota. */
  readonly quotaBytes: number;
}

export interface AdminUser {
  readonly tenant: string;
  readonly user: string;
  readonly displayName: string;
  readonly createdMs: number;
}

export interface AdminDeletion {
  readonly tenant: string;
  readonly plainHash: Buffer;
  readonly address: Buffer;
  readonly storedSize: number;
}

export interface RegisterNodeInput {
  readonly id?: string;
  readonly incarnation?: string;
  readonly addr: string;
  readonly zone?: string;
  readonly weight?: number;
  readonly capacityBytes?: number;
}

type Method =
  | 'GetClusterMap' | 'RegisterNode' | 'Heartbeat' | 'DrainNode' | 'RemoveNode' | 'MarkNodeUp' | 'MarkNodeDown' | 'GetDrainStatus' | 'ListNodes'
  | 'LeaseJobs' | 'CompleteJob' | 'FailJob' | 'ListDeadLetters' | 'RetryDeadLetter' | 'GetQueueDepth'
  | 'CreateTenant' | 'ListTenants' | 'CreateToken' | 'GetOrCreateTenantKey'
  | 'SetTenantQuota' | 'GetTenantUsage' | 'RecountUsage' | 'SetRetentionPolicy' | 'GetRetentionPolicy' | 'CreateUser' | 'ListUsers' | 'DeleteUser' | 'ClaimDeletions' | 'FinishDeletions' | 'RunGarbageCollection';

function node(n: NodeInfo__Output | null): AdminNode {
  if (n === null || n.node === null || n.drain === null) throw new CairnError('CAIRN_INTERNAL', 'Admin API returned no node');
  const s = n.stats;
  return {
    id: n.node.id,
    addr: n.node.addr,
    zone: n.node.zone,
    weight: n.node.weight,
    state: stateFromWire(n.node.state),
    incarnation: n.incarnation,
    capacityBytes: Number(n.capacity_bytes),
    registeredMs: Number(n.registered_ms),
    lastHeartbeatMs: Number(n.last_heartbeat_ms),
    stats: s === null
      ? undefined
      : {
          blocks: Number(s.blocks),
          bytes: Number(s.bytes),
          capacityBytes: Number(s.capacity_bytes),
          underReplicatedPartitions: Number(s.under_replicated_partitions),
          bytesToMove: Number(s.bytes_to_move),
          soleCopies: Number(s.sole_copies),
          mapEpoch: Number(s.map_epoch),
        },
    drain: { draining: n.drain.draining, soleCopies: Number(n.drain.sole_copies), bytesToMove: Number(n.drain.bytes_to_move), done: n.drain.done },
  };
}

function job(j: QueuedJob__Output | null): AdminJob {
  if (j === null) throw new CairnError('CAIRN_INTERNAL', 'Admin API returned no job');
  return { id: j.id, tenant: j.tenant, kind: j.kind, payload: j.payload, attempts: j.attempts, maxAttempts: j.max_attempts, createdMs: Number(j.created_ms), lastError: j.last_error, deadMs: Number(j.dead_ms) };
}

function tenant(t: TenantInfo__Output | null): AdminTenant {
  if (t === null) throw new CairnError('CAIRN_INTERNAL', 'Admin API returned no tenant');
  return { name: t.name, displayName: t.display_name, createdMs: Number(t.created_ms) };
}

function usage(u: TenantUsage__Output | null): AdminUsage {
  if (u === null) throw new CairnError('CAIRN_INTERNAL', 'Admin API returned no usage');
  return { tenant: u.tenant, versionBytes: Number(u.version_bytes), versions: Number(u.versions), storedBytes: Number(u.stored_bytes), chunks: Number(u.chunks), quotaBytes: Number(u.quota_bytes) };
}

function policy(p: RetentionPolicy__Output | null): AdminRetentionPolicy {
  if (p === null) throw new CairnError('CAIRN_INTERNAL', 'Admin API returned no policy');
  return {
    ...(p.keep_last !== undefined ? { keepLast: p.keep_last } : {}),
    ...(p.keep_days !== undefined ? { keepDays: p.keep_days } : {}),
    ...(p.trash_days !== undefined ? { trashDays: p.trash_days } : {}),
  };
}

function user(u: UserInfo__Output | null): AdminUser {
  if (u === null) throw new CairnError('CAIRN_INTERNAL', 'Admin API returned no user');
  return { tenant: u.tenant, user: u.user, displayName: u.display_name, createdMs: Number(u.created_ms) };
}

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });

export class AdminClient {
  readonly #client: GenClient;
  readonly #token: TokenProvider;
  readonly #timeoutMs: number;

  constructor(options: AdminClientOptions) {
    const Ctor = loadProto().proto.cairn.v1.Admin;
    this.#client = new Ctor(options.address, options.credentials, CHANNEL_OPTIONS);
    this.#token = options.token;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
  }

  async #unary<Res>(method: Method, req: object, opts: { extraMs?: number; signal?: AbortSignal } = {}): Promise<Res> {
    const md = await callMetadata(this.#token);
    const client = this.#client as unknown as Record<string, Parameters<typeof unaryCall<object, Res>>[0]>;
    const fn = client[method];
    if (fn === undefined) throw new TypeError(`no method ${method}`);
    const { signal } = opts;
    signal?.throwIfAborted();
    let call: { cancel(): void } | undefined;
    const cancel = (): void => call?.cancel();
    signal?.addEventListener('abort', cancel, { once: true });
    try {
      return await unaryCall<object, Res>((r, m, o, cb) => {
        call = fn.call(this.#client, r, m, o, cb) as { cancel(): void };
        return call;
      }, req, md, deadlineIn(this.#timeoutMs + (opts.extraMs ?? 0)));
    } catch (err) {
      throw fromServiceError(err);
    } finally {
      signal?.removeEventListener('abort', cancel);
    }
  }

  /** The current map and its predecessor, or (epoch > 0) the map of that epoch. */
  async getClusterMap(epoch = 0): Promise<{ map: ClusterMap; previous: ClusterMap | undefined }> {
    const res = await this.#unary<GetClusterMapResponse__Output>('GetClusterMap', { epoch: String(epoch) });
    if (res.map === null) throw new CairnError('CAIRN_INTERNAL', 'GetClusterMap returned no map');
    return { map: mapFromWire(res.map), previous: res.previous === null ? undefined : mapFromWire(res.previous) };
  }

  /** One WatchClusterMap stream: every map above `sinceEpoch` until the stream ends or fails. */
  async *#watchOnce(sinceEpoch: number, signal: AbortSignal): AsyncGenerator<ClusterMap> {
    const md = await callMetadata(this.#token);
    const call = this.#client.WatchClusterMap({ since_epoch: String(sinceEpoch) }, md);
    const onAbort = (): void => call.cancel();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const msg of call as AsyncIterable<WatchClusterMapResponse__Output>) {
        if (msg.map !== null) yield mapFromWire(msg.map);
      }
    } catch (err) {
      if (signal.aborted) return;
      throw fromServiceError(err);
    } finally {
      signal.removeEventListener('abort', onAbort);
      call.cancel();
    }
  }

  /**
   * Every map with an epoch above `fromEpoch`, in order, until `signal` aborts. Survives metadata
   * restarts and failovers: on a retryable error it reconnects with jittered exponential backoff
   * (up to 10 s) and resumes after the last epoch it delivered. Non-retryable errors are thrown.
   */
  async *watchClusterMap(fromEpoch: number, signal: AbortSignal): AsyncGenerator<ClusterMap> {
    if (!Number.isSafeInteger(fromEpoch) || fromEpoch < 0) throw new RangeError('fromEpoch must be a non-negative integer');
    let last = fromEpoch;
    let failures = 0;
    while (!signal.aborted) {
      try {
        for await (const map of this.#watchOnce(last, signal)) {
          failures = 0;
          if (map.epoch <= last) continue;
          last = map.epoch;
          yield map;
        }
      } catch (err) {
        const e = fromServiceError(err);
        if (!e.retryable && e.code !== 'CAIRN_INTERNAL' && e.code !== 'CAIRN_CANCELLED') throw e;
      }
      if (signal.aborted) return;
      failures++;
      const cap = Math.min(10_000, 100 * 2 ** Math.min(failures, 10));
      await sleep(cap / 2 + Math.random() * (cap / 2), signal);
    }
  }

  async registerNode(input: RegisterNodeInput): Promise<{ node: AdminNode; newIncarnation: boolean; epoch: number }> {
    const res = await this.#unary<RegisterNodeResponse__Output>('RegisterNode', {
      node_id: input.id ?? '',
      incarnation: input.incarnation ?? '',
      addr: input.addr,
      zone: input.zone ?? '',
      weight: input.weight ?? 0,
      capacity_bytes: String(input.capacityBytes ?? 0),
    });
    return { node: node(res.node), newIncarnation: res.new_incarnation, epoch: Number(res.epoch) };
  }

  async heartbeat(nodeId: string, incarnation: string, stats: NodeStats): Promise<{ epoch: number; state: NodeState }> {
    const res = await this.#unary<HeartbeatResponse__Output>('Heartbeat', {
      node_id: nodeId,
      incarnation,
      stats: {
        blocks: String(stats.blocks),
        bytes: String(stats.bytes),
        capacity_bytes: String(stats.capacityBytes),
        under_replicated_partitions: String(stats.underReplicatedPartitions),
        bytes_to_move: String(stats.bytesToMove),
        sole_copies: String(stats.soleCopies),
        map_epoch: String(stats.mapEpoch ?? 0),
      },
    });
    return { epoch: Number(res.epoch), state: stateFromWire(res.state) };
  }

  async #nodeChange(method: 'DrainNode' | 'RemoveNode' | 'MarkNodeUp' | 'MarkNodeDown', nodeId: string): Promise<{ node: AdminNode; epoch: number }> {
    const res = await this.#unary<DrainNodeResponse__Output>(method, { node_id: nodeId });
    return { node: node(res.node), epoch: Number(res.epoch) };
  }

  drainNode(nodeId: string): Promise<{ node: AdminNode; epoch: number }> {
    return this.#nodeChange('DrainNode', nodeId);
  }

  removeNode(nodeId: string): Promise<{ node: AdminNode; epoch: number }> {
    return this.#nodeChange('RemoveNode', nodeId);
  }

  markNodeUp(nodeId: string): Promise<{ node: AdminNode; epoch: number }> {
    return this.#nodeChange('MarkNodeUp', nodeId);
  }

  /** Marks a node down (idempotent); refused when RF−1 nodes are already down. */
  markNodeDown(nodeId: string): Promise<{ node: AdminNode; epoch: number }> {
    return this.#nodeChange('MarkNodeDown', nodeId);
  }

  async getDrainStatus(nodeId: string): Promise<DrainStatus> {
    const res = await this.#unary<GetDrainStatusResponse__Output>('GetDrainStatus', { node_id: nodeId });
    const s = res.status;
    if (s === null) throw new CairnError('CAIRN_INTERNAL', 'GetDrainStatus returned no status');
    return { draining: s.draining, soleCopies: Number(s.sole_copies), bytesToMove: Number(s.bytes_to_move), done: s.done };
  }

  async listNodes(): Promise<AdminNode[]> {
    const res = await this.#unary<ListNodesResponse__Output>('ListNodes', {});
    return res.nodes.map(node);
  }

  /**
   * Leases up to `max` ready jobs. With `waitMs` (≤ 30 s) it is a long poll: the service answers
   * as soon as a job becomes ready, or empty after the wait; `signal` cancels the call.
   */
  async leaseJobs(input: { kinds: readonly string[]; worker: string; max?: number; leaseMs?: number; waitMs?: number; signal?: AbortSignal }): Promise<AdminLease[]> {
    const waitMs = input.waitMs ?? 0;
    const res = await this.#unary<LeaseJobsResponse__Output>('LeaseJobs', { kinds: [...input.kinds], worker: input.worker, max: input.max ?? 1, lease_ms: input.leaseMs ?? 0, wait_ms: waitMs }, { extraMs: waitMs, ...(input.signal !== undefined ? { signal: input.signal } : {}) });
    return res.jobs.map((l) => ({ job: job(l.job), leaseToken: l.lease_token, leaseExpiresMs: Number(l.lease_expires_ms) }));
  }

  async completeJob(jobId: string, leaseToken: string): Promise<void> {
    await this.#unary('CompleteJob', { job_id: jobId, lease_token: leaseToken });
  }

  /** `permanent`: the failure cannot succeed on a retry, so the job is dead-lettered now. */
  async failJob(jobId: string, leaseToken: string, reason: string, options: { permanent?: boolean } = {}): Promise<{ deadLettered: boolean; retryAtMs: number }> {
    const res = await this.#unary<FailJobResponse__Output>('FailJob', { job_id: jobId, lease_token: leaseToken, reason, permanent: options.permanent === true });
    return { deadLettered: res.dead_lettered, retryAtMs: Number(res.retry_at_ms) };
  }

  async listDeadLetters(input: { kind?: string; pageSize?: number; pageToken?: string } = {}): Promise<{ jobs: AdminJob[]; nextPageToken: string }> {
    const res = await this.#unary<ListDeadLettersResponse__Output>('ListDeadLetters', { kind: input.kind ?? '', page_size: input.pageSize ?? 0, page_token: input.pageToken ?? '' });
    return { jobs: res.jobs.map(job), nextPageToken: res.next_page_token };
  }

  async retryDeadLetter(jobId: string): Promise<AdminJob> {
    const res = await this.#unary<RetryDeadLetterResponse__Output>('RetryDeadLetter', { job_id: jobId });
    return job(res.job);
  }

  async queueDepth(): Promise<Record<string, QueueDepth>> {
    const res = await this.#unary<GetQueueDepthResponse__Output>('GetQueueDepth', {});
    return Object.fromEntries(res.kinds.map((k) => [k.kind, { ready: Number(k.ready), delayed: Number(k.delayed), leased: Number(k.leased), dead: Number(k.dead) }]));
  }

  async createTenant(name: string, displayName = ''): Promise<AdminTenant> {
    const res = await this.#unary<CreateTenantResponse__Output>('CreateTenant', { name, display_name: displayName });
    return tenant(res.tenant);
  }

  async listTenants(input: { pageSize?: number; pageToken?: string } = {}): Promise<{ tenants: AdminTenant[]; nextPageToken: string }> {
    const res = await this.#unary<ListTenantsResponse__Output>('ListTenants', { page_size: input.pageSize ?? 0, page_token: input.pageToken ?? '' });
    return { tenants: res.tenants.map(tenant), nextPageToken: res.next_page_token };
  }

  async createToken(input: { tenant: string; role: 'reader' | 'user' | 'admin'; subject?: string; ttlSeconds?: number }): Promise<{ token: string; expiresMs: number }> {
    const res = await this.#unary<CreateTokenResponse__Output>('CreateToken', { tenant: input.tenant, role: input.role, subject: input.subject ?? '', ttl_seconds: input.ttlSeconds ?? 0 });
    return { token: res.token, expiresMs: Number(res.expires_ms) };
  }

  /** The tenant's wrapped data key; `candidate` (wrapped) becomes it if the tenant has none yet. */
  async getOrCreateTenantKey(tenant: string, candidate: Uint8Array): Promise<{ wrapped: Buffer; created: boolean }> {
    const res = await this.#unary<GetOrCreateTenantKeyResponse__Output>('GetOrCreateTenantKey', { tenant, candidate_wrapped_key: Buffer.from(candidate) });
    return { wrapped: res.wrapped_key, created: res.created };
  }

  /** Sets (bytes > 0) or removes (0) a tenant's quota on the bytes of its kept versions. */
  async setTenantQuota(tenant: string, quotaBytes: number): Promise<AdminUsage> {
    const res = await this.#unary<SetTenantQuotaResponse__Output>('SetTenantQuota', { tenant, quota_bytes: String(quotaBytes) });
    return usage(res.usage);
  }

  /** A tenant's usage counters and quota ('' = the caller's tenant). */
  async getTenantUsage(tenant = ''): Promise<AdminUsage> {
    const res = await this.#unary<SetTenantQuotaResponse__Output>('GetTenantUsage', { tenant });
    return usage(res.usage);
  }

  /** Recomputes a tenant's usage counters from its versions and chunk index (cluster administrators). */
  async recountUsage(tenant: string): Promise<AdminUsage> {
    const res = await this.#unary<SetTenantQuotaResponse__Output>('RecountUsage', { tenant });
    return usage(res.usage);
  }

  /** Replaces a tenant's retention policy ('' = the caller's tenant); returns the policy in force. */
  async setRetentionPolicy(tenant: string, p: AdminRetentionPolicy): Promise<{ tenant: string; policy: AdminRetentionPolicy }> {
    const wire = { ...(p.keepLast !== undefined ? { keep_last: p.keepLast } : {}), ...(p.keepDays !== undefined ? { keep_days: p.keepDays } : {}), ...(p.trashDays !== undefined ? { trash_days: p.trashDays } : {}) };
    const res = await this.#unary<SetRetentionPolicyResponse__Output>('SetRetentionPolicy', { tenant, policy: wire });
    return { tenant: res.tenant, policy: policy(res.policy) };
  }

  /** The retention policy in force for a tenant ('' = the caller's). */
  async getRetentionPolicy(tenant = ''): Promise<{ tenant: string; policy: AdminRetentionPolicy }> {
    const res = await this.#unary<SetRetentionPolicyResponse__Output>('GetRetentionPolicy', { tenant });
    return { tenant: res.tenant, policy: policy(res.policy) };
  }

  async createUser(input: { tenant?: string; user: string; displayName?: string }): Promise<AdminUser> {
    const res = await this.#unary<CreateUserResponse__Output>('CreateUser', { tenant: input.tenant ?? '', user: input.user, display_name: input.displayName ?? '' });
    return user(res.user);
  }

  async listUsers(input: { tenant?: string; pageSize?: number; pageToken?: string } = {}): Promise<{ users: AdminUser[]; nextPageToken: string }> {
    const res = await this.#unary<ListUsersResponse__Output>('ListUsers', { tenant: input.tenant ?? '', page_size: input.pageSize ?? 0, page_token: input.pageToken ?? '' });
    return { users: res.users.map(user), nextPageToken: res.next_page_token };
  }

  async deleteUser(input: { tenant?: string; user: string }): Promise<void> {
    await this.#unary('DeleteUser', { tenant: input.tenant ?? '', user: input.user });
  }

  /** Claims up to `max` due chunk deletions for the block GC. */
  async claimDeletions(max = 0): Promise<{ deletions: AdminDeletion[]; leaseExpiresMs: number }> {
    const res = await this.#unary<ClaimDeletionsResponse__Output>('ClaimDeletions', { max });
    return {
      deletions: res.deletions.map((d) => ({ tenant: d.tenant, plainHash: d.plain_hash, address: d.address, storedSize: d.stored_size })),
      leaseExpiresMs: Number(res.lease_expires_ms),
    };
  }

  /** Finishes claims whose blocks are gone everywhere and releases the others. */
  async finishDeletions(input: { done?: ReadonlyArray<{ tenant: string; plainHash: Buffer }>; release?: ReadonlyArray<{ tenant: string; plainHash: Buffer }>; retryAfterMs?: number }): Promise<{ removed: number; released: number }> {
    const wire = (list: ReadonlyArray<{ tenant: string; plainHash: Buffer }> | undefined): Array<{ tenant: string; plain_hash: Buffer }> => (list ?? []).map((d) => ({ tenant: d.tenant, plain_hash: d.plainHash }));
    const res = await this.#unary<FinishDeletionsResponse__Output>('FinishDeletions', { done: wire(input.done), release: wire(input.release), retry_after_ms: input.retryAfterMs ?? 0 });
    return { removed: res.removed, released: res.released };
  }

  /** The bytes of a consistent export of the whole store, as the service streams them. */
  async *exportStream(signal?: AbortSignal): AsyncGenerator<Buffer> {
    const md = await callMetadata(this.#token);
    const call = this.#client.Export({}, md);
    const onAbort = (): void => call.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const msg of call as AsyncIterable<ExportResponse__Output>) yield msg.data;
    } catch (err) {
      throw fromServiceError(err);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      call.cancel();
    }
  }

  /** Runs the metadata process's block GC now (cluster administrators). */
  async runGarbageCollection(timeoutMs = 600_000, options: { sweepOrphans?: boolean } = {}): Promise<AdminGcResult> {
    const md = await callMetadata(this.#token);
    const fn = (this.#client as unknown as Record<string, Parameters<typeof unaryCall<object, RunGarbageCollectionResponse__Output>>[0]>)['RunGarbageCollection']!;
    let res: RunGarbageCollectionResponse__Output;
    try {
      res = await unaryCall<object, RunGarbageCollectionResponse__Output>(fn.bind(this.#client), { sweep_orphans: options.sweepOrphans === true }, md, deadlineIn(timeoutMs));
    } catch (err) {
      throw fromServiceError(err);
    }
    return { claimed: Number(res.claimed), finished: Number(res.finished), released: Number(res.released), blocksDeleted: Number(res.blocks_deleted), orphansSeen: Number(res.orphans_seen), orphansDeleted: Number(res.orphans_deleted) };
  }

  close(): void {
    this.#client.close();
  }
}
