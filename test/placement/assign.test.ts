// Placement properties (fast-check, bounded runs) and examples: validity, zones,
// balance, weights, minimal movement on join and drain, determinism, epochs.
import test from 'ava';
import fc from 'fast-check';
import { assign, diff, owners, partitionOf, PARTITION_COUNT, type ClusterMap, type MapNode, type NodeState } from '../../src/placement/index.js';

const P = PARTITION_COUNT;

function nodesOf(n: number, zones: number, weight: (i: number) => number = () => 1, prefix = 'node'): MapNode[] {
  return Array.from({ length: n }, (_, i) => ({ id: `${prefix}-${i}`, addr: `10.0.0.${i}:7000`, zone: `zone-${i % zones}`, weight: weight(i), state: 'up' }));
}

function load(map: ClusterMap): Map<string, number> {
  const c = new Map<string, number>();
  for (const row of map.partitions) for (const id of row) c.set(id, (c.get(id) ?? 0) + 1);
  return c;
}

function shuffled<T>(xs: readonly T[], seed: number): T[] {
  const out = [...xs];
  let s = seed >>> 0 || 1;
  for (let i = out.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** Clusters where zones never force imbalance: the zone count divides N (or zones < RF, which only spreads softly). */
const balanced = fc
  .integer({ min: 1, max: 4 })
  .chain((rf) => fc.integer({ min: Math.max(rf, 2), max: 12 }).map((n) => ({ rf, n })))
  .chain(({ rf, n }) => fc.constantFrom(...Array.from({ length: n }, (_, i) => i + 1).filter((z) => n % z === 0 && (z >= rf || z < rf))).map((z) => ({ rf, n, z })));

const anyCluster = fc.record({
  rf: fc.integer({ min: 1, max: 4 }),
  extra: fc.integer({ min: 0, max: 8 }),
  zones: fc.integer({ min: 1, max: 6 }),
  weights: fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 12, maxLength: 12 }),
});

const RUNS = { numRuns: 15 };

test('every partition has RF distinct nodes, in distinct zones whenever zones ≥ RF', (t) => {
  fc.assert(
    fc.property(anyCluster, ({ rf, extra, zones, weights }) => {
      const nodes = nodesOf(rf + extra, zones, (i) => weights[i]!);
      const map = assign(null, nodes, rf);
      const zoneOf = new Map(nodes.map((n) => [n.id, n.zone]));
      const distinctZones = new Set(nodes.map((n) => n.zone)).size;
      return (
        map.partitions.length === P &&
        map.partitions.every((row) => {
          const z = new Set(row.map((id) => zoneOf.get(id)));
          return row.length === rf && new Set(row).size === rf && (distinctZones < rf || z.size === rf);
        })
      );
    }),
    RUNS,
  );
  t.pass();
});

test('equal weights: max load ≤ 1.05 × mean', (t) => {
  fc.assert(
    fc.property(balanced, ({ rf, n, z }) => {
      const loads = [...load(assign(null, nodesOf(n, z), rf)).values()];
      const mean = (P * rf) / n;
      return loads.length === n && Math.max(...loads) <= 1.05 * mean;
    }),
    RUNS,
  );
  t.pass();
});

test('adding a node moves ≤ 1.1 × P·RF/(N+1) replicas, all to the new node (when no cap binds)', (t) => {
  fc.assert(
    fc.property(balanced, fc.boolean(), ({ rf, n, z }, ownZone) => {
      const nodes = nodesOf(n, z);
      const before = assign(null, nodes, rf);
      const joined: MapNode = { id: 'node-new', addr: '10.0.1.1:7000', zone: ownZone ? 'zone-new' : 'zone-0', weight: 1, state: 'joining' };
      fc.pre(!capped(nodes, rf) && !capped([...nodes, joined], rf));
      const after = assign(before, [...nodes, joined], rf);
      const d = diff(before, after);
      // Zones may force imbalance (a zone holds at most one replica per partition),
      // so balance is judged against a fresh map of the same nodes.
      const fresh = Math.max(...load(assign(null, [...nodes, joined], rf)).values());
      return (
        d.moved <= (1.1 * P * rf) / (n + 1) &&
        d.moved === (d.perNode['node-new']?.gained ?? 0) &&
        after.epoch === before.epoch + 1 &&
        Math.max(...load(after).values()) <= 1.02 * fresh
      );
    }),
    RUNS,
  );
  t.pass();
});

/**
 * Whether some node (or, when zones ≥ RF, some zone) wants more than one replica
 * per partition (or exactly one): then the cap, not the weights, sets targets, and
 * a membership change can legitimately move other replicas too.
 */
