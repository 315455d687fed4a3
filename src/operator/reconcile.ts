// The operator's decisions as one pure function, (desired, observed) → actions: objects to apply,
// cluster-map changes through the metadata Admin API, and the status to write. No I/O here.
import { isDeepStrictEqual } from 'node:util';
import { blockPodName, blockStatefulSet, configMap, metadataWorkload, names, pdb, service, statelessDeployment } from './objects.js';
import {
  CONDITION_TYPES,
  objectKey,
  type Action,
  type CairnCluster,
  type CairnClusterStatus,
  type Condition,
  type ConditionType,
  type KubeObject,
  type NodeRow,
  type Observed,
  type ObservedNode,
} from './types.js';

interface ConditionValue {
  readonly status: 'True' | 'False' | 'Unknown';
  readonly reason: string;
  readonly message: string;
}

const yes = (reason: string, message: string): ConditionValue => ({ status: 'True', reason, message });
const no = (reason: string, message = ''): ConditionValue => ({ status: 'False', reason, message });

/** What the block-node scale gate decided. */
interface ScaleDecision {
  readonly replicas: number;
  readonly admin: Action[];
  readonly blocked: ConditionValue;
}

function downCount(nodes: readonly ObservedNode[]): number {
  return nodes.filter((n) => n.state === 'down').length;
}

/**
 * Scale the block nodes: up at once; down only one ordinal at a time, highest first, draining it
 * and shrinking the StatefulSet only after the metadata service says the drain is done.
 */
function decideScale(c: CairnCluster, o: Observed, byId: ReadonlyMap<string, ObservedNode> | undefined, failing: ReadonlySet<string>): ScaleDecision {
  const want = c.spec.blocknodes.replicas;
  const rf = c.spec.replicationFactor;
  const current = o.blockStatefulSet?.replicas ?? want;
  if (want >= current) return { replicas: want, admin: [], blocked: no('AsDesired') };
  if (want < rf) {
    return { replicas: current, admin: [], blocked: yes('BelowReplicationFactor', `${want} block nodes cannot hold ${rf} copies of every block; keeping ${current}`) };
  }
  const admin: Action[] = [];
  let replicas = current;
  while (replicas > want) {
    // A pod above the size still exists (terminating, or not yet gone): one node at a time.
    const leaving = o.blockPods.find((p) => p.ordinal >= replicas);
    if (leaving !== undefined) return { replicas, admin, blocked: no('ScalingDown', `removing ${leaving.name}`) };
    if (byId === undefined) return { replicas, admin, blocked: yes('MetadataUnavailable', 'the metadata service is unreachable; scale-down holds until it reports drain status') };
    const victim = blockPodName(c, replicas - 1);
    const node = byId.get(victim);
    // Never registered, or already out of the map: it holds nothing the cluster needs.
    if (node === undefined || node.state === 'removed') {
      replicas--;
      continue;
    }
    if ((node.state === 'draining' || node.state === 'down') && node.drainDone && node.soleCopies === 0) {
      admin.push({ kind: 'remove', nodeId: victim });
      replicas--;
      continue;
    }
    // A failing node is left to failover: draining it would copy from a node that is going away.
    if (node.state === 'down' || failing.has(victim)) return { replicas, admin, blocked: yes('NodeDown', `${victim} is down or failing; it cannot be drained until it returns or is replaced`) };
    const draining = no('Draining', `draining ${victim}`);
    if (node.state === 'draining') return { replicas, admin, blocked: draining };
    // Nodes removed earlier in this loop are gone for this decision too (the next pass agrees).
    const removed = new Set(admin.flatMap((x) => (x.kind === 'remove' ? [x.nodeId] : [])));
    const others = [...byId.values()].filter((n) => n.id !== victim && !removed.has(n.id));
    const busy = others.find((n) => n.state === 'draining');
    if (busy !== undefined) return { replicas, admin, blocked: no('Draining', `waiting for ${busy.id} to finish draining`) };
    if (downCount(others) > 0) return { replicas, admin, blocked: yes('NodesDown', 'a block node is down; draining another would leave blocks with fewer copies') };
    admin.push({ kind: 'drain', nodeId: victim });
    return { replicas, admin, blocked: draining };
  }
  return { replicas, admin, blocked: no('ScalingDown') };
}

