// Placement: the partition map and its minimal-movement assignment, shared by
// gateway, block nodes, metadata and operator. Pure: no I/O, config or logging.

export {
  PARTITION_BITS,
  PARTITION_COUNT,
  NODE_STATES,
  partitionOf,
  owners,
  diff,
  type NodeState,
  type MapNode,
  type ClusterMap,
  type MapDiff,
} from './map.js';
export { assign } from './assign.js';
