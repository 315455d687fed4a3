// The cluster map's shape and the pure questions asked of it: which partition a
// block is in, who owns it, and how much two maps differ.

export type NodeState = 'joining' | 'up' | 'draining' | 'down' | 'removed';

export interface MapNode {
  id: string;
  addr: string;
  zone: string;
  weight: number;
  state: NodeState;
}

export interface ClusterMap {
  epoch: number;
  replicationFactor: number;
  /** Every node the map was computed from, sorted by id. */
  nodes: MapNode[];
  /** Length PARTITION_COUNT; each entry holds replicationFactor node ids, in preference order. */
  partitions: string[][];
}

export const PARTITION_BITS = 12;
export const PARTITION_COUNT = 1 << PARTITION_BITS;

export const NODE_STATES: readonly NodeState[] = ['joining', 'up', 'draining', 'down', 'removed'];

/** The first 12 bits of a block address. */
export function partitionOf(address: Uint8Array): number {
  if (!(address instanceof Uint8Array)) throw new TypeError('address must be a Buffer or Uint8Array');
  if (address.length < 2) throw new RangeError(`address must be at least 2 bytes long, got ${address.length}`);
  return (address[0]! << 4) | (address[1]! >>> 4);
}

/** The nodes holding a block, in preference order (a copy). */
export function owners(map: ClusterMap, address: Uint8Array): string[] {
  const row = map.partitions[partitionOf(address)];
  if (row === undefined) throw new TypeError(`map.partitions must have ${PARTITION_COUNT} entries`);
  return [...row];
}

export interface MapDiff {
  /** Replica placements in `b` that `a` did not have for the same partition. */
  moved: number;
  perNode: Record<string, { gained: number; lost: number }>;
}

/**
 * Compares partitions as sets, so reordering a partition's replicas costs no
 * data movement and a change of replication factor counts only added replicas
 * as moved (and removed ones as lost).
 */
export function diff(a: ClusterMap, b: ClusterMap): MapDiff {
  const perNode: Record<string, { gained: number; lost: number }> = {};
  const entry = (id: string) => (perNode[id] ??= { gained: 0, lost: 0 });
  let moved = 0;
  const n = Math.max(a.partitions.length, b.partitions.length);
  for (let p = 0; p < n; p++) {
    const before = a.partitions[p] ?? [];
    const after = b.partitions[p] ?? [];
    for (const id of after) {
      if (!before.includes(id)) {
        moved++;
        entry(id).gained++;
      }
    }
    for (const id of before) if (!after.includes(id)) entry(id).lost++;
  }
  return { moved, perNode };
}
