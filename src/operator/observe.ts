// Turning what the informers and the Admin API report into reconcile's Observed pieces: pure
// functions over plain objects (client-node hands out Date or string timestamps; both work).
import type { AdminNode } from '../metadata/index.js';
import { DEFAULT_TOPOLOGY_KEY, names } from './objects.js';
import { ZONE_ANNOTATION, type CairnCluster, type ObservedNode, type ObservedPod } from './types.js';

export interface NodeLike {
  readonly metadata?: { readonly name?: string; readonly labels?: Readonly<Record<string, string>> };
}

/** Kubernetes node → its failure domain: the `topologyKey` label, '' when the node has none. */
export function observeNodeZones(c: CairnCluster, nodes: readonly NodeLike[]): Map<string, string> {
  const key = c.spec.blocknodes.topologyKey ?? DEFAULT_TOPOLOGY_KEY;
  const out = new Map<string, string>();
  for (const n of nodes) if (n.metadata?.name !== undefined) out.set(n.metadata.name, n.metadata.labels?.[key] ?? '');
  return out;
}

export interface PodLike {
  readonly metadata?: { readonly name?: string; readonly creationTimestamp?: Date | string; readonly deletionTimestamp?: Date | string; readonly labels?: Readonly<Record<string, string>>; readonly annotations?: Readonly<Record<string, string>> };
  readonly spec?: { readonly nodeName?: string; readonly containers?: readonly { readonly name?: string; readonly image?: string }[] };
  readonly status?: { readonly conditions?: readonly { readonly type?: string; readonly status?: string; readonly lastTransitionTime?: Date | string }[] };
}

export function ms(t: Date | string | undefined): number | undefined {
  if (t === undefined) return undefined;
  const v = new Date(t).getTime();
  return Number.isNaN(v) ? undefined : v;
}

/** The ordinal of a block-node pod of this cluster, from its name. */
export function blockOrdinal(c: CairnCluster, podName: string): number | undefined {
  const prefix = `${names(c).blocknode}-`;
  if (!podName.startsWith(prefix)) return undefined;
  const rest = podName.slice(prefix.length);
  return /^\d+$/.test(rest) ? Number(rest) : undefined;
}

/** The cluster's block-node pods as reconcile sees them; a terminating pod is not Ready. */
export function observePods(c: CairnCluster, pods: readonly PodLike[], nowMs: number): ObservedPod[] {
  const out: ObservedPod[] = [];
  for (const p of pods) {
    const labels = p.metadata?.labels ?? {};
    if (labels['app.kubernetes.io/instance'] !== c.metadata.name || labels['app.kubernetes.io/component'] !== 'blocknode') continue;
    const name = p.metadata?.name ?? '';
    const ordinal = blockOrdinal(c, name);
    if (ordinal === undefined) continue;
    const cond = p.status?.conditions?.find((x) => x.type === 'Ready');
    const terminating = p.metadata?.deletionTimestamp !== undefined;
    const ready = !terminating && cond?.status === 'True';
    const image = p.spec?.containers?.find((x) => x.name === 'cairn')?.image ?? p.spec?.containers?.[0]?.image ?? '';
    let since: number | undefined;
    if (!ready) {
      // NotReady since the condition flipped, a Ready pod being deleted since its deletion, a pod
      // never Ready since it was created.
      if (terminating && cond?.status === 'True') since = ms(p.metadata?.deletionTimestamp) ?? nowMs;
      else since = (cond?.status === 'False' ? ms(cond.lastTransitionTime) : undefined) ?? ms(p.metadata?.creationTimestamp) ?? nowMs;
    }
    const nodeName = p.spec?.nodeName;
    const zone = p.metadata?.annotations?.[ZONE_ANNOTATION];
    out.push({ name, ordinal, ready, image, ...(since !== undefined ? { notReadySinceMs: since } : {}), ...(nodeName !== undefined && nodeName !== '' ? { nodeName } : {}), ...(zone !== undefined ? { zone } : {}) });
  }
  return out.sort((a, b) => a.ordinal - b.ordinal);
}

/**
 * Ordinals below the StatefulSet's size that have no pod: since when (first noticed, kept in
 * `memory` across passes; entries for pods that came back are dropped).
 */
export function trackMissing(c: CairnCluster, replicas: number, pods: readonly ObservedPod[], memory: Map<string, number>, nowMs: number): Map<string, number> {
  const present = new Set(pods.map((p) => p.name));
  const wanted = new Set<string>();
  for (let i = 0; i < replicas; i++) wanted.add(`${names(c).blocknode}-${i}`);
  for (const name of [...memory.keys()]) if (present.has(name) || !wanted.has(name)) memory.delete(name);
  for (const name of wanted) if (!present.has(name) && !memory.has(name)) memory.set(name, nowMs);
  return new Map(memory);
}

/** A node from ListNodes as reconcile sees it. */
export function observeNode(n: AdminNode): ObservedNode {
  return {
    id: n.id,
    state: n.state,
    blocks: n.stats?.blocks ?? 0,
    soleCopies: n.drain.draining ? n.drain.soleCopies : (n.stats?.soleCopies ?? 0),
    bytesToMove: n.stats?.bytesToMove ?? 0,
    underReplicatedPartitions: n.stats?.underReplicatedPartitions ?? 0,
    drainDone: n.drain.done,
  };
}
