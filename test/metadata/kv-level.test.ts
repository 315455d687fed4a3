// Runs the KV conformance suite on the LevelDB backend, plus LevelDB-only behaviour:
// precise (limit-aware) conflict ranges, reopening, group commit under many committers.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { openKv, openLevelKv, type Kv } from '../../src/metadata/kv/index.js';
import { kvConformance } from './kv-conformance.js';

async function tempDir(): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-kv-level-'));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

kvConformance('level', async () => {
  const { dir, remove } = await tempDir();
  const kv = await openLevelKv({ dir });
  return {
    kv,
    async cleanup() {
      await kv.close();
      await remove();
    },
  };
});

const b = (s: string): Buffer => Buffer.from(s);

async function openTemp(t: { teardown(fn: () => Promise<void>): void }): Promise<{ kv: Kv; dir: string }> {
  const { dir, remove } = await tempDir();
  const kv = await openKv({ backend: 'level', dir });
  t.teardown(async () => {
    await kv.close();
    await remove();
  });
  return { kv, dir };
}

test('level: a limited scan does not conflict with writes past the last key it returned', async (t) => {
  const { kv } = await openTemp(t);
  await kv.transact(async (tx) => {
    for (const k of ['q/a', 'q/b', 'q/c']) tx.put(b(k), b('1'));
  });
  const run = async (write: string): Promise<number> => {
    let runs = 0;
    let proceed!: () => void;
    const gate = new Promise<void>((resolve) => {
      proceed = resolve;
    });
    const done = kv.transact(async (tx) => {
      runs++;
      const firstTwo = await tx.scan({ gte: b('q/'), lt: b('q0'), limit: 2 });
      if (runs === 1) await gate;
      tx.put(b(`seen/${write}`), b(String(firstTwo.length)));
    });
    await kv.transact(async (tx) => {
      tx.put(b(write), b('x'));
    });
    proceed();
    await done;
    return runs;
  };
  t.is(await run('q/z'), 1, 'beyond the observed range: no conflict');
  t.is(await run('q/ab'), 2, 'inside the observed range: conflict');
});

test('level: blind writes never conflict', async (t) => {
  const { kv } = await openTemp(t);
  let runs = 0;
  await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      kv.transact(async (tx) => {
        runs++;
        tx.put(b('same'), b(String(i)));
      }),
    ),
  );
  t.is(runs, 20);
  t.truthy(await kv.get(b('same')));
});

test('level: data survives close and reopen', async (t) => {
  const { dir, remove } = await tempDir();
  t.teardown(remove);
  const first = await openLevelKv({ dir });
  await first.transact(async (tx) => {
    tx.put(b('kept'), b('yes'));
  });
  await first.close();
  const second = await openLevelKv({ dir });
  t.teardown(() => second.close());
  t.is((await second.get(b('kept')))?.toString(), 'yes');
});

test('level: 64 concurrent committers are group-committed and all durable', async (t) => {
  const { kv } = await openTemp(t);
  const latencies: number[] = [];
  for (let round = 0; round < 5; round++) {
    await Promise.all(
      Array.from({ length: 64 }, async (_, i) => {
        const started = performance.now();
        await kv.transact(async (tx) => {
          const key = b(`c/${round}/${i}`);
          if ((await tx.get(key)) === undefined) tx.put(key, b('1'));
        });
        latencies.push(performance.now() - started);
      }),
    );
  }
  t.is((await kv.scan({ gte: b('c/'), lt: b('c0') })).length, 320);
  latencies.sort((x, y) => x - y);
  t.log(`p50 ${latencies[160]?.toFixed(2)} ms, p99 ${latencies[316]?.toFixed(2)} ms (no assertion: shared noisy disks)`);
});

test('level: option mistakes throw TypeError', async (t) => {
  await t.throwsAsync(openLevelKv({ dir: '' }), { instanceOf: TypeError, message: /options\.dir/ });
  await t.throwsAsync(openLevelKv(undefined as unknown as { dir: string }), { instanceOf: TypeError });
  await t.throwsAsync(openKv({ backend: 'nope' } as unknown as { backend: 'level'; dir: string }), {
    instanceOf: TypeError,
    message: /config\.backend/,
  });
});
