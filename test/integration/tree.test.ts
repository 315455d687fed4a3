// The file tree through the public API, the SDK and the CLI against a real embedded server:
// paging, versions and restore, delete/undelete, moves, copies, folders, watch, usage, tenants,
// roles and bad input.
import test from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { CairnClient, type Change, type ChangeBatch } from '../../src/client/index.js';
import { CLI, ROOT, runCli, startServer, suiteScope, type ServerProcess } from '../helpers/cluster.js';

const suite = suiteScope('tree');
let server: ServerProcess;
let owner: CairnClient;

test.before(async () => {
  server = await startServer(suite);
  owner = new CairnClient({ endpoint: server.grpc, token: server.token });
  suite.teardown(() => owner.close());
});
test.after.always(() => suite.close());

function put(c: CairnClient, path: string, data: Buffer) {
  return c.putStream(Readable.from([data]), path, { size: data.length });
}

async function bytesOf(c: CairnClient, path: string, version = 0): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of c.read(path, { version })) if ('data' in p) parts.push(p.data);
  return Buffer.concat(parts);
}

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  }
}

async function mint(tenant: string, role: string): Promise<string> {
  const r = await runCli(['token', 'create', '--data-dir', server.dataDir, '--tenant', tenant, '--role', role]);
  if (r.code !== 0) throw new Error(r.stderr);
  return r.stdout.trim();
}

function cliEnv(token = server.token): Record<string, string | undefined> {
  return { CAIRN_ENDPOINT: server.grpc, CAIRN_TOKEN: token };
}

async function names(c: CairnClient, path: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of c.listAll(path)) out.push(e.name);
  return out;
}

test('ls pages through a folder: tokens, previous_last and previous_first, and the CLI', async (t) => {
  for (let i = 0; i < 7; i++) await put(owner, `/paging/f${i}`, Buffer.from(`file ${i}`));
  const p1 = await owner.list('/paging', { pageSize: 3 });
  t.deepEqual(p1.entries.map((e) => e.name), ['f0', 'f1', 'f2']);
  t.true(p1.hasMore);
  t.is(p1.entries[0]!.size, 6);
  t.false(p1.entries[0]!.folder);
  const p2 = await owner.list('/paging', { pageSize: 3, pageToken: p1.nextPageToken });
  t.deepEqual(p2.entries.map((e) => e.name), ['f3', 'f4', 'f5']);
  const p3 = await owner.list('/paging', { pageSize: 3, pageToken: p2.nextPageToken });
  t.deepEqual(p3.entries.map((e) => e.name), ['f6']);
  t.is(p3.nextPageToken, '');
  t.false(p3.hasMore);
  const after = await owner.list('/paging', { pageSize: 3, previousLast: 'f2' });
  t.deepEqual(after.entries.map((e) => e.name), ['f3', 'f4', 'f5']);
  const before = await owner.list('/paging', { pageSize: 3, previousFirst: 'f3' });
  t.deepEqual(before.entries.map((e) => e.name), ['f0', 'f1', 'f2']);

  const all = await runCli(['--json', 'ls', '/paging', '--all', '--page-size', '3'], cliEnv());
  t.is(all.code, 0, all.stderr);
  t.deepEqual(all.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { name: string }).name), ['f0', 'f1', 'f2', 'f3', 'f4', 'f5', 'f6']);
  const one = await runCli(['ls', '/paging', '--page-size', '3'], cliEnv());
  t.is(one.code, 0, one.stderr);
  t.is(one.stdout.trim().split('\n').length, 3);
  t.regex(one.stderr, /--page-token \S+/);
  const root = await owner.list('/');
  t.true(root.entries.some((e) => e.name === 'paging' && e.folder));
});

