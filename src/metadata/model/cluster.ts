// The cluster map over the KV: node registration with incarnations, heartbeats, the failure
// detector, drain/remove/markUp transitions, and one placement epoch per change (kept with history).
import { randomBytes } from 'node:crypto';
import { CairnError } from '../../common/errors.js';
import { PARTITION_COUNT, assign, type ClusterMap, type MapNode, type NodeState } from '../../placement/index.js';
import type { Kv, KvReader, KvTx } from '../kv/types.js';
import { CLUSTER_MAP_CHANNEL, adminKeys } from './keys-admin.js';

export const DEFAULT_REPLICATION_FACTOR = 3;
export const DEFAULT_FAILOVER_DELAY_MS = 5 * 60_000;
/** Epochs kept for watchers that fall behind and readers of older maps. */
export const MAP_HISTORY = 64;
const NODE_ID_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const MAX_ADDR = 256;

export interface NodeStats {
  readonly blocks: number;
  readonly bytes: number;
  readonly capacityBytes: number;
  readonly underReplicatedPartitions: number;
  readonly bytesToMove: number;
  /** Blocks this node holds that no other owner has yet: removing it now would lose them. */
  readonly soleCopies: number;
  /** The map epoch the node computed these figures against (0 = unknown). */
  readonly mapEpoch?: number | undefined;
}

export interface NodeRecord {
  readonly id: string;
  readonly addr: string;
  readonly zone: string;
  readonly weight: number;
  readonly capacityBytes: number;
  /** Changes whenever the node registers with empty storage (a replaced disk or pod). */
  readonly incarnation: string;
  readonly state: NodeState;
  readonly registeredMs: number;
  readonly lastHeartbeatMs: number;
  readonly stats: NodeStats | undefined;
  /** Set while draining (and kept if a draining node goes down). */
  readonly drain: { readonly startedMs: number; readonly epoch: number; readonly reported: boolean } | undefined;
}

export interface DrainStatus {
  readonly draining: boolean;
  readonly soleCopies: number;
  readonly bytesToMove: number;
  /** The node reported no sole copies after the drain began: it may be removed. */
  readonly done: boolean;
}

export interface ClusterOptions {
  /** Replication factor used when the cluster is first created (stored; later changes ignored). */
  readonly replicationFactor?: number;
  readonly now?: () => number;
}

function invalid(message: string, field: string): CairnError {
  return new CairnError('CAIRN_INVALID_ARGUMENT', message, { fieldViolations: [{ field, description: message }] });
}

export function validateNodeId(id: string, field = 'node_id'): void {
  if (typeof id !== 'string' || !NODE_ID_RE.test(id)) throw invalid(`${field} "${String(id)}" must be 1-63 of a-z, 0-9, ".", "_" and "-", starting with a letter or digit`, field);
}

function validateIncarnation(inc: string): void {
  if (typeof inc !== 'string' || !/^[0-9a-f]{32}$/.test(inc)) throw invalid('incarnation is malformed', 'incarnation');
}

function nonNegative(value: number, field: string): void {
  if (!Number.isSafeInteger(value) || value < 0) throw invalid(`${field} must be a non-negative integer, got ${String(value)}`, field);
}

// ---- stored forms ----

interface StoredNode {
  id: string;
  addr: string;
  zone: string;
  weight: number;
  capacity: number;
  inc: string;
  state: NodeState;
  registered: number;
  seen: number;
  stats?: NodeStats;
  drain?: { started: number; epoch: number; reported: boolean };
}

/** A map as stored: partitions as indices into nodes, about 30 KB instead of 500 KB of ids. */
interface StoredMap {
  epoch: number;
  rf: number;
  nodes: MapNode[];
  p: number[][];
  created: number;
}

interface StoredConfig {
  rf: number;
}

function toNode(s: StoredNode): NodeRecord {
  return {
    id: s.id,
    addr: s.addr,
    zone: s.zone,
    weight: s.weight,
    capacityBytes: s.capacity,
    incarnation: s.inc,
    state: s.state,
    registeredMs: s.registered,
    lastHeartbeatMs: s.seen,
    stats: s.stats,
    drain: s.drain === undefined ? undefined : { startedMs: s.drain.started, epoch: s.drain.epoch, reported: s.drain.reported },
  };
}

