// Shares end to end: a user of another tenant reaches exactly the shared subtree through
// x-cairn-tenant (read shares cannot write), write shares allow writes inside, revocation is
// immediate (also for URLs the recipient presigned), and link shares open files until expiry.
import { get } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'ava';
import { isCairnError, type CairnClient } from '../../src/client/index.js';
import { suiteScope } from '../helpers/cluster.js';
import { registerUser, startStack, type Stack } from './harness.js';
import { clientsFor, mint, putBytes, random, readAll, request } from './helpers.js';

const suite = suiteScope('shares');
let stack: Stack;
const A = random(50_000);
const B = random(90_000);

test.before(async () => {
  stack = await startStack(suite);
  const alice = clientsFor(suite, stack, await mint(stack.secret, 'acme', 'user', 'alice'));
  await putBytes(alice.files, '/team/a.txt', A);
  await putBytes(alice.files, '/team/sub/b.txt', B);
  await putBytes(alice.files, '/private/c.txt', random(100));
  await registerUser(stack, 'acme', 'bob@globex');
  await registerUser(stack, 'acme', 'carol@globex');
});
test.after.always(() => suite.close());

async function denied(t: { true(v: boolean, m?: string): void; throwsAsync: (p: Promise<unknown>) => Promise<unknown> }, p: Promise<unknown>, what: string): Promise<void> {
  const err = await t.throwsAsync(p);
  t.true(isCairnError(err, 'CAIRN_PERMISSION_DENIED'), `${what}: ${String((err as Error | undefined)?.message)}`);
}

async function names(c: CairnClient, path: string): Promise<string[]> {
  return (await c.list(path)).entries.map((e) => e.name);
}

test.serial('a read share lets another tenant\'s user read and list the subtree, and nothing else', async (t) => {
  const alice = clientsFor(t, stack, await mint(stack.secret, 'acme', 'user', 'alice'));
  const shared = await alice.sharing.share('/team', 'globex/bob', 'read');
  t.like(shared, { path: '/team', tenant: 'acme', user: 'globex/bob', access: 'read', createdBy: 'alice' });
  const bobToken = await mint(stack.secret, 'globex', 'user', 'bob');
  const bob = clientsFor(t, stack, bobToken, 'acme');

  t.deepEqual(await readAll(bob.files, '/team/a.txt'), A);
  t.deepEqual(await readAll(bob.files, '/team/sub/b.txt'), B);
  t.is((await bob.files.stat('/team/sub/b.txt')).size, B.length);
  t.deepEqual(await names(bob.files, '/team'), ['a.txt', 'sub']);
  t.deepEqual(await names(bob.files, '/team/sub'), ['b.txt']);
  t.is((await bob.files.versions('/team/a.txt')).versions.length, 1);

  await denied(t, readAll(bob.files, '/private/c.txt'), 'read outside');
  await denied(t, bob.files.stat('/private/nothing.txt'), 'stat of a missing path outside');
  await denied(t, bob.files.list('/'), 'list the root');
  await denied(t, bob.files.list('/private'), 'list outside');
  await denied(t, putBytes(bob.files, '/team/new.txt', random(10)), 'upload into a read share');
  await denied(t, bob.files.mkdir('/team/dir'), 'mkdir');
  await denied(t, bob.files.delete('/team/a.txt'), 'delete');
  await denied(t, bob.files.move('/team/a.txt', '/team/a2.txt'), 'move');
  await denied(t, bob.files.copy('/team/a.txt', '/team/a3.txt'), 'copy');
  await denied(t, bob.files.listChanges(), 'the change feed is tenant-wide');
  t.is((await alice.files.stat('/team/a.txt')).version, 1);
  t.deepEqual(await names(alice.files, '/team'), ['a.txt', 'sub']);

  // Without the header bob is in his own tenant, which has no such file.
  const bobHome = clientsFor(t, stack, bobToken);
  const own = await t.throwsAsync(bobHome.files.stat('/team/a.txt'));
  t.true(isCairnError(own, 'CAIRN_NOT_FOUND'));
  // Another user of bob's tenant holds no grant.
  const carol = clientsFor(t, stack, await mint(stack.secret, 'globex', 'user', 'carol'), 'acme');
  await denied(t, readAll(carol.files, '/team/a.txt'), 'carol');

  // The bearer HTTP route honours the same header and grants.
  const viaHttp = (path: string) => request(`${stack.http}/v1/files${path}`, { headers: { authorization: `Bearer ${bobToken}`, 'x-cairn-tenant': 'acme' } });
  t.deepEqual((await viaHttp('/team/sub/b.txt')).body, B);
  t.is((await viaHttp('/private/c.txt')).status, 403);
  t.is((await request(`${stack.http}/v1/files/team/a.txt`, { method: 'PUT', body: 'x', headers: { authorization: `Bearer ${bobToken}`, 'x-cairn-tenant': 'acme' } })).status, 403);

  t.deepEqual((await alice.sharing.listShares('/team')).map((s) => [s.user, s.access]), [['globex/bob', 'read']]);
  t.deepEqual((await bobHome.sharing.sharedWithMe('acme')).shares.map((s) => [s.path, s.access]), [['/team', 'read']]);
});

