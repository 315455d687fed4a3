// A small pure simulator for reconcile tests: applies actions to an Observed state as the API
// server and the metadata service would, and builds fixtures. Test support only.
import { blockPodName, objectKey, type Action, type CairnCluster, type CairnClusterSpec, type KubeObject, type Observed, type ObservedNode, type ObservedPod } from '../../src/operator/index.js';

export const NEW_IMAGE = 'ghcr.io/cairn/cairn:0.2.0';
export const OLD_IMAGE = 'ghcr.io/cairn/cairn:0.1.0';

export function cluster(spec: Partial<CairnClusterSpec> = {}, generation = 1): CairnCluster {
  return {
    apiVersion: 'cairn.dev/v1alpha1',
    kind: 'CairnCluster',
    metadata: { name: 'demo', namespace: 'store', uid: '0000-1111', generation },
    spec: {
      image: { repository: 'ghcr.io/cairn/cairn', tag: '0.2.0' },
      replicationFactor: 3,
      writeQuorum: 2,
      blocknodes: { replicas: 3, storage: { size: '10Gi' } },
      gateway: { replicas: 2 },
      metadata: { backend: 'level' },
      failoverDelaySeconds: 300,
      ...spec,
    },
  };
}

export function pod(c: CairnCluster, ordinal: number, over: Partial<ObservedPod> = {}): ObservedPod {
  return { name: blockPodName(c, ordinal), ordinal, ready: true, image: NEW_IMAGE, ...over };
}

export function node(c: CairnCluster, ordinal: number, over: Partial<ObservedNode> = {}): ObservedNode {
  return { id: blockPodName(c, ordinal), state: 'up', blocks: 100, soleCopies: 0, bytesToMove: 0, underReplicatedPartitions: 0, drainDone: false, ...over };
}

/** A settled cluster of `n` up block nodes on the new image, as the operator left it. */
export function steady(c: CairnCluster, n: number, nowMs = 1_000_000): Observed {
  const base: Observed = {
    nowMs,
    objects: new Map(),
    secrets: new Set(['demo-auth', 'demo-master']),
    blockPods: Array.from({ length: n }, (_, i) => pod(c, i)),
    blockStatefulSet: { replicas: n, partition: 0 },
    metadata: { reachable: true, nodes: Array.from({ length: n }, (_, i) => node(c, i)) },
  };
  return base;
}

function stsOf(o: KubeObject): { replicas: number; partition: number } {
  const spec = o['spec'] as { replicas: number; updateStrategy: { rollingUpdate: { partition: number } } };
  return { replicas: spec.replicas, partition: spec.updateStrategy.rollingUpdate.partition };
}

/** The state right after the actions took effect: objects written, map changed, nothing else moved. */
export function applyActions(c: CairnCluster, o: Observed, actions: readonly Action[]): Observed {
  const objects = new Map(o.objects);
  const secrets = new Set(o.secrets);
  let sts = o.blockStatefulSet;
  let status = o.status;
  const zones = new Map<string, string>();
  const states = new Map<string, ObservedNode['state']>();
  const drainsStarted = new Set<string>();
  for (const a of actions) {
    switch (a.kind) {
      case 'apply':
        objects.set(objectKey(a.object), a.object);
        if (a.object.kind === 'StatefulSet' && a.object.metadata.name === `${c.metadata.name}-blocknode`) sts = stsOf(a.object);
        break;
      case 'ensureSecret': secrets.add(a.name); break;
      case 'admit': states.set(a.nodeId, 'up'); break;
      case 'drain': states.set(a.nodeId, 'draining'); drainsStarted.add(a.nodeId); break;
      case 'markDown': states.set(a.nodeId, 'down'); break;
      case 'remove': states.set(a.nodeId, 'removed'); break;
      case 'status': status = a.status; break;
      case 'annotateZone': zones.set(a.pod, a.zone); break;
    }
  }
  const blockPods = o.blockPods.map((p) => (zones.has(p.name) ? { ...p, zone: zones.get(p.name)! } : p));
  const metadata = o.metadata.reachable ? { reachable: true as const, nodes: o.metadata.nodes.map((n) => ({ ...n, state: states.get(n.id) ?? n.state, ...(drainsStarted.has(n.id) ? { drainDone: false } : {}) })) } : o.metadata;
  return { ...o, objects, secrets, metadata, blockPods, ...(sts !== undefined ? { blockStatefulSet: sts } : {}), ...(status !== undefined ? { status } : {}) };
}

/**
 * One step of the world: pods follow the StatefulSet (created Ready on the revision the partition
 * gives them, removed above replicas), new pods register as joining, drains finish.
 */
export function worldStep(c: CairnCluster, o: Observed, oldImage: string): Observed {
  const sts = o.blockStatefulSet;
  if (sts === undefined) return o;
  const image = `${c.spec.image.repository}:${c.spec.image.tag}`;
  const pods: ObservedPod[] = [];
  for (let i = 0; i < sts.replicas; i++) {
    const have = o.blockPods.find((p) => p.ordinal === i);
    const want = i >= sts.partition ? image : (have?.image ?? oldImage);
    pods.push(have !== undefined && have.image === want ? { ...have, ready: true } : pod(c, i, { image: want }));
  }
  if (!o.metadata.reachable) return { ...o, blockPods: pods };
  const byId = new Map(o.metadata.nodes.map((n) => [n.id, n.state === 'draining' ? { ...n, drainDone: true, soleCopies: 0 } : n]));
  for (const p of pods) {
    const n = byId.get(p.name);
    if (n === undefined || n.state === 'removed') byId.set(p.name, node(c, p.ordinal, { state: 'joining', blocks: 0 }));
  }
  return { ...o, blockPods: pods, metadata: { reachable: true, nodes: [...byId.values()] } };
}
