// Runs the KV conformance suite on the LevelDB backend, plus LevelDB-only behaviour:
// precise (limit-aware) conflict ranges, reopening, group commit under many committers.
import { access, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
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

test('level: tuning options are checked before anything is created, and applied', async (t) => {
  const dir = join(await mkdtemp(join(tmpdir(), 'cairn-kv-tuning-')), 'kv');
  for (const bad of [{ writeBufferBytes: 1 }, { cacheBytes: -1 }, { maxFileBytes: 2 ** 32 }, { cacheBytes: 1.5 }, { writeBufferBytes: Number.NaN }]) {
    await t.throwsAsync(openLevelKv({ dir, ...bad }), { instanceOf: RangeError, message: /options\.(writeBufferBytes|cacheBytes|maxFileBytes)/ });
  }
  await t.throwsAsync(access(dir), { code: 'ENOENT' }, 'a refused option creates no store');
  // A tiny memtable and tables: many flushes and compactions, and every value still reads back.
  const kv = await openLevelKv({ dir, writeBufferBytes: 64 << 10, cacheBytes: 0, maxFileBytes: 64 << 10 });
  try {
    for (let round = 0; round < 20; round++) {
      await kv.transact(async (tx) => {
        for (let i = 0; i < 50; i++) tx.put(b(`t/${round}/${i}`), Buffer.alloc(2048, round));
      });
    }
    const rows = await kv.scan({ gte: b('t/'), lt: b('t0') });
    t.is(rows.length, 1000);
    t.true(rows.every(([k, v]) => v.length === 2048 && v[0] === Number(k.toString().split('/')[1])));
  } finally {
    await kv.close();
  }
  // 2 MB through a 64 KiB memtable was flushed to table files; under the 64 MiB default it stays in the log.
  t.true((await readdir(dir)).some((f) => f.endsWith('.ldb')), 'the small memtable was applied');
  const other = join(await mkdtemp(join(tmpdir(), 'cairn-kv-tuning-')), 'kv');
  const plain = await openLevelKv({ dir: other });
  try {
    await plain.transact(async (tx) => {
      for (let i = 0; i < 1000; i++) tx.put(b(`t/${i}`), Buffer.alloc(2048, 1));
    });
  } finally {
    await plain.close();
  }
  t.false((await readdir(other)).some((f) => f.endsWith('.ldb')), 'the default memtable holds 2 MB');
  await rm(dirname(dir), { recursive: true, force: true });
  await rm(dirname(other), { recursive: true, force: true });
});
