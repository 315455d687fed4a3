// FastCDC chunking: golden boundaries (dedup depends on them forever), streaming ==
// one-shot, size bounds, locality of edits and option validation.
import test from 'ava';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { Chunker, chunkBuffer, findBoundary, resolveChunkerOptions, GEAR, type ChunkerOptions } from '../../src/chunking/index.js';
import { findBoundaryPlain } from '../../src/chunking/fastcdc.js';

/** xorshift32 bytes: a fixed pseudo-random input that any implementation can regenerate. */
function xorshiftBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

const SMALL: ChunkerOptions = { minSize: 64, avgSize: 256, maxSize: 1024 };

function ends(data: Uint8Array, opts?: ChunkerOptions): number[] {
  return chunkBuffer(data, opts).map((c) => c.offset + c.length);
}

function streamed(data: Uint8Array, cuts: number[], opts?: ChunkerOptions): Buffer[] {
  const chunker = new Chunker(opts);
  const out: Buffer[] = [];
  let prev = 0;
  for (const cut of [...cuts, data.length]) {
    out.push(...chunker.push(data.subarray(prev, cut)));
    prev = cut;
  }
  out.push(...chunker.finish());
  return out;
}

test('gear table is the frozen mulberry32 sequence', (t) => {
  t.is(GEAR.length, 256);
  t.is(GEAR[0], 1528039596);
  t.is(GEAR[1], 1339094678);
  t.is(GEAR[255], 2280762703);
  t.is(GEAR.reduce((a, b) => (a + b) % 2 ** 32, 0), 2963468916);
});

test('golden boundaries with default options', (t) => {
  const data = xorshiftBytes(2 << 20, 0x2545f491);
  t.deepEqual(ends(data), [
    45571, 122867, 201301, 272546, 339015, 430983, 517358, 610291, 686195, 763489, 837986, 909284, 942832, 1019776,
    1108516, 1125381, 1212588, 1299766, 1389323, 1472172, 1545634, 1611718, 1709244, 1783720, 1866218, 1945861,
    2044107, 2097152,
  ]);
});

test('golden boundaries with small options', (t) => {
  const data = xorshiftBytes(2 << 20, 0x2545f491);
  t.deepEqual(ends(data, { minSize: 256, avgSize: 1024, maxSize: 4096 }).slice(0, 20), [
    1026, 1466, 2987, 4302, 5377, 6410, 8448, 9534, 10561, 11674, 12466, 13787, 15059, 15440, 16505, 17566, 18733,
    19804, 21064, 22238,
  ]);
});

test('two-bytes-per-step loop cuts exactly where the one-byte definition does', (t) => {
  fc.assert(
    fc.property(
      fc.oneof(fc.uint8Array({ maxLength: 6000 }), fc.uint8Array({ maxLength: 6000, max: 3 })),
      fc.integer({ min: 7, max: 10 }),
      fc.integer({ min: 1, max: 200 }),
      fc.integer({ min: 1, max: 3000 }),
      (data, avgBits, minOff, maxOff) => {
        const avgSize = 2 ** avgBits;
        // Low-entropy inputs make cuts land on both halves of a two-byte step.
        const opts = resolveChunkerOptions({ minSize: Math.max(64, avgSize - minOff), avgSize, maxSize: avgSize + maxOff });
        for (let start = 0; start < data.length; ) {
          const len = findBoundary(data, start, data.length, opts);
          if (len !== findBoundaryPlain(data, start, data.length, opts)) return false;
          start += len;
        }
        return true;
      },
    ),
    { numRuns: 300 },
  );
  t.pass();
});

test('streaming equals one-shot for any split of the input', (t) => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 20_000 }),
      fc.integer(),
      fc.array(fc.integer({ min: 0, max: 20_000 }), { maxLength: 12 }),
      (n, seed, rawCuts) => {
        const data = xorshiftBytes(n, seed | 1);
        const cuts = rawCuts.map((c) => c % (n + 1)).sort((a, b) => a - b);
        const got = streamed(data, cuts, SMALL).map((b) => b.length);
        return JSON.stringify(got) === JSON.stringify(chunkBuffer(data, SMALL).map((c) => c.length));
      },
    ),
    { numRuns: 300 },
  );
  t.pass();
});

