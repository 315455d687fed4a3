// A file uploaded through a resumable session (StartUpload / WriteUpload / FinishUpload) is
// sniffed at FinishUpload like any other commit: an image gets its media job in the commit's
// transaction (and so its media metadata); a non-image gets none.
import test from 'ava';
import { CairnClient } from '../../src/client/index.js';
import { startServer } from '../helpers/cluster.js';
import { call, eventually, mediaClient, orientedJpeg } from './helpers.js';

test('FinishUpload of a JPEG sent in two writes enqueues its media job; a text file stays without one', async (t) => {
  const server = await startServer(t);
  const client = new CairnClient({ endpoint: server.grpc, token: server.token });
  const media = mediaClient(server.grpc);
  t.teardown(() => {
    client.close();
    media.close();
  });

  const jpeg = await orientedJpeg(800, 600, 1);
  const { uploadId } = await client.startUpload('/photos/resumed.jpg', { size: jpeg.length });
  // Two writes, as a client resuming after an interruption would send them: the first commits up
  // to its last chunk boundary (none in 4 KiB), the second continues there and finishes.
  const committed = await client.writeUpload(uploadId, 0, jpeg.subarray(0, Math.floor(jpeg.length / 2)));
  await client.writeUpload(uploadId, committed, jpeg.subarray(committed), { finish: true });
  const info = await client.finishUpload(uploadId, jpeg.length);
  t.is(Number(info.size), jpeg.length);

  const ready = await eventually(async () => {
    const r = await call<object, { state: string; media_json: string }>(media, 'GetMediaInfo', { path: '/photos/resumed.jpg' }, server.token);
    return r.state === 'ready' ? r : undefined;
  }, 60_000, 'the media job of the session upload');
  const meta = JSON.parse(ready.media_json) as { width: number; height: number; type: string };
  t.deepEqual([meta.width, meta.height, meta.type], [800, 600, 'image/jpeg']);

  const text = Buffer.from('not an image\n'.repeat(100));
  const second = await client.startUpload('/notes/resumed.txt', { size: text.length });
  await client.writeUpload(second.uploadId, 0, text, { finish: true });
  await client.finishUpload(second.uploadId, text.length);
  // No job: FinishUpload sniffed the first chunk as not media and the version records it, so its
  // state is "none" at once (not "pending" forever).
  const none = await call<object, { state: string }>(media, 'GetMediaInfo', { path: '/notes/resumed.txt' }, server.token);
  t.is(none.state, 'none');
});
