// Reconcile table tests: objects from scratch, scale up and admission, drain-gated scale-down,
// failover within RF − 1, upgrades one safe node at a time, status; rendered objects validate.
import test from 'ava';
import { reconcile, type Action, type KubeObject, type Observed } from '../../src/operator/index.js';
import { validateKubeObject } from '../chart/validate.js';
import { OLD_IMAGE, applyActions, cluster, node, pod, steady, worldStep } from './sim.js';

const applied = (as: readonly Action[], kind: string, name: string): KubeObject | undefined =>
  as.flatMap((a) => (a.kind === 'apply' && a.object.kind === kind && a.object.metadata.name === name ? [a.object] : []))[0];
const stsReplicas = (o: KubeObject | undefined) => (o?.['spec'] as { replicas: number } | undefined)?.replicas;
const stsPartition = (o: KubeObject | undefined) => (o?.['spec'] as { updateStrategy: { rollingUpdate: { partition: number } } } | undefined)?.updateStrategy.rollingUpdate.partition;
const admin = (as: readonly Action[]) => as.filter((a) => a.kind !== 'apply' && a.kind !== 'status' && a.kind !== 'ensureSecret');
const condition = (as: readonly Action[], type: string) => as.flatMap((a) => (a.kind === 'status' ? a.status.conditions.filter((c) => c.type === type) : []))[0];

/** Settle: apply reconcile's actions once, so the next pass sees what the operator wrote. */
function settled(c: ReturnType<typeof cluster>, o: Observed): Observed {
  return applyActions(c, o, reconcile(c, o));
}

test('a new cluster gets its secret, every object and a status; all validate against the Kubernetes schemas', async (t) => {
  const c = cluster();
  const o: Observed = { nowMs: 0, objects: new Map(), secrets: new Set(), blockPods: [], metadata: { reachable: false } };
  const actions = reconcile(c, o);
  t.deepEqual(actions.slice(0, 2), [
    { kind: 'ensureSecret', name: 'demo-auth', key: 'auth.key', bytes: 32, encoding: 'base64url' },
    { kind: 'ensureSecret', name: 'demo-master', key: 'master.key', bytes: 32, encoding: 'base64url' },
  ]);
  t.regex(JSON.stringify(applied(actions, 'Deployment', 'demo-gateway')), /"CAIRN_MASTER_KEY_FILE"/);
  const objects = actions.flatMap((a) => (a.kind === 'apply' ? [a.object] : []));
  t.deepEqual(objects.map((x) => `${x.kind}/${x.metadata.name}`).sort(), [
    'ConfigMap/demo-config', 'Deployment/demo-gateway', 'PodDisruptionBudget/demo-blocknode', 'PodDisruptionBudget/demo-gateway',
    'Service/demo-blocknode', 'Service/demo-gateway', 'Service/demo-metadata', 'StatefulSet/demo-blocknode', 'StatefulSet/demo-metadata',
  ]);
  for (const x of objects) await t.notThrowsAsync(validateKubeObject(x), `${x.kind}/${x.metadata.name}`);
  t.is(stsReplicas(applied(actions, 'StatefulSet', 'demo-blocknode')), 3);
  t.is(condition(actions, 'Ready')?.status, 'Unknown');
});

test('postgres metadata runs as a Deployment reading its URL from the Secret; media gets a Deployment', async (t) => {
  const c = cluster({ metadata: { backend: 'postgres', replicas: 3, postgres: { secretRef: { name: 'pg', key: 'url' } } }, media: { replicas: 2 }, tls: { secretName: 'demo-tls' } });
  const actions = reconcile(c, steady(c, 3));
  const md = applied(actions, 'Deployment', 'demo-metadata');
  t.truthy(md);
  t.regex(JSON.stringify(md), /"secretKeyRef":\{"name":"pg","key":"url"\}/);
  t.regex(JSON.stringify(md), /CAIRN_TLS_CERT/);
  t.truthy(applied(actions, 'Deployment', 'demo-media'));
  for (const a of actions) if (a.kind === 'apply') await t.notThrowsAsync(validateKubeObject(a.object), a.object.metadata.name);
});

test('a settled cluster yields no actions', (t) => {
  const c = cluster();
  const o = settled(c, steady(c, 3));
  t.deepEqual(reconcile(c, o), []);
  t.is(condition(reconcile(c, steady(c, 3)), 'Ready')?.status, 'True');
});

