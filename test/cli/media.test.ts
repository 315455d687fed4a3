// The media SDK (CairnMedia) and CLI (`cairn thumb`, `cairn media info`, `cairn thumbs`) against a
// cluster of real processes (metadata, block node, gateway, and a media worker started mid-test):
// a thumbnail that is not ready exits 6 with a clear message; --wait polls until a worker makes
// it; info shows dimensions, format, EXIF and GPS; listing pages through the folder.
import test from 'ava';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { CairnClient, CairnMedia, type ThumbnailEntry } from '../../src/client/index.js';
import { mediaInfoText } from '../../src/cli/media.js';
import { runCli, tempDir } from '../helpers/cluster.js';
import { eventually, orientedJpeg, startMediaCluster } from '../media/helpers.js';

test('thumb, media info and thumbs: not ready → exit 6, --wait until a worker makes it, paged listing', async (t) => {
  t.timeout(180_000);
  // No worker yet, and the gateway answers UNAVAILABLE instead of generating on demand.
  const cluster = await startMediaCluster(t, { CAIRN_MEDIA_ON_DEMAND: 'unavailable' });
  const gw = cluster.gateway;
  const settings = { endpoint: gw.grpc, token: cluster.token };
  const files = new CairnClient(settings);
  const media = new CairnMedia(settings);
  t.teardown(() => {
    files.close();
    media.close();
  });
  const dir = tempDir(t);
  const upload = async (remote: string, data: Buffer): Promise<void> => {
    const local = join(dir, remote.replace(/\//g, '_'));
    writeFileSync(local, data);
    await files.put(local, remote);
  };
  await upload('/pics/a.jpg', await orientedJpeg(1200, 800, 1));
  await upload('/pics/b.png', await sharp({ create: { width: 300, height: 600, channels: 3, background: '#2a6' } }).png().toBuffer());
  await upload('/pics/c.webp', await sharp({ create: { width: 640, height: 480, channels: 3, background: '#a26' } }).webp().toBuffer());
  await upload('/pics/notes.txt', Buffer.from('not an image\n'));
  await files.mkdir('/pics/sub');
  const g = ['--endpoint', gw.grpc, '--token', cluster.token];
  const out = join(dir, 'a.512.webp');

  // Not ready: a clear message, exit code 6 (unavailable), nothing written.
  let r = await runCli([...g, 'thumb', '/pics/a.jpg', '--size', '512', '-o', out]);
  t.is(r.code, 6, r.stderr);
  t.regex(r.stderr, /not ready yet; try again later, or use --wait \[CAIRN_UNAVAILABLE\]/);
  r = await runCli([...g, 'thumb', '/pics/a.jpg', '--wait', '--timeout', '2s', '-o', out]);
  t.is(r.code, 6, r.stderr);
  t.regex(r.stderr, /not ready after \d+ s and \d+ attempt\(s\) \(--timeout 2s\) \[CAIRN_UNAVAILABLE\]/);
  t.throws(() => readFileSync(out));
  // The SDK: CAIRN_UNAVAILABLE with the server's Retry-After.
  const err = await t.throwsAsync(media.thumbnail('/pics/a.jpg', 512));
  t.is((err as { code?: string }).code, 'CAIRN_UNAVAILABLE');
  t.is((err as { retryAfterMs?: number }).retryAfterMs, 5_000);
  // Bad input: usage errors (2), a missing file (3).
  t.is((await runCli([...g, 'thumb', '/pics/a.jpg', '--size', '300'])).code, 2);
  t.is((await runCli([...g, 'thumbs', '/pics', '--page-size', '0'])).code, 2);
  t.is((await runCli([...g, 'thumb', '/pics/missing.jpg', '-o', out])).code, 3);

  // --wait polls with backoff; a media worker started meanwhile makes the thumbnails.
  const waiting = runCli([...g, '--json', 'thumb', '/pics/a.jpg', '--size', '512', '--wait', '--timeout', '150s', '-o', out]);
  await new Promise((resolve) => setTimeout(resolve, 1_500));
  await cluster.startWorker();
  r = await waiting;
  t.is(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout) as { width: number; height: number; contentType: string; bytes: number; output: string; version: number; attempts: number };
  t.deepEqual([info.width, info.height, info.contentType, info.output, info.version], [512, 341, 'image/webp', out, 1]);
  t.true(info.attempts > 1, 'it polled');
  const written = readFileSync(out);
  t.is(written.length, info.bytes);
  const meta = await sharp(written).metadata();
  t.deepEqual([meta.format, meta.width, meta.height], ['webp', 512, 341]);

  // media info: dimensions, format, EXIF and (for the owner) GPS.
  r = await runCli([...g, '--json', 'media', 'info', '/pics/a.jpg']);
  t.is(r.code, 0, r.stderr);
  const mi = JSON.parse(r.stdout) as { state: string; version: number; media: { width: number; height: number; type: string; format: string; exif: { make: string }; gps: { latitude: number; longitude: number } } };
  t.is(mi.state, 'ready');
  t.deepEqual([mi.media.width, mi.media.height, mi.media.type, mi.media.format, mi.media.exif.make], [1200, 800, 'image/jpeg', 'webp', 'CairnCam']);
  t.is(Math.round(mi.media.gps.latitude * 10), 515);
  r = await runCli([...g, 'media', 'info', '/pics/a.jpg']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /size: 1200 × 800/);
  t.regex(r.stdout, /type: image\/jpeg/);
  t.regex(r.stdout, /exif make: CairnCam/);
  t.regex(r.stdout, /gps: 51\.5/);

  // thumbs: pages of 2 through the whole folder (files only), with each one's state.
  const states = async (): Promise<ThumbnailEntry[] | undefined> => {
    const res = await runCli([...g, '--json', 'thumbs', '/pics', '--page-size', '2', '--size', '512']);
    if (res.code !== 0) throw new Error(res.stderr);
    const entries = res.stdout.trim().split('\n').map((l) => JSON.parse(l) as ThumbnailEntry);
    return entries.filter((e) => e.state === 'ready').length === 3 ? entries : undefined;
  };
  const listed = await eventually(states, 90_000, 'three ready thumbnails');
  t.deepEqual(listed.map((e) => e.path), ['/pics/a.jpg', '/pics/b.png', '/pics/c.webp', '/pics/notes.txt'], 'every file over several pages; no folder');
  t.not(listed[3]!.state, 'ready');
  t.deepEqual(listed.map((e) => [e.width, e.height]).slice(0, 3), [[512, 341], [256, 512], [512, 384]]);
  r = await runCli([...g, 'thumbs', '/pics', '--page-size', '2']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /\/pics\/b\.png\s+ready\s+128×128\s+1/);
  t.regex(r.stdout, /3 of 4 file\(s\) have a 128 px thumbnail/);

  // The SDK pages both ways with names (or paths) as positions.
  const p1 = await media.listThumbnails('/pics', { pageSize: 2 });
  t.deepEqual(p1.entries.map((e) => e.path), ['/pics/a.jpg', '/pics/b.png']);
  t.true(p1.hasMore);
  const p2 = await media.listThumbnails('/pics', { pageSize: 2, after: p1.entries.at(-1)!.path });
  t.deepEqual(p2.entries.map((e) => e.path), ['/pics/c.webp', '/pics/notes.txt']);
  const back = await media.listThumbnails('/pics', { pageSize: 2, before: 'c.webp' });
  t.deepEqual(back.entries.map((e) => e.path), ['/pics/a.jpg', '/pics/b.png']);
  // Ready now: the SDK's wait returns at once; not_modified with the ETag.
  const thumb = await media.thumbnail('/pics/b.png', 1024, { wait: { timeoutMs: 10_000 } });
  t.deepEqual([thumb.width, thumb.height, thumb.version], [300, 600, 1]);
  const again = await media.thumbnail('/pics/b.png', 1024, { ifNoneMatch: thumb.etag });
  t.true(again.notModified);
  t.is(again.data.length, 0);
});

test('media info prints video fields, failures and unknown fields as the server returns them', (t) => {
  const video = mediaInfoText({
    path: '/v/clip.mp4',
    version: 3,
    state: 'ready',
    error: '',
    media: { v: 1, state: 'ready', type: 'video/mp4', kind: 'video', width: 1280, height: 720, format: 'webp', video: { durationSeconds: 12.5, container: 'mov,mp4', videoCodec: 'h264', audioCodec: 'aac', bitrate: 900000 }, rotation: 90 },
  });
  t.is(
    video,
    [
      '/v/clip.mp4 (version 3): ready',
      '  type: video/mp4',
      '  kind: video',
      '  thumbnail format: webp',
      '  size: 1280 × 720',
      '  video durationSeconds: 12.5',
      '  video container: mov,mp4',
      '  video videoCodec: h264',
      '  video audioCodec: aac',
      '  video bitrate: 900000',
      '  rotation: 90',
    ].join('\n'),
  );
  t.is(mediaInfoText({ path: '/x.png', version: 1, state: 'failed', error: 'image exceeds the pixel limit', media: { v: 1, state: 'failed', reason: 'pixel_limit' } }), '/x.png (version 1): failed\n  error: image exceeds the pixel limit');
  t.is(mediaInfoText({ path: '/y.jpg', version: 2, state: 'pending', error: '', media: undefined }), '/y.jpg (version 2): pending');
});
