// Gateways: stateless servers of the public Files API. They chunk and store file data on
// block nodes and commit versions in the metadata service.
import type * as grpc from '@grpc/grpc-js';
import type { ChunkerOptions } from '../chunking/index.js';
import { CairnGrpcServer } from '../common/grpc-server.js';
import type { Permission } from '../common/auth.js';
import type { RouteHandler } from '../common/http.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { loadProto } from '../common/proto.js';
import type { BlockAccess } from '../blocknode/index.js';
import type { MetadataClient } from '../metadata/index.js';
import type { ProtoGrpcType as SharingProto } from '../gen/sharing.js';
import { acceptEncoded } from '../common/wire.js';
import { CHUNK_PERMISSIONS, chunkHandlers } from './chunks.js';
import { CLUSTER_PERMISSIONS, clusterHandlers, type ClusterAdmin } from './cluster-status.js';
import { filesHandlers } from './files.js';
import { httpRoutes } from './http.js';
import type { TenantKeys } from './keys.js';
import { TenantLimiter, type RateLimits } from './limits.js';
import { presignKey } from './presign.js';
import { FILES_SHARE_RULES, SHARING_PERMISSIONS, SHARING_SHARE_RULES, ShareChecker, guardService, sharingHandlers, type ShareRule } from './sharing.js';

export { TenantKeys, loadMasterKey, type TenantKeyStore } from './keys.js';
export { DEFAULT_LIMITS, TenantLimiter, type RateLimits } from './limits.js';
export type { ClusterAdmin } from './cluster-status.js';
export { seal, unseal } from './seal.js';
export { actingOf, granteeOf, shareRulesFor, type Acting, type ShareRule, type ShareTarget } from './sharing.js';
import { TREE_PERMISSIONS, treeHandlers } from './tree.js';

export interface GatewayOptions {
  readonly host: string;
  readonly port: number;
  readonly credentials: grpc.ServerCredentials;
  readonly authSecret: Uint8Array;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly metadata: MetadataClient;
  readonly blocks: BlockAccess;
  readonly maxFileBytes: number;
  /** Unwrapped tenant data keys (encryption at rest). */
  readonly keys: TenantKeys;
  readonly chunker?: ChunkerOptions;
  /**
   * Further services and HTTP routes served by this gateway (e.g. media thumbnails), added by the
   * composition root so that rooms stay independent of one another.
   */
  readonly extensions?: readonly GatewayExtension[];
  /** Per-tenant rate limits (defaults: DEFAULT_LIMITS; 0 = unlimited). */
  readonly limits?: RateLimits;
  /**
   * The limiter itself, when the composition root shares it with extensions (media thumbnails
   * over HTTP) so that one budget per tenant covers every route; `limits` is then ignored.
   */
  readonly limiter?: TenantLimiter;
  /** The metadata Admin API, for Cluster.Status (without it Status is CAIRN_UNIMPLEMENTED). */
  readonly admin?: ClusterAdmin;
  /**
   * This gateway's public HTTP base URL (e.g. "https://files.example.com:7480"), used to make
   * presigned and link URLs absolute; a function when it is known only after the HTTP server binds.
   * Without it the URLs are relative to the gateway's HTTP endpoint.
   */
  readonly publicHttpUrl?: string | (() => string | undefined);
}

/** A service (with per-method permissions) and/or HTTP routes to serve beside the Files API. */
export interface GatewayExtension {
  readonly service?: {
    readonly definition: grpc.ServiceDefinition;
    readonly implementation: grpc.UntypedServiceImplementation;
    readonly permissions: Readonly<Record<string, Permission>>;
    /** What share recipients may call (x-cairn-tenant), see shareRulesFor; without it the service is owner-only. */
    readonly shareRules?: Readonly<Record<string, ShareRule>>;
  };
  /** Returns true when it handled the request. */
  readonly http?: RouteHandler;
  /**
   * Classifies a file from its first plain bytes (≤ 4 KiB) at commit time, e.g. "image/jpeg";
   * a result is passed to the metadata commit (media_kind) and recorded on the version: a media
   * type also enqueues a media job in the same transaction, "none" (content that is not media)
   * enqueues nothing. Sniffs magic bytes, never names.
   */
  readonly sniff?: (head: Uint8Array) => string | undefined;
  /** Called once when the gateway stops. */
  readonly close?: () => Promise<void>;
}