function fromStoredMap(s: StoredMap): ClusterMap {
  return { epoch: s.epoch, replicationFactor: s.rf, nodes: s.nodes, partitions: s.p.map((row) => row.map((i) => s.nodes[i]!.id)) };
}

function toStoredMap(map: ClusterMap, created: number): StoredMap {
  const index = new Map(map.nodes.map((n, i) => [n.id, i]));
  return { epoch: map.epoch, rf: map.replicationFactor, nodes: map.nodes, p: map.partitions.map((row) => row.map((id) => index.get(id)!)), created };
}

const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v), 'utf8');

async function readNode(r: KvReader, id: string): Promise<StoredNode | undefined> {
  const raw = await r.get(adminKeys.clusterNode(id));
  return raw === undefined ? undefined : (JSON.parse(raw.toString('utf8')) as StoredNode);
}

async function readNodes(r: KvReader): Promise<StoredNode[]> {
  return (await r.scan(adminKeys.clusterNodes())).map(([, v]) => JSON.parse(v.toString('utf8')) as StoredNode);
}

async function readConfig(r: KvReader, options: ClusterOptions): Promise<StoredConfig> {
  const raw = await r.get(adminKeys.clusterConfig());
  if (raw !== undefined) return JSON.parse(raw.toString('utf8')) as StoredConfig;
  return { rf: options.replicationFactor ?? DEFAULT_REPLICATION_FACTOR };
}

async function readStoredMap(r: KvReader, epoch?: number): Promise<StoredMap | undefined> {
  if (epoch !== undefined) {
    const raw = await r.get(adminKeys.clusterMap(epoch));
    return raw === undefined ? undefined : (JSON.parse(raw.toString('utf8')) as StoredMap);
  }
  const [row] = await r.scan({ ...adminKeys.clusterMaps(), reverse: true, limit: 1 });
  return row === undefined ? undefined : (JSON.parse(row[1].toString('utf8')) as StoredMap);
}

/** The map of epoch 0: no nodes, no placement (0 replicas). What readers see before any node registers. */
export function emptyMap(): ClusterMap {
  return { epoch: 0, replicationFactor: 0, nodes: [], partitions: Array.from({ length: PARTITION_COUNT }, () => []) };
}

// ---- pure decisions ----

const ELIGIBLE: readonly NodeState[] = ['joining', 'up'];

/**
 * The next placement for `nodes` (removed ones left out). Until `rf` nodes are eligible the map
 * places as many replicas as there are eligible nodes, so a cluster can bootstrap one node at a
 * time; with none eligible every partition is empty.
 */
export function computeMap(previous: ClusterMap | null, nodes: readonly MapNode[], rf: number, epoch: number): ClusterMap {
  const listed = nodes.filter((n) => n.state !== 'removed').map((n) => ({ ...n })).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const eligible = listed.filter((n) => ELIGIBLE.includes(n.state)).length;
  if (eligible === 0) return { ...emptyMap(), epoch, nodes: listed };
  const effective = Math.min(rf, eligible);
  const prev = previous !== null && previous.partitions.length === PARTITION_COUNT ? previous : null;
  const next = assign(prev, listed, effective);
  return { ...next, epoch };
}

function sameMapInput(map: ClusterMap | undefined, nodes: readonly MapNode[]): boolean {
  if (map === undefined) return nodes.length === 0;
  const listed = nodes.filter((n) => n.state !== 'removed').sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return listed.length === map.nodes.length && listed.every((n, i) => {
    const m = map.nodes[i]!;
    return n.id === m.id && n.addr === m.addr && n.zone === m.zone && n.weight === m.weight && n.state === m.state;
  });
}

export interface FailureDecision {
  /** Nodes to mark down now, most silent first. */
  readonly markDown: readonly string[];
  /** Silent nodes left up because RF−1 nodes are already down; the operator should look. */
  readonly held: readonly string[];
}