/** Nodes whose pod has been NotReady or missing for longer than failoverDelay. */
function failingNodes(c: CairnCluster, o: Observed, nodes: readonly ObservedNode[]): Set<string> {
  const delayMs = c.spec.failoverDelaySeconds * 1000;
  // Ordinals the StatefulSet has or is about to have (scale-up happens in this same pass).
  const replicas = Math.max(o.blockStatefulSet?.replicas ?? 0, c.spec.blocknodes.replicas);
  const podByName = new Map(o.blockPods.map((p) => [p.name, p]));
  const out = new Set<string>();
  for (const n of nodes) {
    if (n.state !== 'up' && n.state !== 'joining' && n.state !== 'draining') continue;
    const pod = podByName.get(n.id);
    const ordinal = pod?.ordinal ?? ordinalOf(c, n.id);
    if (ordinal === undefined || ordinal >= replicas) continue;
    const since = pod === undefined ? o.missingSinceMs?.get(n.id) : pod.ready ? undefined : pod.notReadySinceMs;
    if (since !== undefined && o.nowMs - since >= delayMs) out.add(n.id);
  }
  return out;
}

/** Failing nodes are marked down in id order, at most RF − 1 down in all. */
function decideFailover(c: CairnCluster, nodes: readonly ObservedNode[], failing: ReadonlySet<string>): Action[] {
  const budget = c.spec.replicationFactor - 1 - downCount(nodes);
  return [...failing].sort().slice(0, Math.max(0, budget)).map((nodeId) => ({ kind: 'markDown', nodeId }));
}

function ordinalOf(c: CairnCluster, id: string): number | undefined {
  const prefix = `${names(c).blocknode}-`;
  if (!id.startsWith(prefix)) return undefined;
  const rest = id.slice(prefix.length);
  return /^\d+$/.test(rest) ? Number(rest) : undefined;
}

interface UpgradeDecision {
  readonly partition: number;
  readonly upgrading: ConditionValue;
}

/**
 * Roll block nodes one at a time from the highest ordinal: the partition moves down past a pod
 * only when every pod above it runs the new image and is Ready and the cluster is healthy, so
 * every block on the next node has RF − 1 healthy copies elsewhere.
 */
function decideUpgrade(c: CairnCluster, o: Observed, nodes: readonly ObservedNode[] | undefined, replicas: number): UpgradeDecision {
  const image = `${c.spec.image.repository}:${c.spec.image.tag}`;
  const pods = new Map(o.blockPods.map((p) => [p.ordinal, p]));
  let top = replicas; // the lowest ordinal of the fully updated, Ready suffix
  while (top > 0) {
    const p = pods.get(top - 1);
    if (p === undefined || p.image !== image || !p.ready) break;
    top--;
  }
  if (top === 0) return { partition: 0, upgrading: no('UpToDate') };
  const outdated = [...pods.values()].filter((p) => p.ordinal < replicas && p.image !== image).length;
  if (outdated === 0 && o.blockStatefulSet === undefined) return { partition: 0, upgrading: no('UpToDate') };
  if (outdated === 0) {
    // Every pod runs the image but some are not Ready: nothing to roll, hold where we are.
    return { partition: Math.min(o.blockStatefulSet?.partition ?? 0, replicas), upgrading: no('UpToDate') };
  }
  if (c.spec.upgrade?.paused === true) return { partition: top, upgrading: yes('Paused', `upgrade paused with ${outdated} block nodes on an older image`) };
  const next = top - 1;
  const nextPod = pods.get(next);
  // A pod of the updated revision that is not Ready yet (just restarted): wait for it.
  if (nextPod !== undefined && nextPod.image === image) return { partition: top - 1, upgrading: yes('WaitingForPod', `${blockPodName(c, next)} is starting on the new image`) };
  // The pod the partition already let go is between deletion and re-creation: hold the partition
  // where it is. Raising it now would bring the pod back on the old image.
  const current = o.blockStatefulSet?.partition;
  // Same verdict as the pass that lowered it, so a repeated pass decides the same.
  if (nextPod === undefined && current !== undefined && current <= next) return { partition: current, upgrading: yes('Rolling', `upgrading ${blockPodName(c, next)} (${outdated} block nodes left)`) };
  if (nodes === undefined) return { partition: top, upgrading: yes('MetadataUnavailable', 'the metadata service is unreachable; cannot tell whether a block node may stop') };
  const unsafe = nodes.find((n) => n.state === 'down' || n.state === 'draining' || n.underReplicatedPartitions > 0);
  if (unsafe !== undefined) return { partition: top, upgrading: yes('WaitingForReplicas', `${unsafe.id} is ${unsafe.state} with ${unsafe.underReplicatedPartitions} under-replicated partitions; waiting before stopping ${blockPodName(c, next)}`) };
  if (o.blockPods.some((p) => p.ordinal < replicas && !p.ready)) return { partition: top, upgrading: yes('WaitingForPods', 'a block-node pod is not Ready') };
  return { partition: next, upgrading: yes('Rolling', `upgrading ${blockPodName(c, next)} (${outdated} block nodes left)`) };
}

