// Versions record what their content sniffed as at commit (FileVersion.media_kind), so a file that
// is not media is answered as such at once: ListThumbnails "none", GetThumbnail and the HTTP route
// FAILED_PRECONDITION / 412 with reason not_media (no 503 loop, no generation). Versions committed
// without a recorded sniff keep the earlier behaviour (pending, generated on demand). The field is
// stored by the shared model, so it reads the same on LevelDB and PostgreSQL and survives export.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import sharp from 'sharp';
import { ServiceTokenSource } from '../../src/common/auth.js';
import { fromServiceError } from '../../src/common/status.js';
import { exportStore, importStore } from '../../src/metadata/export.js';
import { MetadataClient } from '../../src/metadata/index.js';
import { openLevelKv, openPostgresKv } from '../../src/metadata/kv/index.js';
import { queueDepth } from '../../src/metadata/model/jobs.js';
import * as m from '../../src/metadata/model/index.js';
import { decodeVersion } from '../../src/metadata/model/records.js';
import { startServer, tempDir } from '../helpers/cluster.js';
import { startPostgres } from '../helpers/postgres.js';
import { call, eventually, getThumb, mediaClient, metric, put, startMediaCluster } from './helpers.js';

type Page = { entries: Array<{ path: string; state: string; etag: string }>; has_more: boolean };