function capped(nodes: readonly MapNode[], rf: number): boolean {
  const up = nodes.filter((x) => x.state === 'up' || x.state === 'joining');
  const total = up.reduce((s, x) => s + x.weight, 0);
  const zones = new Map<string, number>();
  for (const x of up) zones.set(x.zone, (zones.get(x.zone) ?? 0) + x.weight);
  const shares = zones.size >= rf ? [...zones.values()] : up.map((x) => x.weight);
  return shares.some((w) => w * rf >= total);
}

function drainCase(simple: boolean) {
  return fc
    .tuple(anyCluster, fc.nat(), fc.constantFrom<NodeState>('draining', 'down', 'removed'), fc.boolean())
    .map(([{ rf, extra, zones, weights }, pick, state, zonePerNode]) => {
      const n = rf + extra + 1;
      // Simple: equal weights, and either one zone (or fewer than RF) or one zone per node.
      const z = simple ? (zonePerNode ? n : Math.min(zones, Math.max(1, rf - 1))) : zones;
      const nodes = nodesOf(n, z, (i) => (simple ? 1 : weights[i % 12]!));
      const victim = pick % n;
      return { rf, nodes, id: nodes[victim]!.id, drained: nodes.map((x, i) => (i === victim ? { ...x, state } : x)) };
    })
    .filter(({ rf, nodes, drained }) => !capped(nodes, rf) && !capped(drained, rf));
}

test('draining a node moves only its replicas (equal weights, zones unchanged in shape)', (t) => {
  fc.assert(
    fc.property(drainCase(true), ({ rf, nodes, id, drained }) => {
      const before = assign(null, nodes, rf);
      const after = assign(before, drained, rf);
      return before.partitions.every((row, p) => row.every((old, s) => (old === id ? after.partitions[p]![s] !== id : after.partitions[p]![s] === old)));
    }),
    { numRuns: 30 },
  );
  t.pass();
});

// With unequal weights or zones, the drained node's partitions may lack room for
// the nodes that must grow (a heavy node already shares most of them; a zone must
// grow beyond the holes next to it). assign then moves what balance requires in
// the same epoch, so its result is a fixed point.
test('draining a weighted, zoned node moves its replicas plus only what balance requires', (t) => {
  fc.assert(
    fc.property(drainCase(false), ({ rf, nodes, id, drained }) => {
      const before = assign(null, nodes, rf);
      const after = assign(before, drained, rf);
      const was = load(before);
      const now = load(after);
      const ideal = load(assign(null, drained, rf));
      let required = 0;
      for (const [node, n] of ideal) required += Math.max(0, n - (was.get(node) ?? 0));
      const d = diff(before, after);
      return (
        d.perNode[id]?.lost === was.get(id) &&
        // `required` counts only per-node growth, a lower bound that ignores who can
        // share a partition: in 12,000 random cases most moved under 1.4× that, the
        // worst 1.64× (zones ≥ RF, where a zone's replicas must stay in the zone).
        d.moved <= 2 * required &&
        [...now].every(([node, n]) => Math.abs(n - ideal.get(node)!) <= Math.max(2, 0.03 * n)) &&
        assign(after, drained, rf).epoch === after.epoch
      );
    }),
    { numRuns: 30 },
  );
  t.pass();
});

test('a drain that leaves a zone with one node still ends balanced (zones < RF)', (t) => {
  // Found by the property above in CI: zone-0 is down to node-3, whose replicas alone span
  // their zone, so moves that keep every partition's zones could not shed what the fill had
  // to overshoot onto it (3,202 replicas against a target of 2,891).
  const zone = ['zone-0', 'zone-1', 'zone-2', 'zone-0', 'zone-1', 'zone-2'];
  const weight = [1, 2, 4, 3, 4, 4];
  const nodes: MapNode[] = zone.map((z, i) => ({ id: `node-${i}`, addr: `10.0.0.${i}:7000`, zone: z, weight: weight[i]!, state: 'up' }));
  const before = assign(null, nodes, 4);
  const drained = nodes.map((x) => (x.id === 'node-0' ? { ...x, state: 'draining' as const } : x));
  const after = assign(before, drained, 4);
  const ideal = load(assign(null, drained, 4));
  for (const [node, n] of load(after)) t.true(Math.abs(n - ideal.get(node)!) <= Math.max(2, 0.03 * n), `${node}: ${n} replicas, ${ideal.get(node)} from scratch`);
  t.is(assign(after, drained, 4).epoch, after.epoch, 'a fixed point');
});

