// The client-node adapter against the fake API server through the real library: server-side apply
// and its field ownership, 409 on stale writes, the status subresource and generation, finalizers,
// informers that relist after 410 Gone and restart after errors, and Lease leader election.
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { CoordinationV1Api, KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { silentLogger } from '../../src/common/log.js';
import { FINALIZER, KubeClient, LeaderElector, ResilientInformer, statusOf, type CairnCluster, type KubeObject } from '../../src/operator/index.js';
import { FakeApiServer } from '../k8s/apiserver.js';
import { cluster } from './sim.js';

async function fake(t: { teardown(fn: () => Promise<void>): void }): Promise<{ api: FakeApiServer; kc: (user?: string) => KubeConfig }> {
  const api = new FakeApiServer();
  await api.listen();
  t.teardown(() => api.close());
  return {
    api,
    kc: (user = 'test') => {
      const kc = new KubeConfig();
      kc.loadFromString(api.kubeconfig(user));
      return kc;
    },
  };
}

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const cm = (data: Record<string, string>): KubeObject => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'cfg', namespace: 'store' }, data });

test('server-side apply creates, updates, drops fields it no longer sends, and records the field manager', async (t) => {
  const { api, kc } = await fake(t);
  const kube = new KubeClient(kc(), 'op-1');
  const first = await kube.apply(cm({ a: '1', b: '2' }));
  t.is(first.metadata?.resourceVersion !== undefined, true);
  t.deepEqual(api.get('configmaps', 'store', 'cfg')?.['data'], { a: '1', b: '2' });
  // Another writer adds a key; our next apply keeps theirs and drops our `b`.
  api.patch('configmaps', 'store', 'cfg', 'application/merge-patch+json', JSON.stringify({ data: { c: '3' } }), { user: 'someone', fieldManager: 'kubectl' });
  const second = await kube.apply(cm({ a: '1' }));
  t.deepEqual(api.get('configmaps', 'store', 'cfg')?.['data'], { a: '1', c: '3' });
  const managers = (second.metadata?.managedFields ?? []).map((m) => m.manager).sort();
  t.deepEqual(managers, ['cairn-operator', 'kubectl']);
  // Re-applying the same object writes nothing new.
  const rv = api.get('configmaps', 'store', 'cfg')?.metadata.resourceVersion;
  await kube.apply(cm({ a: '1' }));
  t.is(api.get('configmaps', 'store', 'cfg')?.metadata.resourceVersion, rv);
});

test('a stale resourceVersion gets 409; the status subresource writes only status; spec changes bump generation', async (t) => {
  const { api, kc } = await fake(t);
  const c = cluster();
  api.create('cairnclusters', 'store', { apiVersion: c.apiVersion, kind: c.kind, metadata: { name: 'demo', namespace: 'store' }, spec: c.spec });
  const live = api.get('cairnclusters', 'store', 'demo')!;
  t.is(live.metadata.generation, 1);
  const kube = new KubeClient(kc(), 'op-1');
  const asCluster = live as unknown as CairnCluster;
  await kube.writeStatus(asCluster, { observedGeneration: 1, conditions: [], nodes: [], readyBlockNodes: 0, bytesToMove: 7 });
  const afterStatus = api.get('cairnclusters', 'store', 'demo')!;
  t.is((afterStatus['status'] as { bytesToMove: number }).bytesToMove, 7);
  t.is(afterStatus.metadata.generation, 1);
  // A finalizer patch made on the old resourceVersion conflicts.
  const err = await t.throwsAsync(kube.setFinalizers(asCluster, [FINALIZER]));
  t.is(statusOf(err), 409);
  await kube.setFinalizers(afterStatus as unknown as CairnCluster, [FINALIZER]);
  t.deepEqual(api.get('cairnclusters', 'store', 'demo')?.metadata.finalizers, [FINALIZER]);
  // A spec change through the main resource bumps generation and leaves status alone.
  api.patch('cairnclusters', 'store', 'demo', 'application/merge-patch+json', JSON.stringify({ spec: { gateway: { replicas: 3 } }, status: { bytesToMove: 99 } }));
  const changed = api.get('cairnclusters', 'store', 'demo')!;
  t.is(changed.metadata.generation, 2);
  t.is((changed['status'] as { bytesToMove: number }).bytesToMove, 7);
  // Deletion with a finalizer only marks; removing the finalizer removes the object.
  api.delete('cairnclusters', 'store', 'demo');
  const marked = api.get('cairnclusters', 'store', 'demo')!;
  t.truthy(marked.metadata.deletionTimestamp);
  await kube.setFinalizers(marked as unknown as CairnCluster, []);
  t.is(api.get('cairnclusters', 'store', 'demo'), undefined);
});