test.serial('a write share allows writes inside it only; a reader token stays read-only', async (t) => {
  const alice = clientsFor(t, stack, await mint(stack.secret, 'acme', 'user', 'alice'));
  await alice.sharing.share('/team/sub', 'globex/bob', 'write');
  const bob = clientsFor(t, stack, await mint(stack.secret, 'globex', 'user', 'bob'), 'acme');
  const data = random(120_000);
  const info = await putBytes(bob.files, '/team/sub/from-bob.bin', data);
  t.is(info.path, '/team/sub/from-bob.bin');
  t.deepEqual(await readAll(alice.files, '/team/sub/from-bob.bin'), data);
  await bob.files.mkdir('/team/sub/dir');
  await bob.files.move('/team/sub/from-bob.bin', '/team/sub/dir/moved.bin');
  await bob.files.copy('/team/a.txt', '/team/sub/copy-of-a.txt');
  t.deepEqual(await readAll(alice.files, '/team/sub/copy-of-a.txt'), A);
  await denied(t, putBytes(bob.files, '/team/top.txt', random(5)), 'write beside the write share');
  await denied(t, bob.files.move('/team/sub/dir/moved.bin', '/private/stolen.bin'), 'move out of the share');
  await denied(t, bob.files.copy('/private/c.txt', '/team/sub/c.txt'), 'copy from outside');
  await bob.files.delete('/team/sub/dir');
  t.deepEqual(await names(alice.files, '/team/sub'), ['b.txt', 'copy-of-a.txt']);

  const reader = clientsFor(t, stack, await mint(stack.secret, 'globex', 'reader', 'bob'), 'acme');
  t.deepEqual(await readAll(reader.files, '/team/sub/b.txt'), B);
  await denied(t, putBytes(reader.files, '/team/sub/r.txt', random(5)), 'reader token');
});

test.serial('the recipient can presign inside the share; revoking ends every kind of access', async (t) => {
  const alice = clientsFor(t, stack, await mint(stack.secret, 'acme', 'user', 'alice'));
  const bob = clientsFor(t, stack, await mint(stack.secret, 'globex', 'user', 'bob'), 'acme');
  const url = await bob.sharing.presign('/team/a.txt');
  t.true(url.url.startsWith(stack.http), url.url);
  const ok = await request(url.url);
  t.is(ok.status, 200);
  t.deepEqual(ok.body, A);
  await denied(t, bob.sharing.presign('/private/c.txt'), 'presign outside');
  await denied(t, bob.sharing.presign('/team/a.txt', { method: 'PUT' }), 'presign PUT in a read share');

  await alice.sharing.unshare('/team', { user: 'globex/bob' });
  await alice.sharing.unshare('/team/sub', { user: 'globex/bob' });
  await denied(t, readAll(bob.files, '/team/a.txt'), 'read after revoke');
  await denied(t, bob.files.list('/team/sub'), 'list after revoke');
  const after = await request(url.url);
  t.is(after.status, 403);
  t.deepEqual(await alice.sharing.listShares('/team'), []);
  const again = await t.throwsAsync(alice.sharing.unshare('/team', { user: 'globex/bob' }));
  t.true(isCairnError(again, 'CAIRN_NOT_FOUND'));
});

