// Model test: random put/delete/compact/reopen/rebuild sequences against a Map, bounded runs.
// After every step the store must answer exactly what the model holds.
import test from 'ava';
import fc from 'fast-check';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlockStore } from '../../src/blocknode/engine/index.js';

const POOL = Array.from({ length: 10 }, (_, i) => {
  const data = randomBytes(i < 3 ? 200 : 3000 + i * 1500);
  return { address: createHash('sha256').update(data).digest(), data };
});

type Command =
  | { kind: 'put'; ids: number[] }
  | { kind: 'delete'; ids: number[] }
  | { kind: 'compact'; force: boolean }
  | { kind: 'reopen' }
  | { kind: 'rebuild' };

const ids = fc.array(fc.integer({ min: 0, max: POOL.length - 1 }), { minLength: 1, maxLength: 4 });
const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 5, arbitrary: ids.map((i) => ({ kind: 'put' as const, ids: i })) },
  { weight: 4, arbitrary: ids.map((i) => ({ kind: 'delete' as const, ids: i })) },
  { weight: 2, arbitrary: fc.boolean().map((force) => ({ kind: 'compact' as const, force })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'rebuild' as const }) },
);

const options = { segmentBytes: 16 * 1024, inlineBytes: 256, compactDeadRatio: 0.3 };

test('the store behaves like a Map under random operations, reopens and rebuilds', async (t) => {
  await fc.assert(
    fc.asyncProperty(fc.array(command, { minLength: 1, maxLength: 25 }), async (commands) => {
      const dir = await mkdtemp(join(tmpdir(), 'cairn-model-'));
      let store = await BlockStore.open({ dir, ...options });
      const model = new Set<number>();
      try {
        for (const c of commands) {
          if (c.kind === 'put') {
            const fresh = new Set(c.ids.filter((i) => !model.has(i)));
            const r = await store.put(c.ids.map((i) => POOL[i] as { address: Buffer; data: Buffer }));
            if (r.stored !== fresh.size) return false;
            for (const i of c.ids) model.add(i);
          } else if (c.kind === 'delete') {
            const live = new Set(c.ids.filter((i) => model.has(i)));
            if ((await store.delete(c.ids.map((i) => (POOL[i] as { address: Buffer }).address))) !== live.size) return false;
            for (const i of c.ids) model.delete(i);
          } else if (c.kind === 'compact') {
            await store.compact({ force: c.force });
          } else {
            await store.close();
            if (c.kind === 'rebuild') await rm(join(dir, 'index'), { recursive: true, force: true });
            store = await BlockStore.open({ dir, ...options });
          }
          const present = await store.has(POOL.map((b) => b.address));
          for (const [i, b] of POOL.entries()) {
            if (present[i] !== model.has(i)) return false;
            const got = await store.get(b.address);
            if (model.has(i) ? !got?.equals(b.data) : got !== undefined) return false;
          }
          const s = store.stats();
          const bytes = [...model].reduce((n, i) => n + (POOL[i] as { data: Buffer }).data.length, 0);
          if (s.blocks !== model.size || s.bytes !== bytes || s.deadBytes < 0) return false;
        }
        return true;
      } finally {
        await store.close();
        await rm(dir, { recursive: true, force: true });
      }
    }),
    { numRuns: 40, seed: Number(process.env.FC_SEED ?? Date.now() % 2 ** 31) },
  );
  t.pass();
});

test('concurrent bursts leave a state that reopen and rebuild reproduce exactly', async (t) => {
  const burst = fc.array(
    fc.record({ del: fc.boolean(), ids }),
    { minLength: 1, maxLength: 12 },
  );
  await fc.assert(
    fc.asyncProperty(fc.array(burst, { minLength: 1, maxLength: 4 }), async (bursts) => {
      const dir = await mkdtemp(join(tmpdir(), 'cairn-model-burst-'));
      let store = await BlockStore.open({ dir, ...options });
      try {
        for (const ops of bursts) {
          // Nothing is awaited between submissions, so batches pipeline through group commit.
          await Promise.all(
            ops.map((op) =>
              op.del
                ? store.delete(op.ids.map((i) => (POOL[i] as { address: Buffer }).address))
                : store.put(op.ids.map((i) => POOL[i] as { address: Buffer; data: Buffer })),
            ),
          );
          if (bursts.indexOf(ops) % 2 === 1) await store.compact({ force: true });
        }
        const snapshot = async (s: BlockStore): Promise<string> => {
          const present = await s.has(POOL.map((b) => b.address));
          for (const [i, b] of POOL.entries()) {
            const got = await s.get(b.address);
            if (present[i] ? !got?.equals(b.data) : got !== undefined) return 'inconsistent';
          }
          const { blocks, bytes } = s.stats();
          if (blocks !== present.filter(Boolean).length) return 'inconsistent';
          return JSON.stringify({ present, blocks, bytes });
        };
        const live = await snapshot(store);
        if (live === 'inconsistent') return false;
        await store.close();
        store = await BlockStore.open({ dir, ...options });
        if ((await snapshot(store)) !== live) return false;
        await store.close();
        await rm(join(dir, 'index'), { recursive: true, force: true });
        store = await BlockStore.open({ dir, ...options });
        return (await snapshot(store)) === live;
      } finally {
        await store.close();
        await rm(dir, { recursive: true, force: true });
      }
    }),
    { numRuns: 30 },
  );
  t.pass();
});
