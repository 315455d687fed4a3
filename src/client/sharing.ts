// The SDK's sharing and cluster calls: shares and link shares, presigned URLs, what another
// tenant shares with you (and a channel option to act on it), and the cluster status.
import * as grpc from '@grpc/grpc-js';
import { CairnError } from '../common/errors.js';
import { CHANNEL_OPTIONS, callMetadata, deadlineIn, unaryCall } from '../common/grpc-client.js';
import { clientCredentials } from '../common/grpc-server.js';
import { loadProto } from '../common/proto.js';
import { fromServiceError } from '../common/status.js';
import type { ClusterClient } from '../gen/cairn/v1/Cluster.js';
import type { ClusterStatusResponse__Output } from '../gen/cairn/v1/ClusterStatusResponse.js';
import type { PresignResponse__Output } from '../gen/cairn/v1/PresignResponse.js';
import type { ShareInfo__Output } from '../gen/cairn/v1/ShareInfo.js';
import type { ShareResponse__Output } from '../gen/cairn/v1/ShareResponse.js';
import type { SharingClient } from '../gen/cairn/v1/Sharing.js';
import type { SharingListSharesResponse__Output } from '../gen/cairn/v1/SharingListSharesResponse.js';
import type { ProtoGrpcType as SharingProto } from '../gen/sharing.js';
import type { ClientSettings } from './config.js';

/** gRPC metadata that makes a Files call act on another tenant's shared tree. */
export const OWNER_HEADER = 'x-cairn-tenant';

export type ShareAccessLevel = 'read' | 'write';

export interface Share {
  readonly path: string;
  /** The owner tenant. */
  readonly tenant: string;
  /** Grants: "<tenant>/<subject>"; links: "". */
  readonly user: string;
  /** Links: the id (not the secret token); grants: "". */
  readonly linkId: string;
  readonly access: ShareAccessLevel;
  readonly createdBy: string;
  readonly createdMs: number;
  /** Links: expiry (ms since the epoch, 0 = never). */
  readonly expiresMs: number;
}

export interface LinkShareResult {
  readonly share: Share;
  /** The link's secret; shown only once. */
  readonly token: string;
  /** "/v1/links/<token>", absolute when the gateway knows its public HTTP URL. */
  readonly url: string;
}

export interface PresignedUrl {
  /** Absolute when the gateway knows its public HTTP URL, else equal to pathAndQuery. */
  readonly url: string;
  readonly pathAndQuery: string;
  readonly expiresMs: number;
}

export interface ClusterNodeStatus {
  readonly id: string;
  readonly address: string;
  readonly state: string;
  readonly zone: string;
  readonly capacityBytes: number;
  readonly usedBytes: number;
  readonly blocks: number;
  readonly soleCopies: number;
  readonly underReplicatedPartitions: number;
  readonly bytesToMove: number;
  readonly lastHeartbeatMs: number;
  readonly mapEpoch: number;
}

export interface ClusterStatus {
  readonly mapEpoch: number;
  readonly replicationFactor: number;
  readonly nodes: ClusterNodeStatus[];
  readonly underReplicatedPartitions: number;
  readonly soleCopies: number;
  readonly bytesToMove: number;
  readonly queues: Array<{ kind: string; ready: number; delayed: number; leased: number; dead: number }>;
  readonly queueDepth: number;
}

/**
 * Channel options for a CairnClient whose Files calls act on `owner`'s tree (what it shares with
 * you): `new CairnClient(settings, sharedTreeOptions('acme'))`.
 */
export function sharedTreeOptions(owner: string): grpc.ChannelOptions {
  const interceptor: grpc.Interceptor = (options, next) =>
    new grpc.InterceptingCall(next(options), {
      start(metadata, listener, nextStart) {
        metadata.set(OWNER_HEADER, owner);
        nextStart(metadata, listener);
      },
    });
  return { interceptors: [interceptor] };
}

function toShare(s: ShareInfo__Output | null): Share {
  if (s === null) throw new CairnError('CAIRN_INTERNAL', 'server sent no share');
  return {
    path: s.path,
    tenant: s.tenant,
    user: s.user,
    linkId: s.link_id,
    access: s.access === 'SHARE_ACCESS_WRITE' ? 'write' : 'read',
    createdBy: s.created_by,
    createdMs: Number(s.created_ms),
    expiresMs: Number(s.expires_ms),
  };
}

function wireAccess(a: ShareAccessLevel): 'SHARE_ACCESS_READ' | 'SHARE_ACCESS_WRITE' {
  if (a !== 'read' && a !== 'write') throw new TypeError('access must be "read" or "write"');
  return a === 'write' ? 'SHARE_ACCESS_WRITE' : 'SHARE_ACCESS_READ';
}

