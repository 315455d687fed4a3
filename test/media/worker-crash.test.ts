// A media worker killed with SIGKILL in the middle of a job: the job's lease expires, another
// worker leases it and completes it exactly once — one set of derivatives, nothing dead-lettered.
import test from 'ava';
import sharp from 'sharp';
import { tempDir } from '../helpers/cluster.js';
import { call, eventually, getThumb, mediaClient, metric, put, startMediaCluster } from './helpers.js';

test('kill -9 of a media worker mid-job: the job is re-leased and completes exactly once', async (t) => {
  // The gateway never generates on demand here: only jobs produce thumbnails.
  const cluster = await startMediaCluster(t, { CAIRN_MEDIA_ON_DEMAND: 'unavailable' });
  const dir = tempDir(t);
  // A large noisy photo, so that deriving it takes long enough to be killed in the middle.
  const noise = Buffer.alloc(6000 * 4000 * 3);
  for (let i = 0; i < noise.length; i += 4096) noise.writeUInt32LE((Math.random() * 0xffffffff) >>> 0, i);
  const jpeg = await sharp(noise, { raw: { width: 6000, height: 4000, channels: 3 } }).blur(2).jpeg({ quality: 92 }).toBuffer();

  const first = await cluster.startWorker({ CAIRN_MEDIA_LEASE_MS: '3000' });
  const { version } = await put(cluster.gateway, cluster.token, dir, '/big.jpg', jpeg);
  await eventually(async () => (first.stderr().includes('media job started') ? true : undefined), 60_000, 'the first worker to start the job');
  first.proc.kill('SIGKILL');
  await first.exited;
  t.false(first.stderr().includes('media job completed'), 'the first worker finished before it was killed; the test proves nothing');

  const pending = await getThumb(cluster.gateway, cluster.token, '/big.jpg', 512, version);
  t.is(pending.status, 503);
  t.truthy(pending.headers.get('retry-after'));

  const second = await cluster.startWorker({ CAIRN_MEDIA_LEASE_MS: '3000' });
  const res = await eventually(async () => {
    const r = await getThumb(cluster.gateway, cluster.token, '/big.jpg', 512, version);
    return r.status === 200 ? r : undefined;
  }, 90_000, 'the re-leased job to produce thumbnails');
  t.is((await sharp(Buffer.from(await res.arrayBuffer())).metadata()).width, 512);

  // Exactly once: the second worker completed it once; nothing is left queued, leased or dead.
  await eventually(async () => ((await metric(second, 'cairn_media_jobs_completed_total')) === 1 ? true : undefined), 10_000, 'the completion to be counted');
  t.is(await metric(second, 'cairn_media_jobs_completed_total', { format: 'jpeg' }), 1);
  const depth = (await cluster.admin.queueDepth())['media'] ?? { ready: 0, delayed: 0, leased: 0, dead: 0 };
  t.deepEqual(depth, { ready: 0, delayed: 0, leased: 0, dead: 0 });
  t.is((await cluster.admin.listDeadLetters({ kind: 'media' })).jobs.length, 0);
  // One derivative per ladder size on the version (no duplicates from the two attempts).
  const client = mediaClient(cluster.gateway.grpc);
  t.teardown(() => client.close());
  const list = await call<object, { entries: Array<{ path: string; state: string; version: string }> }>(client, 'ListThumbnails', { path: '/', size: 2048 }, cluster.token);
  t.deepEqual(list.entries.map((e) => [e.path, e.state, Number(e.version)]), [['/big.jpg', 'ready', version]]);
  const info = await call<object, { state: string }>(client, 'GetMediaInfo', { path: '/big.jpg', version }, cluster.token);
  t.is(info.state, 'ready');
  t.is((second.stderr().match(/media job completed/g) ?? []).length, 1);
});