/**
 * Pure failure detection: a joining, up or draining node silent for longer than
 * `failoverDelayMs` is marked down, but never so many that more than RF−1 nodes are down at
 * once (beyond that, data would be unreachable rather than merely under-replicated).
 * `sinceMs` is when the detector started watching: silence while it was not running
 * (a metadata restart) is not held against the nodes.
 */
export function decideFailures(nodes: readonly Pick<NodeRecord, 'id' | 'state' | 'lastHeartbeatMs'>[], nowMs: number, failoverDelayMs: number, rf: number, sinceMs = 0): FailureDecision {
  const silent = nodes
    .filter((n) => (n.state === 'joining' || n.state === 'up' || n.state === 'draining') && nowMs - Math.max(n.lastHeartbeatMs, sinceMs) > failoverDelayMs)
    .sort((a, b) => a.lastHeartbeatMs - b.lastHeartbeatMs || (a.id < b.id ? -1 : 1));
  const down = nodes.filter((n) => n.state === 'down').length;
  const room = Math.max(0, rf - 1 - down);
  return { markDown: silent.slice(0, room).map((n) => n.id), held: silent.slice(room).map((n) => n.id) };
}

// ---- transactional apply ----

interface Change {
  readonly map: ClusterMap;
  readonly changed: boolean;
}

/**
 * Writes the changed nodes and, when the map's inputs changed, the next epoch's map (pruning
 * history beyond MAP_HISTORY) and a notification carrying the epoch.
 */
async function commitNodes(tx: KvTx, changedNodes: readonly StoredNode[], options: ClusterOptions, now: number): Promise<Change> {
  for (const n of changedNodes) tx.put(adminKeys.clusterNode(n.id), json(n));
  const config = await readConfig(tx, options);
  if ((await tx.get(adminKeys.clusterConfig())) === undefined) tx.put(adminKeys.clusterConfig(), json(config));
  const stored = await readStoredMap(tx);
  const current = stored === undefined ? undefined : fromStoredMap(stored);
  const all = await readNodes(tx);
  const byId = new Map(all.map((n) => [n.id, n]));
  for (const n of changedNodes) byId.set(n.id, n);
  const mapNodes: MapNode[] = [...byId.values()].map((n) => ({ id: n.id, addr: n.addr, zone: n.zone, weight: n.weight, state: n.state }));
  if (current !== undefined && sameMapInput(current, mapNodes)) return { map: current, changed: false };
  if (current === undefined && mapNodes.every((n) => n.state === 'removed')) return { map: emptyMap(), changed: false };
  const epoch = (current?.epoch ?? 0) + 1;
  const next = computeMap(current ?? null, mapNodes, config.rf, epoch);
  tx.put(adminKeys.clusterMap(epoch), json(toStoredMap(next, now)));
  if (epoch > MAP_HISTORY) tx.del(adminKeys.clusterMap(epoch - MAP_HISTORY));
  tx.notify(CLUSTER_MAP_CHANNEL, String(epoch));
  return { map: next, changed: true };
}

export interface RegisterInput {
  /** Stable name (e.g. the pod name); generated when absent. */
  readonly id?: string | undefined;
  /** The incarnation stored with the node's data; absent when its storage is empty. */
  readonly incarnation?: string | undefined;
  readonly addr: string;
  readonly zone: string;
  /** Placement weight > 0; 0 or absent derives it from capacity (TiB, at least 1/1024). */
  readonly weight?: number | undefined;
  readonly capacityBytes: number;
}

export interface RegisterResult {
  readonly node: NodeRecord;
  /** True when this registration started a new incarnation (first start or empty storage). */
  readonly newIncarnation: boolean;
  readonly map: ClusterMap;
}

