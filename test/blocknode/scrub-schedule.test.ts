// The background scrub's schedule survives restarts: a complete scrub records when it finished,
// a never-scrubbed store starts its clock when the scrubber starts, and the next scrub is due a
// full interval after the last one — so a node that restarts often does not re-read its disk on
// every start, and one whose last scrub is overdue scrubs soon after starting.
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { PartitionDigests } from '../../src/blocknode/digests.js';
import { Scrubber } from '../../src/blocknode/scrub.js';
import type { BlockStore } from '../../src/blocknode/engine/index.js';
import { block, openStore, tempDir } from './engine-helpers.js';

const quiet = { warn() {}, info() {} };
const noMap = { current: () => ({ epoch: 0, replicationFactor: 1, nodes: [], partitions: [] }), previous: () => undefined, onChange: () => () => undefined, close() {} };

function scrubber(store: BlockStore, intervalMs: number): Scrubber {
  // Peers are only asked for copies of corrupt blocks, which these tests never have.
  const peers = { get() { throw new Error('no peers in this test'); }, close() {} };
  return new Scrubber({ store, digests: new PartitionDigests(store), map: noMap, selfId: 'n1', peers: peers as never, log: quiet, intervalMs });
}

test('a complete scrub records its time; a never-scrubbed store starts its clock at start', async (t) => {
  const store = await openStore(t, await tempDir(t));
  await store.put([block(1000), block(70_000)]);
  t.is(await store.lastScrubbedMs(), undefined);
  const before = Date.now();
  const { checked } = await store.scrub();
  t.is(checked, 2);
  const stamped = await store.lastScrubbedMs();
  t.true(stamped !== undefined && stamped >= before && stamped <= Date.now());

  const aborted = new AbortController();
  aborted.abort();
  await store.markScrubbed(1);
  await store.scrub({ signal: aborted.signal });
  t.is(await store.lastScrubbedMs(), 1, 'an aborted scrub records nothing');
  await t.throwsAsync(store.markScrubbed(-1), { instanceOf: RangeError });

  const fresh = await openStore(t, await tempDir(t, 'cairn-scrub-fresh'));
  const s = scrubber(fresh, 60_000);
  s.start();
  t.teardown(() => s.stop());
  for (let i = 0; i < 50 && (await fresh.lastScrubbedMs()) === undefined; i++) await sleep(20);
  const clock = await fresh.lastScrubbedMs();
  t.true(clock !== undefined && Math.abs(clock - Date.now()) < 5_000, 'the schedule starts now');
});

test('after a restart the next scrub waits for the interval; an overdue one runs soon after start', async (t) => {
  const dir = await tempDir(t);
  const store = await openStore(t, dir);
  await store.put([block(5000), block(5000), block(5000)]);

  // Scrubbed just now, interval 1.5 s: no scrub within the first second, one by ~1.5 s.
  const recent = Date.now();
  await store.markScrubbed(recent);
  const a = scrubber(store, 1_500);
  a.start();
  await sleep(1_000);
  t.is(await store.lastScrubbedMs(), recent, 'not due yet: the disk is not re-read on start');
  for (let i = 0; i < 100 && (await store.lastScrubbedMs()) === recent; i++) await sleep(50);
  t.true((await store.lastScrubbedMs())! > recent, 'scrubbed once the interval passed');
  await a.stop();

  // Last scrubbed an hour ago with a 1.2 s interval: overdue, so it runs after the settle delay
  // (min(interval, 5 s)), not an interval after the restart.
  const old = Date.now() - 3_600_000;
  await store.markScrubbed(old);
  const started = Date.now();
  const b = scrubber(store, 1_200);
  b.start();
  t.teardown(() => b.stop());
  for (let i = 0; i < 100 && (await store.lastScrubbedMs()) === old; i++) await sleep(50);
  const next = await store.lastScrubbedMs();
  t.true(next! > old, 'the overdue scrub ran');
  t.true(next! - started < 4_000, `soon after start (${next! - started} ms)`);
});
