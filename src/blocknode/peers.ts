// A pool of BlockClients keyed by node address, shared by the replication client and the
// background loops, plus the placement questions they all ask of a map (who to ask, in what order).
import { createHash } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import type { TokenProvider } from '../common/grpc-client.js';
import { partitionOf, type ClusterMap, type MapNode } from '../placement/index.js';
import { BlockClient } from './client.js';

export class PeerPool {
  readonly #clients = new Map<string, BlockClient>();
  readonly #credentials: grpc.ChannelCredentials;
  readonly #token: TokenProvider;
  readonly #timeoutMs: number | undefined;

  constructor(options: { credentials: grpc.ChannelCredentials; token: TokenProvider; timeoutMs?: number }) {
    this.#credentials = options.credentials;
    this.#token = options.token;
    this.#timeoutMs = options.timeoutMs;
  }

  get(addr: string): BlockClient {
    let c = this.#clients.get(addr);
    if (c === undefined) {
      c = new BlockClient({ address: addr, credentials: this.#credentials, token: this.#token, ...(this.#timeoutMs !== undefined ? { timeoutMs: this.#timeoutMs } : {}) });
      this.#clients.set(addr, c);
    }
    return c;
  }

  close(): void {
    for (const c of this.#clients.values()) c.close();
    this.#clients.clear();
  }
}

export function nodeById(map: ClusterMap, id: string): MapNode | undefined {
  return map.nodes.find((n) => n.id === id);
}

const handoffCache = new WeakMap<ClusterMap, Map<number, string[]>>();

/**
 * Where a partition's replicas go when owners cannot take them: every other live node, in a
 * per-partition pseudo-random (rendezvous) order, so handoffs for one partition converge on the
 * same few nodes and readers know where to look.
 */
export function handoffOrder(map: ClusterMap, partition: number): string[] {
  let perMap = handoffCache.get(map);
  if (perMap === undefined) {
    perMap = new Map();
    handoffCache.set(map, perMap);
  }
  const hit = perMap.get(partition);
  if (hit) return hit;
  const owners = new Set(map.partitions[partition] ?? []);
  const order = map.nodes
    .filter((n) => !owners.has(n.id) && (n.state === 'up' || n.state === 'joining'))
    .map((n) => ({ id: n.id, rank: createHash('sha256').update(`${partition}:${n.id}`).digest().readUInt32BE(0) }))
    .sort((a, b) => a.rank - b.rank || (a.id < b.id ? -1 : 1))
    .map((n) => n.id);
  perMap.set(partition, order);
  return order;
}

/** Nodes to read a block from, best first: current owners, the previous map's owners, then handoff nodes. */
export function readCandidates(map: ClusterMap, previous: ClusterMap | undefined, address: Buffer): string[] {
  const p = partitionOf(address);
  const out: string[] = [];
  const add = (ids: readonly string[] | undefined): void => {
    for (const id of ids ?? []) if (!out.includes(id)) out.push(id);
  };
  add(map.partitions[p]);
  add(previous?.partitions[p]);
  add(handoffOrder(map, p).slice(0, Math.max(1, map.replicationFactor)));
  return out;
}

/** The address to dial for a node id, looking in the current map and then the previous one. */
export function addrOf(map: ClusterMap, previous: ClusterMap | undefined, id: string): string | undefined {
  return nodeById(map, id)?.addr ?? (previous ? nodeById(previous, id)?.addr : undefined);
}