test('streaming with default sizes and many small pushes equals one-shot', (t) => {
  const data = xorshiftBytes(3 << 20, 7);
  const cuts: number[] = [];
  for (let c = 0; c < data.length; c += 1000 + ((c * 7919) % 65536)) cuts.push(c);
  const chunks = streamed(data, cuts);
  t.deepEqual(
    chunks.map((b) => b.length),
    chunkBuffer(data).map((c) => c.length),
  );
  t.true(Buffer.concat(chunks).equals(data));
});

test('every chunk but the last is within [min, max] and the chunks concatenate to the input', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 20_000 }), fc.array(fc.nat(20_000), { maxLength: 6 }), (data, rawCuts) => {
      const cuts = rawCuts.map((c) => c % (data.length + 1)).sort((a, b) => a - b);
      const chunks = streamed(data, cuts, SMALL);
      const inBounds = chunks.slice(0, -1).every((c) => c.length >= 64 && c.length <= 1024);
      const last = chunks.at(-1);
      return inBounds && (last === undefined || (last.length > 0 && last.length <= 1024)) && Buffer.concat(chunks).equals(data);
    }),
    { numRuns: 300 },
  );
  t.pass();
});

test('a 1-byte insertion in the middle of 4 MiB changes at most 3 chunks', (t) => {
  const data = xorshiftBytes(4 << 20, 0x9e3779b9);
  const mid = data.length >>> 1;
  const edited = new Uint8Array(data.length + 1);
  edited.set(data.subarray(0, mid));
  edited[mid] = 0x5a;
  edited.set(data.subarray(mid), mid + 1);
  const digest = (d: Uint8Array) => new Set(chunkBuffer(d).map((c) => createHash('sha256').update(d.subarray(c.offset, c.offset + c.length)).digest('hex')));
  const before = digest(data);
  const after = digest(edited);
  const fresh = [...after].filter((h) => !before.has(h)).length;
  t.true(fresh >= 1 && fresh <= 3, `new chunks: ${fresh}`);
});

test('empty input yields no chunks', (t) => {
  t.deepEqual(chunkBuffer(new Uint8Array(0)), []);
  const c = new Chunker();
  t.deepEqual(c.push(new Uint8Array(0)), []);
  t.deepEqual(c.finish(), []);
});

test('a chunker can be reused after finish', (t) => {
  const c = new Chunker(SMALL);
  const data = xorshiftBytes(5000, 3);
  const first = [...c.push(data), ...c.finish()].map((b) => b.length);
  const second = [...c.push(data), ...c.finish()].map((b) => b.length);
  t.deepEqual(first, second);
});

test('option validation names the option', (t) => {
  t.deepEqual(resolveChunkerOptions(), { minSize: 16384, avgSize: 65536, maxSize: 262144 });
  t.true(Object.isFrozen(resolveChunkerOptions()));
  const bad: Array<[ChunkerOptions, RegExp]> = [
    [{ avgSize: 60_000 }, /options\.avgSize must be a power of two/],
    [{ minSize: 65536 }, /options\.minSize must be smaller than options\.avgSize/],
    [{ maxSize: 65536 }, /options\.maxSize must be larger/],
    [{ minSize: 32, avgSize: 128, maxSize: 256 }, /options\.minSize must be between 64/],
    [{ maxSize: 128 * 1024 * 1024 }, /options\.maxSize must be between/],
    [{ avgSize: 32 }, /options\.avgSize must be between/],
  ];
  for (const [o, re] of bad) t.throws(() => resolveChunkerOptions(o), { instanceOf: RangeError, message: re });
  t.throws(() => resolveChunkerOptions({ minSize: 100.5 }), { instanceOf: TypeError, message: /options\.minSize/ });
  t.throws(() => new Chunker({ avgSize: 3000 }), { instanceOf: RangeError });
});
