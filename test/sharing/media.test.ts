// Media through shares (real metadata, block node and gateway processes): a user of another tenant
// holding a read share reaches GetThumbnail, ListThumbnails, GetMediaInfo and PresignThumbnail on
// the shared subtree only — never without a share, never outside it, never after revocation, and
// never GPS; another tenant without the header sees nothing of the owner's files; a link secret
// (live or expired) is no bearer token; presigned thumbnail URLs are immutable, tampered or expired
// ones get 403 and change nothing, and a recipient's URL dies with the share.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import sharp from 'sharp';
import { signToken, type Role } from '../../src/common/auth.js';
import { CairnSharing } from '../../src/client/sharing.js';
import { shareRulesFor } from '../../src/gateway/index.js';
import type { MediaClient } from '../../src/gen/cairn/v1/Media.js';
import { MEDIA_PERMISSIONS, MEDIA_SHARE_RULES } from '../../src/media/index.js';
import { AdminClient } from '../../src/metadata/index.js';
import { tempDir } from '../helpers/cluster.js';
import { mediaClient, orientedJpeg, put, startMediaCluster } from '../media/helpers.js';

type Method = 'GetThumbnail' | 'GetMediaInfo' | 'ListThumbnails' | 'PresignThumbnail';

function media<Res>(client: MediaClient, method: Method, req: object, token: string, owner?: string): Promise<Res> {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  if (owner !== undefined) md.set('x-cairn-tenant', owner);
  return new Promise((resolve, reject) => {
    (client[method] as unknown as (r: object, m: grpc.Metadata, o: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => void).call(client, req, md, { deadline: Date.now() + 60_000 }, (err, res) => (err ? reject(err) : resolve(res as Res)));
  });
}

async function status(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return grpc.status.OK;
  } catch (err) {
    return (err as grpc.ServiceError).code;
  }
}

interface Thumb { data: Buffer; etag: string; version: string }
interface Info { state: string; media_json: string }
interface Listing { entries: Array<{ path: string; state: string }> }
interface Presigned { url: string; path_and_query: string; version: string; expires_ms: string }

