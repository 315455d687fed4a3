// Write lanes on a real LevelDB KV: a batch's operations see each other's writes in order, a failed
// operation leaves nothing, and the buffers a merged operation hands to its batch stay private —
// through the backend's transaction (writes adopted without a copy) and through any other KvTx.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { openLevelKv, type Kv, type KvTx } from '../../src/metadata/kv/index.js';
import { WriteLanes } from '../../src/metadata/model/lanes.js';

const b = (s: string): Buffer => Buffer.from(s);

/** Runs `fn` on a fresh LevelDB KV in a temporary directory, closed and removed afterwards. */
async function withKv(fn: (kv: Kv) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-lanes-'));
  const kv = await openLevelKv({ dir });
  try {
    await fn(kv);
  } finally {
    await kv.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** The same KV, but transactions reach callers through a plain object (not the backend's class). */
function wrapped(kv: Kv): Kv {
  return Object.assign(Object.create(kv) as Kv, {
    transact: <T>(fn: (tx: KvTx) => Promise<T>, options?: Parameters<Kv['transact']>[1]) =>
      kv.transact((tx) => fn({ get: (k) => tx.get(k), scan: (r) => tx.scan(r), put: (k, v) => tx.put(k, v), del: (k) => tx.del(k), notify: (c, p) => tx.notify(c, p) }), options),
  });
}

for (const [name, wrap] of [['backend tx', (kv: Kv) => kv], ['wrapped tx', wrapped]] as const) {
  test(`lanes (${name}): batched operations apply in order, failures leave nothing, buffers stay private`, async (t) => {
    await withKv(async (kv) => {
      const lanes = new WriteLanes(wrap(kv));
      const ops = Array.from({ length: 200 }, (_, i) =>
        lanes.run('tenant', async (tx) => {
          const raw = await tx.get(b('counter'));
          const n = raw === undefined ? 0 : Number(raw.toString());
          // The caller's buffers are its own: reusing them after put must not change what was written.
          const key = b(`item/${String(i).padStart(3, '0')}`);
          const value = b(`n=${n}`);
          tx.put(key, value);
          value.fill(0x21);
          key.fill(0x21);
          if (i % 7 === 3) {
            tx.put(b('counter'), b('999999'));
            throw new Error(`op ${i} fails`);
          }
          tx.put(b('counter'), b(String(n + 1)));
          // A value read back is a copy: scribbling on it changes nothing stored.
          (await tx.get(b('counter')))!.fill(0x30);
          return n;
        }),
      );
      const outcomes = await Promise.allSettled(ops);
      const ok = outcomes.flatMap((o, i) => (o.status === 'fulfilled' ? [[i, o.value] as const] : []));
      t.is(ok.length, 200 - outcomes.filter((_, i) => i % 7 === 3).length);
      t.true(outcomes.every((o, i) => (o.status === 'rejected') === (i % 7 === 3)));
      // Each successful operation saw every earlier one, in submission order.
      t.deepEqual(ok.map(([, n]) => n), ok.map((_, j) => j));
      t.is((await kv.get(b('counter')))?.toString(), String(ok.length));
      const items = await kv.scan({ gte: b('item/'), lt: b('item0') });
      t.deepEqual(items.map(([k]) => k.toString()), ok.map(([i]) => `item/${String(i).padStart(3, '0')}`));
      t.deepEqual(items.map(([, v]) => v.toString()), ok.map(([, n]) => `n=${n}`));
    });
  });
}

test('lanes: the prefetches of a batch run side by side, each step of all of them one getMany', async (t) => {
  await withKv(async (kv) => {
    // A chain a → b → c per operation: each step names the next key, as a path's entries do.
    await kv.transact(async (tx) => {
      for (let i = 0; i < 40; i++) {
        tx.put(b(`a/${i}`), b(`b/${i}`));
        tx.put(b(`b/${i}`), b(`c/${i}`));
        tx.put(b(`c/${i}`), b(`v${i}`));
      }
    });
    const calls: number[] = [];
    // LevelDB's transaction has no getMany (reads are cheap there); give it a counting one.
    const counting: Kv = Object.assign(Object.create(kv) as Kv, {
      transact: <T>(fn: (tx: KvTx) => Promise<T>, options?: Parameters<Kv['transact']>[1]) =>
        kv.transact((tx) => {
          const getMany = async (keys: readonly Buffer[]): Promise<Array<Buffer | undefined>> => {
            calls.push(keys.length);
            return Promise.all(keys.map((k) => tx.get(k)));
          };
          return fn({ get: (k) => tx.get(k), scan: (r) => tx.scan(r), put: (k, v) => tx.put(k, v), del: (k) => tx.del(k), notify: (c, p) => tx.notify(c, p), getMany });
        }, options),
    });
    const lanes = new WriteLanes(counting, { maxBatch: 32 });
    // Hold the lane with one operation so that the next 40 queue up: they run as a batch of 32
    // (the most one carries here) and then one of 8.
    let release!: () => void;
    const held = lanes.run('lane', () => new Promise<void>((resolve) => (release = resolve)));
    const ops = Array.from({ length: 40 }, (_, i) =>
      lanes.run(
        'lane',
        async (tx) => {
          const c = await tx.get((await tx.get((await tx.get(b(`a/${i}`)))!))!);
          tx.put(b(`out/${i}`), c!);
          return c!.toString();
        },
        async (reader) => {
          if (i === 7) throw new Error('a failing prefetch is only a lost hint');
          let key = b(`a/${i}`);
          for (let step = 0; step < 3; step++) {
            const next = await reader.get(key);
            if (next === undefined) return;
            key = next;
          }
        },
      ),
    );
    release();
    await held;
    t.deepEqual(await Promise.all(ops), Array.from({ length: 40 }, (_, i) => `v${i}`));
    // Three steps per batch, each one getMany for all its prefetching operations (31 of the first
    // 32, since #7 fails, then 8).
    t.deepEqual(calls, [31, 31, 31, 8, 8, 8]);
    t.is((await kv.scan({ gte: b('out/'), lt: b('out0') })).length, 40);
  });
});

test('lanes: a batch of at most maxBatch runs, then the event loop turns before the next', async (t) => {
  await withKv(async (kv) => {
    for (const maxBatch of [0, -1, 1.5, Number.NaN]) t.throws(() => new WriteLanes(kv, { maxBatch }), { instanceOf: RangeError });
    const lanes = new WriteLanes(kv, { maxBatch: 32 });
    let release!: () => void;
    const held = lanes.run('lane', () => new Promise<void>((resolve) => (release = resolve)));
    // LevelDB reads are synchronous, so without a turn the next batch runs straight after this
    // one is accepted, before the KV could start writing it or acknowledge earlier writes.
    let turned = false;
    const seen: Array<boolean | undefined> = [];
    const ops = Array.from({ length: 64 }, (_, i) =>
      lanes.run('lane', async (tx) => {
        await tx.get(b(`op/${i}`));
        tx.put(b(`op/${i}`), b('x'));
        if (i === 31) setImmediate(() => (turned = true));
        seen[i] = i === 32 ? turned : undefined;
      }),
    );
    release();
    await held;
    await Promise.all(ops);
    t.true(seen[32], 'the 33rd operation (the next batch) ran after an event-loop turn');
    t.is((await kv.scan({ gte: b('op/'), lt: b('op0') })).length, 64);
  });
});

test('lanes: operations a batch acknowledges queue again in time to join the next batch', async (t) => {
  await withKv(async (kv) => {
    // Count the transactions (batches) the lane runs. As on PostgreSQL, a transaction is
    // accepted (visible to the next) only once it has committed.
    let batches = 0;
    const counting = Object.create(kv) as Kv;
    counting.transact = async (fn, options) => {
      batches++;
      const result = await kv.transact(fn);
      options?.onAccepted?.();
      return result;
    };
    const lanes = new WriteLanes(counting, { maxBatch: 64 });
    // 16 closed-loop writers, 10 rounds each: each round's writers are acknowledged together and
    // come straight back. Without the turn between batches, the lane started the next batch with
    // whoever was queued at the moment of acknowledgement (one writer), and every other batch
    // carried a single operation.
    await Promise.all(Array.from({ length: 16 }, async (_, w) => {
      for (let r = 0; r < 10; r++) await lanes.run('lane', async (tx) => tx.put(b(`loop/${w}/${r}`), b('x')));
    }));
    t.is((await kv.scan({ gte: b('loop/'), lt: b('loop0') })).length, 160);
    t.true(batches <= 12, `160 operations ran in ${batches} batches (about 10 expected)`);
  });
});

test('lanes: a bad key read inside a batched operation rejects like any read, and fails only that operation', async (t) => {
  await withKv(async (kv) => {
    const lanes = new WriteLanes(kv, { maxBatch: 32 });
    let release!: () => void;
    const held = lanes.run('lane', () => new Promise<void>((resolve) => (release = resolve)));
    let returned = false;
    const bad = lanes.run('lane', async (tx) => {
      const pending = tx.get(undefined as unknown as Buffer);
      returned = pending instanceof Promise;
      tx.put(b('bad'), b('x'));
      await pending;
    });
    const good = lanes.run('lane', async (tx) => {
      tx.put(b('good'), b('y'));
    });
    release();
    await held;
    await t.throwsAsync(bad, { instanceOf: TypeError });
    t.true(returned, 'tx.get returned a promise (no synchronous throw)');
    await good;
    t.is(await kv.get(b('bad')), undefined);
    t.is((await kv.get(b('good')))?.toString(), 'y');
  });
});
