// Block nodes: content-addressed block storage behind the BlockNode gRPC service, kept at RF
// copies by anti-entropy and scrub. `createBlockNode` builds and starts one; gateways use
// `ReplicatedBlockClient` (or `BlockClient` for one node) to talk to them.
import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { Counter, Gauge, Histogram } from 'prom-client';
import type { TokenProvider } from '../common/grpc-client.js';
import { CairnGrpcServer } from '../common/grpc-server.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { loadProto } from '../common/proto.js';
import { PARTITION_COUNT } from '../placement/index.js';
import { ANTIENTROPY_STATES, AntiEntropy } from './antientropy.js';
import { PartitionDigests } from './digests.js';
import { BlockStore } from './engine/index.js';
import { ConcurrencyLimit } from './limits.js';
import type { MapSource } from './map-source.js';
import { PeerPool } from './peers.js';
import type { LocalBlockPeer } from './client.js';
import { Scrubber } from './scrub.js';
import { blockNodeHandlers, localBlockPeer, type BlockNodeServiceDeps, type NodeStatus } from './service.js';
import { GcTombstones } from './tombstones.js';

export { BlockClient, type BlockClientOptions, type BlockPeer, type GetBlocksOptions, type LocalBlockPeer, type StoredBlock } from './client.js';
export { ReplicatedBlockClient, type BlockAccess, type ReplicatedBlockClientOptions } from './replication.js';
export { FileMapSource, StaticMapSource, emptyMap, parseMapFile, singleNodeMap, type FileMapSourceOptions, type MapSource } from './map-source.js';
export { MetadataMapSource, type ClusterMapFeed, type MetadataMapSourceOptions } from './map-source-metadata.js';
export { Membership, nodeIdentity, type HeartbeatStats, type MembershipClient } from './membership.js';
export type { NodeStatus } from './service.js';
export { DEFAULT_TOMBSTONE_TTL_MS } from './tombstones.js';

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
  /** This node's id in the cluster map; without it (or a map) the node does no anti-entropy. */
  readonly nodeId?: string;
  readonly map?: MapSource;
  /** How this node dials its peers (anti-entropy, repair). */
  readonly peerCredentials?: grpc.ChannelCredentials;
  readonly token?: TokenProvider;
  /** Anti-entropy: bytes/s pushed to peers (0 = unlimited), pause between passes (0 = off), settle time before deleting handed-off data. */
  readonly antiEntropy?: { readonly bytesPerSecond?: number; readonly intervalMs?: number; readonly settleMs?: number };
  /** Background scrub: read budget and pause between scrubs (0 = off). */
  readonly scrub?: { readonly bytesPerSecond?: number; readonly intervalMs?: number };
  /** Concurrent calls served; more wait in a bounded queue, beyond it RESOURCE_EXHAUSTED. */
  readonly maxConcurrentCalls?: number;
  /** How long a GC tombstone refuses repair copies of a deleted block (default 24 h). */
  readonly tombstoneTtlMs?: number;
}

export interface BlockNode {
  readonly port: number;
  readonly store: BlockStore;
  /** This node as a peer for a gateway in the same process (no gRPC hop; same checks and limits). */
  readonly local: LocalBlockPeer;
  /** What the node reports about itself (Stats, metrics, the metadata heartbeat). */
  status(): NodeStatus;
  stop(timeoutMs?: number): Promise<void>;
}

