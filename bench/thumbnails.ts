// Thumbnail throughput: 50 twelve-megapixel JPEGs committed through a real embedded server until
// every derivative is stored (upload, job, decode-once ladder, sealing, metadata), against bare
// sharp producing the same ladder in-process from the same images in the same run.
// ratio = sharp seconds / Cairn seconds (target ≥ 0.9), in steady state: the server first takes
// a warm-up batch of other photos (--warmup, default 8; its time is reported, --warmup 0 measures
// a cold server). Also: how fast bombs are refused.
import { spawn, type ChildProcess } from 'node:child_process';
import { crc32 } from 'node:zlib';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import sharp from 'sharp';
import { CairnClient } from '../src/client/index.js';
import { cairnCommand } from './_embedded.js';
import { loadProto } from '../src/common/proto.js';
import type { MediaClient } from '../src/gen/cairn/v1/Media.js';
import type { ListThumbnailsResponse__Output } from '../src/gen/cairn/v1/ListThumbnailsResponse.js';
import type { ProtoGrpcType as MediaProto } from '../src/gen/media.js';
import { cgroupCpus, LADDER, poolThreads, resolveMediaOptions } from '../src/media/index.js';
import { checkHeader } from '../src/media/limits.js';
import type { BenchMain, BenchReport } from './report.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

export interface MediaServer {
  readonly grpc: string;
  readonly http: string;
  readonly token: string;
  readonly media: MediaClient;
  /** CPU seconds the server process has used so far (all threads), from /proc. */
  cpuSeconds(): Promise<number>;
  stop(): Promise<void>;
}

/** An embedded `cairn server` child process with its HTTP endpoint and a Media client. */
export async function startMediaServer(dataDir: string, env: Record<string, string> = {}): Promise<MediaServer> {
  const proc: ChildProcess = spawn(process.execPath, [...(process.env['CAIRN_BENCH_PROF'] ? ['--cpu-prof', '--cpu-prof-dir=' + process.env['CAIRN_BENCH_PROF']] : []), ...cairnCommand(), 'server', '--embedded', '--data-dir', dataDir, '--grpc-port', '0', '--http-port', '0', '--log-level', 'warn'], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const ready = out.split('\n').find((l) => l.includes('ready'));
      if (ready !== undefined) resolve(ready);
    });
    proc.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  const endpoint = /grpc=(\S+)/.exec(line)?.[1];
  const http = /http=(\S+)/.exec(line)?.[1];
  if (endpoint === undefined || http === undefined) throw new Error(`unexpected ready line ${line}`);
  const { token } = JSON.parse(await readFile(join(dataDir, 'client.json'), 'utf8')) as { token: string };
  const media = new (loadProto().proto as unknown as MediaProto).cairn.v1.Media(endpoint, grpc.credentials.createInsecure());
  return {
    grpc: endpoint,
    http,
    token,
    media,
    async cpuSeconds() {
      // /proc/<pid>/stat fields 14 and 15: utime and stime in clock ticks (100 Hz on Linux).
      const stat = await readFile(`/proc/${proc.pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return (Number(fields[11]) + Number(fields[12])) / 100;
    },
    async stop() {
      media.close();
      const exited = new Promise((resolve) => proc.once('exit', resolve));
      proc.kill('SIGTERM');
      await exited;
    },
  };
}

export function listThumbnails(server: MediaServer, path: string, size: number): Promise<ListThumbnailsResponse__Output> {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${server.token}`);
  return new Promise((resolve, reject) => server.media.ListThumbnails({ path, size, page_size: 200 }, md, (err, res) => (err ? reject(err) : resolve(res!))));
}

/**
 * A photo-like 12 MP JPEG, distinct per seed: smooth random shapes (≈ 1.5 MB at q90, a 2048 px
 * WebP of ≈ 200 KB — the size class of real photos; pure noise would make encoding dominate).
 */
export async function photo(seed: number, width = 4000, height = 3000): Promise<Buffer> {
  const w = Math.ceil(width / 24);
  const h = Math.ceil(height / 24);
  const raw = Buffer.alloc(w * h * 3);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < raw.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    raw[i] = x & 0xff;
  }
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } }).resize(width, height, { kernel: 'cubic' }).jpeg({ quality: 90 }).toBuffer();
}