test('the result does not depend on the order of nodes', (t) => {
  fc.assert(
    fc.property(anyCluster, fc.integer(), ({ rf, extra, zones, weights }, seed) => {
      const nodes = nodesOf(rf + extra + 1, zones, (i) => weights[i % 12]!);
      const a = assign(null, nodes, rf);
      const b = assign(null, shuffled(nodes, seed), rf);
      const grown = [...nodes, { id: 'late', addr: 'x:1', zone: 'zone-0', weight: 2, state: 'up' as NodeState }];
      const a2 = assign(a, grown, rf);
      const b2 = assign(b, shuffled(grown, seed + 1), rf);
      return JSON.stringify(a) === JSON.stringify(b) && JSON.stringify(a2) === JSON.stringify(b2);
    }),
    { numRuns: 10 },
  );
  t.pass();
});

test('load is proportional to weight (within 5%)', (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 3 }), fc.array(fc.constantFrom(1, 2), { minLength: 12, maxLength: 12 }), (rf, weights) => {
      // One zone per node, and enough nodes that no node's share hits the one-replica-per-partition cap.
      const n = 4 * rf;
      const nodes = nodesOf(n, n, (i) => weights[i]!);
      const loads = load(assign(null, nodes, rf));
      const total = nodes.reduce((s, x) => s + x.weight, 0);
      return nodes.every((x) => {
        const ideal = (P * rf * x.weight) / total;
        return Math.abs((loads.get(x.id) ?? 0) - ideal) <= 0.05 * ideal;
      });
    }),
    RUNS,
  );
  t.pass();
});

test('a weight-2 node gets about twice the load of a weight-1 node', (t) => {
  const nodes = nodesOf(9, 9, (i) => (i === 0 ? 2 : 1));
  const loads = load(assign(null, nodes, 3));
  const ratio = loads.get('node-0')! / loads.get('node-1')!;
  t.true(Math.abs(ratio - 2) <= 0.1, `ratio ${ratio}`);
});

test('reassigning an unchanged cluster is a no-op that keeps the epoch', (t) => {
  const nodes = nodesOf(10, 3, (i) => 1 + (i % 3));
  const first = assign(null, nodes, 3);
  t.is(first.epoch, 1);
  const again = assign(first, shuffled(nodes, 7), 3);
  t.is(again.epoch, 1);
  t.deepEqual(again.partitions, first.partitions);
  const weighted = assign(first, nodes.map((x) => (x.id === 'node-0' ? { ...x, weight: 5 } : x)), 3);
  t.is(weighted.epoch, 2);
  const relabelled = assign(weighted, weighted.nodes.map((x) => (x.id === 'node-0' ? { ...x, addr: 'elsewhere:1' } : x)), 3);
  t.is(relabelled.epoch, 3, 'a node change alone bumps the epoch');
  t.deepEqual(relabelled.partitions, weighted.partitions);
});

test('placement spreads a node over the ring rather than in runs', (t) => {
  const map = assign(null, nodesOf(12, 4), 3);
  // Count partitions in a row that share their primary with the previous one.
  let same = 0;
  for (let p = 1; p < P; p++) if (map.partitions[p]![0] === map.partitions[p - 1]![0]) same++;
  t.true(same < P / 4, `runs: ${same}`);
  const coOwners = new Set(map.partitions.filter((row) => row.includes('node-0')).map((row) => row.join(',')));
  t.true(coOwners.size > 20, `distinct replica sets with node-0: ${coOwners.size}`);
});

test('down and draining nodes lose their replicas; joining nodes receive some', (t) => {
  const nodes = nodesOf(6, 3);
  const before = assign(null, nodes, 3);
  const states: NodeState[] = ['up', 'down', 'draining', 'up', 'joining', 'up'];
  const after = assign(before, nodes.map((x, i) => ({ ...x, state: states[i]! })), 3);
  const loads = load(after);
  t.false(loads.has('node-1'));
  t.false(loads.has('node-2'));
  t.true((loads.get('node-4') ?? 0) > 0);
  t.is(after.nodes.length, 6, 'the map still lists every node it was given');
  t.true(after.partitions.every((row) => new Set(row).size === 3));
});

test('raising the replication factor keeps every existing replica in place', (t) => {
  const nodes = nodesOf(8, 4);
  const two = assign(null, nodes, 2);
  const three = assign(two, nodes, 3);
  t.true(two.partitions.every((row, p) => row.every((id, s) => three.partitions[p]![s] === id)));
  t.is(diff(two, three).moved, P);
  const back = assign(three, nodes, 2);
  t.is(diff(three, back).moved, 0);
});

test('fewer zones than RF: partitions still span every zone', (t) => {
  const nodes = nodesOf(6, 2);
  const map = assign(null, nodes, 3);
  const zoneOf = new Map(nodes.map((n) => [n.id, n.zone]));
  t.true(map.partitions.every((row) => new Set(row.map((id) => zoneOf.get(id))).size === 2));
});

