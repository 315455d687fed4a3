// Block nodes: content-addressed block storage behind the BlockNode gRPC service.
// `createBlockNode` builds and starts one; other components use `BlockClient` to talk to it.
import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { Gauge } from 'prom-client';
import { CairnGrpcServer } from '../common/grpc-server.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { loadProto } from '../common/proto.js';
import { BlockStore } from './engine/index.js';
import { blockNodeHandlers } from './service.js';

export { BlockClient, type BlockClientOptions, type StoredBlock } from './client.js';

export interface BlockNodeOptions {
  readonly dataDir: string;
  readonly host: string;
  readonly port: number;
  readonly credentials: grpc.ServerCredentials;
  readonly authSecret: Uint8Array;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly capacityBytes?: number;
  readonly reserveBytes?: number;
}

export interface BlockNode {
  readonly port: number;
  readonly store: BlockStore;
  stop(timeoutMs?: number): Promise<void>;
}

export async function createBlockNode(options: BlockNodeOptions): Promise<BlockNode> {
  const log = options.log.child({ component: 'blocknode' });
  const store = await BlockStore.open({
    dir: join(options.dataDir, 'blocks'),
    logger: log,
    ...(options.capacityBytes !== undefined ? { capacityBytes: options.capacityBytes } : {}),
    ...(options.reserveBytes !== undefined ? { reserveBytes: options.reserveBytes } : {}),
  });
  registerStoreMetrics(options.metrics, store);
  const { definition, proto } = loadProto();
  const server = new CairnGrpcServer({ name: 'blocknode', log, metrics: options.metrics, authSecret: options.authSecret, packageDefinition: definition });
  server.addService(proto.cairn.v1.BlockNode.service, blockNodeHandlers(store), { PutBlocks: 'service', GetBlocks: 'service', HasBlocks: 'service' });
  let port: number;
  try {
    port = await server.listen(options.host, options.port, options.credentials);
  } catch (err) {
    await store.close();
    throw err;
  }
  return {
    port,
    store,
    async stop(timeoutMs?: number) {
      await server.shutdown(timeoutMs);
      await store.close();
    },
  };
}

function registerStoreMetrics(metrics: Metrics, store: BlockStore): void {
  const registers = [metrics.registry];
  new Gauge({ name: 'cairn_blocknode_blocks', help: 'Live blocks stored on this node.', registers, collect() { this.set(store.stats().blocks); } });
  new Gauge({ name: 'cairn_blocknode_stored_bytes', help: 'Live block bytes stored on this node.', registers, collect() { this.set(store.stats().bytes); } });
  new Gauge({ name: 'cairn_blocknode_dead_bytes', help: 'Bytes of deleted blocks not yet reclaimed by compaction.', registers, collect() { this.set(store.stats().deadBytes); } });
  new Gauge({ name: 'cairn_blocknode_segments', help: 'Segment files on this node.', registers, collect() { this.set(store.stats().segments); } });
}