test('media RPCs through shares: other tenant, no share, read share, revoked share, link secrets; presigned thumbnail URLs', async (t) => {
  t.timeout(180_000);
  const cluster = await startMediaCluster(t);
  const secret = Buffer.from(readFileSync(join(cluster.metadata.dataDir, 'auth.key'), 'utf8').trim(), 'base64url');
  const mint = (tenant: string, role: Role, subject: string): Promise<string> => signToken(secret, { tenant, role, subject, ttlSeconds: 600 });
  const owner = cluster.token; // tenant default, alice
  const dir = tempDir(t);
  const { version } = await put(cluster.gateway, owner, dir, '/photos/a.jpg', await orientedJpeg(1200, 800, 1));
  await put(cluster.gateway, owner, dir, '/private/b.jpg', await sharp({ create: { width: 900, height: 600, channels: 3, background: '#284' } }).jpeg().toBuffer());
  const tenantAdmin = await mint('default', 'admin', 'admin');
  const admin = new AdminClient({ address: cluster.metadata.grpc, credentials: grpc.credentials.createInsecure(), token: () => tenantAdmin });
  t.teardown(() => admin.close());
  await admin.createUser({ tenant: 'default', user: 'bob@globex' });
  await admin.createUser({ tenant: 'default', user: 'carol@globex' });
  const client = mediaClient(cluster.gateway.grpc);
  const sharing = new CairnSharing({ endpoint: cluster.gateway.grpc, token: owner });
  t.teardown(() => {
    client.close();
    sharing.close();
  });
  const ownerThumb = await media<Thumb>(client, 'GetThumbnail', { path: '/photos/a.jpg', size: 512, version }, owner);
  const ownerInfo = await media<Info>(client, 'GetMediaInfo', { path: '/photos/a.jpg' }, owner);
  t.truthy((JSON.parse(ownerInfo.media_json) as { gps?: unknown }).gps, 'the owner sees GPS');

  const bob = await mint('globex', 'user', 'bob');
  const carol = await mint('globex', 'user', 'carol');
  const photoReq = { path: '/photos/a.jpg', size: 512 };
  const every = (token: string, ownerHeader: string | undefined, path: string, folder: string): Array<[string, Promise<unknown>]> => [
    ['GetThumbnail', media(client, 'GetThumbnail', { path, size: 128 }, token, ownerHeader)],
    ['GetMediaInfo', media(client, 'GetMediaInfo', { path }, token, ownerHeader)],
    ['ListThumbnails', media(client, 'ListThumbnails', { path: folder }, token, ownerHeader)],
    ['PresignThumbnail', media(client, 'PresignThumbnail', { path, size: 128 }, token, ownerHeader)],
  ];
  const expectAll = async (cases: Array<[string, Promise<unknown>]>, code: grpc.status, what: string): Promise<void> => {
    for (const [method, p] of cases) t.is(await status(p), code, `${what}: ${method}`);
  };

  // Another tenant without the header works in its own tenant: the owner's files do not exist there.
  await expectAll(every(bob, undefined, '/photos/a.jpg', '/photos'), grpc.status.NOT_FOUND, 'other tenant, own tree');
  // With the header but no share: refused, whether the path exists or not.
  await expectAll(every(bob, 'default', '/photos/a.jpg', '/photos'), grpc.status.PERMISSION_DENIED, 'no share');
  await expectAll(every(bob, 'default', '/photos/missing.jpg', '/nothing'), grpc.status.PERMISSION_DENIED, 'no share, missing path');

  // A read share on /photos: every media read inside, nothing outside, never GPS.
  await sharing.share('/photos', 'globex/bob', 'read');
  const viaShare = await media<Thumb>(client, 'GetThumbnail', { ...photoReq, version }, bob, 'default');
  t.is(viaShare.etag, ownerThumb.etag);
  t.true(viaShare.data.equals(ownerThumb.data));
  const info = await media<Info>(client, 'GetMediaInfo', { path: '/photos/a.jpg' }, bob, 'default');
  t.is(info.state, 'ready');
  const shown = JSON.parse(info.media_json) as { gps?: unknown; width: number; exif?: { make?: string } };
  t.is(shown.gps, undefined, 'a share recipient never sees GPS');
  t.is(shown.width, 1200);
  t.false(info.media_json.includes('51.5'));
  const listing = await media<Listing>(client, 'ListThumbnails', { path: '/photos', size: 512 }, bob, 'default');
  t.deepEqual(listing.entries.map((e) => [e.path, e.state]), [['/photos/a.jpg', 'ready']]);
  await expectAll(every(bob, 'default', '/private/b.jpg', '/private'), grpc.status.PERMISSION_DENIED, 'read share, outside it');
  t.is(await status(media(client, 'ListThumbnails', { path: '/' }, bob, 'default')), grpc.status.PERMISSION_DENIED, 'the root is never shared');
  // The share is bob's, not his tenant's.
  await expectAll(every(carol, 'default', '/photos/a.jpg', '/photos'), grpc.status.PERMISSION_DENIED, 'another user of the grantee tenant');
  // Even a write share shows no GPS (it is the owner's personal data).
  await sharing.share('/photos', 'globex/carol', 'write');
  t.is((JSON.parse((await media<Info>(client, 'GetMediaInfo', { path: '/photos/a.jpg' }, carol, 'default')).media_json) as { gps?: unknown }).gps, undefined);

  // HTTP with a bearer token and x-cairn-tenant: the same rule.
  const httpThumb = (token: string, headers: Record<string, string> = {}): Promise<Response> =>
    fetch(`${cluster.gateway.http}/v1/thumbnails?${new URLSearchParams({ path: '/photos/a.jpg', size: '512', version: String(version) }).toString()}`, { headers: { authorization: `Bearer ${token}`, ...headers } });
  const shared = await httpThumb(bob, { 'x-cairn-tenant': 'default' });
  t.is(shared.status, 200);
  t.is(shared.headers.get('etag'), ownerThumb.etag);
  t.is(shared.headers.get('cache-control'), 'private, max-age=31536000, immutable', 'shared bytes are not for public caches');
  t.true(Buffer.from(await shared.arrayBuffer()).equals(ownerThumb.data));
  t.is((await httpThumb(bob)).status, 404, 'other tenant without the header: its own (empty) tree');
  t.is((await httpThumb(await mint('globex', 'user', 'dave'), { 'x-cairn-tenant': 'default' })).status, 403);

  // Presigned thumbnail URLs: the version is pinned, bytes and ETag as the owner gets them, immutable.
  const signed = await media<Presigned>(client, 'PresignThumbnail', { path: '/photos/a.jpg', size: 512, expires_in_seconds: 600 }, owner);
  t.is(Number(signed.version), version, 'version 0 is pinned to the current version');
  t.regex(signed.path_and_query, /^\/v1\/thumbnails\/presigned\/default\/photos\/a\.jpg\?/);
  // Absolute, on the gateway's public HTTP URL, as Files.Presign answers.
  t.is(signed.url, `${cluster.gateway.http}${signed.path_and_query}`);
  const viaUrl = await fetch(`${cluster.gateway.http}${signed.path_and_query}`);
  t.is(viaUrl.status, 200);
  t.is(viaUrl.headers.get('cache-control'), 'public, max-age=31536000, immutable');
  t.is(viaUrl.headers.get('etag'), ownerThumb.etag);
  t.true(Buffer.from(await viaUrl.arrayBuffer()).equals(ownerThumb.data));
  t.is((await fetch(`${cluster.gateway.http}${signed.path_and_query}`, { headers: { 'if-none-match': ownerThumb.etag } })).status, 304);
  t.is((await fetch(`${cluster.gateway.http}${signed.path_and_query}`, { method: 'PUT', body: 'x' })).status, 405);
  // Tampering with any signed part (size, version, path, expiry, recipient) or the signature: 403.
  const u = new URL(`${cluster.gateway.http}${signed.path_and_query}`);
  const tampered: string[] = [];
  for (const [k, v] of [['size', '2048'], ['v', '2'], ['x', String(Number(u.searchParams.get('x')) + 60)], ['u', 'bob@globex'], ['s', 'A'.repeat(43)]] as const) {
    const x = new URL(u);
    x.searchParams.set(k, v);
    tampered.push(x.toString());
  }
  tampered.push(u.toString().replace('/photos/a.jpg', '/private/b.jpg'));
  tampered.push(u.toString().replace('/presigned/default/', '/presigned/globex/'));
  // A file URL's signature does not open the thumbnail route, nor the reverse.
  const fileUrl = await sharing.presign('/photos/a.jpg');
  tampered.push(`${cluster.gateway.http}/v1/thumbnails/presigned/default/photos/a.jpg?${new URL(fileUrl.url, cluster.gateway.http).searchParams.toString()}&size=512`);
  for (const bad of tampered) {
    const res = await fetch(bad);
    t.is(res.status, 403, bad);
    t.is(res.headers.get('etag'), null);
  }
  t.is((await fetch(`${cluster.gateway.http}${signed.path_and_query.replace('/v1/thumbnails/presigned/', '/v1/presigned/').replace(/&size=\d+/, '')}`)).status, 403);
  const shortLived = await media<Presigned>(client, 'PresignThumbnail', { path: '/photos/a.jpg', size: 128, expires_in_seconds: 1 }, owner);
  t.is((await fetch(`${cluster.gateway.http}${shortLived.path_and_query}`)).status, 200);
  await sleep(Number(shortLived.expires_ms) - Date.now() + 50);
  const expired = await fetch(`${cluster.gateway.http}${shortLived.path_and_query}`);
  t.is(expired.status, 403);
  t.regex(await expired.text(), /expired/);
  // Bad presign requests: clear errors.
  t.is(await status(media(client, 'PresignThumbnail', { path: '/photos/a.jpg', size: 300 }, owner)), grpc.status.INVALID_ARGUMENT);
  t.is(await status(media(client, 'PresignThumbnail', { path: '/photos/a.jpg', size: 128, expires_in_seconds: 8 * 24 * 3600 }, owner)), grpc.status.INVALID_ARGUMENT);
  t.is(await status(media(client, 'PresignThumbnail', { path: '/photos/none.jpg', size: 128 }, owner)), grpc.status.NOT_FOUND);

  // A recipient's URL works while the share does, and dies with it; so do the RPCs.
  const bobUrl = await media<Presigned>(client, 'PresignThumbnail', { path: '/photos/a.jpg', size: 128 }, bob, 'default');
  t.regex(bobUrl.path_and_query, /[?&]u=bob%40globex/);
  t.is((await fetch(`${cluster.gateway.http}${bobUrl.path_and_query}`)).status, 200);
  await sharing.unshare('/photos', { user: 'globex/bob' });
  t.is((await fetch(`${cluster.gateway.http}${bobUrl.path_and_query}`)).status, 403, 'revocation is immediate for presigned URLs');
  await expectAll(every(bob, 'default', '/photos/a.jpg', '/photos'), grpc.status.PERMISSION_DENIED, 'after unshare');
  t.is((await httpThumb(bob, { 'x-cairn-tenant': 'default' })).status, 403);

  // A link secret is no bearer token, live or expired.
  const link = await sharing.shareLink('/photos', { expiresInSeconds: 1 });
  await expectAll(every(link.token, undefined, '/photos/a.jpg', '/photos'), grpc.status.UNAUTHENTICATED, 'live link secret as bearer');
  await sleep(1_200);
  await expectAll(every(link.token, 'default', '/photos/a.jpg', '/photos'), grpc.status.UNAUTHENTICATED, 'expired link secret as bearer');
  t.is((await httpThumb(link.token)).status, 401);

  // None of this changed what the owner has: same thumbnail, same version.
  const after = await media<Thumb>(client, 'GetThumbnail', { ...photoReq, version: 0 }, owner);
  t.is(after.etag, ownerThumb.etag);
  t.is(Number(after.version), version);
});