type Unary<Req, Res> = (req: Req, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => unknown;

/** Sharing, presigning and cluster status against one gateway. */
export class CairnSharing {
  readonly #sharing: SharingClient;
  readonly #cluster: ClusterClient;
  readonly #token: string;
  readonly #owner: string | undefined;

  /** `owner`: presign inside what that tenant shares with you (other calls ignore it). */
  constructor(settings: Pick<ClientSettings, 'endpoint' | 'token' | 'tlsCa' | 'tlsCert' | 'tlsKey'>, options: { owner?: string } = {}) {
    const v1 = (loadProto().proto as unknown as SharingProto).cairn.v1;
    const creds = clientCredentials({ ca: settings.tlsCa, cert: settings.tlsCert, key: settings.tlsKey });
    this.#sharing = new v1.Sharing(settings.endpoint, creds, CHANNEL_OPTIONS);
    this.#cluster = new v1.Cluster(settings.endpoint, creds, CHANNEL_OPTIONS);
    this.#token = settings.token;
    this.#owner = options.owner;
  }

  async #call<Req, Res>(fn: Unary<Req, Res>, req: Req, owner?: string): Promise<Res> {
    const md = await callMetadata(() => this.#token);
    if (owner !== undefined) md.set(OWNER_HEADER, owner);
    try {
      return await unaryCall<Req, Res>(fn, req, md, deadlineIn(30_000));
    } catch (err) {
      throw fromServiceError(err);
    }
  }

  /** Grants `user` ("<tenant>/<subject>") read or write access to `path` (folders: everything inside). */
  async share(path: string, user: string, access: ShareAccessLevel): Promise<Share> {
    const res = await this.#call<object, ShareResponse__Output>(this.#sharing.Share.bind(this.#sharing), { path, user, access: wireAccess(access) });
    return toShare(res.share);
  }

  /** Creates a link share (default lifetime 7 days). */
  async shareLink(path: string, options: { access?: ShareAccessLevel; expiresInSeconds?: number } = {}): Promise<LinkShareResult> {
    const res = await this.#call<object, ShareResponse__Output>(this.#sharing.Share.bind(this.#sharing), { path, link: true, access: wireAccess(options.access ?? 'read'), expires_in_seconds: options.expiresInSeconds ?? 0 });
    return { share: toShare(res.share), token: res.link_token, url: res.link_url };
  }

  /** Revokes a grant (`user`) or a link (`linkId`) on `path`. */
  async unshare(path: string, target: { user: string } | { linkId: string }): Promise<void> {
    await this.#call(this.#sharing.Unshare.bind(this.#sharing), { path, ...('user' in target ? { user: target.user } : { link_id: target.linkId }) });
  }

  /** The grants and links on `path`. */
  async listShares(path: string): Promise<Share[]> {
    const res = await this.#call<object, SharingListSharesResponse__Output>(this.#sharing.ListShares.bind(this.#sharing), { path });
    return res.shares.map(toShare);
  }

  /** What tenant `owner` shares with the caller, a page at a time. */
  async sharedWithMe(owner: string, options: { pageSize?: number; pageToken?: string } = {}): Promise<{ shares: Share[]; nextPageToken: string }> {
    const res = await this.#call<object, SharingListSharesResponse__Output>(this.#sharing.ListShares.bind(this.#sharing), { owner, page_size: options.pageSize ?? 0, page_token: options.pageToken ?? '' });
    return { shares: res.shares.map(toShare), nextPageToken: res.next_page_token };
  }

  /** A presigned HTTP URL for GET (and HEAD) or PUT of one file (default expiry 15 minutes). */
  async presign(path: string, options: { method?: 'GET' | 'PUT'; expiresInSeconds?: number; version?: number } = {}): Promise<PresignedUrl> {
    const method = options.method ?? 'GET';
    const res = await this.#call<object, PresignResponse__Output>(
      this.#sharing.Presign.bind(this.#sharing),
      { path, method: method === 'PUT' ? 'PRESIGN_METHOD_PUT' : 'PRESIGN_METHOD_GET', expires_in_seconds: options.expiresInSeconds ?? 0, version: options.version ?? 0 },
      this.#owner,
    );
    return { url: res.url, pathAndQuery: res.path_and_query, expiresMs: Number(res.expires_ms) };
  }

  /** Block nodes, map epoch, replication health and job queues (admin tokens only). */
  async clusterStatus(): Promise<ClusterStatus> {
    const r = await this.#call<object, ClusterStatusResponse__Output>(this.#cluster.Status.bind(this.#cluster), {});
    return {
      mapEpoch: Number(r.map_epoch),
      replicationFactor: r.replication_factor,
      nodes: r.nodes.map((n) => ({
        id: n.id,
        address: n.address,
        state: n.state,
        zone: n.zone,
        capacityBytes: Number(n.capacity_bytes),
        usedBytes: Number(n.used_bytes),
        blocks: Number(n.blocks),
        soleCopies: Number(n.sole_copies),
        underReplicatedPartitions: Number(n.under_replicated_partitions),
        bytesToMove: Number(n.bytes_to_move),
        lastHeartbeatMs: Number(n.last_heartbeat_ms),
        mapEpoch: Number(n.map_epoch),
      })),
      underReplicatedPartitions: Number(r.under_replicated_partitions),
      soleCopies: Number(r.sole_copies),
      bytesToMove: Number(r.bytes_to_move),
      queues: r.queues.map((q) => ({ kind: q.kind, ready: Number(q.ready), delayed: Number(q.delayed), leased: Number(q.leased), dead: Number(q.dead) })),
      queueDepth: Number(r.queue_depth),
    };
  }

  close(): void {
    this.#sharing.close();
    this.#cluster.close();
  }
}