test('versions after two puts; restoring version 1 makes version 3 with its bytes', async (t) => {
  const a = randomBytes(200_000);
  const b = randomBytes(150_000);
  await put(owner, '/ver/doc.bin', a);
  await put(owner, '/ver/doc.bin', b);
  const before = await owner.versions('/ver/doc.bin');
  t.deepEqual(before.versions.map((v) => v.version), [2, 1]);
  t.is(before.versions[1]!.size, a.length);
  const restored = await owner.restore('/ver/doc.bin', 1);
  t.is(restored.version, 3);
  t.true((await bytesOf(owner, '/ver/doc.bin')).equals(a));
  const after = await owner.versions('/ver/doc.bin');
  t.is(after.versions[0]!.version, 3);
  t.is(after.versions[0]!.restoredFrom, 1);
  t.is(after.versions[0]!.contentHash, after.versions[2]!.contentHash);
  const cli = await runCli(['--json', 'versions', '/ver/doc.bin'], cliEnv());
  t.is(cli.code, 0, cli.stderr);
  t.deepEqual(cli.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { version: number }).version), [3, 2, 1]);
  const viaCli = await runCli(['restore', '/ver/doc.bin', '2'], cliEnv());
  t.is(viaCli.code, 0, viaCli.stderr);
  t.regex(viaCli.stdout, /version 4/);
  t.true((await bytesOf(owner, '/ver/doc.bin')).equals(b));
});

test('rm hides a file from ls and stat; restore brings it back with its bytes', async (t) => {
  const data = randomBytes(70_000);
  await put(owner, '/trash/keep.bin', data);
  await put(owner, '/trash/other.bin', Buffer.from('x'));
  const rm = await runCli(['rm', '/trash/keep.bin'], cliEnv());
  t.is(rm.code, 0, rm.stderr);
  t.deepEqual(await names(owner, '/trash'), ['other.bin']);
  t.is(await codeOf(owner.stat('/trash/keep.bin')), 'CAIRN_NOT_FOUND');
  const withDeleted = await owner.list('/trash', { includeDeleted: true });
  t.true(withDeleted.entries.some((e) => e.name === 'keep.bin' && e.deleted));
  const again = await runCli(['rm', '/trash/keep.bin'], cliEnv());
  t.is(again.code, 3, again.stderr);
  await owner.restore('/trash/keep.bin');
  t.deepEqual(await names(owner, '/trash'), ['keep.bin', 'other.bin']);
  t.true((await bytesOf(owner, '/trash/keep.bin')).equals(data));

  // A folder: deleting hides everything inside; undeleting shows it again.
  await owner.delete('/trash');
  t.false((await names(owner, '/')).includes('trash'));
  await owner.restore('/trash');
  t.true((await bytesOf(owner, '/trash/keep.bin')).equals(data));
});

test('mv of a folder keeps its files readable under the new path; cp shares the bytes', async (t) => {
  const one = randomBytes(100_000);
  const two = randomBytes(10);
  await put(owner, '/mvsrc/inner/one.bin', one);
  await put(owner, '/mvsrc/two.bin', two);
  const mv = await runCli(['mv', '/mvsrc', '/mvdst'], cliEnv());
  t.is(mv.code, 0, mv.stderr);
  t.true((await bytesOf(owner, '/mvdst/inner/one.bin')).equals(one));
  t.true((await bytesOf(owner, '/mvdst/two.bin')).equals(two));
  t.is(await codeOf(owner.stat('/mvsrc/two.bin')), 'CAIRN_NOT_FOUND');
  t.is(await codeOf(owner.move('/mvdst/two.bin', '/mvdst/inner/one.bin')), 'CAIRN_ALREADY_EXISTS');

  const cp = await runCli(['--json', 'cp', '/mvdst/inner/one.bin', '/copies/one.bin'], cliEnv());
  t.is(cp.code, 0, cp.stderr);
  t.is((JSON.parse(cp.stdout) as { version: number }).version, 1);
  t.true((await bytesOf(owner, '/copies/one.bin')).equals(one));
  t.is((await owner.stat('/copies/one.bin')).contentHash, (await owner.stat('/mvdst/inner/one.bin')).contentHash);
  t.is(await codeOf(owner.copy('/mvdst', '/copies/folder')), 'CAIRN_FAILED_PRECONDITION');
});