test('a folder of a JPEG and a text file: ready and none; the text file is refused at once with not_media (gRPC, HTTP, presign, info)', async (t) => {
  t.timeout(120_000);
  const server = await startServer(t);
  const dir = tempDir(t);
  const photo = await sharp({ create: { width: 800, height: 600, channels: 3, background: '#4a8' } }).jpeg().toBuffer();
  await put(server, server.token, dir, '/mix/a.jpg', photo);
  await put(server, server.token, dir, '/mix/b.txt', Buffer.from('plain text, and it stays plain text\n'));
  await put(server, server.token, dir, '/mix/c.bin', Buffer.from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
  const client = mediaClient(server.grpc);
  t.teardown(() => client.close());

  // The JPEG's job runs in the embedded server; the others never had one and never will.
  const page = await eventually(async () => {
    const p = await call<object, Page>(client, 'ListThumbnails', { path: '/mix', size: 128 }, server.token);
    return p.entries.find((e) => e.path === '/mix/a.jpg')?.state === 'ready' ? p : undefined;
  }, 60_000, 'the JPEG thumbnail');
  t.deepEqual(page.entries.map((e) => [e.path, e.state]), [['/mix/a.jpg', 'ready'], ['/mix/b.txt', 'none'], ['/mix/c.bin', 'none']]);
  t.regex(page.entries[0]!.etag, /^"[0-9a-f]{40}"$/);
  t.is((await getThumb(server, server.token, '/mix/a.jpg', 128)).status, 200);

  // gRPC: FAILED_PRECONDITION with the reason, answered without waiting for anything.
  const started = Date.now();
  const err = await t.throwsAsync(call(client, 'GetThumbnail', { path: '/mix/b.txt', size: 512 }, server.token));
  const tookMs = Date.now() - started;
  t.is((err as grpc.ServiceError).code, grpc.status.FAILED_PRECONDITION);
  const decoded = fromServiceError(err);
  t.is(decoded.code, 'CAIRN_FAILED_PRECONDITION');
  t.is(decoded.metadata['reason'], 'not_media');
  t.regex(decoded.message, /not an image or video/);
  t.true(tookMs < 2_000, `GetThumbnail of a text file took ${tookMs} ms`);

  // HTTP: a clear 412 with the reason, no Retry-After (there is nothing to wait for).
  const res = await getThumb(server, server.token, '/mix/b.txt', 128);
  t.is(res.status, 412);
  t.is(res.headers.get('retry-after'), null);
  t.like(await res.json(), { code: 'CAIRN_FAILED_PRECONDITION', reason: 'not_media' });

  // Media info says none; a presigned URL is refused now rather than when it is used.
  const info = await call<object, { state: string; media_json: string }>(client, 'GetMediaInfo', { path: '/mix/c.bin' }, server.token);
  t.like(info, { state: 'none', media_json: '' });
  const presign = await t.throwsAsync(new Promise((resolve, reject) => {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${server.token}`);
    (client as unknown as { PresignThumbnail: (r: object, m: grpc.Metadata, cb: (e: Error | null, r?: unknown) => void) => void }).PresignThumbnail({ path: '/mix/b.txt', size: 128 }, md, (e, r) => (e ? reject(e) : resolve(r)));
  }));
  t.is(fromServiceError(presign).metadata['reason'], 'not_media');
  // Nothing was generated on demand for the files that are not media.
  t.is(await metric(server, 'cairn_media_generations_total', { trigger: 'on_demand' }), 0);
});

test('versions committed without a recorded sniff stay pending and are generated on demand; media_kind is on the wire', async (t) => {
  t.timeout(120_000);
  // No media worker: jobs wait; the gateway generates what is asked for on demand.
  const cluster = await startMediaCluster(t);
  const dir = tempDir(t);
  const photo = await sharp({ create: { width: 900, height: 600, channels: 3, background: '#a48' } }).jpeg().toBuffer();
  await put(cluster.gateway, cluster.token, dir, '/old/new.jpg', photo);
  await put(cluster.gateway, cluster.token, dir, '/old/notes.txt', Buffer.from('not media\n'));
  const secret = Buffer.from(readFileSync(join(cluster.metadata.dataDir, 'auth.key'), 'utf8').trim(), 'base64url');
  const service = new ServiceTokenSource(secret);
  const metadata = new MetadataClient({ address: cluster.metadata.grpc, credentials: grpc.credentials.createInsecure(), token: () => service.token() });
  t.teardown(() => metadata.close());
  const jpeg = await metadata.getFile({ tenant: 'default', path: '/old/new.jpg', version: 0 });
  t.is(jpeg.media_kind, 'image/jpeg');
  t.is((await metadata.getFile({ tenant: 'default', path: '/old/notes.txt', version: 0 })).media_kind, 'none');
  // A commit without media_kind, as every version was stored before versions recorded it: the
  // same chunks as the JPEG, so it can be derived.
  const legacy = await metadata.commitFile({ tenant: 'default', path: '/old/legacy.jpg', size: jpeg.size, mtime_ms: 1, author_device: 'old-gateway', chunks: jpeg.chunks.map((c) => ({ plain_hash: c.plain_hash, offset: c.offset, size: c.size, address: Buffer.alloc(0), stored_size: 0 })) });
  t.is(legacy.media_kind, '');

  const client = mediaClient(cluster.gateway.grpc);
  t.teardown(() => client.close());
  const before = await call<object, Page>(client, 'ListThumbnails', { path: '/old', size: 128 }, cluster.token);
  t.deepEqual(before.entries.map((e) => [e.path, e.state]), [['/old/legacy.jpg', 'pending'], ['/old/new.jpg', 'pending'], ['/old/notes.txt', 'none']]);
  const info = await call<object, { state: string }>(client, 'GetMediaInfo', { path: '/old/legacy.jpg' }, cluster.token);
  t.is(info.state, 'pending');
  const got = await getThumb(cluster.gateway, cluster.token, '/old/legacy.jpg', 128);
  t.is(got.status, 200);
  t.is(got.headers.get('content-type'), 'image/webp');
  const after = await call<object, Page>(client, 'ListThumbnails', { path: '/old', size: 128 }, cluster.token);
  t.deepEqual(after.entries.map((e) => [e.path, e.state]), [['/old/legacy.jpg', 'ready'], ['/old/new.jpg', 'pending'], ['/old/notes.txt', 'none']]);
});

const sha = (s: string): Buffer => createHash('sha256').update(s).digest();

function commit(ctx: m.ModelContext, path: string, seed: string, mediaKind?: string): Promise<m.VersionRecord> {
  const chunks = [{ plainHash: sha(seed), offset: 0, size: 1000, address: sha(`sealed:${seed}`), storedSize: 1028 }];
  return m.commitFile(ctx, { tenant: 'acme', path, size: 1000, mtimeMs: 1, authorDevice: 'd', chunks, ...(mediaKind !== undefined ? { mediaKind } : {}) });
}

test('the media kind is stored on the version by the model: jobs only for media, kept by restore, carried by export into PostgreSQL', async (t) => {
  t.timeout(120_000);
  const level = await openLevelKv({ dir: join(tempDir(t), 'metadata') });
  t.teardown(() => level.close());
  const ctx = m.createContext(level);
  t.is((await commit(ctx, '/a.jpg', 'a', 'image/jpeg')).mediaKind, 'image/jpeg');
  t.is((await commit(ctx, '/b.txt', 'b', m.NOT_MEDIA)).mediaKind, 'none');
  t.is((await commit(ctx, '/c.bin', 'c')).mediaKind, '', 'unknown without a sniff');
  t.like((await queueDepth(level))[m.MEDIA_JOB_KIND], { ready: 1 }, 'one job: the JPEG; none for "none" or unknown');
  // A version stored without the field (as before it existed) reads as unknown.
  const headers = (await level.scan({ gte: Buffer.from('v\0'), lt: Buffer.from('v\x01') })).map(([, v]) => decodeVersion(v));
  t.is(headers.length, 3);
  t.is(headers.filter((h) => h.mk !== undefined).length, 2);
  // A new version replaces the kind; a restore carries the restored version's (and enqueues nothing).
  t.is((await commit(ctx, '/a.jpg', 'a2', m.NOT_MEDIA)).mediaKind, 'none');
  await m.restoreEntry(ctx, 'acme', '/a.jpg', 1);
  t.is((await m.getFile(ctx, 'acme', '/a.jpg')).mediaKind, 'image/jpeg');
  t.deepEqual((await m.listVersions(ctx, 'acme', '/a.jpg', { limit: 10 })).versions.map((v) => [v.version, v.mediaKind]), [[3, 'image/jpeg'], [2, 'none'], [1, 'image/jpeg']]);
  t.like((await queueDepth(level))[m.MEDIA_JOB_KIND], { ready: 1 });

  const file = join(tempDir(t), 'meta.cairnexport');
  await exportStore(level, file, { backend: 'level' });
  const pg = await startPostgres();
  t.teardown(() => pg.stop());
  const url = await pg.createDatabase('media_kind');
  const target = await openPostgresKv({ connectionString: url, pool: { max: 4, application_name: 'cairn-test' } });
  t.teardown(async () => {
    await target.close();
    await pg.dropDatabase(url);
  });
  await importStore(target, file);
  const pctx = m.createContext(target);
  for (const path of ['/a.jpg', '/b.txt', '/c.bin']) t.is((await m.getFile(pctx, 'acme', path)).mediaKind, (await m.getFile(ctx, 'acme', path)).mediaKind, path);
  t.deepEqual((await m.listVersions(pctx, 'acme', '/a.jpg', { limit: 10 })).versions.map((v) => v.mediaKind), ['image/jpeg', 'none', 'image/jpeg']);
  // The same model on PostgreSQL records it for new commits too.
  t.is((await commit(pctx, '/d.txt', 'd', m.NOT_MEDIA)).mediaKind, 'none');
  t.is((await m.getFile(pctx, 'acme', '/d.txt')).mediaKind, 'none');
  t.like((await queueDepth(target))[m.MEDIA_JOB_KIND], { ready: 1 });
});