test('extension share rules come from the declared permissions: a read share never passes a write method', (t) => {
  const rules = shareRulesFor({ Look: 'read', Browse: 'read', Change: 'write' }, { Look: { field: 'path' }, Browse: { field: 'dir', folder: true }, Change: { field: 'path' } });
  const look = rules['Look'];
  const browse = rules['Browse'];
  const change = rules['Change'];
  if (typeof look !== 'function' || typeof browse !== 'function' || typeof change !== 'function') return t.fail('rules are functions');
  t.deepEqual(look({ path: '/a/b.jpg' }), [['/a/b.jpg', 'read']]);
  t.deepEqual(browse({ dir: '' }), [['/', 'read']], 'the root, which nothing grants');
  t.deepEqual(browse({ dir: '/a' }), [['/a', 'read']]);
  t.deepEqual(change({ path: '/a/b.jpg' }), [['/a/b.jpg', 'write']], 'a write method needs a write share whatever the target says');
  t.throws(() => look({ path: '../etc' }), undefined, 'paths are normalised and checked');
  t.throws(() => shareRulesFor({ Look: 'read' }, { Other: { field: 'path' } }), { message: /declares no permission/ });
  t.throws(() => shareRulesFor({ Purge: 'admin' }, { Purge: { field: 'path' } }), { message: /never available on shares/ });
  t.deepEqual(Object.keys(MEDIA_SHARE_RULES).sort(), ['GetMediaInfo', 'GetThumbnail', 'ListThumbnails', 'PresignThumbnail']);
  for (const [method, rule] of Object.entries(MEDIA_SHARE_RULES)) {
    if (typeof rule !== 'function') return t.fail(method);
    t.true(rule({ path: '/p/x.jpg' }).every(([, need]) => need === (MEDIA_PERMISSIONS[method as keyof typeof MEDIA_PERMISSIONS] === 'read' ? 'read' : 'write')), method);
  }
  return undefined;
});