function conditions(c: CairnCluster, o: Observed, values: Record<ConditionType, ConditionValue>): Condition[] {
  const previous = new Map((o.status?.conditions ?? []).map((x) => [x.type, x]));
  const now = new Date(o.nowMs).toISOString();
  return CONDITION_TYPES.map((type) => {
    const v = values[type];
    const p = previous.get(type);
    // The transition time moves only when the status flips: rewriting it every pass would make
    // every reconcile a status write.
    const lastTransitionTime = p !== undefined && p.status === v.status ? p.lastTransitionTime : now;
    return { type, ...v, lastTransitionTime, observedGeneration: c.metadata.generation };
  });
}

function nodeTable(c: CairnCluster, o: Observed, nodes: readonly ObservedNode[] | undefined): readonly NodeRow[] {
  // Unreachable metadata: keep the last table rather than report every node unregistered.
  if (nodes === undefined && o.status !== undefined) return o.status.nodes;
  const rows = new Map<string, NodeRow>();
  for (const p of o.blockPods) rows.set(p.name, { id: p.name, pod: p.name, state: 'unregistered', blocks: 0, soleCopies: 0 });
  for (const n of nodes ?? []) {
    if (n.state === 'removed') continue;
    const pod = ordinalOf(c, n.id) === undefined ? '' : n.id;
    rows.set(n.id, { id: n.id, pod, state: n.state, blocks: n.blocks, soleCopies: n.soleCopies });
  }
  return [...rows.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** The nodes as the admin actions of this pass leave them: status describes where we are going. */
function project(nodes: readonly ObservedNode[], admin: readonly Action[]): ObservedNode[] {
  const next = new Map<string, ObservedNode['state']>();
  for (const a of admin) {
    if (a.kind === 'admit') next.set(a.nodeId, 'up');
    else if (a.kind === 'drain') next.set(a.nodeId, 'draining');
    else if (a.kind === 'markDown') next.set(a.nodeId, 'down');
    else if (a.kind === 'remove') next.set(a.nodeId, 'removed');
  }
  return nodes.map((n) => ({ ...n, state: next.get(n.id) ?? n.state }));
}

/** The objects a cluster should have, given the gated block-node replicas, partition and budget. */
export function desiredObjects(c: CairnCluster, replicas: number, partition: number, blockBudget: number): KubeObject[] {
  const s = c.spec;
  const objects: KubeObject[] = [
    configMap(c),
    service(c, 'metadata', false),
    metadataWorkload(c),
    service(c, 'blocknode', true),
    blockStatefulSet(c, replicas, partition),
    pdb(c, 'blocknode', blockBudget),
    service(c, 'gateway', false),
    statelessDeployment(c, 'gateway', s.gateway.replicas, s.gateway.resources),
    pdb(c, 'gateway', 1),
  ];
  if (s.metadata.backend === 'postgres') objects.push(pdb(c, 'metadata', 1));
  if ((s.media?.replicas ?? 0) > 0) objects.push(statelessDeployment(c, 'media', s.media?.replicas ?? 0, s.media?.resources), pdb(c, 'media', 1));
  return objects;
}

/**
 * Rack awareness: every scheduled block-node pod carries its node's failure domain as an
 * annotation, which its zone init container waits for and its CAIRN_ZONE reads; the block node
 * registers with it, so the cluster map places replicas in distinct zones.
 */
function zoneAnnotations(o: Observed): Action[] {
  const out: Action[] = [];
  for (const p of o.blockPods) {
    const zone = p.nodeName === undefined ? undefined : o.nodeZones?.get(p.nodeName);
    if (zone !== undefined && p.zone !== zone) out.push({ kind: 'annotateZone', pod: p.name, zone });
  }
  return out;
}

export function reconcile(c: CairnCluster, o: Observed): Action[] {
  if (c.metadata.deletionTimestamp !== undefined) return []; // owner references garbage-collect the rest
  const nodes = o.metadata.reachable ? o.metadata.nodes : undefined;
  const actions: Action[] = [];

  // The token signing secret (every process) and the master key (gateways): shared, made once.
  if (!o.secrets.has(names(c).auth)) actions.push({ kind: 'ensureSecret', name: names(c).auth, key: 'auth.key', bytes: 32, encoding: 'base64url' });
  if (!o.secrets.has(names(c).master)) actions.push({ kind: 'ensureSecret', name: names(c).master, key: 'master.key', bytes: 32, encoding: 'base64url' });

  const failing = nodes === undefined ? new Set<string>() : failingNodes(c, o, nodes);
  // A drained node this pass removes does not count against the RF − 1 down budget (it holds
  // nothing), so the budget is the same as the next pass will see.
  const removing = nodes === undefined ? new Set<string>() : new Set(decideScale(c, o, new Map(nodes.map((n) => [n.id, n])), failing).admin.flatMap((a) => (a.kind === 'remove' ? [a.nodeId] : [])));
  const failover = nodes === undefined ? [] : decideFailover(c, nodes.filter((n) => !removing.has(n.id)), failing);
  // Scale-down sees the nodes failover just marked down, as the next pass will.
  const byId = nodes === undefined ? undefined : new Map(project(nodes, failover).map((n) => [n.id, n]));
  const scale = decideScale(c, o, byId, failing);
  // Admit a Ready, registered, joining pod the StatefulSet still wants.
  const admit: Action[] = [];
  for (const p of o.blockPods) {
    if (p.ready && p.ordinal < scale.replicas && byId?.get(p.name)?.state === 'joining') admit.push({ kind: 'admit', nodeId: p.name });
  }
  const adminActions = [...admit, ...failover, ...scale.admin];
  // Upgrade, budget and status judge the nodes as this pass's map changes leave them, so a
  // repeated pass decides the same.
  const after = nodes === undefined ? undefined : project(nodes, adminActions).filter((n) => n.state !== 'removed');
  const upgrade = decideUpgrade(c, o, after, scale.replicas);
  const down = after === undefined ? 0 : downCount(after);
  const underReplicated = after?.reduce((s, n) => s + n.underReplicatedPartitions, 0) ?? 0;
  // The PDB lets one block node go voluntarily only while every block has all its copies.
  const budget = after !== undefined && down === 0 && underReplicated === 0 ? 1 : 0;

  for (const object of desiredObjects(c, scale.replicas, upgrade.partition, budget)) {
    if (!isDeepStrictEqual(o.objects.get(objectKey(object)), object)) actions.push({ kind: 'apply', object });
  }
  actions.push(...adminActions);
  actions.push(...zoneAnnotations(o));

  const bytesToMove = after?.reduce((s, n) => s + n.bytesToMove, 0) ?? 0;
  const want = c.spec.blocknodes.replicas;
  const readyBlockNodes = o.blockPods.filter((p) => p.ready && p.ordinal < scale.replicas).length;
  const joining = after?.filter((n) => n.state === 'joining').length ?? 0;
  const drainingNow = after?.filter((n) => n.state === 'draining') ?? [];
  // Derived from the state the actions lead to, never from which step this pass took, so a
  // repeated pass writes the same status.
  const progressing = scale.replicas !== want || readyBlockNodes < want || o.blockPods.some((p) => p.ordinal >= want) || drainingNow.length > 0 || upgrade.upgrading.status === 'True';
  const progress = [
    `${readyBlockNodes}/${want} block nodes ready`,
    `StatefulSet at ${scale.replicas}`,
    ...drainingNow.map((n) => `draining ${n.id}: ${n.soleCopies} sole copies, ${n.bytesToMove} bytes to move`),
    ...(upgrade.upgrading.status === 'True' ? [upgrade.upgrading.message] : []),
  ].join('; ');
  const ready = after !== undefined && readyBlockNodes >= want && down === 0 && joining === 0 && !progressing;
  const values: Record<ConditionType, ConditionValue> = {
    Ready: after === undefined ? { status: 'Unknown', reason: 'MetadataUnavailable', message: 'the metadata service is unreachable' } : ready ? yes('AllNodesUp', `${readyBlockNodes} block nodes up`) : no('NotReady', `${readyBlockNodes}/${want} block nodes ready, ${joining} joining, ${down} down`),
    Progressing: progressing ? yes('Reconciling', progress) : no('Stable'),
    Degraded: down > 0 ? yes('NodesDown', `${down} block nodes down; re-replication running`) : underReplicated > 0 ? yes('UnderReplicated', `${underReplicated} under-replicated partitions`) : no('Healthy'),
    Rebalancing: bytesToMove > 0 ? yes('MovingData', `${bytesToMove} bytes to move`) : no('Balanced'),
    ScaleDownBlocked: scale.blocked.status === 'True' ? scale.blocked : no('NotBlocked'),
    Upgrading: upgrade.upgrading,
  };
  const status: CairnClusterStatus = {
    observedGeneration: c.metadata.generation,
    conditions: conditions(c, o, values),
    nodes: nodeTable(c, o, after),
    readyBlockNodes,
    bytesToMove,
  };
  if (!isDeepStrictEqual(o.status, status)) actions.push({ kind: 'status', status });
  return actions;
}
