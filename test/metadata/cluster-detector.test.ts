// The failure detector's pure decision, exhaustively: silent nodes go down oldest first, never
// leaving more than RF−1 nodes down, and nothing heard from within the delay is touched.
import test from 'ava';
import fc from 'fast-check';
import { decideFailures } from '../../src/metadata/model/cluster.js';
import { NODE_STATES, type NodeState } from '../../src/placement/index.js';

const nodeArb = fc.record({
  state: fc.constantFrom<NodeState>(...NODE_STATES),
  lastHeartbeatMs: fc.integer({ min: 0, max: 1_000_000 }),
});

test('never more than RF−1 down, silent nodes only, most silent first', (t) => {
  fc.assert(
    fc.property(fc.array(nodeArb, { maxLength: 12 }), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 500_000 }), fc.integer({ min: 0, max: 2_000_000 }), fc.integer({ min: 0, max: 1_000_000 }), (raw, rf, delay, now, since) => {
      const nodes = raw.map((n, i) => ({ id: `n${String(i).padStart(2, '0')}`, ...n }));
      const d = decideFailures(nodes, now, delay, rf, since);
      const byId = new Map(nodes.map((n) => [n.id, n]));
      const downBefore = nodes.filter((n) => n.state === 'down').length;
      const silent = nodes.filter((n) => ['joining', 'up', 'draining'].includes(n.state) && now - Math.max(n.lastHeartbeatMs, since) > delay);
      // Every silent node is either marked or held; nothing else is either.
      if ([...d.markDown, ...d.held].sort().join() !== silent.map((n) => n.id).sort().join()) return false;
      // The cap.
      if (d.markDown.length > 0 && downBefore + d.markDown.length > rf - 1) return false;
      if (d.held.length > 0 && downBefore + d.markDown.length < rf - 1) return false;
      // Oldest silence first.
      const marked = d.markDown.map((id) => byId.get(id)!.lastHeartbeatMs);
      const held = d.held.map((id) => byId.get(id)!.lastHeartbeatMs);
      return marked.every((m) => held.every((h) => m <= h));
    }),
  );
  t.pass();
});

test('the delay is exclusive: silent for exactly failoverDelayMs is still up', (t) => {
  const nodes = [{ id: 'a', state: 'up' as const, lastHeartbeatMs: 1_000 }];
  t.deepEqual(decideFailures(nodes, 61_000, 60_000, 3).markDown, []);
  t.deepEqual(decideFailures(nodes, 61_001, 60_000, 3).markDown, ['a']);
  t.deepEqual(decideFailures(nodes, 61_001, 60_000, 1), { markDown: [], held: ['a'] }, 'RF 1: nothing may go down');
});
