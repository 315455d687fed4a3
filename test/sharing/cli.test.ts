// The sharing commands of the `cairn` binary: share, shares, unshare and presign (GET and PUT
// URLs that work as printed), with --json output and exit codes.
import test from 'ava';
import { runCli } from '../helpers/cluster.js';
import { registerUser, startStack } from './harness.js';
import { clientsFor, mint, putBytes, random, readAll, request } from './helpers.js';

test('share, shares, unshare and presign from the command line', async (t) => {
  const stack = await startStack(t);
  const token = await mint(stack.secret, 'acme', 'user', 'alice');
  const { files } = clientsFor(t, stack, token);
  const data = random(70_000);
  await putBytes(files, '/team/a.bin', data);
  await registerUser(stack, 'acme', 'bob@globex');
  const cli = (...args: string[]) => runCli(['--endpoint', stack.grpc, '--token', token, ...args]);

  const shared = await cli('--json', 'share', '/team', '--user', 'globex/bob', '--write');
  t.is(shared.code, 0, shared.stderr);
  t.like(JSON.parse(shared.stdout), { path: '/team', user: 'globex/bob', access: 'write' });
  const link = await cli('--json', 'share', '/team/a.bin', '--link', '--expires', '1h');
  t.is(link.code, 0, link.stderr);
  const linkOut = JSON.parse(link.stdout) as { url: string; linkId: string; expiresMs: number };
  t.true(linkOut.expiresMs > Date.now() + 3500_000);
  t.deepEqual((await request(linkOut.url)).body, data);

  const listed = await cli('--json', 'shares', '/team');
  t.is(listed.code, 0, listed.stderr);
  t.deepEqual(listed.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { user: string }).user), ['globex/bob']);
  const mine = await runCli(['--endpoint', stack.grpc, '--token', await mint(stack.secret, 'globex', 'user', 'bob'), 'shares', '--from', 'acme']);
  t.is(mine.code, 0, mine.stderr);
  t.regex(mine.stdout, /^\/team {2}globex\/bob {2}write$/m);

  const get = await cli('presign', '/team/a.bin', '--expires', '10m');
  t.is(get.code, 0, get.stderr);
  const url = get.stdout.trim();
  t.true(url.startsWith(`${stack.http}/v1/presigned/acme/team/a.bin?`), url);
  const res = await request(url, { headers: { range: 'bytes=0-99' } });
  t.is(res.status, 206);
  t.deepEqual(res.body, data.subarray(0, 100));
  const put = await cli('--json', 'presign', '/team/b.bin', '--put');
  const putUrl = (JSON.parse(put.stdout) as { url: string }).url;
  const body = random(5000);
  t.is((await request(putUrl, { method: 'PUT', body })).status, 200);
  t.deepEqual(await readAll(files, '/team/b.bin'), body);

  // The grantee works in the shared tree with the file commands' global --owner.
  const bobToken = await mint(stack.secret, 'globex', 'user', 'bob');
  const bob = (...args: string[]) => runCli(['--endpoint', stack.grpc, '--token', bobToken, '--owner', 'acme', ...args]);
  const read = await bob('get', '/team/a.bin', '-');
  t.is(read.code, 0, read.stderr);
  t.true(read.stdout.length > 0);
  const listedByBob = await bob('ls', '/team');
  t.is(listedByBob.code, 0, listedByBob.stderr);
  t.regex(listedByBob.stdout, /a\.bin/);
  t.is((await bob('ls', '/')).code, 4, 'outside the share is refused');

  const unshared = await cli('unshare', '/team', '--user', 'globex/bob');
  t.is(unshared.code, 0, unshared.stderr);
  t.is((await cli('--json', 'shares', '/team')).stdout.split('\n').filter((l) => l.includes('globex/bob')).length, 0);

  // Usage errors and missing paths have their exit codes and stable codes.
  const both = await cli('share', '/team', '--user', 'globex/bob', '--link');
  t.is(both.code, 2);
  const badDuration = await cli('presign', '/team/a.bin', '--expires', 'soon');
  t.is(badDuration.code, 2);
  t.regex(badDuration.stderr, /CAIRN_INVALID_ARGUMENT/);
  const missing = await cli('presign', '/nope.bin');
  t.is(missing.code, 3);
  t.regex(missing.stderr, /CAIRN_NOT_FOUND/);
});