test('50 nodes, RF 3: a fresh map is valid and balanced', (t) => {
  const nodes = nodesOf(50, 5, (i) => 1 + (i % 3));
  const map = assign(null, nodes, 3);
  t.is(map.partitions.length, P);
  const loads = load(map);
  const total = nodes.reduce((sum, x) => sum + x.weight, 0);
  for (const x of nodes) {
    const ideal = (P * 3 * x.weight) / total;
    t.true(Math.abs(loads.get(x.id)! - ideal) <= Math.max(1, 0.01 * ideal), x.id);
  }
});

test('partitionOf takes the first 12 bits of the address', (t) => {
  t.is(partitionOf(Buffer.alloc(32)), 0);
  t.is(partitionOf(Buffer.from('ffff', 'hex')), 4095);
  t.is(partitionOf(Buffer.from('abcdef', 'hex')), 0xabc);
  t.is(partitionOf(new Uint8Array([0x12, 0x3f])), 0x123);
  t.throws(() => partitionOf(Buffer.alloc(1)), { instanceOf: RangeError });
});

test('owners returns a copy of the partition row', (t) => {
  const map = assign(null, nodesOf(4, 4), 2);
  const addr = Buffer.from('0010' + '00'.repeat(30), 'hex');
  const row = owners(map, addr);
  t.deepEqual(row, map.partitions[1]);
  row.pop();
  t.is(map.partitions[1]!.length, 2);
});

test('diff counts replica moves per node', (t) => {
  const nodes = nodesOf(5, 5);
  const a = assign(null, nodes, 2);
  const b = assign(a, nodes.slice(0, 4), 2);
  const d = diff(a, b);
  const lostByGone = load(a).get('node-4')!;
  t.is(d.moved, lostByGone);
  t.is(d.perNode['node-4']!.lost, lostByGone);
  t.is(Object.values(d.perNode).reduce((s, x) => s + x.gained, 0), lostByGone);
  t.deepEqual(diff(a, a), { moved: 0, perNode: {} });
});

test('invalid input throws, naming the option', (t) => {
  const nodes = nodesOf(3, 3);
  t.throws(() => assign(null, nodes, 0), { instanceOf: RangeError, message: /replicationFactor/ });
  t.throws(() => assign(null, nodes, 1.5), { instanceOf: RangeError, message: /replicationFactor/ });
  t.throws(() => assign(null, nodes, 4), { instanceOf: RangeError, message: /replicationFactor 4 exceeds the 3 eligible/ });
  t.throws(() => assign(null, nodes.map((x) => ({ ...x, state: 'draining' })), 1), { instanceOf: RangeError, message: /eligible/ });
  t.throws(() => assign(null, [...nodes, { ...nodes[0]! }], 1), { instanceOf: TypeError, message: /nodes\[3\]\.id "node-0" is a duplicate/ });
  t.throws(() => assign(null, [{ ...nodes[0]!, weight: 0 }], 1), { instanceOf: RangeError, message: /nodes\[0\]\.weight/ });
  t.throws(() => assign(null, [{ ...nodes[0]!, weight: -1 }], 1), { instanceOf: RangeError, message: /nodes\[0\]\.weight/ });
  t.throws(() => assign(null, [{ ...nodes[0]!, weight: Number.NaN }], 1), { instanceOf: RangeError, message: /nodes\[0\]\.weight/ });
  t.throws(() => assign(null, [{ ...nodes[0]!, state: 'gone' as NodeState }], 1), { instanceOf: TypeError, message: /nodes\[0\]\.state/ });
  t.throws(() => assign({ epoch: 1, replicationFactor: 1, nodes, partitions: [] }, nodes, 1), { instanceOf: TypeError, message: /previous\.partitions/ });
});

// Regression: the fill's fallback left node-0 15 replicas over target in rows that already held
// a zone-1 replica, so node-7 (zone-1) could take none of them directly and stayed 15 under.
test('draining node-4 of a weighted 6-zone cluster still reaches every target exactly (augmenting chains)', (t) => {
  const weights = [1, 4, 2, 1, 2, 3, 1, 4, 1];
  const zones = [0, 1, 2, 3, 4, 5, 0, 1, 2];
  const nodes: MapNode[] = weights.map((w, i): MapNode => ({ id: `node-${i}`, addr: `10.0.0.${i}:7000`, zone: `zone-${zones[i]}`, weight: w, state: 'up' }));
  const drained: MapNode[] = nodes.map((n): MapNode => (n.id === 'node-4' ? { ...n, state: 'draining' } : n));
  const before = assign(null, nodes, 2);
  const after = assign(before, drained, 2);
  const ideal = load(assign(null, drained, 2));
  for (const [node, n] of load(after)) t.is(n, ideal.get(node) ?? -1, node);
  t.is(diff(before, after).perNode['node-4']?.lost, load(before).get('node-4'));
  t.is(assign(after, drained, 2).epoch, after.epoch);
});
