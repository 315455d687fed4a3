// Conversions between the Admin API's wire messages and the model's records, shared by the
// service and AdminClient so both ends agree on the compact partition encoding.
import { CairnError } from '../common/errors.js';
import { PARTITION_COUNT, type ClusterMap, type MapNode, type NodeState } from '../placement/index.js';
import type { ClusterMap as WireMap, ClusterMap__Output as WireMapOut } from '../gen/cairn/v1/ClusterMap.js';
import type { NodeInfo } from '../gen/cairn/v1/NodeInfo.js';
import type { NodeState__Output as WireState } from '../gen/cairn/v1/NodeState.js';
import type { QueuedJob } from '../gen/cairn/v1/QueuedJob.js';
import { drainStatusOf, type NodeRecord } from './model/cluster.js';
import type { JobRecord } from './model/jobs.js';

const TO_WIRE: Readonly<Record<NodeState, WireState>> = {
  joining: 'NODE_STATE_JOINING',
  up: 'NODE_STATE_UP',
  draining: 'NODE_STATE_DRAINING',
  down: 'NODE_STATE_DOWN',
  removed: 'NODE_STATE_REMOVED',
};

export function stateToWire(state: NodeState): WireState {
  return TO_WIRE[state];
}

export function stateFromWire(state: string): NodeState {
  const found = (Object.keys(TO_WIRE) as NodeState[]).find((k) => TO_WIRE[k] === state);
  if (found === undefined) throw new CairnError('CAIRN_INTERNAL', `unknown node state ${state}`);
  return found;
}

export function mapToWire(map: ClusterMap): WireMap {
  const index = new Map(map.nodes.map((n, i) => [n.id, i]));
  const owners: number[] = [];
  const rf = map.replicationFactor;
  for (const row of map.partitions) for (let i = 0; i < rf; i++) owners.push(index.get(row[i] ?? '') ?? 0);
  return {
    epoch: String(map.epoch),
    replication_factor: rf,
    nodes: map.nodes.map((n) => ({ id: n.id, addr: n.addr, zone: n.zone, weight: n.weight, state: stateToWire(n.state) })),
    partition_owners: owners,
  };
}

/** Rebuilds a placement map from the wire, checking the encoding so a bad peer can't smuggle holes in. */
export function mapFromWire(w: WireMapOut): ClusterMap {
  const nodes: MapNode[] = w.nodes.map((n) => ({ id: n.id, addr: n.addr, zone: n.zone, weight: n.weight, state: stateFromWire(n.state) }));
  const rf = w.replication_factor;
  if (w.partition_owners.length !== PARTITION_COUNT * rf) throw new CairnError('CAIRN_INTERNAL', `cluster map has ${w.partition_owners.length} owners, expected ${PARTITION_COUNT * rf}`);
  const partitions: string[][] = [];
  for (let p = 0; p < PARTITION_COUNT; p++) {
    const row: string[] = [];
    for (let i = 0; i < rf; i++) {
      const node = nodes[w.partition_owners[p * rf + i]!];
      if (node === undefined) throw new CairnError('CAIRN_INTERNAL', `cluster map partition ${p} names no node`);
      row.push(node.id);
    }
    partitions.push(row);
  }
  return { epoch: Number(w.epoch), replicationFactor: rf, nodes, partitions };
}

export function nodeToWire(n: NodeRecord): NodeInfo {
  const drain = drainStatusOf(n);
  return {
    node: { id: n.id, addr: n.addr, zone: n.zone, weight: n.weight, state: stateToWire(n.state) },
    incarnation: n.incarnation,
    capacity_bytes: String(n.capacityBytes),
    registered_ms: String(n.registeredMs),
    last_heartbeat_ms: String(n.lastHeartbeatMs),
    ...(n.stats !== undefined
      ? {
          stats: {
            blocks: String(n.stats.blocks),
            bytes: String(n.stats.bytes),
            capacity_bytes: String(n.stats.capacityBytes),
            under_replicated_partitions: String(n.stats.underReplicatedPartitions),
            bytes_to_move: String(n.stats.bytesToMove),
            sole_copies: String(n.stats.soleCopies),
            map_epoch: String(n.stats.mapEpoch ?? 0),
          },
        }
      : {}),
    drain: { draining: drain.draining, sole_copies: String(drain.soleCopies), bytes_to_move: String(drain.bytesToMove), done: drain.done },
  };
}

export function jobToWire(j: JobRecord): QueuedJob {
  return {
    id: j.id,
    tenant: j.tenant,
    kind: j.kind,
    payload: j.payload,
    attempts: j.attempts,
    max_attempts: j.maxAttempts,
    created_ms: String(j.createdMs),
    last_error: j.lastError ?? '',
    dead_ms: String(j.deadMs ?? 0),
  };
}