function validateRegister(input: RegisterInput): number {
  if (input.id !== undefined && input.id !== '') validateNodeId(input.id);
  if (input.incarnation !== undefined && input.incarnation !== '') {
    validateIncarnation(input.incarnation);
    if (input.id === undefined || input.id === '') throw invalid('an incarnation needs the node id it belongs to', 'incarnation');
  }
  if (typeof input.addr !== 'string' || !/^[^\s/]+:\d{1,5}$/.test(input.addr) || input.addr.length > MAX_ADDR) throw invalid(`addr "${String(input.addr)}" must be host:port`, 'addr');
  if (typeof input.zone !== 'string' || input.zone.length > 63 || /[\s\0]/.test(input.zone)) throw invalid('zone must be at most 63 characters without spaces', 'zone');
  nonNegative(input.capacityBytes, 'capacity_bytes');
  const w = input.weight ?? 0;
  if (typeof w !== 'number' || !Number.isFinite(w) || w < 0 || w > 1e6) throw invalid(`weight must be a finite number in 0..1e6 (0 = from capacity), got ${String(w)}`, 'weight');
  return w > 0 ? w : Math.max(1 / 1024, input.capacityBytes / 2 ** 40);
}

/**
 * Registers a node. Without an incarnation (empty storage) the node gets a new incarnation and
 * starts `joining` — under its old id too, which is how a replaced disk or pod is re-admitted.
 * With its current incarnation the call is idempotent apart from address, zone and weight
 * updates; with an older one it is refused (that storage was replaced meanwhile).
 */
export async function registerNode(kv: Kv, input: RegisterInput, options: ClusterOptions = {}): Promise<RegisterResult> {
  const weight = validateRegister(input);
  const now = (options.now ?? Date.now)();
  const freshId = `node-${randomBytes(6).toString('hex')}`;
  const freshInc = randomBytes(16).toString('hex');
  return kv.transact(async (tx) => {
    const id = input.id !== undefined && input.id !== '' ? input.id : freshId;
    const existing = await readNode(tx, id);
    const hasInc = input.incarnation !== undefined && input.incarnation !== '';
    if (hasInc) {
      if (existing === undefined) throw new CairnError('CAIRN_NOT_FOUND', `unknown node ${id}: register without an incarnation to join as a new node`);
      if (existing.inc !== input.incarnation) {
        throw new CairnError('CAIRN_FAILED_PRECONDITION', `node ${id} has a newer incarnation: this storage was replaced; wipe it and register again`, { metadata: { node_id: id } });
      }
      if (existing.state === 'removed') throw new CairnError('CAIRN_FAILED_PRECONDITION', `node ${id} was removed; wipe its storage and register again`);
      const node: StoredNode = { ...existing, addr: input.addr, zone: input.zone, weight, capacity: input.capacityBytes, seen: now };
      // A node that was marked down and comes back with its data is up again (or resumes draining).
      if (existing.state === 'down') node.state = existing.drain !== undefined ? 'draining' : 'up';
      const { map } = await commitNodes(tx, [node], options, now);
      return { node: toNode(node), newIncarnation: false, map };
    }
    const node: StoredNode = { id, addr: input.addr, zone: input.zone, weight, capacity: input.capacityBytes, inc: freshInc, state: 'joining', registered: now, seen: now };
    const { map } = await commitNodes(tx, [node], options, now);
    return { node: toNode(node), newIncarnation: true, map };
  });
}

export interface HeartbeatResult {
  readonly node: NodeRecord;
  readonly epoch: number;
}

export function validateStats(stats: NodeStats): void {
  for (const f of ['blocks', 'bytes', 'capacityBytes', 'underReplicatedPartitions', 'bytesToMove', 'soleCopies'] as const) nonNegative(stats[f], `stats.${f}`);
  if (stats.mapEpoch !== undefined) nonNegative(stats.mapEpoch, 'stats.map_epoch');
}

