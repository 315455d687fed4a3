// Reconcile properties over random observed states (fast-check, bounded runs): never more than
// RF − 1 nodes down, never a shrink before the drain is done, one drain at a time, zone
// annotations copied from the pod's node only, idempotent.
import test from 'ava';
import fc from 'fast-check';
import { reconcile, type Observed, type ObservedNode, type ObservedPod } from '../../src/operator/index.js';
import { NEW_IMAGE, OLD_IMAGE, applyActions, cluster, node, pod, worldStep } from './sim.js';

const STATES = ['joining', 'up', 'draining', 'down', 'removed'] as const;

const arbWorld = fc.record({
  rf: fc.integer({ min: 1, max: 4 }),
  want: fc.integer({ min: 1, max: 7 }),
  current: fc.integer({ min: 1, max: 7 }),
  extraPods: fc.integer({ min: 0, max: 1 }),
  pods: fc.array(fc.record({ present: fc.boolean(), ready: fc.boolean(), since: fc.integer({ min: 0, max: 1_000_000 }), newImage: fc.boolean(), nodeName: fc.constantFrom(undefined, 'n-a', 'n-bare', 'n-unknown'), zone: fc.constantFrom(undefined, 'zone-a', '', 'zone-old') }), { minLength: 8, maxLength: 8 }),
  nodes: fc.array(fc.record({ registered: fc.boolean(), state: fc.constantFrom(...STATES), done: fc.boolean(), sole: fc.constantFrom(0, 0, 5), under: fc.constantFrom(0, 0, 3) }), { minLength: 8, maxLength: 8 }),
  reachable: fc.boolean(),
  partition: fc.integer({ min: 0, max: 8 }),
  delay: fc.constantFrom(0, 60, 600),
  newSpecImage: fc.boolean(),
});

type World = typeof arbWorld extends fc.Arbitrary<infer T> ? T : never;

function build(w: World) {
  const c = cluster({ replicationFactor: w.rf, writeQuorum: Math.min(2, w.rf), failoverDelaySeconds: w.delay, blocknodes: { replicas: Math.max(w.want, w.rf), storage: { size: '1Gi' } }, image: { repository: 'ghcr.io/cairn/cairn', tag: w.newSpecImage ? '0.2.0' : '0.1.0' } });
  const blockPods: ObservedPod[] = [];
  const nodes: ObservedNode[] = [];
  for (let i = 0; i < w.current + w.extraPods; i++) {
    const p = w.pods[i]!;
    if (p.present) blockPods.push(pod(c, i, { ready: p.ready, image: p.newImage ? NEW_IMAGE : OLD_IMAGE, ...(p.ready ? {} : { notReadySinceMs: p.since }), ...(p.nodeName !== undefined ? { nodeName: p.nodeName } : {}), ...(p.zone !== undefined ? { zone: p.zone } : {}) }));
    const n = w.nodes[i]!;
    // The metadata service reports a drain done only for a node that was draining (kept if it went down).
    const done = n.done && (n.state === 'draining' || n.state === 'down');
    if (n.registered) nodes.push(node(c, i, { state: n.state, drainDone: done, soleCopies: done ? 0 : n.sole, underReplicatedPartitions: n.under }));
  }
  const o: Observed = {
    nowMs: 1_000_000,
    objects: new Map(),
    secrets: new Set(),
    blockPods,
    missingSinceMs: new Map(Array.from({ length: w.current }, (_, i) => [`demo-blocknode-${i}`, w.pods[i]!.since])),
    blockStatefulSet: { replicas: w.current, partition: Math.min(w.partition, w.current) },
    metadata: w.reachable ? { reachable: true, nodes } : { reachable: false },
    // Kubernetes nodes with a zone label, without one; `n-unknown` is not in the cache yet.
    nodeZones: new Map([['n-a', 'zone-a'], ['n-bare', '']]),
  };
  return { c, o };
}

const down = (o: Observed) => (o.metadata.reachable ? o.metadata.nodes.filter((n) => n.state === 'down').length : 0);
const PARAMS = { numRuns: 400, seed: 20261122 };

test('never more than RF − 1 nodes down because of the operator', (t) => {
  fc.assert(fc.property(arbWorld, (w) => {
    const { c, o } = build(w);
    const after = applyActions(c, o, reconcile(c, o));
    return down(after) <= Math.max(c.spec.replicationFactor - 1, down(o));
  }), PARAMS);
  t.pass();
});

