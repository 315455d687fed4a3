// Composition root for `cairn server`: wires config into the components (embedded = all in one
// process), bootstraps the auth secret and the local admin client config, serves HTTP metrics
// and health, and stops everything in dependency order.
import { existsSync, readFileSync } from 'node:fs';
import { resolve, join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { loadOrCreateSecret, ServiceTokenSource, signToken, verifyToken, writeFileAtomic } from '../common/auth.js';
import { CairnError } from '../common/errors.js';
import { clientCredentials, serverCredentials, type TlsFiles } from '../common/grpc-server.js';
import * as grpcJs from '@grpc/grpc-js';
import { startHttpServer, type RouteHandler } from '../common/http.js';
import type { Logger } from '../common/log.js';
import { createMetrics } from '../common/metrics.js';
import { statfs } from 'node:fs/promises';
import { FileMapSource, Membership, MetadataMapSource, ReplicatedBlockClient, StaticMapSource, createBlockNode, nodeIdentity, singleNodeMap, type BlockNodeOptions, type LocalBlockPeer, type MapSource } from '../blocknode/index.js';
import { TenantKeys, TenantLimiter, createGateway, loadMasterKey, type GatewayExtension } from '../gateway/index.js';
import { AdminClient, MetadataClient, createMetadataService } from '../metadata/index.js';
import { createMedia, type Media } from '../media/index.js';
import { mediaOptionsOf, type ServerConfig } from './config.js';

export { loadServerConfig, serverConfigSchema, type ServerConfig } from './config.js';

export interface RunningServer {
  readonly role: ServerConfig['role'];
  /** Public gRPC endpoint (host:port) of this process. */
  readonly grpcEndpoint: string;
  readonly httpEndpoint: string;
  /** Where the local admin client config was written (embedded only). */
  readonly clientConfigPath: string | undefined;
  readonly readyLine: string;
  stop(): Promise<void>;
}

const INTERNAL_HOST = '127.0.0.1';

function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Address a local client should dial: wildcard listen addresses are reached via loopback. */
function dialHost(host: string): string {
  return host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
}

export async function startServer(config: Readonly<ServerConfig>, log: Logger): Promise<RunningServer> {
  const dataDir = resolve(config.dataDir);
  const secret = loadOrCreateSecret(config.authSecretFile ?? join(dataDir, 'auth.key'));
  const tokens = new ServiceTokenSource(secret);
  const tls: TlsFiles = { cert: config.tlsCert, key: config.tlsKey, ca: config.tlsCa };
  const publicCredentials = serverCredentials(config.host, tls, config.allowPlaintext);
  const metrics = createMetrics();
  const stops: Array<(timeoutMs: number) => Promise<void>> = [];
  let ready = false;
  let grpcPort: number | undefined;
  let routes: RouteHandler | undefined;
  const publicHttp: { url?: string } = {};
  /** The embedded metadata service's Admin API (loopback), for `cairn admin` commands on this machine. */
  let adminEndpoint: string | undefined;

  const stopAll = async (): Promise<void> => {
    ready = false;
    // Reverse start order: the gateway drains its calls while metadata and blocks still serve.
    for (const stop of stops.reverse()) await stop(config.shutdownTimeoutMs);
  };

  try {
    const common = { authSecret: secret, log, metrics };
    if (config.role === 'embedded') {
      // Internal services listen on loopback only, inside this process's reach.
      const internal = grpcJs.ServerCredentials.createInsecure();
      const blocknode = await createBlockNode({ ...common, dataDir, host: INTERNAL_HOST, port: 0, credentials: internal, ...storeLimits(config), scrub: { intervalMs: config.scrubIntervalMs, bytesPerSecond: config.scrubBytesPerSecond } });
      stops.push((t) => blocknode.stop(t));
      const gcNodes = [{ id: 'blocknode', addr: hostPort(INTERNAL_HOST, blocknode.port), state: 'up' as const }];
      const metadataSvc = await createMetadataService({ ...common, dataDir, host: INTERNAL_HOST, port: 0, credentials: internal, maxFileBytes: config.maxFileBytes, postgresUrl: config.postgresUrl, model: { deleteGraceMs: config.deleteGraceMs, changeRetentionMs: config.changeRetentionMs }, gc: { credentials: grpcJs.credentials.createInsecure(), token: () => tokens.token(), intervalMs: config.gcIntervalMs, orphanGraceMs: config.orphanGraceMs, orphanTombstoneMs: config.orphanTombstoneMs, orphanIntervalMs: config.orphanSweepIntervalMs, nodes: () => Promise.resolve(gcNodes) } });
      stops.push((t) => metadataSvc.stop(t));
      adminEndpoint = hostPort(INTERNAL_HOST, metadataSvc.port);
      const insecure = grpcJs.credentials.createInsecure();
      // The gateway reaches this process's block node directly; the gRPC port stays for GC and tools.
      const localPeers = new Map([[hostPort(INTERNAL_HOST, blocknode.port), blocknode.local]]);
      const data = await connectData(config, common, hostPort(INTERNAL_HOST, metadataSvc.port), hostPort(INTERNAL_HOST, blocknode.port), insecure, tokens, stops, localPeers);
      // Media runs in this process too: its pool serves the gateway's on-demand thumbnails and
      // the job runner leases the media jobs commits enqueue.
      const limiter = tenantLimiter(config, common);
      const media = startMedia(config, common, data, stops, publicHttp, limiter);
      const gateway = await startGateway(config, common, publicCredentials, data, stops, [media.extension], publicHttp, limiter);
      media.startJobs(data.admin);
      grpcPort = gateway.port;
      routes = gateway.http;
    } else if (config.role === 'blocknode') {
      const cluster = await clusterOptions(config, dataDir, log, clientCredentials(tls), tokens, stops);
      const blocknode = await createBlockNode({ ...common, dataDir, host: config.host, port: config.grpcPort, credentials: publicCredentials, ...storeLimits(config), ...cluster.options });
      stops.push((t) => blocknode.stop(t));
      if (cluster.admin !== undefined && cluster.options.nodeId !== undefined) {
        // Registration needs the bound port; the node serves (and owns nothing new) until then.
        const addr = config.advertiseAddr ?? hostPort(dialHost(config.host), blocknode.port);
        const disk = await statfs(dataDir);
        const membership = await Membership.join({
          client: cluster.admin,
          dataDir,
          nodeId: cluster.options.nodeId,
          addr,
          zone: config.zone,
          capacityBytes: config.capacityBytes ?? Number(disk.blocks) * Number(disk.bsize),
          log,
        });
        membership.start(() => {
          const st = blocknode.status();
          const s = blocknode.store.stats();
          return {
            blocks: s.blocks,
            bytes: s.bytes,
            capacityBytes: config.capacityBytes ?? Number(disk.blocks) * Number(disk.bsize),
            underReplicatedPartitions: st.underReplicatedPartitions,
            bytesToMove: st.bytesToMove,
            // Before its first anti-entropy pass a node cannot vouch for any block: all of them count.
            soleCopies: st.reportEpoch === 0 ? s.blocks : st.soleCopies,
            mapEpoch: st.reportEpoch,
          };
        }, config.heartbeatIntervalMs);
        stops.push(() => membership.stop());
      }
      grpcPort = blocknode.port;
    } else if (config.role === 'metadata') {
      const metadataSvc = await createMetadataService({ ...common, dataDir, host: config.host, port: config.grpcPort, credentials: publicCredentials, maxFileBytes: config.maxFileBytes, postgresUrl: config.postgresUrl, model: { deleteGraceMs: config.deleteGraceMs, changeRetentionMs: config.changeRetentionMs }, cluster: { replicationFactor: config.replicationFactor, failoverDelayMs: config.failoverDelayMs }, gc: { credentials: clientCredentials(tls), token: () => tokens.token(), intervalMs: config.gcIntervalMs, orphanGraceMs: config.orphanGraceMs, orphanTombstoneMs: config.orphanTombstoneMs, orphanIntervalMs: config.orphanSweepIntervalMs } });
      stops.push((t) => metadataSvc.stop(t));
      grpcPort = metadataSvc.port;
    } else if (config.role === 'media') {
      // A media worker: no public gRPC port, only jobs (and /metrics, /healthz on HTTP). Its own
      // process in a cluster, so a native crash in a decoder never takes a gateway down.
      if (config.metadataAddr === undefined) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'role media needs --metadata-addr');
      const data = await connectData(config, common, config.metadataAddr, config.blocknodeAddr, clientCredentials(tls), tokens, stops);
      const media = startMedia(config, common, data, stops);
      media.startJobs(data.admin);
      grpcPort = undefined;
    } else {
      if (config.metadataAddr === undefined) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'role gateway needs --metadata-addr');
      const data = await connectData(config, common, config.metadataAddr, config.blocknodeAddr, clientCredentials(tls), tokens, stops);
      // Gateways serve thumbnails (and generate missing ones on demand); jobs run on media workers.
      const limiter = tenantLimiter(config, common);
      const media = startMedia(config, common, data, stops, publicHttp, limiter);
      const gateway = await startGateway(config, common, publicCredentials, data, stops, [media.extension], publicHttp, limiter);
      grpcPort = gateway.port;
      routes = gateway.http;
    }

    const http = await startHttpServer(config.host, config.httpPort, { registry: metrics.registry, log, ready: () => ready, tls, allowPlaintext: config.allowPlaintext, ...(routes !== undefined ? { routes } : {}) });
    stops.unshift(() => http.close());

    const grpcEndpoint = grpcPort === undefined ? 'none' : hostPort(dialHost(config.host), grpcPort);
    const scheme = tls.cert !== undefined ? 'https' : 'http';
    const httpEndpoint = `${scheme}://${hostPort(dialHost(config.host), http.port)}`;
    publicHttp.url = httpEndpoint;
    let clientConfigPath: string | undefined;
    if (config.role === 'embedded') clientConfigPath = await writeClientConfig(dataDir, grpcEndpoint, secret, config, adminEndpoint);
    ready = true;
    const readyLine = `cairn ready role=${config.role} grpc=${grpcEndpoint} http=${httpEndpoint} data=${dataDir}${clientConfigPath !== undefined ? ` client=${clientConfigPath}` : ''}`;
    return { role: config.role, grpcEndpoint, httpEndpoint, clientConfigPath, readyLine, stop: stopAll };
  } catch (err) {
    await stopAll().catch(() => undefined);
    throw err;
  }
}

