// The LevelDB KV's sparse prefixes (Kv.indexSparsePrefix): reads of absent keys under one are
// answered from memory, and every read still returns what the transaction's snapshot holds —
// whatever was pending when the prefix's listing was taken, deleted after a reader began, or
// written past the most keys a prefix may hold.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import fc from 'fast-check';
import { openLevelKv, type Kv } from '../../src/metadata/kv/index.js';
import { b, del, hold, interleave, put, read, steps } from './kv-test-helpers.js';

const PREFIX = 's/';

async function openTemp(t: { teardown(fn: () => Promise<void>): void }): Promise<Kv> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-kv-sparse-'));
  const kv = await openLevelKv({ dir });
  t.teardown(async () => {
    await kv.close();
    await rm(dir, { recursive: true, force: true });
  });
  return kv;
}

/** Counts LevelDB point lookups (the private `db` of the LevelDB KV). */
function countLookups(kv: Kv): { readonly count: number } {
  const db = (kv as unknown as { db: { getSync: (...args: unknown[]) => unknown } }).db;
  const counter = { count: 0 };
  const original = db.getSync.bind(db);
  db.getSync = (...args: unknown[]) => {
    counter.count++;
    return original(...args);
  };
  return counter;
}

/** Resolves once the prefix's listing is read (it is read in the background). */
async function settled(kv: Kv): Promise<void> {
  const loads = (kv as unknown as { sparseLoads: Set<Promise<void>> }).sparseLoads;
  await Promise.all([...loads]);
}

test('level sparse: an absent key under the prefix is answered without a LevelDB lookup, a present one is read', async (t) => {
  const kv = await openTemp(t);
  await put(kv, `${PREFIX}here`, 'v');
  kv.indexSparsePrefix!(b(PREFIX));
  kv.indexSparsePrefix!(b(PREFIX)); // Twice is once.
  await settled(kv);
  const lookups = countLookups(kv);
  t.is(await read(kv, `${PREFIX}absent`), undefined);
  t.is(lookups.count, 0, 'no lookup for an absent key');
  t.is(await read(kv, `${PREFIX}here`), 'v');
  t.is(await read(kv, 'elsewhere'), undefined);
  t.is(lookups.count, 2, 'a present key and a key outside the prefix are read from LevelDB');
  await put(kv, `${PREFIX}new`, 'n');
  t.is(await read(kv, `${PREFIX}new`), 'n', 'a key written after the listing is known');
  await del(kv, `${PREFIX}here`);
  const before = lookups.count;
  t.is(await read(kv, `${PREFIX}here`), undefined);
  t.is(lookups.count, before, 'a deleted key is known absent to transactions that began after the delete');
});

test('level sparse: a commit pending when the listing is taken is in the set', async (t) => {
  const kv = await openTemp(t);
  // Accepted but not yet durable when the prefix is indexed: the snapshot may or may not hold it.
  const pending = kv.transact(
    async (tx) => {
      tx.put(b(`${PREFIX}pending`), b('p'));
    },
    { onAccepted: () => kv.indexSparsePrefix!(b(PREFIX)) },
  );
  await pending;
  await settled(kv);
  t.is(await read(kv, `${PREFIX}pending`), 'p');
});

test('level sparse: a transaction that began before a delete still reads the deleted key', async (t) => {
  const kv = await openTemp(t);
  kv.indexSparsePrefix!(b(PREFIX));
  await put(kv, `${PREFIX}k`, 'old');
  await settled(kv);
  const before = hold(kv);
  try {
    await del(kv, `${PREFIX}k`);
    t.is(await read(kv, `${PREFIX}k`), undefined);
    t.is(await before.read(`${PREFIX}k`), 'old', 'its snapshot still holds the key');
  } finally {
    await before.end().catch(() => undefined);
  }
  // A view taken before a delete, too.
  await put(kv, `${PREFIX}v`, 'kept');
  let resume!: () => void;
  const gate = new Promise<void>((resolve) => (resume = resolve));
  const view = kv.snapshot(async (v) => {
    await gate;
    return (await v.get(b(`${PREFIX}v`)))?.toString();
  });
  await del(kv, `${PREFIX}v`);
  resume();
  t.is(await view, 'kept');
});

test('level sparse: past the most keys a prefix may hold, reads go to LevelDB and stay right', async (t) => {
  const MAX = 100_000;
  const fill = (kv: Kv, from: number, count: number): Promise<void> =>
    kv.transact(async (tx) => {
      for (let i = from; i < from + count; i++) tx.put(b(`${PREFIX}${String(i).padStart(6, '0')}`), b('x'));
    });
  // Too many keys found by the listing.
  const listed = await openTemp(t);
  await fill(listed, 0, MAX + 1);
  listed.indexSparsePrefix!(b(PREFIX));
  await settled(listed);
  let lookups = countLookups(listed);
  t.is(await read(listed, `${PREFIX}absent`), undefined);
  t.is(lookups.count, 1, 'given up at load: the read goes to LevelDB');
  // Too many keys written after the listing.
  const grown = await openTemp(t);
  grown.indexSparsePrefix!(b(PREFIX));
  await settled(grown);
  await fill(grown, 0, MAX);
  lookups = countLookups(grown);
  t.is(await read(grown, `${PREFIX}absent`), undefined);
  t.is(lookups.count, 0, 'still indexed at the limit');
  await fill(grown, MAX, 1);
  t.is(await read(grown, `${PREFIX}absent`), undefined);
  t.is(lookups.count, 1, 'given up past it');
  t.is(await read(grown, `${PREFIX}${String(MAX).padStart(6, '0')}`), 'x');
});

const KEYS = 6;
const step = steps(KEYS, 1);

test('level sparse: any interleaving of writes, deletes, reads and open transactions reads what a snapshot must', async (t) => {
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(step, { minLength: 10, maxLength: 60 }), fc.nat(20), async (steps, indexAt) => {
      // A fresh store each run, indexed after `indexAt` steps (or before the first).
      const dir = await mkdtemp(join(tmpdir(), `cairn-kv-sparse-p${run++}-`));
      const kv = await openLevelKv({ dir });
      // Even keys under the prefix, odd ones outside it.
      const key = (k: number): string => (k % 2 === 0 ? `${PREFIX}${k}` : `o/${k}`);
      try {
        return await interleave(kv, steps, KEYS, key, (i) => {
          if (i === Math.min(indexAt, steps.length - 1)) kv.indexSparsePrefix!(b(PREFIX));
        });
      } finally {
        await kv.close();
        await rm(dir, { recursive: true, force: true });
      }
    }),
    { numRuns: Number(process.env.CAIRN_FUZZ_RUNS ?? 60) },
  );
  t.pass();
});
