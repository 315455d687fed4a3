// What the adapter hands reconcile: block pods with readiness and NotReady-since from the Ready
// condition (terminating pods are not Ready), and ordinals missing since when.
import test from 'ava';
import { observePods, trackMissing } from '../../src/operator/index.js';
import { cluster } from './sim.js';

const labels = { 'app.kubernetes.io/instance': 'demo', 'app.kubernetes.io/component': 'blocknode' };
const pod = (name: string, ready: 'True' | 'False' | undefined, extra: { deletionTimestamp?: string; since?: string; created?: string; image?: string; labels?: Record<string, string> } = {}) => ({
  metadata: { name, labels: extra.labels ?? labels, creationTimestamp: extra.created ?? '2026-01-01T00:00:00Z', ...(extra.deletionTimestamp !== undefined ? { deletionTimestamp: extra.deletionTimestamp } : {}) },
  spec: { containers: [{ name: 'cairn', image: extra.image ?? 'img:1' }] },
  status: ready === undefined ? {} : { conditions: [{ type: 'Ready', status: ready, lastTransitionTime: new Date(extra.since ?? '2026-01-01T00:01:00Z') }] },
});

test('pods: ordinal from the name, readiness and NotReady-since from the Ready condition, other clusters and roles ignored', (t) => {
  const c = cluster();
  const now = Date.parse('2026-01-01T01:00:00Z');
  const got = observePods(c, [
    pod('demo-blocknode-1', 'False', { since: '2026-01-01T00:30:00Z', image: 'img:2' }),
    pod('demo-blocknode-0', 'True'),
    pod('demo-blocknode-2', undefined, { created: '2026-01-01T00:50:00Z' }),
    pod('demo-blocknode-3', 'True', { deletionTimestamp: '2026-01-01T00:55:00Z' }),
    pod('other-blocknode-0', 'True', { labels: { ...labels, 'app.kubernetes.io/instance': 'other' } }),
    pod('demo-gateway-abc', 'True', { labels: { ...labels, 'app.kubernetes.io/component': 'gateway' } }),
  ], now);
  t.deepEqual(got, [
    { name: 'demo-blocknode-0', ordinal: 0, ready: true, image: 'img:1' },
    { name: 'demo-blocknode-1', ordinal: 1, ready: false, image: 'img:2', notReadySinceMs: Date.parse('2026-01-01T00:30:00Z') },
    { name: 'demo-blocknode-2', ordinal: 2, ready: false, image: 'img:1', notReadySinceMs: Date.parse('2026-01-01T00:50:00Z') },
    { name: 'demo-blocknode-3', ordinal: 3, ready: false, image: 'img:1', notReadySinceMs: Date.parse('2026-01-01T00:55:00Z') },
  ]);
});

test('missing ordinals keep the time they were first missed and are forgotten once back or cut', (t) => {
  const c = cluster();
  const memory = new Map<string, number>();
  const present = observePods(c, [pod('demo-blocknode-0', 'True')], 0);
  t.deepEqual([...trackMissing(c, 3, present, memory, 100)], [['demo-blocknode-1', 100], ['demo-blocknode-2', 100]]);
  t.deepEqual([...trackMissing(c, 3, present, memory, 200)], [['demo-blocknode-1', 100], ['demo-blocknode-2', 100]]);
  const back = observePods(c, [pod('demo-blocknode-0', 'True'), pod('demo-blocknode-1', 'False')], 0);
  t.deepEqual([...trackMissing(c, 2, back, memory, 300)], []);
});