/** The same ladder with bare sharp, the way an application would write it. */
async function bareLadder(input: Buffer, unbounded: boolean): Promise<number> {
  const one = (size: number): Promise<Buffer> => {
    const s = sharp(input).rotate();
    const r = size === LADDER[0] ? s.resize(size, size, { fit: 'cover', position: 'attention' }) : s.resize(size, size, { fit: 'inside', withoutEnlargement: true });
    return r.webp({ quality: 80 }).toBuffer();
  };
  let bytes = 0;
  if (unbounded) {
    for (const b of await Promise.all(LADDER.map(one))) bytes += b.length;
  } else {
    for (const size of LADDER) bytes += (await one(size)).length;
  }
  return bytes;
}

async function inParallel<T>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i]!, i);
    }
  }));
}

async function pngBomb(): Promise<Buffer> {
  const png = Buffer.from(await sharp({ create: { width: 1, height: 1, channels: 3, background: '#fff' } }).png().toBuffer());
  png.writeUInt32BE(65535, 16);
  png.writeUInt32BE(65535, 20);
  png.writeUInt32BE(crc32(png.subarray(12, 29)), 29);
  return png;
}

async function gifBomb(): Promise<Buffer> {
  const frames = 20_000;
  const raw = Buffer.alloc(frames * 3);
  for (let i = 0; i < frames; i++) raw[i * 3] = i % 2 === 0 ? 255 : 0; // alternating, so no frame is merged
  return sharp(raw, { raw: { width: 1, height: frames, channels: 3, pageHeight: 1 } }).gif().toBuffer();
}

