// Video: ffprobe metadata (duration, codecs, bitrate, dimensions) and an ffmpeg poster frame run
// as capped child processes; without ffmpeg a video job fails with a clear reason.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import sharp from 'sharp';
import { requireTool } from '../helpers/tools.js';
import { tempDir } from '../helpers/cluster.js';
import { call, eventually, getThumb, mediaClient, put, startMediaCluster } from './helpers.js';

function makeVideo(dir: string): Buffer {
  const file = join(dir, 'clip.mp4');
  execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'testsrc=size=640x360:rate=10', '-f', 'lavfi', '-i', 'sine=frequency=440', '-t', '2', '-pix_fmt', 'yuv420p', '-c:v', 'libx264', '-c:a', 'aac', '-shortest', file]);
  return readFileSync(file);
}

test('a video gets ffprobe metadata and a poster-frame ladder; without ffmpeg it fails with a clear reason', async (t) => {
  if (!requireTool(t, 'ffmpeg', 'video posters and probing')) return;
  const cluster = await startMediaCluster(t, { CAIRN_MEDIA_ON_DEMAND: 'unavailable' });
  const dir = tempDir(t);
  const video = makeVideo(dir);

  // A worker without ffmpeg on its PATH: the job fails, naming the missing tool.
  const blind = await cluster.startWorker({ PATH: '/nonexistent' });
  const first = await put(cluster.gateway, cluster.token, dir, '/v/clip.mp4', video);
  const failure = await eventually(async () => /"reason":"ffmpeg_missing","error":"([^"]*)"/.exec(blind.stderr())?.[1], 60_000, 'the ffmpeg_missing failure');
  t.regex(failure, /ffprobe is not installed on this media worker/);
  blind.proc.kill('SIGTERM');
  await blind.exited;

  // A worker with ffmpeg: a new version is probed and gets its poster ladder.
  await cluster.startWorker();
  const second = await put(cluster.gateway, cluster.token, dir, '/v/clip.mp4', Buffer.concat([video]));
  t.true(second.version > first.version);
  const res = await eventually(async () => {
    const r = await getThumb(cluster.gateway, cluster.token, '/v/clip.mp4', 512, second.version);
    return r.status === 200 ? r : undefined;
  }, 60_000, 'the poster thumbnails');
  const meta = await sharp(Buffer.from(await res.arrayBuffer())).metadata();
  t.deepEqual([meta.width, meta.height, meta.format], [512, 288, 'webp']);

  const client = mediaClient(cluster.gateway.grpc);
  t.teardown(() => client.close());
  const info = await call<object, { state: string; media_json: string }>(client, 'GetMediaInfo', { path: '/v/clip.mp4', version: second.version }, cluster.token);
  t.is(info.state, 'ready');
  const m = JSON.parse(info.media_json) as { kind: string; type: string; width: number; height: number; video: { durationSeconds: number; videoCodec: string; audioCodec: string; bitrate: number; width: number; height: number } };
  t.is(m.kind, 'video');
  t.is(m.type, 'video/mp4');
  t.deepEqual([m.width, m.height], [640, 360]);
  t.is(m.video.videoCodec, 'h264');
  t.is(m.video.audioCodec, 'aac');
  t.true(Math.abs(m.video.durationSeconds - 2) < 0.2);
  t.true(m.video.bitrate > 0);
});