function storeLimits(config: Readonly<ServerConfig>): { capacityBytes?: number; reserveBytes: number } {
  return { reserveBytes: config.reserveBytes, ...(config.capacityBytes !== undefined ? { capacityBytes: config.capacityBytes } : {}) };
}

/**
 * Where a block node gets its map and identity: a static map file (--cluster-map, with
 * --node-id), the metadata service (--metadata-addr: register, heartbeat, watch the map), or
 * neither (a lone node without anti-entropy).
 */
async function clusterOptions(
  config: Readonly<ServerConfig>,
  dataDir: string,
  log: Logger,
  peerCredentials: grpc.ChannelCredentials,
  tokens: ServiceTokenSource,
  stops: Array<(timeoutMs: number) => Promise<void>>,
): Promise<{ options: Partial<BlockNodeOptions>; admin: AdminClient | undefined }> {
  const scrub = { intervalMs: config.scrubIntervalMs, bytesPerSecond: config.scrubBytesPerSecond };
  const token = (): Promise<string> => tokens.token();
  let map: MapSource;
  let nodeId: string;
  let admin: AdminClient | undefined;
  if (config.clusterMap !== undefined) {
    if (config.nodeId === undefined) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'role blocknode with --cluster-map needs --node-id');
    nodeId = config.nodeId;
    map = new FileMapSource({ path: resolve(config.clusterMap), onError: (err) => log.error({ err }, 'cannot load the cluster map; keeping the previous one') });
  } else if (config.metadataAddr !== undefined) {
    nodeId = nodeIdentity(dataDir, config.nodeId).id;
    const client = new AdminClient({ address: config.metadataAddr, credentials: peerCredentials, token });
    admin = client;
    map = await MetadataMapSource.open({ feed: client, log });
    stops.push(async () => client.close());
  } else {
    return { options: { scrub }, admin: undefined };
  }
  stops.push(async () => map.close());
  return {
    options: {
      nodeId,
      map,
      peerCredentials,
      token,
      scrub,
      antiEntropy: { intervalMs: config.antiEntropyIntervalMs, bytesPerSecond: config.antiEntropyBytesPerSecond, settleMs: config.rebalanceSettleMs },
    },
    admin,
  };
}

