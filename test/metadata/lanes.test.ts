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

/** The same KV, but transactions reach callers through a plain object (not the backend's class). */
function wrapped(kv: Kv): Kv {
  return Object.assign(Object.create(kv) as Kv, {
    transact: <T>(fn: (tx: KvTx) => Promise<T>, options?: Parameters<Kv['transact']>[1]) =>
      kv.transact((tx) => fn({ get: (k) => tx.get(k), scan: (r) => tx.scan(r), put: (k, v) => tx.put(k, v), del: (k) => tx.del(k), notify: (c, p) => tx.notify(c, p) }), options),
  });
}

for (const [name, wrap] of [['backend tx', (kv: Kv) => kv], ['wrapped tx', wrapped]] as const) {
  test(`lanes (${name}): batched operations apply in order, failures leave nothing, buffers stay private`, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-lanes-'));
    const kv = await openLevelKv({ dir });
    try {
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
    } finally {
      await kv.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
}