test('scale-up grows the StatefulSet at once and admits a pod once Ready and registered', (t) => {
  const c3 = cluster();
  const c5 = cluster({ blocknodes: { replicas: 5, storage: { size: '10Gi' } } }, 2);
  let o = settled(c3, steady(c3, 3));
  let actions = reconcile(c5, o);
  t.is(stsReplicas(applied(actions, 'StatefulSet', 'demo-blocknode')), 5);
  t.is(condition(actions, 'Progressing')?.status, 'True');
  o = applyActions(c5, o, actions);
  // Pod 3 Ready and registered, pod 4 registered but not Ready yet.
  o = { ...o, blockPods: [...o.blockPods, pod(c5, 3), pod(c5, 4, { ready: false, notReadySinceMs: o.nowMs })], metadata: { reachable: true, nodes: [...(o.metadata.reachable ? o.metadata.nodes : []), node(c5, 3, { state: 'joining' }), node(c5, 4, { state: 'joining' })] } };
  actions = reconcile(c5, o);
  t.deepEqual(admin(actions), [{ kind: 'admit', nodeId: 'demo-blocknode-3' }]);
});

test('scale-down below the replication factor is refused with ScaleDownBlocked', (t) => {
  const c = cluster({ blocknodes: { replicas: 2, storage: { size: '10Gi' } } });
  const o = steady(c, 3);
  const actions = reconcile(c, o);
  t.is(stsReplicas(applied(actions, 'StatefulSet', 'demo-blocknode')), 3);
  t.deepEqual(admin(actions), []);
  t.like(condition(actions, 'ScaleDownBlocked'), { status: 'True', reason: 'BelowReplicationFactor' });
});

test('scale-down drains the highest ordinal, holds while it has sole copies, then shrinks and removes it', (t) => {
  const c = cluster({ blocknodes: { replicas: 3, storage: { size: '10Gi' } } });
  let o = steady(c, 4);
  let actions = reconcile(c, o);
  t.deepEqual(admin(actions), [{ kind: 'drain', nodeId: 'demo-blocknode-3' }]);
  t.is(stsReplicas(applied(actions, 'StatefulSet', 'demo-blocknode')), 4);
  o = applyActions(c, o, actions);
  t.deepEqual(reconcile(c, o), []);
  // Still sole copies: hold.
  const withDrain = (done: boolean, sole: number): Observed => ({ ...o, metadata: { reachable: true, nodes: (o.metadata.reachable ? o.metadata.nodes : []).map((n) => (n.id === 'demo-blocknode-3' ? { ...n, drainDone: done, soleCopies: sole } : n)) } });
  t.is(stsReplicas(applied(reconcile(c, withDrain(false, 12)), 'StatefulSet', 'demo-blocknode')), undefined);
  // Unknown metadata: hold.
  const unreachable: Observed = { ...o, metadata: { reachable: false } };
  t.deepEqual(admin(reconcile(c, unreachable)), []);
  t.is(stsReplicas(applied(reconcile(c, unreachable), 'StatefulSet', 'demo-blocknode')), undefined);
  // Done: shrink and remove, together.
  actions = reconcile(c, withDrain(true, 0));
  t.is(stsReplicas(applied(actions, 'StatefulSet', 'demo-blocknode')), 3);
  t.deepEqual(admin(actions), [{ kind: 'remove', nodeId: 'demo-blocknode-3' }]);
});

test('scale-down 5 → 3 drains one node at a time and waits for the removed pod to go', (t) => {
  const c = cluster();
  const c5 = cluster({ blocknodes: { replicas: 5, storage: { size: '10Gi' } } });
  let o = settled(c5, steady(c5, 5));
  const drained: string[] = [];
  for (let i = 0; i < 20; i++) {
    const actions = reconcile(c, o);
    for (const a of actions) if (a.kind === 'drain') drained.push(a.nodeId);
    const draining = o.metadata.reachable ? o.metadata.nodes.filter((n) => n.state === 'draining').length : 0;
    t.true(draining <= 1);
    o = worldStep(c, applyActions(c, o, actions), OLD_IMAGE);
  }
  t.deepEqual(drained, ['demo-blocknode-4', 'demo-blocknode-3']);
  t.is(o.blockStatefulSet?.replicas, 3);
  t.is(o.blockPods.length, 3);
  t.deepEqual(reconcile(c, o), []);
});