test('the StatefulSet never shrinks before every node above the new size is drained', (t) => {
  fc.assert(fc.property(arbWorld, (w) => {
    const { c, o } = build(w);
    const after = applyActions(c, o, reconcile(c, o));
    const before = o.blockStatefulSet?.replicas ?? 0;
    const now = after.blockStatefulSet?.replicas ?? 0;
    if (now >= before) return true;
    if (!o.metadata.reachable || now < c.spec.replicationFactor) return false;
    // Every ordinal cut off held nothing: never registered, removed, or its drain finished with
    // no sole copies. Several such nodes may go in one pass (they hold nothing, and idempotence
    // needs it); drains themselves start one at a time (the next property).
    for (let i = now; i < before; i++) {
      const n = o.metadata.nodes.find((x) => x.id === `demo-blocknode-${i}`);
      if (n === undefined || n.state === 'removed') continue;
      if (!(n.drainDone && n.soleCopies === 0 && (n.state === 'draining' || n.state === 'down'))) return false;
    }
    return true;
  }), PARAMS);
  t.pass();
});

test('at most one drain at a time', (t) => {
  fc.assert(fc.property(arbWorld, (w) => {
    const { c, o } = build(w);
    const actions = reconcile(c, o);
    const drains = actions.filter((a) => a.kind === 'drain');
    // A drained node the same pass removes has finished: the next drain may start alongside.
    const removed = new Set(actions.flatMap((a) => (a.kind === 'remove' ? [a.nodeId] : [])));
    const draining = o.metadata.reachable ? o.metadata.nodes.filter((n) => n.state === 'draining' && !removed.has(n.id)).length : 0;
    return drains.length === 0 || (drains.length === 1 && draining === 0);
  }), PARAMS);
  t.pass();
});

test('zone annotations copy exactly the known node\'s zone, only onto scheduled pods that differ', (t) => {
  fc.assert(fc.property(arbWorld, (w) => {
    const { c, o } = build(w);
    const annotated = reconcile(c, o).flatMap((a) => (a.kind === 'annotateZone' ? [a] : []));
    const expected = o.blockPods.filter((p) => p.nodeName !== undefined && o.nodeZones?.has(p.nodeName) && o.nodeZones.get(p.nodeName) !== p.zone);
    if (annotated.length !== expected.length) return false;
    return annotated.every((a) => {
      const p = o.blockPods.find((x) => x.name === a.pod);
      return p?.nodeName !== undefined && o.nodeZones?.get(p.nodeName) === a.zone;
    });
  }), PARAMS);
  t.pass();
});

test('idempotent: reconciling the state the actions left yields no actions', (t) => {
  fc.assert(fc.property(arbWorld, (w) => {
    const { c, o } = build(w);
    const after = applyActions(c, o, reconcile(c, o));
    const again = reconcile(c, after);
    if (again.length > 0) throw new Error(`second pass acted: ${JSON.stringify(again.map((a) => (a.kind === 'apply' ? `${a.kind} ${a.object.kind}/${a.object.metadata.name}` : a.kind === 'status' ? a.status.conditions : a)))}`);
    return true;
  }), PARAMS);
  t.pass();
});

test('converges: with pods following the StatefulSet, any size and image is reached without losing a node', (t) => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 3, max: 6 }), fc.integer({ min: 3, max: 6 }), (rf, from, to) => {
    const c0 = cluster({ replicationFactor: rf, blocknodes: { replicas: from, storage: { size: '1Gi' } }, image: { repository: 'ghcr.io/cairn/cairn', tag: '0.1.0' } });
    let o: Observed = { nowMs: 0, objects: new Map(), secrets: new Set(), blockPods: [], metadata: { reachable: true, nodes: [] } };
    for (let i = 0; i < 30; i++) o = worldStep(c0, applyActions(c0, o, reconcile(c0, o)), OLD_IMAGE);
    const c1 = cluster({ replicationFactor: rf, blocknodes: { replicas: to, storage: { size: '1Gi' } } }, 2);
    for (let i = 0; i < 40; i++) o = worldStep(c1, applyActions(c1, o, reconcile(c1, o)), OLD_IMAGE);
    if (reconcile(c1, o).length > 0) return false;
    const up = o.metadata.reachable ? o.metadata.nodes.filter((n) => n.state === 'up').length : 0;
    return o.blockPods.length === to && up === to && o.blockPods.every((p) => p.image === NEW_IMAGE) && o.status?.conditions.find((x) => x.type === 'Ready')?.status === 'True';
  }), { numRuns: 60, seed: 20261122 });
  t.pass();
});
