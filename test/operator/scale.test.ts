// Scale 3 → 5 → 3 under writes, driven by the real operator main loop through client-node against
// the fake API server, with real block-node processes: new pods are admitted once Ready, scale-down
// drains the highest ordinal and shrinks only when drained, and every acknowledged file is still
// readable with every chunk back at RF.
import test from 'ava';
import { FULL, atRf, settled, stepper, unreadable, waitFor, world, writer } from './k8s-harness.js';

test('scale 3 → 5 → 3 under writes: admitted when Ready, drained before shrinking, nothing lost', async (t) => {
  t.timeout(FULL ? 600_000 : 170_000);
  const step = stepper(t);
  const w = await world(t, { rf: 3 });
  step('world up');
  w.operator('op-a');
  w.createCluster({ blocknodes: { replicas: 3, storage: { size: '1Gi' } } });
  // The gateway starts while the block nodes come up (it needs only the metadata service).
  const gateway = w.gateway();
  gateway.catch(() => {});
  await settled(w, 3);
  step('three nodes settled');
  t.deepEqual(w.api.get('cairnclusters', 'store', 'demo')?.metadata.finalizers, ['cairn.dev/cleanup']);
  const client = await gateway;
  const load = writer(client, '/scale');
  await waitFor('some acknowledged writes', async () => load.acked.length >= 5);

  w.patchSpec({ blocknodes: { replicas: 5, storage: { size: '1Gi' } } });
  await settled(w, 5);
  step('five nodes settled');
  const five = (await w.nodes()).filter((n) => n.state === 'up').map((n) => n.id).sort();
  t.deepEqual(five, [0, 1, 2, 3, 4].map((i) => `demo-blocknode-${i}`));
  if (FULL) await waitFor('more writes on five nodes', async () => load.acked.length >= 60, 120_000);

  // Watch the StatefulSet while scaling down: it must never shrink past a node the metadata
  // service has not removed from the map (RemoveNode needs a finished drain with no sole copies).
  const violations: string[] = [];
  const stop = w.api.subscribe((type, plural, obj) => {
    if (plural !== 'statefulsets' || obj.metadata.name !== 'demo-blocknode' || type !== 'MODIFIED') return;
    const replicas = (obj['spec'] as { replicas: number }).replicas;
    void w.nodes().then((nodes) => {
      for (const n of nodes) {
        const ordinal = Number(/-(\d+)$/.exec(n.id)?.[1]);
        if (ordinal >= replicas && n.state !== 'removed') violations.push(`StatefulSet at ${replicas} while ${n.id} is ${n.state}`);
      }
    });
  });
  w.patchSpec({ blocknodes: { replicas: 3, storage: { size: '1Gi' } } });
  step('scaling down');
  await waitFor('demo-blocknode-4 draining', async () => (await w.nodes()).some((n) => n.id === 'demo-blocknode-4' && (n.state === 'draining' || n.state === 'removed')), 60_000);
  step('demo-blocknode-4 draining');
  await settled(w, 3, 150_000);
  step('three nodes settled again');
  stop();
  await load.stop();
  t.deepEqual(violations, []);
  const nodes = await w.nodes();
  t.deepEqual(nodes.filter((n) => n.state === 'removed').map((n) => n.id).sort(), ['demo-blocknode-3', 'demo-blocknode-4']);
  // The removed pods' processes finish their graceful shutdown; their PVCs go with them
  // (whenScaled: Delete): the nodes were drained first.
  await waitFor('only three block-node processes left', async () => w.kubelet.running().join() === 'demo-blocknode-0,demo-blocknode-1,demo-blocknode-2', 30_000);
  await waitFor('only three PVCs left', async () => w.api.list('persistentvolumeclaims', 'store').map((p) => p.metadata.name).join() === 'data-demo-blocknode-0,data-demo-blocknode-1,data-demo-blocknode-2', 30_000);
  t.log(`${load.acked.length} files acknowledged, ${load.failures} writes failed during the scaling`);
  t.true(load.acked.length >= 5);
  t.deepEqual(await unreadable(client, load.acked), []);
  step('all files read back');
  await waitFor('every chunk back at RF 3 on three nodes', () => atRf(w, load.acked, 3), 60_000, 500);
  step('at RF');
  // The operator recorded what it did.
  const reasons = new Set(w.api.list('events', 'store').map((e) => e['reason']));
  for (const r of ['NodeAdmitted', 'NodeDraining', 'NodeRemoved', 'Scaled']) t.true(reasons.has(r), r);
});