test('failover marks a pod NotReady longer than failoverDelay down, never more than RF − 1 in all', (t) => {
  const c = cluster({ replicationFactor: 2, failoverDelaySeconds: 60, blocknodes: { replicas: 4, storage: { size: '10Gi' } } });
  const base = steady(c, 4, 1_000_000);
  const o: Observed = { ...base, blockPods: [pod(c, 0, { ready: false, notReadySinceMs: 900_000 }), pod(c, 1, { ready: false, notReadySinceMs: 900_000 }), pod(c, 2, { ready: false, notReadySinceMs: 990_000 }), pod(c, 3)] };
  const actions = reconcile(c, o);
  t.deepEqual(admin(actions), [{ kind: 'markDown', nodeId: 'demo-blocknode-0' }]);
  t.like(condition(actions, 'Degraded'), { status: 'True', reason: 'NodesDown' });
  // The PDB allows no voluntary disruption while a node is down.
  t.is((applied(actions, 'PodDisruptionBudget', 'demo-blocknode')?.['spec'] as { maxUnavailable: number }).maxUnavailable, 0);
  t.deepEqual(admin(reconcile(c, applyActions(c, o, actions))), []);
  // A missing pod counts from when it vanished.
  const missing: Observed = { ...base, blockPods: base.blockPods.filter((p) => p.ordinal !== 3), missingSinceMs: new Map([['demo-blocknode-3', 100]]) };
  t.deepEqual(admin(reconcile(c, missing)), [{ kind: 'markDown', nodeId: 'demo-blocknode-3' }]);
});

test('an upgrade rolls one block node at a time, from the top, only while every block has its copies', (t) => {
  const c = cluster();
  let o: Observed = settled(c, { ...steady(c, 3), blockPods: [0, 1, 2].map((i) => pod(c, i, { image: OLD_IMAGE })) });
  t.is(o.blockStatefulSet?.partition, 2);
  t.like(o.status?.conditions.find((x) => x.type === 'Upgrading'), { status: 'True', reason: 'Rolling' });
  // Under-replicated somewhere: hold at the current partition.
  const unhealthy: Observed = { ...o, blockPods: [pod(c, 0, { image: OLD_IMAGE }), pod(c, 1, { image: OLD_IMAGE }), pod(c, 2)], metadata: { reachable: true, nodes: [node(c, 0, { underReplicatedPartitions: 4 }), node(c, 1), node(c, 2)] } };
  t.is(stsPartition(applied(reconcile(c, unhealthy), 'StatefulSet', 'demo-blocknode')), undefined);
  t.like(condition(reconcile(c, unhealthy), 'Upgrading'), { reason: 'WaitingForReplicas' });
  const partitions: number[] = [];
  for (let i = 0; i < 10; i++) {
    const actions = reconcile(c, o);
    const p = stsPartition(applied(actions, 'StatefulSet', 'demo-blocknode'));
    if (p !== undefined) partitions.push(p);
    o = worldStep(c, applyActions(c, o, actions), OLD_IMAGE);
  }
  t.deepEqual(partitions, [1, 0]);
  t.true(o.blockPods.every((p) => p.image === 'ghcr.io/cairn/cairn:0.2.0'));
  t.like(o.status?.conditions.find((x) => x.type === 'Upgrading'), { status: 'False' });
});

test('a paused upgrade keeps the partition', (t) => {
  const c = cluster({ upgrade: { paused: true } });
  const o: Observed = { ...steady(c, 3), blockPods: [0, 1, 2].map((i) => pod(c, i, { image: OLD_IMAGE })) };
  const actions = reconcile(c, o);
  t.is(stsPartition(applied(actions, 'StatefulSet', 'demo-blocknode')), 3);
  t.like(condition(actions, 'Upgrading'), { status: 'True', reason: 'Paused' });
});

test('a cluster being deleted gets no actions (owner references collect its objects)', (t) => {
  const c = cluster();
  t.deepEqual(reconcile({ ...c, metadata: { ...c.metadata, deletionTimestamp: '2026-01-01T00:00:00Z' } }, steady(c, 3)), []);
});

