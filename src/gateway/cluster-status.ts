// Cluster.Status for `cairn cluster status`: the block nodes, map epoch, replication health and
// job queues, read from the metadata service's Admin API and summed for the caller.
import { CairnError } from '../common/errors.js';
import { unary } from '../common/grpc-server.js';
import type { ClusterHandlers } from '../gen/cairn/v1/Cluster.js';
import type { ClusterStatusNode } from '../gen/cairn/v1/ClusterStatusNode.js';
import type { AdminClient } from '../metadata/index.js';

/** What Status needs of the Admin API (AdminClient implements it). */
export type ClusterAdmin = Pick<AdminClient, 'listNodes' | 'getClusterMap' | 'queueDepth'>;

export const CLUSTER_PERMISSIONS = Object.freeze({ Status: 'admin' } as const);

export function clusterHandlers(admin: ClusterAdmin | undefined): ClusterHandlers {
  return {
    Status: unary(async () => {
      if (admin === undefined) throw new CairnError('CAIRN_UNIMPLEMENTED', 'this gateway was started without an Admin API client; ask the metadata service directly');
      const [nodes, { map }, queues] = await Promise.all([admin.listNodes(), admin.getClusterMap(), admin.queueDepth()]);
      const out: ClusterStatusNode[] = nodes.map((n) => ({
        id: n.id,
        address: n.addr,
        state: n.state,
        zone: n.zone,
        capacity_bytes: n.stats?.capacityBytes ?? n.capacityBytes,
        used_bytes: n.stats?.bytes ?? 0,
        blocks: n.stats?.blocks ?? 0,
        sole_copies: n.stats?.soleCopies ?? 0,
        under_replicated_partitions: n.stats?.underReplicatedPartitions ?? 0,
        bytes_to_move: n.stats?.bytesToMove ?? 0,
        last_heartbeat_ms: n.lastHeartbeatMs,
        map_epoch: n.stats?.mapEpoch ?? 0,
      }));
      const live = nodes.filter((n) => n.state !== 'removed');
      const sum = (f: (s: NonNullable<(typeof nodes)[number]['stats']>) => number): number => live.reduce((acc, n) => acc + (n.stats === undefined ? 0 : f(n.stats)), 0);
      const kinds = Object.entries(queues).sort(([a], [b]) => a.localeCompare(b));
      return {
        map_epoch: map.epoch,
        replication_factor: map.replicationFactor,
        nodes: out,
        under_replicated_partitions: sum((s) => s.underReplicatedPartitions),
        sole_copies: sum((s) => s.soleCopies),
        bytes_to_move: sum((s) => s.bytesToMove),
        queues: kinds.map(([kind, q]) => ({ kind, ready: q.ready, delayed: q.delayed, leased: q.leased, dead: q.dead })),
        queue_depth: kinds.reduce((acc, [, q]) => acc + q.ready + q.delayed + q.leased, 0),
      };
    }),
  };
}
