// A block-node pod down for longer than failoverDelay: the node is marked down and its blocks are
// re-replicated from the surviving copies; the pod, replaced with an empty volume, registers under
// a new incarnation, is admitted by the operator, and every acknowledged file reads back at RF.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { FULL, atRf, settled, unreadable, waitFor, world, type Written } from './k8s-harness.js';

test('a pod down past failoverDelay: marked down, re-replicated, replaced with an empty volume, rejoins under a new incarnation', async (t) => {
  t.timeout(FULL ? 600_000 : 175_000);
  // The metadata service's own failure detector waits far longer: the operator marks the node down.
  const w = await world(t, { rf: 2, failoverDelaySeconds: 30, detectorDelaySeconds: 3600 });
  w.operator('op-a');
  w.createCluster({ replicationFactor: 2, writeQuorum: 2, failoverDelaySeconds: 30, blocknodes: { replicas: 3, storage: { size: '1Gi' } } });
  // The gateway starts while the block nodes come up (it needs only the metadata service).
  const gateway = w.gateway();
  gateway.catch(() => {});
  await settled(w, 3);
  const client = await gateway;
  const files: Written[] = [];
  for (let i = 0; i < (FULL ? 60 : 12); i++) {
    const data = randomBytes(96 * 1024 + i * 1024);
    const info = await client.putStream(Readable.from([data]), `/failover/f${i}.bin`, { size: data.length });
    files.push({ path: `/failover/f${i}.bin`, data, chunks: info.chunkCount });
  }
  await waitFor('every chunk at RF 2', () => atRf(w, files, 2), 60_000, 500);
  const victim = 'demo-blocknode-1';
  const before = (await w.nodes()).find((n) => n.id === victim)!;

  await w.kubelet.fail(victim);
  await waitFor('the pod reported NotReady', async () => {
    const conditions = (w.api.get('pods', 'store', victim)?.['status'] as { conditions?: { type: string; status: string }[] } | undefined)?.conditions ?? [];
    return conditions.some((c) => c.type === 'Ready' && c.status === 'False');
  });
  await waitFor(`${victim} marked down after failoverDelay`, async () => (await w.nodes()).find((n) => n.id === victim)?.state === 'down', 90_000, 500);
  await waitFor('Degraded reported', async () => w.condition('Degraded')?.status === 'True', 20_000);
  // Re-replication from the surviving copies: both survivors end up with every chunk.
  const chunks = files.reduce((s, f) => s + f.chunks, 0);
  await waitFor(
    're-replication onto the surviving nodes',
    async () => (await w.nodes()).filter((n) => n.state === 'up').reduce((s, n) => s + (n.stats?.blocks ?? 0), 0) === 2 * chunks,
    90_000,
    500,
  );
  t.deepEqual(await unreadable(client, files), [], 'readable while the node is down');

  // The node and its disk are gone for good: a new pod with an empty volume takes the name.
  await w.kubelet.lose(victim);
  await settled(w, 3, 120_000);
  const after = (await w.nodes()).find((n) => n.id === victim)!;
  t.not(after.incarnation, before.incarnation);
  t.is(after.state, 'up');
  t.deepEqual(await unreadable(client, files), []);
  await waitFor('every chunk back at RF 2 on three nodes', () => atRf(w, files, 2), 90_000, 500);
  const reasons = w.api.list('events', 'store').map((e) => `${String(e['reason'])}: ${String(e['note'])}`);
  t.true(reasons.some((r) => r.startsWith('NodeMarkedDown') && r.includes(victim)), reasons.join('\n'));
  t.true(reasons.some((r) => r.startsWith('NodeAdmitted') && r.includes(victim)), reasons.join('\n'));
});