/** What gateways and media workers need to reach file data: metadata, block nodes, tenant keys. */
interface DataAccess {
  readonly metadata: MetadataClient;
  readonly blocks: ReplicatedBlockClient;
  readonly keys: TenantKeys;
  /** Admin API: tenant keys, the map, and media jobs. */
  readonly admin: AdminClient;
}

async function connectData(
  config: Readonly<ServerConfig>,
  { log, metrics }: { log: Logger; metrics: ReturnType<typeof createMetrics> },
  metadataAddr: string,
  blocknodeAddr: string | undefined,
  internalCredentials: grpc.ChannelCredentials,
  tokens: ServiceTokenSource,
  stops: Array<(timeoutMs: number) => Promise<void>>,
  localPeers?: ReadonlyMap<string, LocalBlockPeer>,
): Promise<DataAccess> {
  const token = (): Promise<string> => tokens.token();
  const metadata = new MetadataClient({ address: metadataAddr, credentials: internalCredentials, token });
  const admin = new AdminClient({ address: metadataAddr, credentials: internalCredentials, token });
  // The block nodes: a static map file, one named node, or the map the metadata service keeps.
  let map: MapSource;
  if (config.clusterMap !== undefined) {
    map = new FileMapSource({ path: resolve(config.clusterMap), onError: (err) => log.error({ err }, 'cannot load the cluster map; keeping the previous one') });
  } else if (blocknodeAddr !== undefined) {
    map = new StaticMapSource(singleNodeMap('blocknode', blocknodeAddr));
  } else {
    map = await MetadataMapSource.open({ feed: admin, log });
  }
  // Tenant data keys live (wrapped) in the metadata service's Admin API.
  const keys = new TenantKeys(loadMasterKey(resolve(config.masterKeyFile ?? join(resolve(config.dataDir), 'master.key'))), admin);
  const blocks = new ReplicatedBlockClient({
    map,
    credentials: internalCredentials,
    token,
    writeQuorum: config.role === 'embedded' ? 1 : config.writeQuorum,
    log: log.child({ component: 'replication' }),
    registry: metrics.registry,
    ...(localPeers !== undefined ? { localPeers } : {}),
  });
  stops.push(async () => {
    metadata.close();
    blocks.close();
    map.close();
    admin.close();
  });
  return { metadata, blocks, keys, admin };
}