export async function createBlockNode(options: BlockNodeOptions): Promise<BlockNode> {
  const log = options.log.child({ component: 'blocknode', ...(options.nodeId !== undefined ? { node: options.nodeId } : {}) });
  const store = await BlockStore.open({
    dir: join(options.dataDir, 'blocks'),
    logger: log,
    ...(options.capacityBytes !== undefined ? { capacityBytes: options.capacityBytes } : {}),
    ...(options.reserveBytes !== undefined ? { reserveBytes: options.reserveBytes } : {}),
  });
  let tombstones: GcTombstones;
  try {
    tombstones = await GcTombstones.open(join(options.dataDir, 'gc-tombstones'), { ...(options.tombstoneTtlMs !== undefined ? { ttlMs: options.tombstoneTtlMs } : {}) });
  } catch (err) {
    await store.close();
    throw err;
  }
  const tombstoneSweep = setInterval(() => {
    tombstones.sweep().catch((err: unknown) => log.warn({ err }, 'GC tombstone sweep failed'));
  }, 3600_000);
  tombstoneSweep.unref();
  const registers = [options.metrics.registry];
  const digests = new PartitionDigests(store);
  const nodeId = options.nodeId ?? '';
  const peers = options.peerCredentials && options.token ? new PeerPool({ credentials: options.peerCredentials, token: options.token, timeoutMs: 60_000 }) : undefined;
  const map = options.map;

  const scrubErrors = new Counter({ name: 'cairn_blocknode_scrub_errors_total', help: 'Corrupt records found by scrubs.', registers });
  const scrubRepaired = new Counter({ name: 'cairn_blocknode_scrub_repaired_total', help: 'Quarantined blocks restored from a replica.', registers });
  const pushedBytes = new Counter({ name: 'cairn_blocknode_antientropy_pushed_bytes_total', help: 'Bytes anti-entropy copied to other nodes.', registers });
  const pushedBlocks = new Counter({ name: 'cairn_blocknode_antientropy_pushed_blocks_total', help: 'Blocks anti-entropy copied to other nodes.', registers });
  const deletedBlocks = new Counter({ name: 'cairn_blocknode_antientropy_deleted_blocks_total', help: 'Blocks deleted here after their owners confirmed a copy.', registers });

  const noPeers = { get() { throw new Error('no peers configured'); }, close() {} } as unknown as PeerPool;
  const scrubber = new Scrubber({
    store,
    digests,
    map: map ?? { current: () => ({ epoch: 0, replicationFactor: 1, nodes: [], partitions: [] }), previous: () => undefined, onChange: () => () => undefined, close() {} },
    selfId: nodeId,
    peers: peers ?? noPeers,
    log,
    ...(options.scrub?.bytesPerSecond !== undefined ? { bytesPerSecond: options.scrub.bytesPerSecond } : {}),
    intervalMs: options.scrub?.intervalMs ?? 0,
    errors: scrubErrors,
    repaired: scrubRepaired,
  });
  const antiEntropy =
    map && peers && options.nodeId !== undefined
      ? new AntiEntropy({
          store,
          digests,
          map,
          selfId: nodeId,
          peers,
          log,
          bytesPerSecond: options.antiEntropy?.bytesPerSecond ?? 0,
          intervalMs: options.antiEntropy?.intervalMs ?? 0,
          ...(options.antiEntropy?.settleMs !== undefined ? { settleMs: options.antiEntropy.settleMs } : {}),
          stateFile: join(options.dataDir, 'antientropy.json'),
          repairQuarantined: () => scrubber.repairQuarantined(),
          onPushed: (bytes, blocks) => {
            pushedBytes.inc(bytes);
            pushedBlocks.inc(blocks);
          },
          onDeleted: (blocks) => deletedBlocks.inc(blocks),
        })
      : undefined;

  const status = (): NodeStatus => {
    const r = antiEntropy?.report;
    return {
      nodeId,
      mapEpoch: map?.current().epoch ?? 0,
      reportEpoch: r?.epoch ?? 0,
      underReplicatedPartitions: r?.underReplicatedPartitions ?? 0,
      bytesToMove: r?.bytesToMove ?? 0,
      soleCopies: r?.soleCopies ?? 0,
      antientropyPasses: antiEntropy?.passes ?? 0,
      antientropyState: antiEntropy?.state ?? 'stopped',
      scrubErrors: scrubber.errors,
    };
  };

  const putSeconds = new Histogram({ name: 'cairn_blocknode_put_seconds', help: 'Time to store one PutBlocks message durably (fsync included).', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers });
  const getSeconds = new Histogram({ name: 'cairn_blocknode_get_seconds', help: 'Time to read and verify one block.', buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers });
  const putBytes = new Counter({ name: 'cairn_blocknode_put_bytes_total', help: 'Block bytes received by PutBlocks.', registers });
  registerStoreMetrics(options.metrics, store, status, antiEntropy, () => tombstones.size);

  const { definition, proto } = loadProto();
  const server = new CairnGrpcServer({ name: 'blocknode', log, metrics: options.metrics, authSecret: options.authSecret, packageDefinition: definition });
  const deps: BlockNodeServiceDeps = {
    store,
    digests,
    limit: new ConcurrencyLimit(options.maxConcurrentCalls ?? 64, 1024),
    tombstones,
    status,
    scrub: (rate, signal) => scrubber.scrubNow(rate, signal),
    onHandoff: () => antiEntropy?.kick(),
    observePut: (seconds, _blocks, bytes) => {
      putSeconds.observe(seconds);
      putBytes.inc(bytes);
    },
    observeGet: (seconds) => getSeconds.observe(seconds),
  };
  const handlers = blockNodeHandlers(deps);
  server.addService(proto.cairn.v1.BlockNode.service, handlers, {
    PutBlocks: 'service',
    GetBlocks: 'service',
    HasBlocks: 'service',
    DeleteBlocks: 'service',
    ListPartition: 'service',
    PartitionDigest: 'service',
    Stats: 'service',
    Scrub: 'service',
  });
  let port: number;
  try {
    port = await server.listen(options.host, options.port, options.credentials);
  } catch (err) {
    clearInterval(tombstoneSweep);
    await tombstones.close();
    await store.close();
    throw err;
  }
  antiEntropy?.start();
  scrubber.start();
  return {
    port,
    store,
    status,
    local: localBlockPeer(deps, log),
    async stop(timeoutMs?: number) {
      await antiEntropy?.stop();
      await scrubber.stop();
      await server.shutdown(timeoutMs);
      peers?.close();
      clearInterval(tombstoneSweep);
      await tombstones.close();
      await store.close();
    },
  };
}

