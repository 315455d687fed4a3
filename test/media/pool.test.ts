// The sharp pool in process: sizing from the cgroup CPU limit, a bounded queue that refuses
// work when full, deadlines that abort queued tasks but never running ones, transferred buffers.
import test from 'ava';
import { Registry } from 'prom-client';
import sharp from 'sharp';
import { cgroupCpus, poolThreads, MediaPool } from '../../src/media/pool.js';
import { mediaMetrics } from '../../src/media/metrics.js';
import { LADDER, MediaFailure, SQUARE_SIZE, resolveMediaOptions, type MediaOptionsInput } from '../../src/media/options.js';
import type { ImageTask } from '../../src/media/worker.js';

test('pool size: threads × sharp.concurrency() ≤ the cgroup CPU limit', (t) => {
  t.is(poolThreads(2, 1), 2);
  t.is(poolThreads(2, 2), 1);
  t.is(poolThreads(8, 3), 2);
  t.is(poolThreads(1, 4), 1, 'at least one thread');
  const files = (m: Record<string, string>) => (p: string): string => {
    const v = m[p];
    if (v === undefined) throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
    return v;
  };
  t.is(cgroupCpus(files({ '/sys/fs/cgroup/cpu.max': '150000 100000\n' })), 1);
  t.is(cgroupCpus(files({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '100000', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000' })), 1);
  const machine = cgroupCpus(files({ '/sys/fs/cgroup/cpu.max': 'max 100000' }));
  t.true(machine >= 1);
  t.is(cgroupCpus(files({})), machine, 'no cgroup limit: the machine');
});

let big: Buffer | undefined;
async function bigJpeg(): Promise<Buffer> {
  if (big !== undefined) return big;
  const noise = Buffer.alloc(5000 * 4000 * 3);
  for (let i = 0; i < noise.length; i += 997) noise[i] = (i * 7919) & 0xff;
  big = await sharp(noise, { raw: { width: 5000, height: 4000, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
  return big;
}

function task(input: Buffer): ImageTask {
  const ab = new ArrayBuffer(input.length);
  new Uint8Array(ab).set(input);
  return { input: ab, sizes: LADDER, square: SQUARE_SIZE, format: 'webp', quality: 80, maxInputPixels: 100_000_000, exif: true };
}

function pool(t: { teardown(fn: () => Promise<void>): void }, options: MediaOptionsInput): MediaPool {
  const p = new MediaPool(resolveMediaOptions(options), mediaMetrics(new Registry()));
  t.teardown(() => p.close());
  return p;
}

test('results come back as transferred buffers; the input is transferred to the worker', async (t) => {
  const p = pool(t, { threads: 1 });
  const input = await sharp({ create: { width: 900, height: 600, channels: 3, background: '#123456' } }).jpeg().toBuffer();
  const tk = task(input);
  const r = await p.run(tk);
  t.is(tk.input.byteLength, 0, 'the input ArrayBuffer was transferred (detached here), not copied');
  t.deepEqual(r.thumbs.map((x) => [x.size, x.width, x.height]), [[128, 128, 128], [512, 512, 341], [1024, 900, 600], [2048, 900, 600]]);
  for (const th of r.thumbs) t.true(th.data instanceof ArrayBuffer && th.data.byteLength > 0);
});

test('a full queue refuses new work (backpressure); deadlines abort queued tasks, never running ones', async (t) => {
  const p = pool(t, { threads: 1, maxQueue: 2, taskDeadlineMs: 150 });
  const jpeg = await bigJpeg();
  const running = p.run(task(jpeg));
  const queued = [p.run(task(jpeg)), p.run(task(jpeg))];
  t.is(p.queued, 2);
  const refused = await t.throwsAsync(p.run(task(jpeg)));
  t.true(refused instanceof MediaFailure && refused.reason === 'overloaded', String(refused));
  // The running task outlives the deadline and still completes; the queued ones are aborted.
  for (const q of queued) {
    const e = await t.throwsAsync(q);
    t.true(e instanceof MediaFailure && e.reason === 'deadline', String(e));
  }
  const done = await running;
  t.is(done.thumbs.length, 4);
  t.is(p.queued, 0);
  // And the pool keeps serving.
  t.is((await p.run(task(await sharp({ create: { width: 10, height: 10, channels: 3, background: '#fff' } }).png().toBuffer()))).thumbs.length, 4);
});

test('AVIF and JPEG output are configurable; every output is stripped of metadata', async (t) => {
  const p = pool(t, { threads: 1 });
  const input = await sharp({ create: { width: 700, height: 500, channels: 4, background: { r: 10, g: 20, b: 30, alpha: 0.5 } } })
    .png()
    .withExif({ IFD0: { Make: 'Leaky' } })
    .toBuffer();
  for (const [format, expected] of [['jpeg', 'jpeg'], ['avif', 'heif'], ['webp', 'webp']] as const) {
    const r = await p.run({ ...task(input), format });
    for (const th of r.thumbs) {
      const meta = await sharp(Buffer.from(th.data)).metadata();
      t.is(meta.format, expected, `${format} ${th.size}`);
      t.is(meta.exif, undefined);
      t.deepEqual([meta.width, meta.height], [th.width, th.height]);
    }
  }
});
