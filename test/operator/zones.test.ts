// Rack awareness on Kubernetes: six nodes in three zones (the `topology.kubernetes.io/zone`
// label), four block-node pods scheduled across them. The operator copies each pod's node zone
// onto the pod; the pod's zone init container waits for it and the block node registers with it;
// the cluster map then carries the zones and puts every partition's three replicas in three zones;
// a pod lost with its volume comes back on a node of its own and registers in that node's zone.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { atRf, settled, unreadable, waitFor, world, NAME, NS, type Written } from './k8s-harness.js';

const ZONE = 'topology.kubernetes.io/zone';
const NODES = ['a', 'b', 'c'].flatMap((z) => [1, 2].map((i) => ({ name: `node-${z}${i}`, labels: { [ZONE]: `zone-${z}` } })));

test('block nodes register with their Kubernetes node zone and the map spreads every partition across zones', async (t) => {
  t.timeout(175_000);
  const w = await world(t, { rf: 3, nodes: NODES });
  w.operator('op-a');
  w.createCluster({ replicationFactor: 3, writeQuorum: 2, blocknodes: { replicas: 4, storage: { size: '1Gi' } } });
  const gateway = w.gateway();
  gateway.catch(() => {});
  await settled(w, 4);

  // The scheduler spread the pods over the zones; the operator annotated each with its node's zone.
  const zoneOfNode = new Map(NODES.map((n) => [n.name, n.labels[ZONE]]));
  const podZone = new Map<string, string>();
  for (let i = 0; i < 4; i++) {
    const pod = w.api.get('pods', NS, `${NAME}-blocknode-${i}`)!;
    const nodeName = (pod['spec'] as { nodeName?: string }).nodeName;
    t.truthy(nodeName, `${pod.metadata.name} is scheduled`);
    t.is(pod.metadata.annotations?.['cairn.dev/zone'], zoneOfNode.get(nodeName!), `${pod.metadata.name} carries its node's zone`);
    podZone.set(pod.metadata.name, zoneOfNode.get(nodeName!)!);
  }
  t.deepEqual(new Set(podZone.values()), new Set(['zone-a', 'zone-b', 'zone-c']), 'topology spread put pods in every zone');

  // The cluster map: every node carries its pod's zone; every partition spans three zones.
  const nodes = (await w.nodes()).filter((n) => n.state !== 'removed');
  t.is(nodes.length, 4);
  for (const n of nodes) t.is(n.zone, podZone.get(n.id) ?? '(no pod)', `${n.id} registered in its node's zone`);
  const { map } = await w.admin.getClusterMap();
  const zoneOf = new Map(map.nodes.map((n) => [n.id, n.zone]));
  const spread = map.partitions.filter((replicas) => new Set(replicas.map((id) => zoneOf.get(id))).size === 3).length;
  t.is(map.partitions.length, 4096);
  t.is(spread, map.partitions.length, 'every partition has its three replicas in three distinct zones');
  // Both nodes of the doubled zone carry partitions (zone-aware, yet still balanced by weight).
  const doubled = [...podZone].filter(([, z]) => [...podZone.values()].filter((x) => x === z).length === 2).map(([id]) => id);
  t.is(doubled.length, 2);
  for (const id of doubled) t.true(map.partitions.some((r) => r.includes(id)), `${id} owns partitions`);

  // Data written through a gateway lands at RF and reads back.
  const client = await gateway;
  const files: Written[] = [];
  for (let i = 0; i < 6; i++) {
    const data = randomBytes(80 * 1024 + i * 512);
    const info = await client.putStream(Readable.from([data]), `/zones/f${i}.bin`, { size: data.length });
    files.push({ path: `/zones/f${i}.bin`, data, chunks: info.chunkCount });
  }
  await waitFor('every chunk at RF 3', () => atRf(w, files, 3), 60_000, 500);
  t.deepEqual(await unreadable(client, files), []);
  const reasons = w.api.list('events', NS).map((e) => `${String(e['reason'])}: ${String(e['note'])}`);
  t.true(reasons.some((r) => r.startsWith('ZoneAssigned') && r.includes('zone-')), reasons.join('\n'));

  // A pod lost with its volume: the replacement is scheduled anew, annotated with its new node's
  // zone, and registers under a new incarnation in that zone; placement still spans three zones.
  const victim = `${NAME}-blocknode-3`;
  const before = (await w.nodes()).find((n) => n.id === victim)!;
  await w.kubelet.lose(victim);
  await waitFor(`${victim} registered again under a new incarnation`, async () => (await w.nodes()).some((n) => n.id === victim && n.incarnation !== before.incarnation && n.state === 'up'), 90_000, 250);
  await settled(w, 4);
  const replaced = w.api.get('pods', NS, victim)!;
  const newZone = zoneOfNode.get((replaced['spec'] as { nodeName?: string }).nodeName ?? '');
  t.truthy(newZone);
  t.is(replaced.metadata.annotations?.['cairn.dev/zone'], newZone);
  const after = (await w.nodes()).find((n) => n.id === victim)!;
  t.not(after.incarnation, before.incarnation);
  t.is(after.zone, newZone ?? '(unscheduled)');
  const { map: remap } = await w.admin.getClusterMap();
  const zoneNow = new Map(remap.nodes.map((n) => [n.id, n.zone]));
  t.is(remap.partitions.filter((r) => new Set(r.map((id) => zoneNow.get(id))).size === 3).length, remap.partitions.length);
  await waitFor('every chunk back at RF 3', () => atRf(w, files, 3), 60_000, 500);
  t.deepEqual(await unreadable(client, files), []);
});

test('a node without a zone label: the pod is annotated with an empty zone and its block node still starts', async (t) => {
  t.timeout(120_000);
  const w = await world(t, { rf: 1, nodes: [{ name: 'bare' }] });
  w.operator('op-a');
  w.createCluster({ replicationFactor: 1, writeQuorum: 1, blocknodes: { replicas: 1, storage: { size: '1Gi' } } });
  await settled(w, 1);
  const pod = w.api.get('pods', NS, `${NAME}-blocknode-0`)!;
  t.is((pod['spec'] as { nodeName?: string }).nodeName, 'bare');
  t.is(pod.metadata.annotations?.['cairn.dev/zone'], '');
  t.is((await w.nodes())[0]?.zone, '');
  t.deepEqual(w.kubelet.initFailures, [], 'the zone init container never timed out');
});