function startMedia(
  config: Readonly<ServerConfig>,
  common: { authSecret: Uint8Array; log: Logger; metrics: ReturnType<typeof createMetrics> },
  data: DataAccess,
  stops: Array<(timeoutMs: number) => Promise<void>>,
  publicHttp?: { url?: string },
  limiter?: TenantLimiter,
): Media {
  const media = createMedia({ ...common, metadata: data.metadata, blocks: data.blocks, keys: data.keys, media: mediaOptionsOf(config), ...(publicHttp !== undefined ? { publicHttpUrl: () => config.publicHttpUrl ?? publicHttp.url } : {}), ...(limiter !== undefined ? { limiter } : {}) });
  stops.push(() => media.stop());
  return media;
}

/** One per-tenant limiter per gateway process, shared by the Files API and the media routes. */
function tenantLimiter(config: Readonly<ServerConfig>, common: { metrics: ReturnType<typeof createMetrics> }): TenantLimiter {
  return new TenantLimiter({ requestsPerSecond: config.rateLimitRequestsPerSecond, bytesPerSecond: config.rateLimitBytesPerSecond, burstSeconds: config.rateLimitBurstSeconds }, { registry: common.metrics.registry });
}

async function startGateway(
  config: Readonly<ServerConfig>,
  common: { authSecret: Uint8Array; log: Logger; metrics: ReturnType<typeof createMetrics> },
  credentials: grpc.ServerCredentials,
  data: DataAccess,
  stops: Array<(timeoutMs: number) => Promise<void>>,
  extensions: readonly GatewayExtension[],
  publicHttp: { url?: string },
  limiter: TenantLimiter,
): Promise<{ port: number; http: RouteHandler }> {
  const gateway = await createGateway({
    ...common,
    host: config.host,
    port: config.grpcPort,
    credentials,
    metadata: data.metadata,
    blocks: data.blocks,
    keys: data.keys,
    maxFileBytes: config.maxFileBytes,
    extensions,
    admin: data.admin,
    limiter,
    // Known once the HTTP server has bound (port 0 picks one).
    publicHttpUrl: () => config.publicHttpUrl ?? publicHttp.url,
  });
  stops.push((t) => gateway.stop(t));
  return { port: gateway.port, http: gateway.http };
}

/**
 * Writes <dataDir>/client.json with this server's endpoint and an admin token for the default
 * tenant, so `cairn put` on the same machine needs no setup. A still-valid token is kept.
 */
async function writeClientConfig(dataDir: string, endpoint: string, secret: Uint8Array, config: Readonly<ServerConfig>, adminEndpoint?: string): Promise<string> {
  const path = join(dataDir, 'client.json');
  let token: string | undefined;
  if (existsSync(path)) {
    try {
      const old = JSON.parse(readFileSync(path, 'utf8')) as { token?: unknown };
      if (typeof old.token === 'string') {
        const p = await verifyToken(secret, old.token);
        if (p.role === 'admin') token = old.token;
      }
    } catch {
      token = undefined;
    }
  }
  token ??= await signToken(secret, { tenant: 'default', role: 'admin', subject: 'admin', ttlSeconds: 365 * 24 * 3600 });
  const body: Record<string, string> = { endpoint, token, tenant: 'default' };
  if (adminEndpoint !== undefined) body['adminEndpoint'] = adminEndpoint;
  if (config.tlsCert !== undefined) body['tlsCa'] = resolve(config.tlsCa ?? config.tlsCert);
  writeFileAtomic(path, JSON.stringify(body, null, 2) + '\n', 0o600);
  return path;
}