async function rejectMs(input: Buffer, runs: number): Promise<number> {
  const options = resolveMediaOptions();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await checkHeader(input, options).then(() => {
      throw new Error('a bomb passed the header check');
    }, () => undefined);
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

export const run: BenchMain = async (args): Promise<BenchReport> => {
  const { values } = parseArgs({ args: [...args], options: { images: { type: 'string', default: '50' }, uploads: { type: 'string', default: '4' }, warmup: { type: 'string', default: '8' }, unbounded: { type: 'boolean', default: false } } });
  const count = Number(values.images);
  const uploads = Number(values.uploads);
  const warmupCount = Number(values.warmup);
  if (!Number.isInteger(count) || count < 1) throw new RangeError('--images must be a positive integer');
  if (!Number.isInteger(warmupCount) || warmupCount < 0) throw new RangeError('--warmup must be a non-negative integer');
  const images: Buffer[] = [];
  for (let i = 0; i < count; i++) images.push(await photo(i + 1));
  const warmup: Buffer[] = [];
  for (let i = 0; i < warmupCount; i++) warmup.push(await photo(10_000 + i));
  const threads = poolThreads(cgroupCpus(), sharp.concurrency());

  // Anchor: bare sharp with the same thread budget as Cairn's pool (that many images in flight,
  // each ladder's sizes one after another), measured before and after Cairn and averaged, since
  // the machine is shared. Also reported: the unbounded variant (every size of an image at once
  // on libuv's threads), which on a loaded machine wins CPU share by running more threads.
  const cpu = (): number => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  };
  const bare = async (unbounded: boolean): Promise<{ seconds: number; bytes: number; cpu: number }> => {
    const c0 = cpu();
    const t0 = performance.now();
    let bytes = 0;
    await inParallel(images, threads, async (img) => {
      bytes += await bareLadder(img, unbounded);
    });
    return { seconds: (performance.now() - t0) / 1000, bytes, cpu: cpu() - c0 };
  };
  const before = await bare(false);
  const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-thumbs-'));
  const server = await startMediaServer(join(dir, 'data'), { CAIRN_MEDIA_ON_DEMAND: 'unavailable' });
  // One batch through the whole pipeline: upload (4 at a time) until every image's ladder is
  // stored, judged by the server's own counters (a /metrics read of just those two per poll:
  // the full scrape runs every gauge's collect, which would cost more CPU than it measures),
  // then confirmed with ListThumbnails once.
  const batch = async (sources: readonly Buffer[], folder: string): Promise<{ seconds: number; uploadSeconds: number; cpu: number; serverCpu: number }> => {
    const files: string[] = [];
    for (let i = 0; i < sources.length; i++) {
      const f = join(dir, `${folder}-${i}.jpg`);
      await writeFile(f, sources[i]!);
      files.push(f);
    }
    const generated = async (): Promise<{ done: number; failed: number }> => {
      const text = await (await fetch(`${server.http}/metrics?name[]=cairn_media_generations_total&name[]=cairn_media_jobs_failed_total`)).text();
      const done = Number(/^cairn_media_generations_total\{trigger="job"\} (\S+)$/m.exec(text)?.[1] ?? 0);
      const failed = [...text.matchAll(/^cairn_media_jobs_failed_total\{[^}]*\} (\S+)$/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
      return { done, failed };
    };
    const done0 = (await generated()).done;
    const client = new CairnClient({ endpoint: server.grpc, token: server.token });
    const serverCpu0 = await server.cpuSeconds();
    const clientCpu0 = cpu();
    const c0 = performance.now();
    await inParallel(files, uploads, (f, i) => client.put(f, `/${folder}/img-${String(i).padStart(3, '0')}.jpg`));
    const uploadSeconds = (performance.now() - c0) / 1000;
    client.close();
    for (;;) {
      const { done, failed } = await generated();
      if (failed > 0) throw new Error(`${failed} media jobs failed in Cairn`);
      if (done - done0 >= sources.length) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const page = await listThumbnails(server, `/${folder}`, LADDER[LADDER.length - 1]!);
    const ready = page.entries.filter((e) => e.state === 'ready').length;
    if (ready !== sources.length) throw new Error(`only ${ready} of ${sources.length} images have their ladder`);
    const seconds = (performance.now() - c0) / 1000;
    const serverCpu = (await server.cpuSeconds()) - serverCpu0;
    return { seconds, uploadSeconds, serverCpu, cpu: serverCpu + (cpu() - clientCpu0) };
  };
  let warm: Awaited<ReturnType<typeof batch>> | undefined;
  let measured: Awaited<ReturnType<typeof batch>>;
  try {
    // Steady state, as a long-running media service runs: a warm-up batch of other photos first
    // (the fresh server's JIT and heap), as the bench process itself is warm for bare sharp.
    if (warmupCount > 0) warm = await batch(warmup, 'warmup');
    measured = await batch(images, 'bench');
  } finally {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
  const cairnSeconds = measured.seconds;
  const uploadSeconds = measured.uploadSeconds;
  const cairnCpu = measured.cpu;
  const serverCpu = measured.serverCpu;

  const after = await bare(false);
  const unbounded = values.unbounded ? await bare(true) : undefined;
  const sharpSeconds = (before.seconds + after.seconds) / 2;
  const bareBytes = before.bytes;
  const png = await pngBomb();
  const gif = await gifBomb();
  const megapixels = (4000 * 3000) / 1e6;
  return {
    bench: 'thumbnails',
    ratio: sharpSeconds / cairnSeconds,
    target: 0.9,
    better: 'higher',
    figures: {
      images: count,
      megapixels_each: megapixels,
      pool_threads: threads,
      sharp_concurrency: sharp.concurrency(),
      cairn_seconds: cairnSeconds,
      cairn_upload_seconds: uploadSeconds,
      cairn_images_per_s: count / cairnSeconds,
      anchor_sharp_seconds: sharpSeconds,
      anchor_sharp_images_per_s: count / sharpSeconds,
      anchor_sharp_before_seconds: before.seconds,
      anchor_sharp_after_seconds: after.seconds,
      ...(unbounded !== undefined ? { anchor_sharp_unbounded_seconds: unbounded.seconds } : {}),
      anchor_sharp_output_bytes: bareBytes,
      // CPU seconds are far less sensitive to a shared machine's load than wall time.
      cairn_cpu_seconds: cairnCpu,
      cairn_server_cpu_seconds: serverCpu,
      warmup_images: warmupCount,
      ...(warm !== undefined ? { cairn_warmup_seconds: warm.seconds, cairn_warmup_images_per_s: warmupCount / warm.seconds } : {}),
      anchor_sharp_cpu_seconds: (before.cpu + after.cpu) / 2,
      cpu_ratio: (before.cpu + after.cpu) / 2 / cairnCpu,
      png_bomb_reject_ms: await rejectMs(png, 21),
      gif_bomb_reject_ms: await rejectMs(gif, 21),
    },
  };
};