test('block nodes spread over the topology key, avoid sharing a host and stay in the listed zones', async (t) => {
  const c = cluster({ blocknodes: { replicas: 3, storage: { size: '10Gi', storageClassName: 'fast' }, zones: ['a', 'b'], topologyKey: 'example.com/rack' }, volumeReclaimPolicy: 'Delete' });
  const sts = applied(reconcile(c, steady(c, 3)), 'StatefulSet', 'demo-blocknode');
  await t.notThrowsAsync(validateKubeObject(sts!));
  const spec = sts?.['spec'] as { persistentVolumeClaimRetentionPolicy: unknown; volumeClaimTemplates: { spec: { storageClassName: string } }[]; template: { spec: { affinity: { nodeAffinity: unknown; podAntiAffinity: unknown }; topologySpreadConstraints: { topologyKey: string }[] } } };
  t.is(spec.template.spec.topologySpreadConstraints[0]?.topologyKey, 'example.com/rack');
  t.regex(JSON.stringify(spec.template.spec.affinity.nodeAffinity), /"key":"example.com\/rack","operator":"In","values":\["a","b"\]/);
  t.regex(JSON.stringify(spec.template.spec.affinity.podAntiAffinity), /kubernetes.io\/hostname/);
  t.is(spec.volumeClaimTemplates[0]?.spec.storageClassName, 'fast');
  t.deepEqual(spec.persistentVolumeClaimRetentionPolicy, { whenDeleted: 'Delete', whenScaled: 'Delete' });
});

