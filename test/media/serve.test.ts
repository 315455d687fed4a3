// Serving thumbnails: strong ETags, immutable caching for pinned versions, 304 on If-None-Match,
// clear errors for bad requests, and on-demand generation that runs once however many ask.
import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import sharp from 'sharp';
import { startServer, tempDir } from '../helpers/cluster.js';
import { call, getThumb, mediaClient, metric, put, tokenFor } from './helpers.js';

test('ETag, immutable Cache-Control and 304; 100 concurrent requests for a size not ready → one generation', async (t) => {
  // No job runner: every thumbnail here is generated on demand by the gateway.
  const server = await startServer(t, [], { env: { CAIRN_MEDIA_JOB_CONCURRENCY: '0' } });
  const dir = tempDir(t);
  const photo = await sharp({ create: { width: 2400, height: 1600, channels: 3, background: '#c84' } }).jpeg().toBuffer();
  const { version } = await put(server, server.token, dir, '/p/one.jpg', photo);
  t.is(await metric(server, 'cairn_media_generations_total'), 0);

  const responses = await Promise.all(Array.from({ length: 100 }, () => getThumb(server, server.token, '/p/one.jpg', 512, version)));
  t.deepEqual([...new Set(responses.map((r) => r.status))], [200]);
  const etags = new Set(responses.map((r) => r.headers.get('etag')));
  t.is(etags.size, 1);
  t.is(await metric(server, 'cairn_media_generations_total', { trigger: 'on_demand' }), 1, 'more than one generation for one version');
  t.is(await metric(server, 'cairn_media_generations_total'), 1);

  const res = responses[0]!;
  const etag = res.headers.get('etag')!;
  t.regex(etag, /^"[0-9a-f]{40}"$/, 'a strong ETag');
  t.is(res.headers.get('cache-control'), 'public, max-age=31536000, immutable');
  t.is(res.headers.get('content-type'), 'image/webp');
  const body = Buffer.from(await res.arrayBuffer());
  t.is(Number(res.headers.get('content-length')), body.length);
  t.deepEqual([(await sharp(body).metadata()).width, (await sharp(body).metadata()).height], [512, 341]);

  const again = await getThumb(server, server.token, '/p/one.jpg', 512, version, { 'if-none-match': etag });
  t.is(again.status, 304);
  t.is(again.headers.get('etag'), etag);
  t.is(again.headers.get('cache-control'), 'public, max-age=31536000, immutable');
  t.is((await again.arrayBuffer()).byteLength, 0);
  t.is((await getThumb(server, server.token, '/p/one.jpg', 512, version, { 'if-none-match': `W/"x", ${etag}` })).status, 304);
  t.is((await getThumb(server, server.token, '/p/one.jpg', 512, version, { 'if-none-match': '"other"' })).status, 200);
  // Other sizes were derived by the same generation (decode once, whole ladder).
  t.is((await getThumb(server, server.token, '/p/one.jpg', 2048, version)).status, 200);
  t.is(await metric(server, 'cairn_media_generations_total'), 1);

  // The current version (unpinned URL) may change: revalidate instead of immutable.
  const current = await getThumb(server, server.token, '/p/one.jpg', 512);
  t.is(current.status, 200);
  t.is(current.headers.get('cache-control'), 'private, no-cache');
  t.is(current.headers.get('etag'), etag);

  // gRPC: same bytes and ETag; not_modified with if_none_match.
  const client = mediaClient(server.grpc);
  t.teardown(() => client.close());
  const viaGrpc = await call<object, { data: Buffer; etag: string; content_type: string; width: number; height: number }>(client, 'GetThumbnail', { path: '/p/one.jpg', version, size: 512 }, server.token);
  t.is(viaGrpc.etag, etag);
  t.true(viaGrpc.data.equals(body));
  const nm = await call<object, { data: Buffer; not_modified: boolean }>(client, 'GetThumbnail', { path: '/p/one.jpg', version, size: 512, if_none_match: etag }, server.token);
  t.true(nm.not_modified);
  t.is(nm.data.length, 0);
});

