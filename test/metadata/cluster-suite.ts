// The cluster map's behaviour on any KV backend (factory-driven): registration and incarnations,
// epochs with the previous map kept, the failure detector on an injected clock, drain/remove
// legality, and the watch.
import test, { type ExecutionContext } from 'ava';
import { isCairnError } from '../../src/common/errors.js';
import type { Kv } from '../../src/metadata/kv/index.js';
import {
  detectFailures,
  drainNode,
  getClusterMap,
  getCurrentAndPrevious,
  getDrainStatus,
  getNode,
  heartbeat,
  markNodeDown,
  markNodeUp,
  registerNode,
  removeNode,
  watchClusterMap,
  type ClusterOptions,
  type NodeStats,
} from '../../src/metadata/model/cluster.js';
import { PARTITION_COUNT, type ClusterMap } from '../../src/placement/index.js';
import type { KvFactory } from './kv-conformance.js';

const idle: NodeStats = { blocks: 0, bytes: 0, capacityBytes: 1e12, underReplicatedPartitions: 0, bytesToMove: 0, soleCopies: 0 };

function manualClock(start = 1_700_000_000_000): { t: number; now: () => number } {
  const c = { t: start, now: () => c.t };
  return c;
}

async function snapshot(kv: Kv): Promise<string[]> {
  return (await kv.scan({})).map(([k, v]) => `${k.toString('hex')}=${v.toString('hex')}`);
}

function owners(map: ClusterMap): Set<string> {
  return new Set(map.partitions.flat());
}

/** Registers `n` nodes b0..b(n-1) in distinct zones; returns their incarnations. */
async function cluster(kv: Kv, n: number, options: ClusterOptions): Promise<Map<string, string>> {
  const incs = new Map<string, string>();
  for (let i = 0; i < n; i++) {
    const r = await registerNode(kv, { id: `b${i}`, addr: `10.0.0.${i}:7400`, zone: `z${i}`, weight: 1, capacityBytes: 1e12 }, options);
    incs.set(`b${i}`, r.node.incarnation);
  }
  return incs;
}

