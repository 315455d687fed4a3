// CairnCluster lifecycle through the operator main loop and the fake API server: the finalizer,
// every object created with owner references, hold on unreachable metadata, and deletion that
// keeps volumes unless volumeReclaimPolicy says Delete.
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { KubeConfig } from '@kubernetes/client-node';
import { silentLogger } from '../../src/common/log.js';
import { createOperator, FINALIZER } from '../../src/operator/index.js';
import { FakeApiServer } from '../k8s/apiserver.js';
import { spec } from './k8s-harness.js';

async function until(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

test('finalizer, owned objects, a scale-down held while metadata is unreachable, and deletion that keeps or deletes volumes', async (t) => {
  const api = new FakeApiServer();
  await api.listen();
  t.teardown(() => api.close());
  const kc = new KubeConfig();
  kc.loadFromString(api.kubeconfig('operator'));
  // No metadata service at all: the operator must create objects but hold every cluster-map decision.
  const op = createOperator({ kubeConfig: kc, namespace: 'store', identity: 'op', metadataAddr: '127.0.0.1:9', adminTimeoutMs: 500, intervalMs: 200, leaseDurationSeconds: 2, log: silentLogger() });
  op.start();
  t.teardown(() => op.stop());
  for (const [name, policy] of [['keep', 'Retain'], ['wipe', 'Delete']] as const) {
    api.create('cairnclusters', 'store', { apiVersion: 'cairn.dev/v1alpha1', kind: 'CairnCluster', metadata: { name }, spec: { ...spec({ volumeReclaimPolicy: policy }) } }, 'admin');
  }
  await until('both clusters finalized and their StatefulSets applied', () =>
    ['keep', 'wipe'].every((n) => api.get('cairnclusters', 'store', n)?.metadata.finalizers?.includes(FINALIZER) === true && api.get('statefulsets', 'store', `${n}-blocknode`) !== undefined),
  );
  await until('status written', () => (api.get('cairnclusters', 'store', 'keep')?.['status'] as { observedGeneration?: number } | undefined)?.observedGeneration === 1);
  const status = api.get('cairnclusters', 'store', 'keep')!['status'] as { conditions: { type: string; status: string; reason: string }[] };
  t.like(status.conditions.find((c) => c.type === 'Ready'), { status: 'Unknown', reason: 'MetadataUnavailable' });
  for (const kind of ['configmaps', 'services', 'statefulsets', 'deployments', 'poddisruptionbudgets', 'secrets']) {
    const owned = api.list(kind, 'store').filter((o) => o.metadata.name.startsWith('keep-'));
    t.true(owned.length > 0, kind);
    for (const o of owned) t.is(o.metadata.ownerReferences?.[0]?.uid, api.get('cairnclusters', 'store', 'keep')?.metadata.uid, `${kind}/${o.metadata.name}`);
  }
  // Every applied object is owned by the cairn-operator field manager.
  const sts = await (await fetch(`${api.url}/apis/apps/v1/namespaces/store/statefulsets/keep-blocknode`)).json() as { metadata: { managedFields: { manager: string; operation: string }[] } };
  t.true(sts.metadata.managedFields.some((m) => m.manager === 'cairn-operator' && m.operation === 'Apply'));

  // Scale-down while the metadata service cannot report drain status: held, with the reason.
  api.patch('cairnclusters', 'store', 'keep', 'application/merge-patch+json', JSON.stringify({ spec: { replicationFactor: 2, writeQuorum: 2, blocknodes: { replicas: 2, storage: { size: '1Gi' } } } }), { user: 'admin' });
  await until('ScaleDownBlocked: MetadataUnavailable', () =>
    ((api.get('cairnclusters', 'store', 'keep')?.['status'] as { conditions: { type: string; reason: string }[] } | undefined)?.conditions ?? []).some((c) => c.type === 'ScaleDownBlocked' && c.reason === 'MetadataUnavailable'),
  );
  t.is((api.get('statefulsets', 'store', 'keep-blocknode')?.['spec'] as { replicas: number }).replicas, 3);

  // Volumes as the StatefulSet controller would have made them.
  for (const n of ['keep', 'wipe']) for (const i of [0, 1, 2]) api.create('persistentvolumeclaims', 'store', { metadata: { name: `data-${n}-blocknode-${i}` }, spec: {} }, 'statefulset-controller');
  api.delete('cairnclusters', 'store', 'keep', 'admin');
  api.delete('cairnclusters', 'store', 'wipe', 'admin');
  await until('both clusters gone', () => api.get('cairnclusters', 'store', 'keep') === undefined && api.get('cairnclusters', 'store', 'wipe') === undefined);
  t.deepEqual(api.list('persistentvolumeclaims', 'store').map((p) => p.metadata.name), ['data-keep-blocknode-0', 'data-keep-blocknode-1', 'data-keep-blocknode-2']);
  // Owner references took everything else with the clusters.
  for (const kind of ['configmaps', 'services', 'statefulsets', 'deployments', 'poddisruptionbudgets', 'secrets']) t.deepEqual(api.list(kind, 'store').map((o) => o.metadata.name), [], kind);
  const events = api.list('events', 'store').map((e) => e['reason']);
  t.true(events.includes('VolumesDeleted'));
});
