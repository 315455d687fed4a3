// A rolling upgrade of the block nodes through the StatefulSet partition: one pod at a time from
// the highest ordinal, the next only when the restarted one is Ready and nothing is
// under-replicated; files written before and during the roll read back and every chunk is at RF.
import test from 'ava';
import { FULL, atRf, settled, stepper, unreadable, waitFor, world, writer } from './k8s-harness.js';

test('a rolling upgrade restarts one block node at a time, highest ordinal first, and loses nothing', async (t) => {
  t.timeout(FULL ? 600_000 : 175_000);
  const step = stepper(t);
  const w = await world(t, { rf: 3 });
  w.operator('op-a');
  w.createCluster({ image: { repository: 'ghcr.io/cairn-dev/cairn', tag: '0.1.0' } });
  // The gateway starts while the block nodes come up (it needs only the metadata service).
  const gateway = w.gateway();
  gateway.catch(() => {});
  await settled(w, 3);
  step('three nodes settled');
  const client = await gateway;
  const load = writer(client, '/upgrade');
  await waitFor('some acknowledged writes', async () => load.acked.length >= 3);
  // The short run rolls a quiet cluster (every restart then costs only the process start); the
  // full run keeps writing, so restarts leave partitions under-replicated and the gate must wait.
  if (!FULL) await load.stop();
  const from = w.kubelet.readiness.length;
  // Partition values the operator wrote, in order.
  const partitions: number[] = [];
  const stop = w.api.subscribe((type, plural, obj) => {
    if (plural !== 'statefulsets' || obj.metadata.name !== 'demo-blocknode') return;
    const p = (obj['spec'] as { updateStrategy: { rollingUpdate: { partition: number } } }).updateStrategy.rollingUpdate.partition;
    if (partitions[partitions.length - 1] !== p) {
      partitions.push(p);
      step(`partition ${p}`);
    }
  });

  w.patchSpec({ image: { repository: 'ghcr.io/cairn-dev/cairn', tag: '0.2.0' } });
  step('image changed');
  await waitFor(
    'every block-node pod on 0.2.0',
    async () => [0, 1, 2].every((i) => JSON.stringify(w.api.get('pods', 'store', `demo-blocknode-${i}`)?.['spec']).includes('cairn:0.2.0')),
    150_000,
    500,
  );
  step('every pod on the new image');
  await settled(w, 3);
  step('settled');
  stop();
  await load.stop();
  t.is(w.condition('Upgrading')?.reason, 'UpToDate');
  // The partition walked down one ordinal at a time (from 3 if it first held for replicas).
  const steps = partitions.filter((p, i) => !(i === 0 && p === 0));
  t.true(steps[0] === 3 || steps[0] === 2, partitions.join());
  t.deepEqual(steps.slice(steps.indexOf(2)), [2, 1, 0], partitions.join());
  // Never two block-node pods NotReady at once, and they restarted highest ordinal first.
  const transitions = w.kubelet.readiness.slice(from);
  const down = new Set<string>();
  let most = 0;
  const order: string[] = [];
  for (const r of transitions) {
    if (r.ready) down.delete(r.pod);
    else {
      down.add(r.pod);
      if (!order.includes(r.pod)) order.push(r.pod);
    }
    most = Math.max(most, down.size);
  }
  t.is(most, 1);
  t.deepEqual(order, ['demo-blocknode-2', 'demo-blocknode-1', 'demo-blocknode-0']);
  t.log(`${load.acked.length} files acknowledged, ${load.failures} writes failed during the roll`);
  t.deepEqual(await unreadable(client, load.acked), []);
  await waitFor('every chunk at RF 3', () => atRf(w, load.acked, 3), 60_000, 500);
  const notes = w.api.list('events', 'store').filter((e) => e['reason'] === 'UpgradeStep').map((e) => String(e['note']));
  for (const want of ['partition 2 → 1', 'partition 1 → 0']) t.true(notes.some((n) => n.endsWith(want)), notes.join('\n'));
});