test.serial('a link share opens the file or folder until it expires or is revoked', async (t) => {
  const alice = clientsFor(t, stack, await mint(stack.secret, 'acme', 'user', 'alice'));
  const link = await alice.sharing.shareLink('/team', { expiresInSeconds: 4 });
  t.is(link.url, `${stack.http}/v1/links/${link.token}`);
  const file = await request(`${link.url}/sub/b.txt`, { headers: { range: 'bytes=10-19' } });
  t.is(file.status, 206);
  t.deepEqual(file.body, B.subarray(10, 20));
  const listing = ((await request(link.url)).json()) as { entries: Array<{ path: string; folder: boolean }> };
  t.deepEqual(listing.entries.map((e) => [e.path, e.folder]), [['/a.txt', false], ['/sub', true]]);
  // Climbing out of the shared folder: dot segments are resolved before routing (the request
  // lands outside the link: 404); encoded slashes reach the path check (400).
  const status = (path: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const u = new URL(link.url);
      get({ host: u.hostname, port: u.port, path: `${u.pathname}${path}` }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      }).on('error', reject);
    });
  t.is(await status('/sub/%2E%2E/%2E%2E/private/c.txt'), 404);
  t.is(await status('/sub%2F..%2F..%2Fprivate%2Fc.txt'), 400);
  const put = await request(`${link.url}/new.txt`, { method: 'PUT', body: 'x' });
  t.is(put.status, 403);
  t.is((await alice.sharing.listShares('/team')).filter((s) => s.linkId === link.share.linkId).length, 1);

  await sleep(4500);
  const expired = await request(`${link.url}/a.txt`);
  t.is(expired.status, 404);

  const second = await alice.sharing.shareLink('/team/a.txt', { access: 'write' });
  const whole = await request(second.url);
  t.deepEqual(whole.body, A);
  const replaced = random(3000);
  const put2 = await request(second.url, { method: 'PUT', body: replaced });
  t.is(put2.status, 200);
  t.deepEqual(await readAll(alice.files, '/team/a.txt'), replaced);
  await alice.sharing.unshare('/team/a.txt', { linkId: second.share.linkId });
  const revoked = await request(second.url);
  t.is(revoked.status, 404);
});

test.serial('bad share requests are refused and change nothing', async (t) => {
  const alice = clientsFor(t, stack, await mint(stack.secret, 'acme', 'user', 'alice'));
  const before = await alice.sharing.listShares('/team');
  for (const [user, code] of [['acme/dave', 'CAIRN_INVALID_ARGUMENT'], ['nobody', 'CAIRN_INVALID_ARGUMENT'], ['globex/bad user', 'CAIRN_INVALID_ARGUMENT'], ['BAD/x', 'CAIRN_INVALID_ARGUMENT']] as const) {
    const err = await t.throwsAsync(alice.sharing.share('/team', user, 'read'));
    t.true(isCairnError(err, code), `${user}: ${String((err as Error | undefined)?.message)}`);
  }
  const missing = await t.throwsAsync(alice.sharing.share('/nothing', 'globex/bob', 'read'));
  t.true(isCairnError(missing, 'CAIRN_NOT_FOUND'));
  const unregistered = await t.throwsAsync(alice.sharing.share('/team', 'globex/zoe', 'read'));
  t.true(isCairnError(unregistered, 'CAIRN_NOT_FOUND'));
  t.regex(unregistered?.message ?? '', /not a user of tenant acme.*zoe@globex/);
  const tooLong = await t.throwsAsync(alice.sharing.shareLink('/team', { expiresInSeconds: 400 * 24 * 3600 }));
  t.true(isCairnError(tooLong, 'CAIRN_INVALID_ARGUMENT'));
  t.deepEqual(await alice.sharing.listShares('/team'), before);
  const bob = clientsFor(t, stack, await mint(stack.secret, 'globex', 'user', 'bob'), 'acme');
  await denied(t, bob.files.usage('/private'), 'usage outside');
});
