import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { BufferPool } from '../../src/common/buffer-pool.js';

test('a released slab is handed out again; foreign buffers and second releases are ignored', (t) => {
  const pool = new BufferPool({ slabBytes: 1024, maxFree: 2, idleMs: 0 });
  const a = pool.take(100);
  t.is(a.length, 100);
  t.is(a.buffer.byteLength, 1024);
  t.is(pool.free, 0);
  pool.release(a.subarray(10, 20)); // any view of the slab hands it back
  t.is(pool.free, 1);
  pool.release(a);
  t.is(pool.free, 1, 'a second release of the same slab is ignored');
  const b = pool.take(1024);
  t.is(b.buffer, a.buffer, 'the free slab is reused');
  t.is(pool.free, 0);
  pool.release(Buffer.alloc(1024));
  pool.release(Buffer.from('small'));
  t.is(pool.free, 0, 'buffers the pool did not hand out are ignored');
  const other = new BufferPool({ slabBytes: 1024, maxFree: 2 });
  other.release(b);
  t.is(other.free, 0, "another pool's slab is ignored");
});

test('a request larger than a slab gets a fresh buffer the pool does not keep; maxFree bounds the free list', (t) => {
  const pool = new BufferPool({ slabBytes: 1024, maxFree: 2, idleMs: 0 });
  const big = pool.take(4096);
  t.is(big.length, 4096);
  pool.release(big);
  t.is(pool.free, 0);
  const slabs = [pool.take(1), pool.take(1), pool.take(1)];
  t.is(new Set(slabs.map((s) => s.buffer)).size, 3);
  for (const s of slabs) pool.release(s);
  t.is(pool.free, 2);
  t.is(pool.take(0).length, 0);
});

test('idle slabs are dropped; a pool in use keeps them', async (t) => {
  const pool = new BufferPool({ slabBytes: 64, maxFree: 4, idleMs: 200 });
  pool.release(pool.take(8));
  t.is(pool.free, 1);
  await sleep(100);
  pool.release(pool.take(8)); // in use: the timer sees a take and waits another round
  await sleep(150);
  t.is(pool.free, 1);
  await sleep(400);
  t.is(pool.free, 0);
});

test('bad sizes and settings are refused', (t) => {
  t.throws(() => new BufferPool({ slabBytes: 0, maxFree: 1 }), { instanceOf: RangeError });
  t.throws(() => new BufferPool({ slabBytes: 1.5, maxFree: 1 }), { instanceOf: RangeError });
  t.throws(() => new BufferPool({ slabBytes: 8, maxFree: -1 }), { instanceOf: RangeError });
  const pool = new BufferPool({ slabBytes: 8, maxFree: 1 });
  t.throws(() => pool.take(-1), { instanceOf: RangeError });
  t.throws(() => pool.take(Number.NaN), { instanceOf: RangeError });
});