export interface Gateway {
  readonly port: number;
  /** HTTP routes of this gateway and its extensions, for the process's HTTP server. */
  readonly http: RouteHandler;
  stop(timeoutMs?: number): Promise<void>;
}

export async function createGateway(options: GatewayOptions): Promise<Gateway> {
  const log = options.log.child({ component: 'gateway' });
  const { definition, proto } = loadProto();
  const server = new CairnGrpcServer({ name: 'gateway', log, metrics: options.metrics, authSecret: options.authSecret, packageDefinition: definition });
  const sniffer = options.extensions?.find((ext) => ext.sniff !== undefined)?.sniff;
  const filesOptions = { metadata: options.metadata, blocks: options.blocks, maxFileBytes: options.maxFileBytes, keys: options.keys, ...(options.chunker ? { chunker: options.chunker } : {}), ...(sniffer !== undefined ? { sniffMedia: sniffer } : {}) };
  const closing = new AbortController();
  // Every service goes through the guard: per-tenant rate limits, and share recipients acting on
  // another tenant's tree (x-cairn-tenant) only within their grants.
  const limiter = options.limiter ?? new TenantLimiter(options.limits, { registry: options.metrics.registry });
  const checker = new ShareChecker(options.metadata);
  const guard = { checker, limiter, log };
  // ReadFile answers with messages it encodes itself (EncodedMessage).
  const files = acceptEncoded(proto.cairn.v1.Files.service, ['ReadFile']);
  server.addService(
    files,
    guardService(files, {
      ...filesHandlers(filesOptions),
      ...chunkHandlers(filesOptions),
      ...treeHandlers({ metadata: options.metadata, closing: closing.signal }),
    }, FILES_SHARE_RULES, guard),
    { UploadFile: 'write', ReadFile: 'read', Stat: 'read', ...CHUNK_PERMISSIONS, ...TREE_PERMISSIONS },
  );
  const key = presignKey(options.authSecret);
  const publicUrl = options.publicHttpUrl;
  const httpUrl = (): string | undefined => (typeof publicUrl === 'function' ? publicUrl() : publicUrl);
  const { Sharing, Cluster } = (proto as unknown as SharingProto).cairn.v1;
  server.addService(Sharing.service, guardService(Sharing.service, sharingHandlers({ metadata: options.metadata, presignKey: key, httpUrl }), SHARING_SHARE_RULES, guard), SHARING_PERMISSIONS);
  server.addService(Cluster.service, guardService(Cluster.service, clusterHandlers(options.admin), {}, guard), CLUSTER_PERMISSIONS);
  const extensions = options.extensions ?? [];
  for (const ext of extensions) {
    if (ext.service !== undefined) server.addService(ext.service.definition, guardService(ext.service.definition, ext.service.implementation, ext.service.shareRules ?? {}, guard), ext.service.permissions);
  }
  const routes = [
    httpRoutes({ metadata: options.metadata, blocks: options.blocks, keys: options.keys, authSecret: options.authSecret, presignKey: key, checker, limiter, maxFileBytes: options.maxFileBytes, log, ...(options.chunker ? { chunker: options.chunker } : {}), ...(sniffer !== undefined ? { sniffMedia: sniffer } : {}) }),
    ...extensions.flatMap((ext) => (ext.http !== undefined ? [ext.http] : [])),
  ];
  const port = await server.listen(options.host, options.port, options.credentials);
  return {
    port,
    async http(req, res) {
      for (const route of routes) if (await route(req, res)) return true;
      return false;
    },
    async stop(timeoutMs?: number) {
      closing.abort();
      await server.shutdown(timeoutMs);
      for (const ext of extensions) await ext.close?.();
    },
  };
}
