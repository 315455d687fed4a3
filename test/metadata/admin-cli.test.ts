// `cairn admin node|quota|retention|user|gc` against a real embedded server (child processes): the CLI finds
// the loopback Admin endpoint in client.json and mints a cluster-admin token from auth.key.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import test from 'ava';
import { runCli, startServer, suiteScope, tempDir } from '../helpers/cluster.js';

const scope = suiteScope('admin-cli');
test.after.always(() => scope.close());

test('quota, retention, users, gc and node commands reach the Admin API of a running server', async (t) => {
  t.timeout(120_000);
  const server = await startServer(scope);
  const env = { CAIRN_DATA_DIR: server.dataDir, CAIRN_ENDPOINT: undefined, CAIRN_TOKEN: undefined };
  const admin = async (...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> => runCli(['--json', 'admin', ...args, '--data-dir', server.dataDir], env);
  const json = (out: string): Record<string, unknown> => JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>;
  const dir = tempDir(scope, 'admin-cli-files-');
  const small = join(dir, 'small.bin');
  const big = join(dir, 'big.bin');
  writeFileSync(small, randomBytes(1000));
  writeFileSync(big, randomBytes(5000));

  const set = await admin('quota', 'set', 'default', '4KiB');
  t.is(set.code, 0, set.stderr);
  t.like(json(set.stdout), { tenant: 'default', quotaBytes: 4096 });
  const put = await runCli(['put', small, '/small.bin'], env);
  t.is(put.code, 0, put.stderr);
  const over = await runCli(['put', big, '/big.bin'], env);
  t.not(over.code, 0);
  t.regex(over.stderr, /CAIRN_QUOTA_EXCEEDED/);
  const get = await admin('quota', 'get', 'default');
  t.is(get.code, 0, get.stderr);
  t.like(json(get.stdout), { tenant: 'default', versionBytes: 1000, versions: 1, quotaBytes: 4096 });
  t.is((await admin('quota', 'set', 'default', 'lots')).code, 2, 'a bad size is a usage error');

  const created = await admin('user', 'create', 'alice', '--tenant', 'default', '--display-name', 'Alice');
  t.is(created.code, 0, created.stderr);
  t.like(json(created.stdout), { user: 'alice', tenant: 'default', displayName: 'Alice' });
  const listed = await admin('user', 'ls', '--tenant', 'default');
  t.deepEqual(listed.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { user: string }).user), ['alice']);
  t.is((await admin('user', 'rm', 'alice', '--tenant', 'default')).code, 0);
  t.is((await admin('user', 'ls', '--tenant', 'default')).stdout.trim(), '');

  const gc = await admin('gc', 'run');
  t.is(gc.code, 0, gc.stderr);
  t.like(json(gc.stdout), { claimed: 0, finished: 0, released: 0 }, 'nothing is past its grace period yet');

  const orphans = await admin('gc', 'run', '--orphans');
  t.is(orphans.code, 0, orphans.stderr);
  t.like(json(orphans.stdout), { orphansSeen: 0, orphansDeleted: 0 }, 'every block on the embedded node is named by a chunk');

  const retention = await admin('retention', 'set', 'default', '--keep-last', '3', '--keep-days', '7');
  t.is(retention.code, 0, retention.stderr);
  t.deepEqual(json(retention.stdout), { tenant: 'default', policy: { keepLast: 3, keepDays: 7, trashDays: 30 } });
  t.deepEqual(json((await admin('retention', 'get', 'default')).stdout), { tenant: 'default', policy: { keepLast: 3, keepDays: 7, trashDays: 30 } });
  t.is((await admin('retention', 'set', 'default', '--keep-last', '0')).code, 2, 'out of range is a usage error');
  t.is((await admin('retention', 'set', 'default')).code, 2, 'a policy needs a rule');
  t.like(json((await admin('retention', 'get', 'default')).stdout), { policy: { keepLast: 3, keepDays: 7 } }, 'bad input changed nothing');
  const recount = await admin('quota', 'recount', 'default');
  t.is(recount.code, 0, recount.stderr);
  t.like(json(recount.stdout), { tenant: 'default', versionBytes: 1000, versions: 1, quotaBytes: 4096 });

  const down = await admin('node', 'down', 'no-such-node');
  t.not(down.code, 0);
  t.regex(down.stderr, /CAIRN_NOT_FOUND/);
  const noServer = await runCli(['admin', 'quota', 'get', '--data-dir', dir], { ...env, CAIRN_DATA_DIR: dir });
  t.is(noServer.code, 2);
  t.regex(noServer.stderr, /--metadata/);
});