test('mkdir creates folders and parents; usage counts files, folders and bytes', async (t) => {
  const mk = await runCli(['mkdir', '/made/deep/er'], cliEnv());
  t.is(mk.code, 0, mk.stderr);
  const deep = await owner.list('/made/deep');
  t.deepEqual(deep.entries.map((e) => [e.name, e.folder]), [['er', true]]);
  t.is((await owner.mkdir('/made/deep/er')).path, '/made/deep/er', 'an existing folder is returned as is');
  await put(owner, '/made/a.bin', randomBytes(1000));
  await put(owner, '/made/deep/b.bin', randomBytes(2345));
  const u = await owner.usage('/made');
  t.like(u, { files: 2, folders: 2, bytes: 3345, quotaBytes: 0 });
  // The tenant's counters (other tests of this file write to the same tenant concurrently).
  t.true(u.tenantVersionBytes >= 3345 && u.tenantVersions >= 2, JSON.stringify(u));
  t.true(u.tenantStoredBytes >= 3345, 'random chunks do not compress: stored ≥ plain');
  const cli = await runCli(['--json', 'usage', '/made'], cliEnv());
  t.is(cli.code, 0, cli.stderr);
  t.like(JSON.parse(cli.stdout), { files: 2, folders: 2, bytes: 3345, quotaBytes: 0 });
  const human = await runCli(['usage', '/made'], cliEnv());
  t.regex(human.stdout, /^\/made: 2 files, 2 folders, 3345 bytes\ntenant: \d+ bytes in \d+ kept versions, no quota; \d+ bytes stored\n$/);
});

test('watch receives a commit with its revision; a reconnect from the cursor misses nothing', async (t) => {
  const stop = new AbortController();
  t.teardown(() => stop.abort());
  const watch = owner.watch({ path: '/watched', signal: stop.signal });
  const next = async (): Promise<ChangeBatch> => {
    const r = await watch.next();
    if (r.done === true) throw new Error('watch ended');
    return r.value;
  };
  const first = await next();
  t.true(first.cursor !== '');
  const info = await put(owner, '/watched/a.txt', Buffer.from('hello'));
  await put(owner, '/elsewhere/x.txt', Buffer.from('not watched'));
  // The commit created /watched first (a mkdir change), then the put.
  const seen: Change[] = [];
  let cursor = first.cursor;
  while (!seen.some((c) => c.type === 'put')) {
    const batch = await next();
    seen.push(...batch.changes);
    cursor = batch.cursor;
  }
  t.deepEqual(seen.map((c) => [c.type, c.path]), [['mkdir', '/watched'], ['put', '/watched/a.txt']]);
  const putChange = seen[1]!;
  t.is(putChange.revision, info.revision);
  t.is(putChange.version, 1);
  t.is(putChange.size, 5);
  stop.abort();
  await watch.return(undefined);

  // While nobody watches: three more changes. Resuming from the cursor delivers all of them, in order.
  const b = await put(owner, '/watched/b.txt', Buffer.from('b'));
  await owner.move('/watched/b.txt', '/watched/c.txt');
  await owner.delete('/watched/a.txt');
  const stop2 = new AbortController();
  t.teardown(() => stop2.abort());
  const got: Change[] = [];
  for await (const batch of owner.watch({ path: '/watched', cursor, signal: stop2.signal })) {
    got.push(...batch.changes);
    if (got.length >= 3) break;
  }
  stop2.abort();
  t.deepEqual(got.map((c) => [c.type, c.path]), [['put', '/watched/b.txt'], ['move', '/watched/c.txt'], ['delete', '/watched/a.txt']]);
  t.is(got[0]!.revision, b.revision);
  // Other tests commit meanwhile (one revision counter per tenant), so only the order is fixed.
  t.true(got[0]!.revision < got[1]!.revision && got[1]!.revision < got[2]!.revision);

  // The feed itself pages from the same cursor.
  const page = await owner.listChanges(cursor, { pageSize: 2 });
  t.is(page.changes.length, 2);
  t.true(page.hasMore);
});

