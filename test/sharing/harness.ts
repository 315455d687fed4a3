// An in-process Cairn for the sharing tests that need gateway options the server does not expose
// yet (rate limits, the Admin client, the public HTTP URL): a real metadata service (LevelDB), a
// real block node and a gateway, talking gRPC on loopback, plus the gateway's HTTP routes.
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ServiceTokenSource, loadOrCreateSecret, signToken } from '../../src/common/auth.js';
import { startHttpServer } from '../../src/common/http.js';
import { createLogger } from '../../src/common/log.js';
import { createMetrics } from '../../src/common/metrics.js';
import { ReplicatedBlockClient, StaticMapSource, createBlockNode, singleNodeMap, type MapSource } from '../../src/blocknode/index.js';
import { MetadataMapSource } from '../../src/blocknode/index.js';
import { TenantKeys, createGateway, loadMasterKey, type GatewayExtension, type RateLimits } from '../../src/gateway/index.js';
import { AdminClient, MetadataClient, createMetadataService, type MetadataService } from '../../src/metadata/index.js';
import { tempDir, type Scope } from '../helpers/cluster.js';
import type { Endpoints } from './helpers.js';

export interface Stack extends Endpoints {
  readonly dataDir: string;
  readonly metadataAddr: string;
  readonly admin: AdminClient;
  /** The in-process metadata service (absent when the stack uses an external one). */
  readonly metadataService: MetadataService | undefined;
}

const H = '127.0.0.1';

export async function startStack(t: Scope, options: { limits?: RateLimits; metadataAddr?: string; secretFile?: string; withAdmin?: boolean; extensions?: readonly GatewayExtension[] } = {}): Promise<Stack> {
  const dataDir = tempDir(t, 'cairn-sharing-');
  const secret = loadOrCreateSecret(options.secretFile ?? join(dataDir, 'auth.key'));
  const log = createLogger({ level: 'warn', name: 'sharing-test' });
  const tokens = new ServiceTokenSource(secret);
  const token = (): Promise<string> => tokens.token();
  const insecureServer = grpc.ServerCredentials.createInsecure();
  const insecure = grpc.credentials.createInsecure();
  const stops: Array<() => Promise<void> | void> = [];
  t.teardown(async () => {
    for (const stop of stops.reverse()) await stop();
  });

  let metadataAddr = options.metadataAddr;
  let metadataService: MetadataService | undefined;
  let map: MapSource;
  const admin = new AdminClient({ address: metadataAddr ?? 'unused', credentials: insecure, token });
  if (metadataAddr === undefined) {
    metadataService = await createMetadataService({ dataDir, host: H, port: 0, credentials: insecureServer, authSecret: secret, log, metrics: createMetrics() });
    stops.push(() => metadataService!.stop(1000));
    metadataAddr = `${H}:${metadataService.port}`;
    const blocknode = await createBlockNode({ dataDir, host: H, port: 0, credentials: insecureServer, authSecret: secret, log, metrics: createMetrics(), reserveBytes: 0 });
    stops.push(() => blocknode.stop(1000));
    map = new StaticMapSource(singleNodeMap('blocknode', `${H}:${blocknode.port}`));
  } else {
    map = await MetadataMapSource.open({ feed: new AdminClient({ address: metadataAddr, credentials: insecure, token }), log });
  }
  const adminClient = new AdminClient({ address: metadataAddr, credentials: insecure, token });
  admin.close();
  const metadata = new MetadataClient({ address: metadataAddr, credentials: insecure, token });
  const blocks = new ReplicatedBlockClient({ map, credentials: insecure, token, writeQuorum: 1 });
  stops.push(() => {
    metadata.close();
    blocks.close();
    map.close();
    adminClient.close();
  });
  const keys = new TenantKeys(loadMasterKey(join(dataDir, 'master.key'), {}), adminClient);
  const where: { url?: string } = {};
  const metrics = createMetrics();
  const gateway = await createGateway({
    host: H,
    port: 0,
    credentials: insecureServer,
    authSecret: secret,
    log,
    metrics,
    metadata,
    blocks,
    keys,
    maxFileBytes: 64 * 1024 * 1024,
    ...(options.limits !== undefined ? { limits: options.limits } : {}),
    ...(options.extensions !== undefined ? { extensions: options.extensions } : {}),
    ...(options.withAdmin !== false ? { admin: adminClient } : {}),
    publicHttpUrl: () => where.url,
  });
  stops.push(() => gateway.stop(1000));
  const http = await startHttpServer(H, 0, { registry: metrics.registry, log, ready: () => true, routes: gateway.http });
  stops.push(() => http.close());
  where.url = `http://${H}:${http.port}`;
  return { grpc: `${H}:${gateway.port}`, http: where.url, secret, dataDir, metadataAddr, admin: adminClient, metadataService };
}

/**
 * Registers `user` in `tenant`'s user table through the Admin API, as an admin of that tenant
 * (grants need the grantee to be a registered user of the owner tenant).
 */
export async function registerUser(stack: Stack, tenant: string, user: string): Promise<void> {
  const token = await signToken(stack.secret, { tenant, role: 'admin', subject: 'admin', ttlSeconds: 600 });
  const admin = new AdminClient({ address: stack.metadataAddr, credentials: grpc.credentials.createInsecure(), token: () => token });
  try {
    await admin.createUser({ tenant, user });
  } finally {
    admin.close();
  }
}
