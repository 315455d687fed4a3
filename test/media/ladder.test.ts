// The ladder end to end: an EXIF-oriented JPEG committed through a real server yields upright
// thumbnails of the exact ladder sizes, stripped of EXIF/GPS; the owner sees GPS in the media
// metadata, a reader of the same tenant (what a share recipient is given) does not.
import test from 'ava';
import sharp from 'sharp';
import { startServer, tempDir } from '../helpers/cluster.js';
import { call, getThumb, mediaClient, orientedJpeg, put, tokenFor } from './helpers.js';

test('an orientation-6 JPEG yields upright, metadata-free thumbnails of the exact ladder sizes; GPS only for the owner', async (t) => {
  const server = await startServer(t);
  const dir = tempDir(t);
  // 3000×2000 stored sideways (orientation 6): upright it is 2000×3000, red on top, blue below.
  const jpeg = await orientedJpeg(3000, 2000, 6);
  const { version } = await put(server, server.token, dir, '/photos/sideways.jpg', jpeg);

  const expected: Record<number, [number, number]> = { 128: [128, 128], 512: [341, 512], 1024: [683, 1024], 2048: [1365, 2048] };
  for (const [size, [w, h]] of Object.entries(expected)) {
    const res = await getThumb(server, server.token, '/photos/sideways.jpg', Number(size), version);
    t.is(res.status, 200, `size ${size}: ${await res.clone().text()}`);
    t.is(res.headers.get('content-type'), 'image/webp');
    const body = Buffer.from(await res.arrayBuffer());
    const meta = await sharp(body).metadata();
    t.is(meta.format, 'webp');
    t.deepEqual([meta.width, meta.height], [w, h], `size ${size}`);
    t.is(meta.exif, undefined, `size ${size} carries EXIF`);
    t.is(meta.icc, undefined);
    t.is(meta.orientation, undefined);
    t.false(body.includes(Buffer.from('CairnCam')), 'camera make leaked into a derivative');
    // Upright: the top is red, the bottom blue (sideways it would be left/right).
    const { data, info } = await sharp(body).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const px = (x: number, y: number): number[] => [...data.subarray((y * info.width + x) * 3, (y * info.width + x) * 3 + 3)];
    const top = px(Math.floor(info.width / 2), 2);
    const bottom = px(Math.floor(info.width / 2), info.height - 3);
    t.true(top[0]! > 200 && top[2]! < 60, `size ${size} top is ${top.join(',')}`);
    t.true(bottom[2]! > 200 && bottom[0]! < 60, `size ${size} bottom is ${bottom.join(',')}`);
  }

  const client = mediaClient(server.grpc);
  t.teardown(() => client.close());
  const owner = await call<object, { state: string; media_json: string }>(client, 'GetMediaInfo', { path: '/photos/sideways.jpg' }, server.token);
  t.is(owner.state, 'ready');
  const info = JSON.parse(owner.media_json) as { width: number; height: number; type: string; exif: { make: string; model: string; lens: string; orientation: number; dateTaken: string }; gps?: { latitude: number; longitude: number } };
  t.deepEqual([info.width, info.height, info.type], [2000, 3000, 'image/jpeg']);
  t.is(info.exif.make, 'CairnCam');
  t.is(info.exif.model, 'Model 7');
  t.is(info.exif.lens, 'Cairn 35mm f/2');
  t.is(info.exif.orientation, 6);
  t.true(info.exif.dateTaken.startsWith('2024-05-06'));
  t.truthy(info.gps);
  t.true(Math.abs(info.gps!.latitude - 51.5) < 1e-6);
  t.true(Math.abs(info.gps!.longitude + 0.125) < 1e-6);

  // A reader of the tenant (a share recipient's token) sees everything but the GPS position.
  const reader = await tokenFor(server.dataDir, 'reader', 'bob');
  const shared = await call<object, { state: string; media_json: string }>(client, 'GetMediaInfo', { path: '/photos/sideways.jpg' }, reader);
  const sharedInfo = JSON.parse(shared.media_json) as Record<string, unknown>;
  t.is(sharedInfo['gps'], undefined);
  t.false(shared.media_json.includes('51.5'));
  t.is((sharedInfo['exif'] as { make: string }).make, 'CairnCam');
  // …and can fetch the thumbnails themselves.
  t.is((await getThumb(server, reader, '/photos/sideways.jpg', 128, version)).status, 200);
});