test('cairn watch prints one JSON line per change and stops on SIGINT', async (t) => {
  const proc = spawn(process.execPath, ['--import', 'tsx', CLI, '--json', 'watch', '/clip'], { cwd: ROOT, env: { ...process.env, ...cliEnv() }, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`watch not established: ${stderr}`)), 30_000);
    proc.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes('watching')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  const info = await put(owner, '/clip/board.txt', Buffer.from('clip'));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no change printed: ${stderr}`)), 30_000);
    const check = (): void => {
      if (!stdout.includes('"put"')) return;
      clearTimeout(timer);
      resolve();
    };
    proc.stdout.on('data', check);
    check();
  });
  const lines = stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; path: string });
  t.deepEqual(lines.map((l) => [l.type, l.path]), [['mkdir', '/clip'], ['put', '/clip/board.txt']]);
  const change = lines[1] as { type: string; path: string; revision: number; cursor: string };
  t.like(change, { type: 'put', path: '/clip/board.txt', revision: info.revision });
  t.true(change.cursor.length > 0);
  proc.kill('SIGINT');
  t.is(await exited, 0, stderr);
  t.regex(stderr, /resume with: cairn watch \/clip --cursor \S+/);
});

test('another tenant sees none of it', async (t) => {
  await put(owner, '/secret/plans.txt', Buffer.from('ours'));
  const ownCursor = (await owner.listChanges('', { pageSize: 1 })).nextCursor;
  const other = new CairnClient({ endpoint: server.grpc, token: await mint('other', 'user') });
  t.teardown(() => other.close());
  const rootCode = await codeOf(other.list('/'));
  if (rootCode === undefined) t.deepEqual((await other.list('/')).entries, []);
  else t.is(rootCode, 'CAIRN_NOT_FOUND');
  t.is(await codeOf(other.list('/secret')), 'CAIRN_NOT_FOUND');
  t.is(await codeOf(other.versions('/secret/plans.txt')), 'CAIRN_NOT_FOUND');
  t.is(await codeOf(other.stat('/secret/plans.txt')), 'CAIRN_NOT_FOUND');
  t.is(await codeOf(other.delete('/secret/plans.txt')), 'CAIRN_NOT_FOUND');
  t.is(await codeOf(other.move('/secret', '/mine')), 'CAIRN_NOT_FOUND');
  t.is(await codeOf(other.copy('/secret/plans.txt', '/mine.txt')), 'CAIRN_NOT_FOUND');
  t.is(await codeOf(other.restore('/secret/plans.txt', 1)), 'CAIRN_NOT_FOUND');
  t.is(await codeOf(other.listChanges(ownCursor)), 'CAIRN_INVALID_CURSOR');
  t.is((await other.listChanges('')).changes.length, 0);
  t.is(await codeOf((async () => {
    for await (const batch of other.watch({ cursor: ownCursor })) void batch;
  })()), 'CAIRN_INVALID_CURSOR');
  const usage = await codeOf(other.usage('/'));
  if (usage === undefined) t.is((await other.usage('/')).files, 0);
  t.is((await bytesOf(owner, '/secret/plans.txt')).toString(), 'ours');
});

test('a reader can list but not rm, mv, cp, mkdir or restore', async (t) => {
  await put(owner, '/ro/file.txt', Buffer.from('read only'));
  const reader = new CairnClient({ endpoint: server.grpc, token: await mint('default', 'reader') });
  t.teardown(() => reader.close());
  t.deepEqual(await names(reader, '/ro'), ['file.txt']);
  t.is((await reader.versions('/ro/file.txt')).versions.length, 1);
  for (const attempt of [reader.delete('/ro/file.txt'), reader.move('/ro/file.txt', '/ro/moved.txt'), reader.mkdir('/ro/sub'), reader.copy('/ro/file.txt', '/ro/copy.txt'), reader.restore('/ro/file.txt', 1)]) {
    t.is(await codeOf(attempt), 'CAIRN_PERMISSION_DENIED');
  }
  const cli = await runCli(['rm', '/ro/file.txt'], cliEnv(await mint('default', 'reader')));
  t.is(cli.code, 4, cli.stderr);
  t.regex(cli.stderr, /CAIRN_PERMISSION_DENIED/);
  t.deepEqual(await names(owner, '/ro'), ['file.txt']);
});

// Serial (AVA runs serial tests first, alone), so no other test's change lands in the feed meanwhile.
test.serial('bad paths and page sizes get INVALID_ARGUMENT and change nothing', async (t) => {
  await put(owner, '/bad/ok.txt', Buffer.from('fine'));
  let head = await owner.listChanges('', { pageSize: 1000 });
  while (head.hasMore) head = await owner.listChanges(head.nextCursor, { pageSize: 1000 });
  const bad = ['relative', '/a/../b', '/nul\u0000', '/x/./y', '/' + 'n'.repeat(300)];
  for (const path of bad) {
    for (const attempt of [owner.list(path), owner.delete(path), owner.mkdir(path), owner.move('/bad/ok.txt', path), owner.move(path, '/bad/new'), owner.copy('/bad/ok.txt', path), owner.restore(path, 1), owner.versions(path), owner.usage(path)]) {
      t.is(await codeOf(attempt), 'CAIRN_INVALID_PATH', path);
    }
  }
  t.is(await codeOf(owner.list('/bad', { pageSize: -1 })), 'CAIRN_INVALID_ARGUMENT');
  t.is(await codeOf(owner.versions('/bad/ok.txt', { pageSize: -5 })), 'CAIRN_INVALID_ARGUMENT');
  t.is(await codeOf(owner.listChanges('', { pageSize: -1 })), 'CAIRN_INVALID_ARGUMENT');
  t.is(await codeOf(owner.list('/bad', { pageToken: 'not-a-token' })), 'CAIRN_INVALID_PAGE_TOKEN');
  t.is(await codeOf(owner.listChanges('garbage')), 'CAIRN_INVALID_CURSOR');
  const cli = await runCli(['ls', '/bad', '--page-size', '-1'], cliEnv());
  t.is(cli.code, 2, cli.stderr);
  const cliPath = await runCli(['mkdir', 'nope'], cliEnv());
  t.is(cliPath.code, 2, cliPath.stderr);
  t.regex(cliPath.stderr, /CAIRN_INVALID_PATH/);
  const after = await owner.listChanges(head.nextCursor, { pageSize: 1000 });
  t.is(after.changes.length, 0, 'no change was recorded');
  t.deepEqual(await names(owner, '/bad'), ['ok.txt']);
});

test('a stopping gateway ends open watches with CAIRN_SHUTTING_DOWN and exits promptly', async (t) => {
  const own = await startServer(t, ['--shutdown-timeout-ms', '600000']);
  const c = new CairnClient({ endpoint: own.grpc, token: own.token });
  t.teardown(() => c.close());
  const watch = c.watch({ reconnect: false });
  const first = await watch.next();
  t.false(first.done);
  own.proc.kill('SIGTERM');
  t.is(await codeOf(watch.next()), 'CAIRN_SHUTTING_DOWN');
  // With a 10-minute drain allowance, exiting at all within the test's time shows the watch did not hold the shutdown.
  t.is(await own.exited, 0, own.stderr());
});