export function clusterSuite(name: string, factory: KvFactory): void {
  const open = async (t: ExecutionContext): Promise<Kv> => {
    t.timeout(90_000);
    const fixture = await factory();
    t.teardown(() => fixture.cleanup());
    return fixture.kv;
  };

  test(`${name}: registration gives ids and incarnations; the same incarnation is idempotent, a new one re-admits`, async (t) => {
    const kv = await open(t);
    const clock = manualClock();
    const opts = { replicationFactor: 2, now: clock.now };
    t.is((await getClusterMap(kv)).epoch, 0, 'no map before any node');
    const a = await registerNode(kv, { addr: '10.0.0.1:7400', zone: 'a', capacityBytes: 2 ** 40 }, opts);
    t.regex(a.node.id, /^node-[0-9a-f]{12}$/);
    t.regex(a.node.incarnation, /^[0-9a-f]{32}$/);
    t.true(a.newIncarnation);
    t.is(a.node.state, 'joining');
    t.is(a.node.weight, 1, 'weight from capacity in TiB');
    t.is(a.map.epoch, 1);
    t.is(a.map.replicationFactor, 1, 'one eligible node: one replica until RF nodes exist');
    t.true(a.map.partitions.every((row) => row.length === 1 && row[0] === a.node.id));

    const again = await registerNode(kv, { id: a.node.id, incarnation: a.node.incarnation, addr: '10.0.0.1:7400', zone: 'a', capacityBytes: 2 ** 40 }, opts);
    t.false(again.newIncarnation);
    t.is(again.node.incarnation, a.node.incarnation);
    t.is(again.map.epoch, 1, 'idempotent: no new epoch');

    const moved = await registerNode(kv, { id: a.node.id, incarnation: a.node.incarnation, addr: '10.0.0.9:7400', zone: 'a', capacityBytes: 2 ** 40 }, opts);
    t.is(moved.map.epoch, 2, 'a new address is a new epoch');
    t.is(moved.map.nodes[0]?.addr, '10.0.0.9:7400');

    await markNodeUp(kv, a.node.id, opts);
    const replaced = await registerNode(kv, { id: a.node.id, addr: '10.0.0.9:7400', zone: 'a', capacityBytes: 2 ** 40 }, opts);
    t.true(replaced.newIncarnation, 'empty storage under the same id: a new incarnation');
    t.not(replaced.node.incarnation, a.node.incarnation);
    t.is(replaced.node.state, 'joining');
    const before = await snapshot(kv);
    const stale = await t.throwsAsync(registerNode(kv, { id: a.node.id, incarnation: a.node.incarnation, addr: '10.0.0.9:7400', zone: 'a', capacityBytes: 2 ** 40 }, opts));
    t.true(isCairnError(stale, 'CAIRN_FAILED_PRECONDITION'), String(stale));
    const staleBeat = await t.throwsAsync(heartbeat(kv, a.node.id, a.node.incarnation, idle, opts));
    t.true(isCairnError(staleBeat, 'CAIRN_FAILED_PRECONDITION'), String(staleBeat));
    const unknown = await t.throwsAsync(registerNode(kv, { id: 'ghost', incarnation: a.node.incarnation, addr: '10.0.0.2:7400', zone: 'a', capacityBytes: 0 }, opts));
    t.true(isCairnError(unknown, 'CAIRN_NOT_FOUND'), String(unknown));
    t.deepEqual(await snapshot(kv), before, 'refused registrations change nothing');
  });

  test(`${name}: each change bumps the epoch, places RF replicas, and keeps the previous map`, async (t) => {
    const kv = await open(t);
    const clock = manualClock();
    const opts = { replicationFactor: 3, now: clock.now };
    await cluster(kv, 4, opts);
    const { current, previous } = await getCurrentAndPrevious(kv);
    t.is(current.epoch, 4);
    t.is(current.replicationFactor, 3);
    t.is(current.partitions.length, PARTITION_COUNT);
    t.true(current.partitions.every((row) => row.length === 3 && new Set(row).size === 3));
    t.is(previous?.epoch, 3);
    t.is(previous?.replicationFactor, 3);
    t.deepEqual((await getClusterMap(kv, 2)).nodes.map((n) => n.id), ['b0', 'b1']);
    const drained = await drainNode(kv, 'b3', opts);
    t.is(drained.map.epoch, 5);
    t.false(owners(drained.map).has('b3'), 'a draining node hands its replicas over');
    const after = await getCurrentAndPrevious(kv);
    t.true(owners(after.previous!).has('b3'), 'the previous map still says where the data was');
    const ahead = await t.throwsAsync(getClusterMap(kv, 99));
    t.true(isCairnError(ahead, 'CAIRN_INVALID_ARGUMENT'), String(ahead));
    const negative = await t.throwsAsync(getClusterMap(kv, -1));
    t.true(isCairnError(negative, 'CAIRN_INVALID_ARGUMENT'), String(negative));
  });

  test(`${name}: the failure detector marks a node down after failoverDelayMs of silence, never more than RF−1`, async (t) => {
    const kv = await open(t);
    const clock = manualClock();
    const opts = { replicationFactor: 3, now: clock.now };
    const incs = await cluster(kv, 5, opts);
    const delay = 60_000;
    const beat = async (ids: string[]): Promise<void> => {
      for (const id of ids) await heartbeat(kv, id, incs.get(id)!, idle, opts);
    };
    clock.t += delay;
    t.deepEqual((await detectFailures(kv, clock.t, { ...opts, failoverDelayMs: delay })).markDown, [], 'silent for exactly the delay: not yet');
    await beat(['b0', 'b1', 'b2', 'b3']);
    clock.t += 1;
    const first = await detectFailures(kv, clock.t, { ...opts, failoverDelayMs: delay });
    t.deepEqual(first.markDown, ['b4']);
    t.is(first.map?.epoch, 6);
    t.is((await getNode(kv, 'b4')).state, 'down');
    t.false(owners(first.map!).has('b4'), 'a down node\'s replicas are placed elsewhere');
    const epoch = first.map!.epoch;

    // Three more go silent: only one more may go down (RF−1 = 2 down at most).
    clock.t += delay / 2;
    await beat(['b0']);
    clock.t += delay / 2 + 1;
    const second = await detectFailures(kv, clock.t, { ...opts, failoverDelayMs: delay });
    t.is(second.markDown.length, 1);
    t.is(second.held.length, 2);
    const downNow = (await Promise.all(['b0', 'b1', 'b2', 'b3', 'b4'].map((id) => getNode(kv, id)))).filter((n) => n.state === 'down');
    t.is(downNow.length, 2);
    t.is(second.map?.epoch, epoch + 1);
    const third = await detectFailures(kv, clock.t + delay, { ...opts, failoverDelayMs: delay });
    t.deepEqual(third.markDown, [], 'held, not marked');
    t.is((await getClusterMap(kv)).epoch, epoch + 1);

    // The node comes back with its data: up again.
    const back = await heartbeat(kv, 'b4', incs.get('b4')!, idle, opts);
    t.is(back.node.state, 'up');
    t.is(back.epoch, epoch + 2);
  });

  test(`${name}: markNodeDown places a node's replicas elsewhere, is idempotent, and never exceeds RF−1 down`, async (t) => {
    const kv = await open(t);
    const clock = manualClock();
    const opts = { replicationFactor: 3, now: clock.now };
    const incs = await cluster(kv, 5, opts);
    const code = async (p: Promise<unknown>): Promise<string | undefined> => {
      const err = await t.throwsAsync(p);
      return isCairnError(err) ? err.code : String(err);
    };
    await drainNode(kv, 'b4', opts);
    const first = await markNodeDown(kv, 'b1', opts);
    t.is(first.node.state, 'down');
    t.is(first.map.epoch, 7);
    t.false(owners(first.map).has('b1'), 'a down node owns nothing');
    t.true(first.map.partitions.every((row) => row.length === 3 && new Set(row).size === 3), 'still RF replicas per partition');
    const again = await markNodeDown(kv, 'b1', opts);
    t.is(again.node.state, 'down');
    t.is(again.map.epoch, 7, 'idempotent: no new epoch');
    const drainingDown = await markNodeDown(kv, 'b4', opts);
    t.is(drainingDown.node.state, 'down');
    t.true(drainingDown.node.drain !== undefined, 'a draining node keeps its drain when it goes down');
    const before = await snapshot(kv);
    t.is(await code(markNodeDown(kv, 'b2', opts)), 'CAIRN_FAILED_PRECONDITION', 'RF−1 = 2 nodes are already down');
    t.is(await code(markNodeDown(kv, 'nope', opts)), 'CAIRN_NOT_FOUND');
    t.is(await code(markNodeDown(kv, 'Bad Id', opts)), 'CAIRN_INVALID_ARGUMENT');
    t.deepEqual(await snapshot(kv), before, 'refused calls change nothing');
    // The detector counts hand-marked nodes too: nothing more goes down.
    clock.t += 120_000;
    const detected = await detectFailures(kv, clock.t, { ...opts, failoverDelayMs: 60_000 });
    t.deepEqual(detected.markDown, []);
    t.is(detected.held.length, 3);
    // A down node that heartbeats with its incarnation is back (the drain resumes for b4).
    t.is((await heartbeat(kv, 'b1', incs.get('b1')!, idle, opts)).node.state, 'up');
    t.is((await heartbeat(kv, 'b4', incs.get('b4')!, idle, opts)).node.state, 'draining');
    t.is((await markNodeDown(kv, 'b2', opts)).node.state, 'down', 'room again once a node is back');
  });

  test(`${name}: silence while the detector was not running is not held against nodes`, async (t) => {
    const kv = await open(t);
    const clock = manualClock();
    const opts = { replicationFactor: 2, now: clock.now };
    await cluster(kv, 3, opts);
    clock.t += 10 * 60_000; // metadata was down for ten minutes
    const started = clock.t;
    t.deepEqual((await detectFailures(kv, clock.t + 1_000, { ...opts, failoverDelayMs: 60_000, sinceMs: started })).markDown, []);
    t.is((await detectFailures(kv, started + 60_001, { ...opts, failoverDelayMs: 60_000, sinceMs: started })).markDown.length, 1);
  });

  test(`${name}: drain and remove follow the legal transitions only`, async (t) => {
    const kv = await open(t);
    const clock = manualClock();
    const opts = { replicationFactor: 2, now: clock.now };
    const incs = await cluster(kv, 3, opts);
    const code = async (p: Promise<unknown>): Promise<string | undefined> => {
      const err = await t.throwsAsync(p);
      return isCairnError(err) ? err.code : String(err);
    };
    t.is(await code(removeNode(kv, 'b2', opts)), 'CAIRN_FAILED_PRECONDITION', 'remove needs a drain first');
    t.is(await code(drainNode(kv, 'nope', opts)), 'CAIRN_NOT_FOUND');
    t.deepEqual(await getDrainStatus(kv, 'b2'), { draining: false, soleCopies: 0, bytesToMove: 0, done: false });
    const { map } = await drainNode(kv, 'b2', opts);
    t.is(await code(drainNode(kv, 'b1', opts)), 'CAIRN_FAILED_PRECONDITION', 'too few nodes would remain for RF 2');
    t.false((await getDrainStatus(kv, 'b2')).done, 'no report since the drain began');
    t.is(await code(removeNode(kv, 'b2', opts)), 'CAIRN_FAILED_PRECONDITION');
    await heartbeat(kv, 'b2', incs.get('b2')!, { ...idle, soleCopies: 0, mapEpoch: map.epoch - 1 }, opts);
    t.false((await getDrainStatus(kv, 'b2')).done, 'a report against the map before the drain does not count');
    await heartbeat(kv, 'b2', incs.get('b2')!, { ...idle, soleCopies: 7, bytesToMove: 900, mapEpoch: map.epoch }, opts);
    t.deepEqual(await getDrainStatus(kv, 'b2'), { draining: true, soleCopies: 7, bytesToMove: 900, done: false });
    const held = await t.throwsAsync(removeNode(kv, 'b2', opts));
    t.true(isCairnError(held, 'CAIRN_FAILED_PRECONDITION'));
    t.is((held as { metadata?: Record<string, string> }).metadata?.['sole_copies'], '7');
    await heartbeat(kv, 'b2', incs.get('b2')!, { ...idle, soleCopies: 0, mapEpoch: map.epoch }, opts);
    t.true((await getDrainStatus(kv, 'b2')).done);
    const removed = await removeNode(kv, 'b2', opts);
    t.is(removed.node.state, 'removed');
    t.deepEqual(removed.map.nodes.map((n) => n.id), ['b0', 'b1']);
    t.is(await code(heartbeat(kv, 'b2', incs.get('b2')!, idle, opts)), 'CAIRN_FAILED_PRECONDITION');
    t.is(await code(markNodeUp(kv, 'b2', opts)), 'CAIRN_FAILED_PRECONDITION');
    t.is(await code(removeNode(kv, 'b2', opts)), 'CAIRN_FAILED_PRECONDITION');
    // A cancelled drain: draining → up.
    await registerNode(kv, { id: 'b3', addr: '10.0.0.3:7400', zone: 'z3', weight: 1, capacityBytes: 0 }, opts);
    await drainNode(kv, 'b3', opts);
    t.is((await markNodeUp(kv, 'b3', opts)).node.state, 'up');
    t.false((await getDrainStatus(kv, 'b3')).draining);
  });

  test(`${name}: the watch delivers every epoch in order and resumes from an epoch`, async (t) => {
    const kv = await open(t);
    const clock = manualClock();
    const opts = { replicationFactor: 2, now: clock.now };
    const abort = new AbortController();
    t.teardown(() => abort.abort());
    const seen: number[] = [];
    const watching = (async () => {
      for await (const map of watchClusterMap(kv, 0, { signal: abort.signal, pollMs: 200 })) {
        seen.push(map.epoch);
        if (map.epoch === 6) return;
      }
    })();
    await cluster(kv, 3, opts);
    await drainNode(kv, 'b2', opts);
    await markNodeUp(kv, 'b2', opts);
    await markNodeUp(kv, 'b0', opts);
    await Promise.race([watching, new Promise((_, reject) => setTimeout(() => reject(new Error(`watch saw only ${seen.join(',')}`)), 30_000).unref())]);
    t.deepEqual(seen, [1, 2, 3, 4, 5, 6]);

    const resumed: number[] = [];
    for await (const map of watchClusterMap(kv, 4, { signal: abort.signal, pollMs: 200 })) {
      resumed.push(map.epoch);
      if (map.epoch === 6) break;
    }
    t.deepEqual(resumed, [5, 6]);
    const ahead = watchClusterMap(kv, 7, { signal: abort.signal });
    const err = await t.throwsAsync(ahead.next());
    t.true(isCairnError(err, 'CAIRN_INVALID_ARGUMENT'), String(err));
  });

  test(`${name}: bad node input is INVALID_ARGUMENT and changes nothing`, async (t) => {
    const kv = await open(t);
    const opts = { replicationFactor: 2 };
    const incs = await cluster(kv, 2, opts);
    const before = await snapshot(kv);
    const bad: Array<[string, () => Promise<unknown>]> = [
      ['negative weight', () => registerNode(kv, { id: 'x', addr: '10.0.0.5:7400', zone: 'a', weight: -1, capacityBytes: 0 }, opts)],
      ['NaN weight', () => registerNode(kv, { id: 'x', addr: '10.0.0.5:7400', zone: 'a', weight: Number.NaN, capacityBytes: 0 }, opts)],
      ['bad addr', () => registerNode(kv, { id: 'x', addr: 'no port', zone: 'a', capacityBytes: 0 }, opts)],
      ['bad id', () => registerNode(kv, { id: 'Bad/Id', addr: '10.0.0.5:7400', zone: 'a', capacityBytes: 0 }, opts)],
      ['negative capacity', () => registerNode(kv, { id: 'x', addr: '10.0.0.5:7400', zone: 'a', capacityBytes: -1 }, opts)],
      ['bad incarnation', () => registerNode(kv, { id: 'b0', incarnation: 'zz', addr: '10.0.0.5:7400', zone: 'a', capacityBytes: 0 }, opts)],
      ['negative stats', () => heartbeat(kv, 'b0', incs.get('b0')!, { ...idle, soleCopies: -1 }, opts)],
      ['bad node id', () => drainNode(kv, '', opts)],
    ];
    for (const [what, fn] of bad) {
      const err = await t.throwsAsync(fn(), undefined, what);
      t.true(isCairnError(err, 'CAIRN_INVALID_ARGUMENT'), `${what}: ${String(err)}`);
    }
    const unknown = await t.throwsAsync(heartbeat(kv, 'nobody', incs.get('b0')!, idle, opts));
    t.true(isCairnError(unknown, 'CAIRN_NOT_FOUND'));
    t.deepEqual(await snapshot(kv), before);
  });
}