test('bad thumbnail requests get clear errors and change nothing', async (t) => {
  const server = await startServer(t, [], { env: { CAIRN_MEDIA_JOB_CONCURRENCY: '0' } });
  const dir = tempDir(t);
  await put(server, server.token, dir, '/notes.txt', Buffer.from('just text, not an image\n'));
  const photo = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#000' } }).png().toBuffer();
  await put(server, server.token, dir, '/small.png', photo);

  t.is((await getThumb(server, undefined, '/small.png', 128)).status, 401);
  t.is((await getThumb(server, 'not-a-token', '/small.png', 128)).status, 401);
  const badSize = await getThumb(server, server.token, '/small.png', 300);
  t.is(badSize.status, 400);
  t.regex(await badSize.text(), /size must be one of 128, 512, 1024, 2048/);
  t.is((await getThumb(server, server.token, '/missing.png', 128)).status, 404);
  t.is((await getThumb(server, server.token, '../etc/passwd', 128)).status, 400);
  // Sniffed at commit as not media: refused at once, and nothing is generated for it.
  const text = await getThumb(server, server.token, '/notes.txt', 128);
  t.is(text.status, 412);
  t.like(await text.json(), { code: 'CAIRN_FAILED_PRECONDITION', reason: 'not_media' });
  const post = await fetch(`${server.http}/v1/thumbnails?path=/small.png`, { method: 'POST', headers: { authorization: `Bearer ${server.token}` } });
  t.is(post.status, 405);
  t.is(await metric(server, 'cairn_media_generations_total'), 0);

  // A small image is not enlarged: every rung is the source size, except the square crop.
  const small = await getThumb(server, server.token, '/small.png', 1024);
  t.is(small.status, 200);
  t.deepEqual([(await sharp(Buffer.from(await small.arrayBuffer())).metadata()).width], [64]);

  // gRPC errors carry the status codes.
  const client = mediaClient(server.grpc);
  t.teardown(() => client.close());
  // Listing pages with the metadata paging: previous_last (after a name), previous_first (before).
  type Page = { entries: Array<{ path: string; state: string }>; has_more: boolean };
  const p1 = await call<object, Page>(client, 'ListThumbnails', { path: '/', page_size: 1 }, server.token);
  t.deepEqual(p1.entries.map((e) => [e.path, e.state]), [['/notes.txt', 'none']]);
  t.true(p1.has_more);
  const p2 = await call<object, Page>(client, 'ListThumbnails', { path: '/', page_size: 1, previous_last: 'notes.txt' }, server.token);
  t.deepEqual(p2.entries.map((e) => [e.path, e.state]), [['/small.png', 'ready']]);
  const back = await call<object, Page>(client, 'ListThumbnails', { path: '/', page_size: 1, previous_first: 'small.png' }, server.token);
  t.deepEqual(back.entries.map((e) => e.path), ['/notes.txt']);
  await t.throwsAsync(call(client, 'ListThumbnails', { path: '/', previous_last: 'a', previous_first: 'b' }, server.token));
  const err = await t.throwsAsync(call(client, 'GetThumbnail', { path: '/small.png', size: 7 }, server.token));
  t.is((err as grpc.ServiceError).code, grpc.status.INVALID_ARGUMENT);
  const other = await tokenFor(server.dataDir, 'reader', 'eve', 'other');
  const denied = await t.throwsAsync(call(client, 'GetThumbnail', { path: '/small.png', size: 128 }, other));
  t.is((denied as grpc.ServiceError).code, grpc.status.NOT_FOUND, 'another tenant sees nothing');
});

test('a hot pinned thumbnail is served without a metadata call per request, and confirmed in the background', async (t) => {
  const server = await startServer(t, [], { env: { CAIRN_MEDIA_JOB_CONCURRENCY: '0' } });
  const dir = tempDir(t);
  const photo = await sharp({ create: { width: 1200, height: 900, channels: 3, background: '#36c' } }).jpeg().toBuffer();
  const { version } = await put(server, server.token, dir, '/hot/a.jpg', photo);
  const first = await getThumb(server, server.token, '/hot/a.jpg', 512, version);
  t.is(first.status, 200);
  const body = Buffer.from(await first.arrayBuffer());
  const getFiles = (): Promise<number> => metric(server, 'grpc_server_started_total', { grpc_method: 'GetFile' });
  const before = await getFiles();
  t.true(before > 0, 'the metadata service counts GetFile');
  // 200 requests at once, well within the freshness window: bytes from memory, no GetFile.
  const t0 = Date.now();
  const burst = await Promise.all(Array.from({ length: 200 }, () => getThumb(server, server.token, '/hot/a.jpg', 512, version)));
  const took = Date.now() - t0;
  t.deepEqual([...new Set(burst.map((r) => r.status))], [200]);
  for (const r of burst.slice(0, 5)) t.true(Buffer.from(await r.arrayBuffer()).equals(body));
  const during = (await getFiles()) - before;
  // One background confirmation may fall in when the burst outlasts the 1 s freshness window.
  t.true(during <= Math.ceil(took / 1000), `${during} GetFile calls for 200 hot requests in ${took} ms`);
  // Past the freshness window a request is still answered from memory while one lookup confirms it.
  await new Promise((r) => setTimeout(r, 1_100));
  const stale = await Promise.all(Array.from({ length: 20 }, () => getThumb(server, server.token, '/hot/a.jpg', 512, version, { 'if-none-match': first.headers.get('etag')! })));
  t.deepEqual([...new Set(stale.map((r) => r.status))], [304]);
  await new Promise((r) => setTimeout(r, 200));
  const confirmations = (await getFiles()) - before - during;
  t.true(confirmations >= 1 && confirmations <= 2, `${confirmations} background confirmations for 20 stale hits (single-flight)`);
  // The server's own serve-time histogram counts every request.
  t.true(await metric(server, 'cairn_media_serve_seconds_count', { route: 'bearer' }) >= 221);
});