function registerStoreMetrics(metrics: Metrics, store: BlockStore, status: () => NodeStatus, antiEntropy: AntiEntropy | undefined, tombstones: () => number): void {
  const registers = [metrics.registry];
  new Gauge({ name: 'cairn_blocknode_blocks', help: 'Live blocks stored on this node.', registers, collect() { this.set(store.stats().blocks); } });
  new Gauge({ name: 'cairn_blocknode_stored_bytes', help: 'Live block bytes stored on this node.', registers, collect() { this.set(store.stats().bytes); } });
  new Gauge({ name: 'cairn_blocknode_dead_bytes', help: 'Bytes of deleted blocks not yet reclaimed by compaction.', registers, collect() { this.set(store.stats().deadBytes); } });
  new Gauge({ name: 'cairn_blocknode_gc_tombstones', help: 'GC tombstones held (deleted blocks whose repair copies are refused).', registers, collect() { this.set(tombstones()); } });
  new Gauge({ name: 'cairn_blocknode_segments', help: 'Segment files on this node.', registers, collect() { this.set(store.stats().segments); } });
  new Gauge({ name: 'cairn_blocknode_disk_bytes', help: 'Bytes of segment files on disk.', registers, collect() { this.set(store.stats().diskBytes); } });
  new Gauge({ name: 'cairn_blocknode_fsync_batches', help: 'Group-commit fsync batches since start (monotonic).', registers, collect() { this.set(store.stats().fsyncBatches); } });
  new Gauge({ name: 'cairn_blocknode_fsync_blocks', help: 'Blocks made durable by group-commit fsyncs since start (monotonic); divided by batches it is the mean fsync batch size.', registers, collect() { this.set(store.stats().fsyncBlocks); } });
  new Gauge({ name: 'cairn_blocknode_quarantined_blocks', help: 'Blocks pulled from the index because their bytes failed verification, awaiting repair.', registers, async collect() { this.set((await store.quarantined()).length); } });
  new Gauge({ name: 'cairn_blocknode_under_replicated_partitions', help: 'Partitions (owned or held) where another owner lacked data in the last anti-entropy pass.', registers, collect() { this.set(status().underReplicatedPartitions); } });
  new Gauge({ name: 'cairn_blocknode_to_move_bytes', help: 'Bytes the last anti-entropy pass had to copy to other nodes.', registers, collect() { this.set(status().bytesToMove); } });
  new Gauge({ name: 'cairn_blocknode_sole_copies', help: 'Blocks of which, in the last anti-entropy pass, no other node held a copy.', registers, collect() { this.set(status().soleCopies); } });
  new Gauge({ name: 'cairn_blocknode_map_epoch', help: 'Epoch of the cluster map this node works from.', registers, collect() { this.set(status().mapEpoch); } });
  new Gauge({ name: 'cairn_blocknode_antientropy_passes', help: 'Completed anti-entropy passes since start (monotonic).', registers, collect() { this.set(status().antientropyPasses); } });
  new Gauge({ name: 'cairn_blocknode_antientropy_progress_ratio', help: 'Share of partitions the current anti-entropy pass has walked.', registers, collect() { this.set((antiEntropy?.partitionsDone ?? 0) / PARTITION_COUNT); } });
  new Gauge({
    name: 'cairn_blocknode_antientropy_state',
    help: 'Anti-entropy loop state (1 for the current one).',
    labelNames: ['state'],
    registers,
    collect() {
      const now = status().antientropyState;
      for (const s of ANTIENTROPY_STATES) this.set({ state: s }, s === now ? 1 : 0);
    },
  });
}