test('block-node pods wait for their zone annotation and read it through the downward API; every container is restricted', (t) => {
  const c = cluster({ metadata: { backend: 'postgres', replicas: 2, postgres: { secretRef: { name: 'pg', key: 'url' } } }, media: { replicas: 1 } });
  const actions = reconcile(c, steady(c, 3));
  type Pod = { initContainers?: { name: string; command: string[]; env: { name: string; value: string }[]; volumeMounts: { name: string; mountPath: string }[] }[]; containers: { env: { name: string; valueFrom?: unknown }[] }[]; volumes: { name: string; downwardAPI?: unknown }[]; automountServiceAccountToken: boolean };
  const pod = (applied(actions, 'StatefulSet', 'demo-blocknode')?.['spec'] as { template: { spec: Pod } }).template.spec;
  const init = pod.initContainers?.find((x) => x.name === 'zone');
  t.is(init?.command[0], 'node');
  t.true(init?.command[2]?.includes("'cairn.dev/zone='"));
  t.deepEqual(pod.volumes.find((v) => v.name === 'podinfo')?.downwardAPI, { items: [{ path: 'annotations', fieldRef: { fieldPath: 'metadata.annotations' } }] });
  t.deepEqual(init?.env, [{ name: 'CAIRN_PODINFO_FILE', value: '/etc/cairn/podinfo/annotations' }]);
  t.deepEqual(pod.containers[0]?.env.find((e) => e.name === 'CAIRN_ZONE')?.valueFrom, { fieldRef: { fieldPath: "metadata.annotations['cairn.dev/zone']" } });
  // The pods hold no API credentials: the operator alone reads Nodes.
  t.false(pod.automountServiceAccountToken);
  const workloads = actions.flatMap((a) => (a.kind === 'apply' && (a.object.kind === 'StatefulSet' || a.object.kind === 'Deployment') ? [a.object] : []));
  t.is(workloads.length, 4);
  for (const w of workloads) {
    const spec = (w['spec'] as { template: { spec: { securityContext: unknown; containers: { securityContext: unknown }[]; initContainers?: { securityContext: unknown }[] } } }).template.spec;
    t.like(spec.securityContext, { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    for (const x of [...spec.containers, ...(spec.initContainers ?? [])]) t.like(x.securityContext, { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ['ALL'] } }, w.metadata.name);
  }
});

test('regression: a pod the rolling upgrade deleted and the StatefulSet has not recreated yet does not raise the partition', (t) => {
  const c = cluster();
  // Upgrading 0.1.0 → 0.2.0: pod 2 done, the partition at 1 let pod 1 go, which is gone for a moment.
  const base = steady(c, 3);
  const o = {
    ...base,
    blockPods: [pod(c, 0, { image: OLD_IMAGE }), pod(c, 2)],
    missingSinceMs: new Map([['demo-blocknode-1', base.nowMs]]),
    blockStatefulSet: { replicas: 3, partition: 1 },
    metadata: { reachable: true as const, nodes: [node(c, 0), node(c, 1, { underReplicatedPartitions: 4 }), node(c, 2)] },
  };
  const actions = reconcile(c, o);
  const sts = applied(actions, 'StatefulSet', 'demo-blocknode');
  t.is(sts === undefined ? 1 : stsPartition(sts), 1);
  t.like(condition(actions, 'Upgrading'), { status: 'True', reason: 'Rolling' });
});

test('rack awareness: a scheduled pod gets its node\'s zone annotation once; unscheduled pods and unknown nodes wait', (t) => {
  const c = cluster();
  const base = settled(c, steady(c, 3));
  const o: Observed = {
    ...base,
    blockPods: [pod(c, 0, { nodeName: 'n-a' }), pod(c, 1, { nodeName: 'n-b', zone: 'zone-b' }), pod(c, 2, { nodeName: 'n-unknown' })],
    nodeZones: new Map([['n-a', 'zone-a'], ['n-b', 'zone-b'], ['n-bare', '']]),
  };
  t.deepEqual(reconcile(c, o).filter((a) => a.kind === 'annotateZone'), [{ kind: 'annotateZone', pod: 'demo-blocknode-0', zone: 'zone-a' }]);
  // A relabelled node: the annotation follows; a node without the label: an empty zone.
  const moved: Observed = { ...o, blockPods: [pod(c, 0, { nodeName: 'n-a', zone: 'zone-x' }), pod(c, 1, { nodeName: 'n-bare' }), pod(c, 2, { nodeName: 'n-b', zone: 'zone-b' })] };
  t.deepEqual(reconcile(c, moved).filter((a) => a.kind === 'annotateZone'), [
    { kind: 'annotateZone', pod: 'demo-blocknode-0', zone: 'zone-a' },
    { kind: 'annotateZone', pod: 'demo-blocknode-1', zone: '' },
  ]);
  // Idempotent: with the annotations written, nothing more to do.
  const after = applyActions(c, moved, reconcile(c, moved));
  t.deepEqual(reconcile(c, after), []);
});

test('regression (found by the idempotence property): a drained down node removed in this pass does not hold the failover budget', (t) => {
  // RF 2, size 2 wanted of 3: pod 2's node is down with its drain done (it is removed now), pod
  // 1 has been missing past failoverDelay. The same pass removes 2 and marks 1 down, so the next
  // pass has nothing left to do.
  const c = cluster({ replicationFactor: 2, writeQuorum: 2, failoverDelaySeconds: 30, blocknodes: { replicas: 2, storage: { size: '1Gi' } } });
  const base = settled(c, steady(c, 3));
  const o: Observed = {
    ...base,
    blockPods: [pod(c, 0)],
    missingSinceMs: new Map([['demo-blocknode-1', 0]]),
    metadata: { reachable: true, nodes: [node(c, 0), node(c, 1), node(c, 2, { state: 'down', drainDone: true, soleCopies: 0 })] },
  };
  const first = reconcile(c, o);
  t.deepEqual(admin(first), [{ kind: 'markDown', nodeId: 'demo-blocknode-1' }, { kind: 'remove', nodeId: 'demo-blocknode-2' }]);
  t.is(stsReplicas(applied(first, 'StatefulSet', 'demo-blocknode')), 2);
  t.deepEqual(admin(reconcile(c, applyActions(c, o, first))), []);
});

test('regression (found by the idempotence property): a drained node removed in this pass does not block the next drain', (t) => {
  // Size 1 wanted of 4, no pods left above it: node 3 finished draining (removed now), node 2 is
  // next — drained in the same pass, as the next pass would decide.
  const c = cluster({ replicationFactor: 1, writeQuorum: 1, blocknodes: { replicas: 1, storage: { size: '1Gi' } } });
  const o: Observed = {
    ...settled(c, steady(c, 4)),
    blockPods: [pod(c, 0)],
    metadata: { reachable: true, nodes: [node(c, 0), node(c, 2, { state: 'joining' }), node(c, 3, { state: 'draining', drainDone: true, soleCopies: 0 })] },
  };
  const first = reconcile(c, o);
  t.deepEqual(admin(first), [{ kind: 'remove', nodeId: 'demo-blocknode-3' }, { kind: 'drain', nodeId: 'demo-blocknode-2' }]);
  t.is(stsReplicas(applied(first, 'StatefulSet', 'demo-blocknode')), 3);
  t.deepEqual(admin(reconcile(c, applyActions(c, o, first))), []);
});
