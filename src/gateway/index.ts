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
import { CHUNK_PERMISSIONS, chunkHandlers } from './chunks.js';
import { filesHandlers } from './files.js';
import type { TenantKeys } from './keys.js';

export { TenantKeys, loadMasterKey, type TenantKeyStore } from './keys.js';
export { seal, unseal } from './seal.js';
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
}

/** A service (with per-method permissions) and/or HTTP routes to serve beside the Files API. */
export interface GatewayExtension {
  readonly service?: {
    readonly definition: grpc.ServiceDefinition;
    readonly implementation: grpc.UntypedServiceImplementation;
    readonly permissions: Readonly<Record<string, Permission>>;
  };
  /** Returns true when it handled the request. */
  readonly http?: RouteHandler;
  /**
   * Classifies a file from its first plain bytes (≤ 4 KiB) at commit time, e.g. "image/jpeg";
   * a result is passed to the metadata commit (media_kind) so a media job is enqueued in the same
   * transaction. Sniffs magic bytes, never names.
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
  server.addService(
    proto.cairn.v1.Files.service,
    {
      ...filesHandlers(filesOptions),
      ...chunkHandlers(filesOptions),
      ...treeHandlers({ metadata: options.metadata, closing: closing.signal }),
    },
    { UploadFile: 'write', ReadFile: 'read', Stat: 'read', ...CHUNK_PERMISSIONS, ...TREE_PERMISSIONS },
  );
  const extensions = options.extensions ?? [];
  for (const ext of extensions) {
    if (ext.service !== undefined) server.addService(ext.service.definition, ext.service.implementation, ext.service.permissions);
  }
  const routes = extensions.flatMap((ext) => (ext.http !== undefined ? [ext.http] : []));
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