/** Records that a node is alive and what it holds; a down node with its data back is up again. */
export async function heartbeat(kv: Kv, nodeId: string, incarnation: string, stats: NodeStats, options: ClusterOptions = {}): Promise<HeartbeatResult> {
  validateNodeId(nodeId);
  validateIncarnation(incarnation);
  validateStats(stats);
  const now = (options.now ?? Date.now)();
  return kv.transact(async (tx) => {
    const existing = await readNode(tx, nodeId);
    if (existing === undefined) throw new CairnError('CAIRN_NOT_FOUND', `unknown node ${nodeId}`);
    if (existing.inc !== incarnation) throw new CairnError('CAIRN_FAILED_PRECONDITION', `node ${nodeId} has a newer incarnation; register again`, { metadata: { node_id: nodeId } });
    if (existing.state === 'removed') throw new CairnError('CAIRN_FAILED_PRECONDITION', `node ${nodeId} was removed`);
    const node: StoredNode = { ...existing, seen: now, stats: { ...stats }, capacity: stats.capacityBytes };
    if (node.drain !== undefined && node.state === 'draining' && (stats.mapEpoch === undefined || stats.mapEpoch === 0 || stats.mapEpoch >= node.drain.epoch)) {
      node.drain = { ...node.drain, reported: true };
    }
    if (existing.state === 'down') {
      node.state = existing.drain !== undefined ? 'draining' : 'up';
      const { map } = await commitNodes(tx, [node], options, now);
      return { node: toNode(node), epoch: map.epoch };
    }
    tx.put(adminKeys.clusterNode(node.id), json(node));
    const current = await readStoredMap(tx);
    return { node: toNode(node), epoch: current?.epoch ?? 0 };
  });
}

async function requireNode(tx: KvReader, nodeId: string): Promise<StoredNode> {
  validateNodeId(nodeId);
  const node = await readNode(tx, nodeId);
  if (node === undefined) throw new CairnError('CAIRN_NOT_FOUND', `unknown node ${nodeId}`);
  return node;
}

function illegal(node: StoredNode, action: string): CairnError {
  return new CairnError('CAIRN_FAILED_PRECONDITION', `cannot ${action} node ${node.id} while it is ${node.state}`, { metadata: { node_id: node.id, state: node.state } });
}

export interface NodeChange {
  readonly node: NodeRecord;
  readonly map: ClusterMap;
}

/** Starts handing a node's replicas to others; refused if fewer than RF nodes would remain eligible. */
export async function drainNode(kv: Kv, nodeId: string, options: ClusterOptions = {}): Promise<NodeChange> {
  validateNodeId(nodeId);
  const now = (options.now ?? Date.now)();
  return kv.transact(async (tx) => {
    const node = await requireNode(tx, nodeId);
    if (node.state === 'draining') {
      const current = await readStoredMap(tx);
      return { node: toNode(node), map: current === undefined ? emptyMap() : fromStoredMap(current) };
    }
    if (node.state !== 'up' && node.state !== 'joining') throw illegal(node, 'drain');
    const config = await readConfig(tx, options);
    const others = (await readNodes(tx)).filter((n) => n.id !== nodeId && ELIGIBLE.includes(n.state)).length;
    if (others < config.rf) {
      throw new CairnError('CAIRN_FAILED_PRECONDITION', `cannot drain node ${nodeId}: ${others} other eligible nodes remain, replication factor is ${config.rf}`, { metadata: { node_id: nodeId } });
    }
    const currentEpoch = (await readStoredMap(tx))?.epoch ?? 0;
    // The drain is done only on a report made against the map that starts it (the next epoch).
    const next: StoredNode = { ...node, state: 'draining', drain: { started: now, epoch: currentEpoch + 1, reported: false } };
    const { map } = await commitNodes(tx, [next], options, now);
    return { node: toNode(next), map };
  });
}

export function drainStatusOf(node: NodeRecord): DrainStatus {
  const draining = node.state === 'draining';
  const soleCopies = node.stats?.soleCopies ?? 0;
  return {
    draining,
    soleCopies,
    bytesToMove: node.stats?.bytesToMove ?? 0,
    done: draining && node.drain !== undefined && node.drain.reported && soleCopies === 0,
  };
}

export async function getDrainStatus(kv: KvReader, nodeId: string): Promise<DrainStatus> {
  return drainStatusOf(toNode(await requireNode(kv, nodeId)));
}

/** Removes a drained node from the map for good; refused until it reported no sole copies. */
export async function removeNode(kv: Kv, nodeId: string, options: ClusterOptions = {}): Promise<NodeChange> {
  validateNodeId(nodeId);
  const now = (options.now ?? Date.now)();
  return kv.transact(async (tx) => {
    const node = await requireNode(tx, nodeId);
    if (node.state !== 'draining') throw illegal(node, 'remove');
    const status = drainStatusOf(toNode(node));
    if (!status.done) {
      throw new CairnError('CAIRN_FAILED_PRECONDITION', `node ${nodeId} still holds ${status.soleCopies} sole copies${node.drain?.reported === true ? '' : ' (no report since the drain began)'}`, {
        metadata: { node_id: nodeId, sole_copies: String(status.soleCopies) },
      });
    }
    const next: StoredNode = { ...node, state: 'removed' };
    delete next.drain;
    const { map } = await commitNodes(tx, [next], options, now);
    return { node: toNode(next), map };
  });
}