test('an informer relists after 410 Gone and restarts after an error other than 410', async (t) => {
  const { api, kc } = await fake(t);
  let changes = 0;
  const inf = new ResilientInformer<KubernetesObject>({ kubeConfig: kc(), apiVersion: 'v1', kind: 'ConfigMap', plural: 'configmaps', namespace: 'store', log: silentLogger(), onChange: () => changes++, minBackoffMs: 50, maxBackoffMs: 200 });
  t.teardown(() => inf.stop());
  api.create('configmaps', 'store', { metadata: { name: 'one' }, data: {} });
  inf.start();
  await until('synced', () => inf.synced && inf.list().length === 1);
  // History compacted while the watch is down: the re-watch gets 410 and the informer relists.
  api.compact();
  api.create('configmaps', 'store', { metadata: { name: 'two' }, data: {} });
  await until('relisted after 410', () => inf.list().length === 2);
  // The next list fails with 500 twice: client-node stops the informer; ours comes back.
  api.faults.push({ match: (m, u) => m === 'GET' && u.includes('/configmaps') && !u.includes('watch=true'), status: 500, remaining: 2 });
  api.faults.push({ match: (m, u) => m === 'GET' && u.includes('watch=true'), status: 500, remaining: 1 });
  api.dropWatches();
  api.create('configmaps', 'store', { metadata: { name: 'three' }, data: {} });
  await until('restarted after errors', () => inf.synced && inf.list().length === 3);
  api.delete('configmaps', 'store', 'one');
  await until('deletes seen', () => inf.list().length === 2);
  t.true(changes > 0);
});

test('two electors on one Lease: exactly one leads; when it stops, the other takes over', async (t) => {
  const { api, kc } = await fake(t);
  const make = (id: string) =>
    new LeaderElector({ client: new KubeClient(kc(id), id), namespace: 'store', name: 'cairn-operator', identity: id, leaseDurationSeconds: 1, retryPeriodMs: 100, log: silentLogger() });
  const a = make('a');
  const b = make('b');
  a.start();
  await until('a leads', () => a.isLeader());
  b.start();
  t.teardown(async () => {
    await a.stop();
    await b.stop();
  });
  for (let i = 0; i < 15; i++) {
    t.false(a.isLeader() && b.isLeader());
    await sleep(100);
  }
  t.true(a.isLeader());
  t.false(b.isLeader());
  const lease = await kc('x').makeApiClient(CoordinationV1Api).readNamespacedLease({ namespace: 'store', name: 'cairn-operator' });
  t.is(lease.spec?.holderIdentity, 'a');
  // b only read the Lease; it wrote nothing.
  t.deepEqual(api.writes.filter((w) => w.user === 'b'), []);
  await a.stop();
  await until('b takes over', () => b.isLeader(), 5000);
  t.false(a.isLeader());
  const after = await kc('x').makeApiClient(CoordinationV1Api).readNamespacedLease({ namespace: 'store', name: 'cairn-operator' });
  t.is(after.spec?.holderIdentity, 'b');
  t.is(after.spec?.leaseTransitions, 1);
});

test('a leader whose renewals fail stops acting within the renew deadline, before the Lease expires for others', async (t) => {
  const { api, kc } = await fake(t);
  const a = new LeaderElector({ client: new KubeClient(kc('a'), 'a'), namespace: 'store', name: 'cairn-operator', identity: 'a', leaseDurationSeconds: 3, retryPeriodMs: 100, log: silentLogger() });
  a.start();
  t.teardown(() => a.stop());
  await until('a leads', () => a.isLeader());
  // The API server stops accepting a's Lease writes (a partition, say).
  api.faults.push({ match: (m, u) => m === 'PUT' && u.includes('/leases/'), status: 503, remaining: 1_000_000 });
  const cut = Date.now();
  await until('a steps down', () => !a.isLeader(), 5000);
  const after = Date.now() - cut;
  // Renew deadline is 2/3 of the 3 s lease: a stopped acting before anyone else could take over.
  t.true(after < 3000, `stepped down after ${after} ms`);
  const b = new LeaderElector({ client: new KubeClient(kc('b'), 'b'), namespace: 'store', name: 'cairn-operator', identity: 'b', leaseDurationSeconds: 3, retryPeriodMs: 100, log: silentLogger() });
  api.faults.length = 0;
  b.start();
  t.teardown(() => b.stop());
  // a renews again as soon as the server accepts it, so b keeps waiting: never both.
  for (let i = 0; i < 20; i++) {
    t.false(a.isLeader() && b.isLeader());
    await sleep(50);
  }
});
