// The one behavioural suite every metadata KV backend must pass (abstract-level style):
// a backend test file calls kvConformance() with a factory for fresh, empty stores.
import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import { isCairnError } from '../../src/common/errors.js';
import type { Kv, KvEntry, KvRange, KvTx } from '../../src/metadata/kv/index.js';

export interface KvFixture {
  readonly kv: Kv;
  cleanup(): Promise<void>;
}

export type KvFactory = () => Promise<KvFixture>;

const b = (s: string): Buffer => Buffer.from(s);
const str = (v: Buffer | undefined): string | undefined => v?.toString();
const entries = (list: readonly KvEntry[]): Array<[string, string]> => list.map(([k, v]) => [k.toString('hex'), v.toString()]);

/** Resolves once `n` callers have arrived; later callers pass straight through. */
function barrier(n: number): () => Promise<void> {
  let arrived = 0;
  let open!: () => void;
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  return () => {
    arrived++;
    if (arrived >= n) open();
    return arrived > n ? Promise.resolve() : gate;
  };
}

/** A promise and the function that resolves it. */
function signal(): { done: Promise<void>; fire: () => void } {
  let fire!: () => void;
  const done = new Promise<void>((resolve) => {
    fire = resolve;
  });
  return { done, fire };
}

async function waitFor(predicate: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

async function put(kv: Kv, pairs: Record<string, string>): Promise<void> {
  await kv.transact(async (tx) => {
    for (const [k, v] of Object.entries(pairs)) tx.put(b(k), b(v));
  });
}

/** The reference model of a scan: filter, sort bytewise, reverse, limit. */
function modelScan(store: ReadonlyMap<string, Buffer>, range: KvRange): Array<[string, string]> {
  const keys = [...store.keys()].map((h) => Buffer.from(h, 'hex')).sort((x, y) => Buffer.compare(x, y));
  const selected = keys.filter(
    (k) =>
      (range.gt === undefined || Buffer.compare(k, range.gt) > 0) &&
      (range.gte === undefined || Buffer.compare(k, range.gte) >= 0) &&
      (range.lt === undefined || Buffer.compare(k, range.lt) < 0) &&
      (range.lte === undefined || Buffer.compare(k, range.lte) <= 0),
  );
  if (range.reverse === true) selected.reverse();
  return selected.slice(0, range.limit ?? Infinity).map((k) => [k.toString('hex'), String(store.get(k.toString('hex')))]);
}

export function kvConformance(name: string, factory: KvFactory): void {
  const open = async (t: ExecutionContext): Promise<Kv> => {
    t.timeout(60_000);
    const fixture = await factory();
    t.teardown(() => fixture.cleanup());
    return fixture.kv;
  };

  test(`${name}: get, put and del`, async (t) => {
    const kv = await open(t);
    t.is(await kv.get(b('missing')), undefined);
    await put(kv, { a: '1', b: '2' });
    const value = await kv.get(b('a'));
    t.true(Buffer.isBuffer(value));
    t.is(str(value), '1');
    await kv.transact(async (tx) => {
      tx.put(b('a'), b('one'));
      tx.del(b('b'));
      tx.del(b('never-existed'));
    });
    t.is(str(await kv.get(b('a'))), 'one');
    t.is(await kv.get(b('b')), undefined);
    await put(kv, { empty: '' });
    t.deepEqual(await kv.get(b('empty')), Buffer.alloc(0));
    t.is(await kv.transact(async () => 42), 42);
  });

  test(`${name}: scans honour every bound combination, limit and reverse`, async (t) => {
    const kv = await open(t);
    const letters = 'abcdefghij'.split('');
    await put(kv, Object.fromEntries(letters.map((l) => [l, l.toUpperCase()])));
    const store = new Map(letters.map((l) => [b(l).toString('hex'), b(l.toUpperCase())]));
    const lowers: Array<Partial<KvRange>> = [{}, { gt: b('c') }, { gte: b('c') }, { gt: b('cc') }, { gte: b('0') }];
    const uppers: Array<Partial<KvRange>> = [{}, { lt: b('h') }, { lte: b('h') }, { lt: b('hh') }, { lte: b('zz') }];
    const limits = [undefined, 1, 3, 100];
    const scans: Array<Promise<void>> = [];
    for (const lower of lowers) {
      for (const upper of uppers) {
        for (const limit of limits) {
          for (const reverse of [false, true]) {
            const range: KvRange = { ...lower, ...upper, ...(limit === undefined ? {} : { limit }), reverse };
            scans.push(
              kv.scan(range).then((got) => {
                t.deepEqual(entries(got), modelScan(store, range), JSON.stringify(range));
              }),
            );
          }
        }
      }
    }
    await Promise.all(scans);
    t.deepEqual(await kv.scan({ gt: b('h'), lt: b('c') }), [], 'empty when bounds cross');
    t.deepEqual(await kv.scan({ gt: b('c'), lt: b('c') }), []);
    t.deepEqual(entries(await kv.scan({ gte: b('c'), lte: b('c') })), [[b('c').toString('hex'), 'C']]);
  });

  test(`${name}: keys sort bytewise, including 0x00 and 0xff`, async (t) => {
    const kv = await open(t);
    const keys = [[0xff, 0xff], [0x00], [0x80], [0xff], [0x00, 0x00], [0x7f], [0x01], [0xff, 0x00], [0x00, 0xff], [0x61]].map((k) =>
      Buffer.from(k),
    );
    await kv.transact(async (tx) => {
      for (const k of keys) tx.put(k, k);
    });
    const sorted = [...keys].sort((x, y) => Buffer.compare(x, y)).map((k) => k.toString('hex'));
    t.deepEqual((await kv.scan({})).map(([k]) => k.toString('hex')), sorted);
    t.deepEqual((await kv.scan({ reverse: true })).map(([k]) => k.toString('hex')), [...sorted].reverse());
    t.deepEqual(
      (await kv.scan({ gt: Buffer.from([0x00]), lt: Buffer.from([0xff]) })).map(([k]) => k.toString('hex')),
      ['0000', '00ff', '01', '61', '7f', '80'],
    );
    t.deepEqual((await kv.scan({ gte: Buffer.from([0xff]) })).map(([k]) => k.toString('hex')), ['ff', 'ff00', 'ffff']);
    for (const k of keys) t.deepEqual(await kv.get(k), k);
  });

  test(`${name}: a transaction reads its own writes`, async (t) => {
    const kv = await open(t);
    await put(kv, { a: '1', b: '2', c: '3', d: '4' });
    await kv.transact(async (tx) => {
      tx.put(b('b'), b('two'));
      tx.del(b('c'));
      tx.put(b('bb'), b('new'));
      t.is(str(await tx.get(b('b'))), 'two');
      t.is(await tx.get(b('c')), undefined);
      t.is(str(await tx.get(b('bb'))), 'new');
      t.is(str(await tx.get(b('a'))), '1');
      const all = (await tx.scan({})).map(([k, v]) => `${k.toString()}=${v.toString()}`);
      t.deepEqual(all, ['a=1', 'b=two', 'bb=new', 'd=4']);
      const limited = (await tx.scan({ gt: b('a'), limit: 2 })).map(([k]) => k.toString());
      t.deepEqual(limited, ['b', 'bb']);
      const reverse = (await tx.scan({ reverse: true, limit: 2 })).map(([k]) => k.toString());
      t.deepEqual(reverse, ['d', 'bb']);
      tx.del(b('bb'));
      tx.del(b('d'));
      t.deepEqual((await tx.scan({ gte: b('b'), limit: 1 })).map(([k]) => k.toString()), ['b']);
      t.deepEqual((await tx.scan({ gt: b('b') })).map(([k]) => k.toString()), []);
      // Mutating a buffer after put must not change what was written.
      const value = b('mutable');
      tx.put(b('m'), value);
      value.fill(0);
    });
    t.deepEqual(
      (await kv.scan({})).map(([k, v]) => `${k.toString()}=${v.toString()}`),
      ['a=1', 'b=two', 'm=mutable'],
    );
  });

  test(`${name}: a transaction reads from one consistent view`, async (t) => {
    const kv = await open(t);
    await put(kv, { a: '1', b: '1' });
    const seen = await kv.transact(async (tx) => {
      const a = str(await tx.get(b('a')));
      // Committed by someone else between our two reads: we must not see half of it.
      await put(kv, { a: '2', b: '2' });
      const bValue = str(await tx.get(b('b')));
      const scanned = (await tx.scan({})).map(([, v]) => v.toString());
      return [a, bValue, ...scanned];
    });
    t.deepEqual(seen, ['1', '1', '1', '1']);
    t.deepEqual((await kv.scan({})).map(([, v]) => v.toString()), ['2', '2']);
  });

  test(`${name}: scans inside a transaction match a model (property)`, async (t) => {
    const kv = await open(t);
    const keyArb = fc.uint8Array({ minLength: 1, maxLength: 3, max: 4 }).map((a) => Buffer.from(a.map((x) => [0x00, 0x01, 0x7f, 0x80, 0xff][x] ?? 0)));
    const opArb = fc.tuple(fc.boolean(), keyArb, fc.string({ maxLength: 3 }));
    const boundArb = fc.option(keyArb, { nil: undefined });
    let round = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArb, { maxLength: 8 }),
        fc.array(opArb, { maxLength: 8 }),
        fc.record({
          lowerKind: fc.constantFrom('gt', 'gte'),
          lower: boundArb,
          upperKind: fc.constantFrom('lt', 'lte'),
          upper: boundArb,
          limit: fc.option(fc.integer({ min: 1, max: 6 }), { nil: undefined }),
          reverse: fc.boolean(),
        }),
        async (committed, buffered, r) => {
          round++;
          // Each run works under its own prefix so runs need no cleanup between them.
          const prefix = Buffer.from(`r${round}/`);
          const k = (key: Buffer): Buffer => Buffer.concat([prefix, key]);
          const model = new Map<string, Buffer>();
          const apply = (tx: KvTx, ops: ReadonlyArray<readonly [boolean, Buffer, string]>): void => {
            for (const [isPut, key, value] of ops) {
              if (isPut) {
                tx.put(k(key), b(value));
                model.set(k(key).toString('hex'), b(value));
              } else {
                tx.del(k(key));
                model.delete(k(key).toString('hex'));
              }
            }
          };
          await kv.transact(async (tx) => {
            apply(tx, committed);
          });
          const range: KvRange = {
            ...(r.lower === undefined ? { gte: prefix } : { [r.lowerKind]: k(r.lower) }),
            ...(r.upper === undefined ? { lt: Buffer.from(`r${round}0`) } : { [r.upperKind]: k(r.upper) }),
            ...(r.limit === undefined ? {} : { limit: r.limit }),
            reverse: r.reverse,
          };
          const inTx = await kv.transact(async (tx) => {
            model.clear();
            for (const [key, value] of await tx.scan({ gte: prefix, lt: Buffer.from(`r${round}0`) })) {
              model.set(key.toString('hex'), value);
            }
            apply(tx, buffered);
            return entries(await tx.scan(range));
          });
          t.deepEqual(inTx, modelScan(model, range));
          t.deepEqual(entries(await kv.scan(range)), modelScan(model, range));
        },
      ),
      { numRuns: 40 },
    );
  });

  test(`${name}: an error thrown by fn aborts and is rethrown unchanged`, async (t) => {
    const kv = await open(t);
    await put(kv, { a: 'before' });
    const heard: string[] = [];
    const off = kv.subscribe('aborts', (payload) => heard.push(payload));
    t.teardown(off);
    const boom = new Error('boom');
    let runs = 0;
    const error = await t.throwsAsync(
      kv.transact(async (tx) => {
        runs++;
        tx.put(b('a'), b('after'));
        tx.put(b('z'), b('new'));
        tx.notify('aborts', 'aborted');
        throw boom;
      }),
    );
    t.is(error, boom);
    t.is(runs, 1);
    t.is(str(await kv.get(b('a'))), 'before');
    t.is(await kv.get(b('z')), undefined);
    // Notifications of one session arrive in commit order: once the sentinel is here, anything
    // the aborted transaction could have sent would have been here first.
    await kv.transact(async (tx) => {
      tx.notify('aborts', 'sentinel');
    });
    await waitFor(() => heard.includes('sentinel'), 'sentinel');
    t.deepEqual(heard, ['sentinel']);
  });

  test(`${name}: multi-key commits are atomic to concurrent readers`, async (t) => {
    const kv = await open(t);
    const batches = 20;
    const width = 5;
    let done = false;
    const readers = [0, 1].map(async () => {
      let observations = 0;
      while (!done || observations < 3) {
        const seen = new Map<string, number>();
        for (const [key] of await kv.scan({ gte: b('batch/'), lt: b('batch0') })) {
          const batch = key.toString().split('/')[1] ?? '';
          seen.set(batch, (seen.get(batch) ?? 0) + 1);
        }
        for (const [batch, count] of seen) t.is(count, width, `batch ${batch} seen partially`);
        await kv.transact(async (tx) => {
          const inTx = await tx.scan({ gte: b('batch/'), lt: b('batch0') });
          t.is(inTx.length % width, 0);
        });
        observations++;
      }
    });
    for (let i = 0; i < batches; i++) {
      await kv.transact(async (tx) => {
        for (let j = 0; j < width; j++) tx.put(b(`batch/${String(i).padStart(3, '0')}/${j}`), b('x'));
      });
    }
    done = true;
    await Promise.all(readers);
    t.is((await kv.scan({ gte: b('batch/'), lt: b('batch0') })).length, batches * width);
  });

  test(`${name}: notify is delivered after commit, once per subscriber`, async (t) => {
    const kv = await open(t);
    const first: string[] = [];
    const second: string[] = [];
    const offFirst = kv.subscribe('changes', (p) => first.push(p));
    const offSecond = kv.subscribe('changes', (p) => second.push(p));
    const other: string[] = [];
    t.teardown(kv.subscribe('other_channel', (p) => other.push(p)));
    t.teardown(offSecond);
    let visibleWhenHeard: string | undefined;
    t.teardown(
      kv.subscribe('changes', (p) => {
        if (p === 'p1') void kv.get(b('k')).then((v) => (visibleWhenHeard = str(v)));
      }),
    );
    await kv.transact(async (tx) => {
      tx.put(b('k'), b('v'));
      tx.notify('changes', 'p1');
      tx.notify('changes', 'p2');
      tx.notify('changes', 'p1');
      // Nothing may be delivered before commit.
      await new Promise((resolve) => setTimeout(resolve, 20));
      t.deepEqual(first, []);
    });
    await waitFor(() => first.length >= 2 && second.length >= 2, 'notifications');
    t.deepEqual(first, ['p1', 'p2'], 'in order; identical pairs folded as PostgreSQL does');
    t.deepEqual(second, ['p1', 'p2']);
    await waitFor(() => visibleWhenHeard !== undefined, 'read from listener');
    t.is(visibleWhenHeard, 'v', 'the commit is visible by the time its notification arrives');
    offFirst();
    await kv.transact(async (tx) => {
      tx.notify('changes', 'p3');
    });
    await waitFor(() => second.length === 3, 'p3');
    t.deepEqual(first, ['p1', 'p2'], 'unsubscribed listener hears nothing more');
    t.deepEqual(other, []);
    const payload = 'é'.repeat(3999) + 'x';
    await kv.transact(async (tx) => {
      tx.notify('other_channel', payload);
    });
    await waitFor(() => other.length === 1, 'long payload');
    t.is(other[0], payload);
  });

  test(`${name}: a conflicting transaction is re-run`, async (t) => {
    const kv = await open(t);
    await put(kv, { n: '0' });
    const heard: string[] = [];
    t.teardown(kv.subscribe('retries', (p) => heard.push(p)));
    let runs = 0;
    const firstRead = signal();
    const gate = signal();
    const slow = kv.transact(async (tx) => {
      runs++;
      const n = Number(str(await tx.get(b('n'))));
      if (runs === 1) {
        firstRead.fire();
        await gate.done;
      }
      tx.put(b('n'), b(String(n + 1)));
      tx.notify('retries', `run ${runs}`);
      return n;
    });
    await firstRead.done;
    await put(kv, { n: '100' });
    gate.fire();
    t.is(await slow, 100, 'the result of the successful run is returned');
    t.is(runs, 2);
    t.is(str(await kv.get(b('n'))), '101');
    await kv.transact(async (tx) => {
      tx.notify('retries', 'sentinel');
    });
    await waitFor(() => heard.includes('sentinel'), 'sentinel');
    t.deepEqual(heard, ['run 2', 'sentinel'], 'only the committed run notifies');
  });

  test(`${name}: a transaction of many writes reads its own writes, commits all or nothing, and re-runs whole`, async (t) => {
    // PostgreSQL sends a transaction's writes ahead of COMMIT once it has buffered a few hundred:
    // reads, scans, overwrites and deletes must still see the buffer, and a failure or a conflict
    // must still leave nothing behind.
    const kv = await open(t);
    const pad = (i: number): string => String(i).padStart(4, '0');
    await put(kv, { 'big/n': '0', 'big/gone': 'x' });
    const boom = new Error('boom');
    const thrown = await t.throwsAsync(
      kv.transact(async (tx) => {
        for (let i = 0; i < 1000; i++) tx.put(b(`big/a${pad(i)}`), b('v'));
        t.is(str(await tx.get(b('big/a0999'))), 'v');
        throw boom;
      }),
    );
    t.is(thrown, boom);
    t.deepEqual(await kv.scan({ gte: b('big/a'), lt: b('big/b') }), [], 'an aborted transaction of many writes leaves none');

    let runs = 0;
    const firstRead = signal();
    const gate = signal();
    const expected = (run: number): Array<[string, string]> => {
      const out: Array<[string, string]> = [];
      for (let i = 0; i < 1000; i++) {
        if (i % 10 === 1) continue;
        out.push([b(`big/k${pad(i)}`).toString('hex'), i % 3 === 0 ? `${run}:${i}:again` : `${run}:${i}`]);
      }
      return out;
    };
    const big = kv.transact(async (tx) => {
      runs++;
      const n = Number(str(await tx.get(b('big/n'))));
      if (runs === 1) {
        firstRead.fire();
        await gate.done;
      }
      tx.put(b('big/n'), b(String(n + 1)));
      for (let i = 0; i < 1000; i++) tx.put(b(`big/k${pad(i)}`), b(`${runs}:${i}`));
      for (let i = 0; i < 1000; i += 3) tx.put(b(`big/k${pad(i)}`), b(`${runs}:${i}:again`));
      for (let i = 1; i < 1000; i += 10) tx.del(b(`big/k${pad(i)}`));
      tx.del(b('big/gone'));
      t.is(str(await tx.get(b('big/k0003'))), `${runs}:3:again`);
      t.is(await tx.get(b('big/k0011')), undefined);
      t.is(await tx.get(b('big/gone')), undefined);
      t.deepEqual(entries(await tx.scan({ gte: b('big/k'), lt: b('big/l') })), expected(runs));
      t.deepEqual(entries(await tx.scan({ gte: b('big/k'), lt: b('big/l'), reverse: true, limit: 5 })), expected(runs).reverse().slice(0, 5));
      return n;
    });
    await firstRead.done;
    await put(kv, { 'big/n': '100' });
    gate.fire();
    t.is(await big, 100, 'the run that read the concurrent commit is the one that counts');
    t.is(runs, 2);
    t.is(str(await kv.get(b('big/n'))), '101');
    t.is(await kv.get(b('big/gone')), undefined);
    t.deepEqual(entries(await kv.scan({ gte: b('big/k'), lt: b('big/l') })), expected(2));
  });

  test(`${name}: conflicts beyond maxRetries reject with CAIRN_TX_CONFLICT`, async (t) => {
    const kv = await open(t);
    await put(kv, { n: '0' });
    let runs = 0;
    const error = await t.throwsAsync(
      kv.transact(
        async (tx) => {
          runs++;
          const n = Number(str(await tx.get(b('n'))));
          await put(kv, { n: String(n + 1000) });
          tx.put(b('n'), b(String(n + 1)));
        },
        { maxRetries: 2 },
      ),
    );
    t.true(isCairnError(error, 'CAIRN_TX_CONFLICT'), String(error));
    t.is(runs, 3);
    t.is(str(await kv.get(b('n'))), '3000');
  });

  test(`${name}: no lost updates — 50 concurrent increments`, async (t) => {
    const kv = await open(t);
    await put(kv, { counter: '0' });
    const n = 50;
    await Promise.all(
      Array.from({ length: n }, () =>
        kv.transact(async (tx) => {
          const v = Number(str(await tx.get(b('counter'))));
          tx.put(b('counter'), b(String(v + 1)));
        }),
      ),
    );
    t.is(str(await kv.get(b('counter'))), String(n));
  });

  test(`${name}: onAccepted runs once per commit, before transact resolves; what begins in it reads the commit`, async (t) => {
    const kv = await open(t);
    await put(kv, { counter: '0' });
    const order: string[] = [];
    let next: Promise<void> | undefined;
    let attempts = 0;
    const first = kv.transact(
      async (tx) => {
        attempts++;
        const v = Number(str(await tx.get(b('counter'))));
        tx.put(b('counter'), b(String(v + 1)));
      },
      {
        onAccepted: () => {
          order.push('accepted');
          // Chained like a write lane: the next increment starts before the first is acknowledged.
          next = kv.transact(async (tx) => {
            const v = Number(str(await tx.get(b('counter'))));
            tx.put(b('counter'), b(String(v + 1)));
          }, { maxRetries: 0 });
        },
      },
    );
    await first;
    order.push('resolved');
    await next;
    t.deepEqual(order, ['accepted', 'resolved']);
    t.is(attempts, 1);
    t.is(str(await kv.get(b('counter'))), '2', 'the chained transaction read the first one and did not conflict with it');
    // Not called when the transaction fails.
    let called = false;
    await t.throwsAsync(kv.transact(async () => {
      throw new Error('boom');
    }, { onAccepted: () => { called = true; } }));
    t.false(called);
    await t.throwsAsync(kv.transact(async () => undefined, { onAccepted: 1 as unknown as () => void }), { instanceOf: TypeError, message: /onAccepted/ });
  });

  test(`${name}: no write skew — doctors on call`, async (t) => {
    const kv = await open(t);
    const rounds = 15;
    let succeeded = 0;
    for (let round = 0; round < rounds; round++) {
      await put(kv, { [`r${round}/alice`]: 'on', [`r${round}/bob`]: 'on' });
      const bothRead = barrier(2);
      const goOff = (me: string, other: string): Promise<boolean> =>
        kv.transact(async (tx) => {
          const [mine, theirs] = await Promise.all([tx.get(b(`r${round}/${me}`)), tx.get(b(`r${round}/${other}`))]);
          await bothRead();
          if (str(mine) === 'on' && str(theirs) === 'on') {
            tx.put(b(`r${round}/${me}`), b('off'));
            return true;
          }
          return false;
        });
      const results = await Promise.all([goOff('alice', 'bob'), goOff('bob', 'alice')]);
      const onCall = await kv.scan({ gte: b(`r${round}/`), lt: b(`r${round}0`) });
      const stillOn = onCall.filter(([, v]) => v.toString() === 'on').length;
      t.true(stillOn >= 1, `round ${round}: somebody must stay on call`);
      t.is(results.filter(Boolean).length, 1, `round ${round}: exactly one goes off`);
      succeeded += results.filter(Boolean).length;
    }
    t.is(succeeded, rounds);
  });

  test(`${name}: no phantoms — count a range, then insert`, async (t) => {
    const kv = await open(t);
    const rounds = 10;
    let totalRuns = 0;
    for (let round = 0; round < rounds; round++) {
      const prefix = `p${round}/`;
      const end = `p${round}0`;
      await put(kv, { [`${prefix}a`]: '1', [`${prefix}b`]: '1' });
      const bothCounted = barrier(2);
      const addIfRoom = (name: string): Promise<boolean> =>
        kv.transact(async (tx) => {
          totalRuns++;
          const members = await tx.scan({ gte: b(prefix), lt: b(end) });
          await bothCounted();
          if (members.length >= 3) return false;
          tx.put(b(`${prefix}${name}`), b('1'));
          return true;
        });
      const results = await Promise.all([addIfRoom('x'), addIfRoom('y')]);
      t.is((await kv.scan({ gte: b(prefix), lt: b(end) })).length, 3, `round ${round}: the capacity holds`);
      t.is(results.filter(Boolean).length, 1);
    }
    t.true(totalRuns >= rounds * 3, 'the loser of each round was re-run');
  });

  test(`${name}: programmer mistakes throw TypeError or RangeError`, async (t) => {
    const kv = await open(t);
    const notBuffer = 'a' as unknown as Buffer;
    await t.throwsAsync(kv.get(notBuffer), { instanceOf: TypeError, message: /key/ });
    await t.throwsAsync(kv.get(Buffer.alloc(0)), { instanceOf: TypeError, message: /key/ });
    await t.throwsAsync(kv.get(new Uint8Array([1]) as Buffer), { instanceOf: TypeError });
    await t.throwsAsync(kv.scan({ limit: 0 }), { instanceOf: RangeError, message: /range\.limit/ });
    await t.throwsAsync(kv.scan({ limit: -1 }), { instanceOf: RangeError, message: /range\.limit/ });
    await t.throwsAsync(kv.scan({ limit: 1.5 }), { instanceOf: RangeError, message: /range\.limit/ });
    await t.throwsAsync(kv.scan({ gt: b('a'), gte: b('a') }), { instanceOf: TypeError, message: /range\.gt/ });
    await t.throwsAsync(kv.scan({ lt: notBuffer }), { instanceOf: TypeError, message: /range\.lt/ });
    await t.throwsAsync(kv.transact(async () => undefined, { maxRetries: -1 }), { instanceOf: RangeError, message: /maxRetries/ });
    await t.throwsAsync(kv.transact(async () => undefined, { maxRetries: 0.5 }), { instanceOf: RangeError, message: /maxRetries/ });
    t.throws(() => kv.subscribe('Bad-Channel', () => undefined), { instanceOf: TypeError, message: /channel/ });
    t.throws(() => kv.subscribe('x'.repeat(64), () => undefined), { instanceOf: TypeError, message: /channel/ });
    t.throws(() => kv.subscribe('"; drop table kv; --', () => undefined), { instanceOf: TypeError });
    let leaked: KvTx | undefined;
    await kv.transact(async (tx) => {
      t.throws(() => tx.put(notBuffer, b('v')), { instanceOf: TypeError, message: /key/ });
      t.throws(() => tx.put(b('k'), 'v' as unknown as Buffer), { instanceOf: TypeError, message: /value/ });
      t.throws(() => tx.del(Buffer.alloc(0)), { instanceOf: TypeError, message: /key/ });
      t.throws(() => tx.put(Buffer.alloc(2049, 1), b('v')), { instanceOf: RangeError, message: /key/ });
      tx.put(Buffer.alloc(2048, 0xfe), Buffer.alloc(100_000, 7));
      t.throws(() => tx.notify('ok', 'x'.repeat(8000)), { instanceOf: TypeError, message: /payload/ });
      t.throws(() => tx.notify('ok', 'nul\0'), { instanceOf: TypeError, message: /payload/ });
      t.throws(() => tx.notify('Nope', 'x'), { instanceOf: TypeError, message: /channel/ });
      await t.throwsAsync(tx.scan({ limit: 0 }), { instanceOf: RangeError });
      tx.notify('ok', 'x'.repeat(7999));
      leaked = tx;
    });
    t.throws(() => leaked?.put(b('k'), b('v')), { instanceOf: TypeError, message: /finished/ });
    await t.throwsAsync(async () => leaked?.get(b('k')), { instanceOf: TypeError, message: /finished/ });
    t.is(await kv.get(b('k')), undefined);
    t.deepEqual(await kv.get(Buffer.alloc(2048, 0xfe)), Buffer.alloc(100_000, 7), 'longest key, large value');
  });

  test(`${name}: close waits for in-flight commits, then refuses work`, async (t) => {
    const fixture = await factory();
    t.teardown(() => fixture.cleanup());
    const { kv } = fixture;
    let proceed!: () => void;
    const gate = new Promise<void>((resolve) => {
      proceed = resolve;
    });
    let committed = false;
    const inFlight = kv
      .transact(async (tx) => {
        await gate;
        tx.put(b('late'), b('1'));
      })
      .then(() => {
        committed = true;
      });
    const closed = kv.close();
    setTimeout(proceed, 20);
    await closed;
    t.true(committed, 'the in-flight transaction finished before close resolved');
    await inFlight;
    const error = await t.throwsAsync(kv.transact(async () => undefined));
    t.true(isCairnError(error, 'CAIRN_SHUTTING_DOWN'), String(error));
    await t.throwsAsync(kv.get(b('late')), { instanceOf: Error });
    await kv.close();
  });
}