/** joining → up (caught up), draining → up (drain cancelled), down → up (operator override). */
export async function markNodeUp(kv: Kv, nodeId: string, options: ClusterOptions = {}): Promise<NodeChange> {
  validateNodeId(nodeId);
  const now = (options.now ?? Date.now)();
  return kv.transact(async (tx) => {
    const node = await requireNode(tx, nodeId);
    if (node.state === 'removed') throw illegal(node, 'mark up');
    const next: StoredNode = { ...node, state: 'up' };
    delete next.drain;
    // Counting the override as a sign of life keeps the detector from undoing it at once.
    if (node.state === 'down') next.seen = Math.max(node.seen, now);
    const { map } = await commitNodes(tx, [next], options, now);
    return { node: toNode(next), map };
  });
}

/**
 * Marks a node down by hand (the operator, after its pod stayed NotReady for failoverDelay):
 * its replicas are placed elsewhere in a new epoch. Idempotent for a node already down. Like the
 * failure detector it never lets more than RF−1 nodes be down at once (beyond that data would be
 * unreachable rather than under-replicated); a draining node keeps its drain, as with the detector.
 */
export async function markNodeDown(kv: Kv, nodeId: string, options: ClusterOptions = {}): Promise<NodeChange> {
  validateNodeId(nodeId);
  const now = (options.now ?? Date.now)();
  return kv.transact(async (tx) => {
    const node = await requireNode(tx, nodeId);
    if (node.state === 'down') {
      const current = await readStoredMap(tx);
      return { node: toNode(node), map: current === undefined ? emptyMap() : fromStoredMap(current) };
    }
    if (node.state === 'removed') throw illegal(node, 'mark down');
    const config = await readConfig(tx, options);
    const down = (await readNodes(tx)).filter((n) => n.state === 'down').map((n) => n.id);
    if (down.length >= config.rf - 1) {
      throw new CairnError('CAIRN_FAILED_PRECONDITION', `cannot mark node ${nodeId} down: ${down.length} node(s) already down (${down.join(', ') || 'none'}) and replication factor ${config.rf} tolerates at most ${Math.max(0, config.rf - 1)}`, {
        metadata: { node_id: nodeId, down: String(down.length), replication_factor: String(config.rf) },
      });
    }
    const next: StoredNode = { ...node, state: 'down' };
    const { map } = await commitNodes(tx, [next], options, now);
    return { node: toNode(next), map };
  });
}

export interface DetectOptions extends ClusterOptions {
  readonly failoverDelayMs: number;
  /** When the caller started watching (see decideFailures). */
  readonly sinceMs?: number;
}

export interface DetectResult extends FailureDecision {
  readonly map: ClusterMap | undefined;
}

/** One failure-detector pass: decides on a consistent snapshot and applies it in the same transaction. */
export async function detectFailures(kv: Kv, nowMs: number, options: DetectOptions): Promise<DetectResult> {
  if (!Number.isSafeInteger(options.failoverDelayMs) || options.failoverDelayMs <= 0) throw new RangeError('options.failoverDelayMs must be a positive integer');
  return kv.transact(async (tx) => {
    const nodes = await readNodes(tx);
    const config = await readConfig(tx, options);
    const decision = decideFailures(nodes.map(toNode), nowMs, options.failoverDelayMs, config.rf, options.sinceMs ?? 0);
    if (decision.markDown.length === 0) return { ...decision, map: undefined };
    const changed = nodes.filter((n) => decision.markDown.includes(n.id)).map((n): StoredNode => ({ ...n, state: 'down' }));
    const { map } = await commitNodes(tx, changed, options, nowMs);
    return { ...decision, map };
  });
}

