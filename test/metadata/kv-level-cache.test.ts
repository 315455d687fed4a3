// The LevelDB KV's read cache: a transaction reads the state as of its start whatever the cache
// holds — values cached or written after it began, evicted entries, stale entries refreshed by
// later readers — and the cache's size option is checked.
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import fc from 'fast-check';
import { openLevelKv, type Kv } from '../../src/metadata/kv/index.js';
import { b, hold, interleave, put, read, steps } from './kv-test-helpers.js';

async function openTemp(t: { teardown(fn: () => Promise<void>): void }, readCacheBytes?: number): Promise<Kv> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-kv-cache-'));
  const kv = await openLevelKv({ dir, ...(readCacheBytes === undefined ? {} : { readCacheBytes }) });
  t.teardown(async () => {
    await kv.close();
    await rm(dir, { recursive: true, force: true });
  });
  return kv;
}

test('level cache: a transaction never reads a value cached or written after it began', async (t) => {
  const kv = await openTemp(t);
  await put(kv, 'hot', 'v1');
  await put(kv, 'late', 'l1');
  t.is(await read(kv, 'hot'), 'v1', 'now cached');
  const before = hold(kv);
  try {
    await put(kv, 'hot', 'v2');
    // Uncached keys written while `before` is open: one a later reader caches first, one `before` reads first.
    await put(kv, 'cold', 'c2');
    await put(kv, 'late', 'l2');
    t.is(await read(kv, 'cold'), 'c2');
    t.is(await read(kv, 'hot'), 'v2', 'a reader after the write refreshes the stale entry');
    t.is(await before.read('hot'), 'v1');
    t.is(await before.read('cold'), undefined);
    t.is(await before.read('late'), 'l1');
    t.is(await read(kv, 'late'), 'l2', "what `before` read is not what later readers get");
  } finally {
    await before.end();
  }
  t.is(await read(kv, 'hot'), 'v2');
});

test('level cache: a transaction that read a value a later commit changed is re-run and reads the new value', async (t) => {
  const kv = await openTemp(t);
  await put(kv, 'counter', '1');
  t.is(await read(kv, 'counter'), '1');
  const seen: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const bump = kv.transact(async (tx) => {
    const value = (await tx.get(b('counter')))!.toString();
    seen.push(value);
    if (seen.length === 1) await gate;
    tx.put(b('counter'), b(String(Number(value) + 10)));
  });
  await put(kv, 'counter', '2');
  release();
  await bump;
  t.deepEqual(seen, ['1', '2']);
  t.is(await read(kv, 'counter'), '12', 'no lost update');
});

test('level cache: an entry evicted after a write does not let an older snapshot cache its value', async (t) => {
  // Room for about three 300-byte values.
  const kv = await openTemp(t, 1600);
  const big = (tag: string): string => tag.padEnd(300, '.');
  for (const k of ['a', 'b', 'c', 'd', 'e']) await put(kv, k, big(`${k}1`));
  t.is(await read(kv, 'a'), big('a1'));
  const before = hold(kv);
  try {
    await put(kv, 'a', big('a2'));
    // Fill the cache until the stale entry of `a` is evicted.
    for (const k of ['b', 'c', 'd', 'e']) t.is(await read(kv, k), big(`${k}1`));
    t.is(await before.read('a'), big('a1'));
    t.is(await read(kv, 'a'), big('a2'));
  } finally {
    await before.end();
  }
});

test('level cache: readCacheBytes is checked, and 0 turns the cache off', async (t) => {
  const dir = join(await mkdtemp(join(tmpdir(), 'cairn-kv-cache-opt-')), 'kv');
  for (const bad of [-1, 1.5, 2 ** 32, Number.NaN]) {
    await t.throwsAsync(openLevelKv({ dir, readCacheBytes: bad }), { instanceOf: RangeError, message: /options\.readCacheBytes/ });
  }
  await t.throwsAsync(access(dir), { code: 'ENOENT' }, 'a refused option creates no store');
  const kv = await openTemp(t, 0);
  await put(kv, 'k', 'a');
  t.is(await read(kv, 'k'), 'a');
  const held = hold(kv);
  await put(kv, 'k', 'b');
  t.is(await read(kv, 'k'), 'b');
  t.is(await held.read('k'), 'a');
  await held.end();
});

const KEYS = 5;
const step = steps(KEYS, 300);

test('level cache: any interleaving of writes, reads and open snapshots reads what a snapshot must, under eviction', async (t) => {
  // About four entries fit: eviction, stale entries and refreshes all happen.
  const kv = await openTemp(t, 1600);
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(step, { minLength: 20, maxLength: 80 }), async (steps) => {
      const prefix = `r${run++}/`;
      const key = (k: number): string => `${prefix}${k}`;
      return interleave(kv, steps, KEYS, key);
    }),
    { numRuns: 200 },
  );
  t.pass();
});
