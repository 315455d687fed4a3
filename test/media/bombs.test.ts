// Decompression bombs and a corrupt file: refused from their headers (no decode, no memory
// jump), dead-lettered with their reasons on the first attempt (FailJob permanent), while the same pool keeps
// deriving a good photo committed after them.
import { crc32 } from 'node:zlib';
import test from 'ava';
import sharp from 'sharp';
import { tempDir } from '../helpers/cluster.js';
import { eventually, getThumb, put, startMediaCluster } from './helpers.js';

/** A 1×1 PNG whose header declares 65535×65535 (4.3 gigapixels). */
async function pngBomb(): Promise<Buffer> {
  const png = Buffer.from(await sharp({ create: { width: 1, height: 1, channels: 3, background: '#fff' } }).png().toBuffer());
  // IHDR: length(4) "IHDR"(4) width(4) height(4) … CRC over type + data.
  png.writeUInt32BE(65535, 16);
  png.writeUInt32BE(65535, 20);
  png.writeUInt32BE(crc32(png.subarray(12, 29)), 29);
  return png;
}

/** A 1×1 GIF animation with 20,000 frames. */
async function gifBomb(): Promise<Buffer> {
  const frames = 20_000;
  const raw = Buffer.alloc(frames * 3);
  for (let i = 0; i < frames; i++) raw[i * 3] = i % 2 === 0 ? 255 : 0;
  // One 1-px page per frame.
  return sharp(raw, { raw: { width: 1, height: frames, channels: 3, pageHeight: 1 } }).gif().toBuffer();
}

async function corruptJpeg(): Promise<Buffer> {
  const good = await sharp({ create: { width: 800, height: 600, channels: 3, background: '#3a7' } }).jpeg().toBuffer();
  const bad = Buffer.from(good.subarray(0, Math.floor(good.length * 0.6)));
  bad.fill(0x55, 700); // scan data replaced with garbage, the file cut short
  return bad;
}

test('bombs and a corrupt file are dead-lettered with reasons; the pool keeps serving other jobs', async (t) => {
  const cluster = await startMediaCluster(t, { CAIRN_MEDIA_ON_DEMAND: 'unavailable' });
  const worker = await cluster.startWorker();
  const dir = tempDir(t);
  const png = await pngBomb();
  const gif = await gifBomb();
  t.is((await sharp(gif, { pages: -1 }).metadata()).pages, 20_000, 'the GIF bomb has 20,000 frames');
  await put(cluster.gateway, cluster.token, dir, '/bombs/huge.png', png);
  await put(cluster.gateway, cluster.token, dir, '/bombs/frames.gif', gif);
  await put(cluster.gateway, cluster.token, dir, '/bombs/corrupt.jpg', await corruptJpeg());
  const good = await sharp({ create: { width: 1600, height: 1200, channels: 3, background: '#48c' } }).jpeg().toBuffer();
  const { version } = await put(cluster.gateway, cluster.token, dir, '/ok/good.jpg', good);

  // The good photo is derived while the bad ones fail and back off.
  const res = await eventually(async () => {
    const r = await getThumb(cluster.gateway, cluster.token, '/ok/good.jpg', 1024, version);
    return r.status === 200 ? r : undefined;
  }, 60_000, 'the good photo');
  t.deepEqual([(await sharp(Buffer.from(await res.arrayBuffer())).metadata()).width], [1024]);

  // Each bad file fails fast with its reason, is visible as such, and ends dead-lettered.
  const dead = await eventually(async () => {
    const { jobs } = await cluster.admin.listDeadLetters({ kind: 'media' });
    return jobs.length >= 3 ? jobs : undefined;
  }, 120_000, 'three dead letters');
  const reasons = Object.fromEntries(dead.map((j) => [(JSON.parse(j.payload) as { path: string }).path, j.lastError]));
  t.regex(reasons['/bombs/huge.png'] ?? '', /^pixel_limit: 65535×65535/);
  t.regex(reasons['/bombs/frames.gif'] ?? '', /^frame_limit: 20000 frames/);
  t.regex(reasons['/bombs/corrupt.jpg'] ?? '', /^corrupt: /);
  // Permanent failures: dead-lettered on the first attempt, not after every retry.
  for (const j of dead) t.is(j.attempts, 1, `${j.lastError} took ${j.attempts} of ${j.maxAttempts} attempts`);

  // Readers learn the reason instead of waiting: 412 with the failure.
  const refused = await getThumb(cluster.gateway, cluster.token, '/bombs/huge.png', 128);
  t.is(refused.status, 412);
  t.regex(await refused.text(), /pixel_limit/);
  const failed = worker.stderr().match(/"msg":"media job (failed; will retry|dead-lettered)"[^\n]*/g) ?? [];
  t.true(failed.length >= 3);
  // Refused from the header: each failed attempt took milliseconds, not a decode of gigapixels.
  const times = [...worker.stderr().matchAll(/"reason":"(pixel_limit|frame_limit)"[^\n]*"ms":(\d+)/g)].map((m) => Number(m[2]));
  t.true(times.length > 0);
  t.log(`bomb attempts took ${times.join(', ')} ms (end to end, incl. metadata and block reads)`);
  t.true(Math.max(...times) < 2_000);
});