export async function getNode(kv: KvReader, nodeId: string): Promise<NodeRecord> {
  return toNode(await requireNode(kv, nodeId));
}

export async function listNodes(kv: KvReader): Promise<NodeRecord[]> {
  return (await readNodes(kv)).map(toNode);
}

/**
 * The current map (no `epoch`), or the map of `epoch` while it is within the kept history.
 * Before any node registered the current map is epoch 0 with empty partitions.
 */
export async function getClusterMap(kv: KvReader, epoch?: number): Promise<ClusterMap> {
  if (epoch !== undefined) nonNegative(epoch, 'epoch');
  const current = await readStoredMap(kv);
  if (epoch === undefined || (epoch === 0 && current === undefined)) return current === undefined ? emptyMap() : fromStoredMap(current);
  const stored = await readStoredMap(kv, epoch);
  if (stored === undefined) {
    const latest = current?.epoch ?? 0;
    if (epoch > latest) throw new CairnError('CAIRN_INVALID_ARGUMENT', `epoch ${epoch} is ahead of the current epoch ${latest}`, { fieldViolations: [{ field: 'epoch', description: 'ahead of the current epoch' }] });
    throw new CairnError('CAIRN_NOT_FOUND', `epoch ${epoch} is no longer kept (the last ${MAP_HISTORY} are)`);
  }
  return fromStoredMap(stored);
}

/** The current map and the one before it: readers look in both while data moves. */
export async function getCurrentAndPrevious(kv: KvReader): Promise<{ current: ClusterMap; previous: ClusterMap | undefined }> {
  const rows = await kv.scan({ ...adminKeys.clusterMaps(), reverse: true, limit: 2 });
  const [cur, prev] = rows.map(([, v]) => fromStoredMap(JSON.parse(v.toString('utf8')) as StoredMap));
  return { current: cur ?? emptyMap(), previous: prev };
}

/** Maps with epoch > `afterEpoch`, oldest first (from the oldest kept one if some were pruned). */
export async function mapsAfter(kv: KvReader, afterEpoch: number, limit = 16): Promise<ClusterMap[]> {
  const rows = await kv.scan({ gt: adminKeys.clusterMap(afterEpoch), lt: adminKeys.clusterMaps().lt, limit });
  return rows.map(([, v]) => fromStoredMap(JSON.parse(v.toString('utf8')) as StoredMap));
}

export interface WatchOptions {
  readonly signal: AbortSignal;
  /** Re-read this often even without a notification: PostgreSQL drops NOTIFYs while LISTEN is down. */
  readonly pollMs?: number;
}

/**
 * Every map with an epoch above `sinceEpoch`, in order, as long as `signal` is not aborted.
 * Wakes on the KV's notification and also re-reads periodically, so nothing is missed when a
 * notification is lost. A `sinceEpoch` ahead of the current epoch is INVALID_ARGUMENT.
 */
export async function* watchClusterMap(kv: Kv, sinceEpoch: number, options: WatchOptions): AsyncGenerator<ClusterMap> {
  nonNegative(sinceEpoch, 'since_epoch');
  const { signal } = options;
  let wake: (() => void) | undefined;
  let pending: boolean | undefined;
  const unsubscribe = kv.subscribe(CLUSTER_MAP_CHANNEL, () => {
    pending = true;
    wake?.();
  });
  const onAbort = (): void => wake?.();
  signal.addEventListener('abort', onAbort);
  try {
    const latest = (await readStoredMap(kv))?.epoch ?? 0;
    if (sinceEpoch > latest) throw new CairnError('CAIRN_INVALID_ARGUMENT', `epoch ${sinceEpoch} is ahead of the current epoch ${latest}`, { fieldViolations: [{ field: 'since_epoch', description: 'ahead of the current epoch' }] });
    let last = sinceEpoch;
    while (!signal.aborted) {
      pending = false;
      for (;;) {
        const batch = await mapsAfter(kv, last);
        for (const map of batch) {
          if (signal.aborted) return;
          last = map.epoch;
          yield map;
        }
        if (batch.length === 0) break;
      }
      if (pending || signal.aborted) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, options.pollMs ?? 5_000);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
    unsubscribe();
  }
}
