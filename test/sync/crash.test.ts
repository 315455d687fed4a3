// kill -9 a sync client in the middle of a download and of an upload, then restart it: no partial
// file ever appears under a final name, temporaries are cleared, and data already committed is not
// committed (or sent) again.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, writeFileSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { CairnClient, isCairnError } from '../../src/client/index.js';
import { hashFile } from '../../src/sync/index.js';
import { startServer, tempDir } from '../helpers/cluster.js';
import { FULL, converged, sha256, startSync, syncOnce, treeOf } from './helpers.js';

const BIG = (FULL ? 128 : 32) * 1024 * 1024;

test('kill -9 mid-download: no partial file under a final name; the restart completes it', async (t) => {
  t.timeout(FULL ? 600_000 : 170_000);
  const server = await startServer(t);
  const a = join(tempDir(t), 'a');
  const b = join(tempDir(t), 'b');
  mkdirSync(join(a, 'media'), { recursive: true });
  const big = randomBytes(BIG);
  writeFileSync(join(a, 'media', 'big.bin'), big);
  for (let i = 0; i < 20; i++) writeFileSync(join(a, `small-${i}.txt`), `small ${i}\n`);
  t.is((await syncOnce(server, a, '/crash', ['--device', 'A'])).code, 0);
  const expected = treeOf(a);

  const syncB = startSync(t, server, b, '/crash', ['--device', 'B', '--concurrency', '1']);
  await syncB.waitEvent((e) => e.type === 'download-start' && e.path === 'media/big.bin', 150_000, 'download start');
  syncB.proc.kill('SIGKILL');
  await syncB.exited;
  // Whatever is under a final name is complete.
  const partial = treeOf(b);
  for (const [path, hash] of Object.entries(partial)) {
    if (hash === 'dir') continue;
    t.is(hash, expected[path] ?? '(not on the other side)', `${path} is complete or absent`);
  }
  t.false(syncB.events.some((e) => e.type === 'download' && e.path === 'media/big.bin'), 'killed before the big download finished');
  const restarted = await syncOnce(server, b, '/crash', ['--device', 'B']);
  t.is(restarted.code, 0, restarted.stderr);
  t.deepEqual(treeOf(b), expected);
  t.is(sha256(readFileSync(join(b, 'media', 'big.bin'))), sha256(big));
  t.deepEqual(readdirSync(join(b, '.cairn-sync')).filter((n) => n === 'tmp'), [], 'temporaries cleared on exit');
  t.is(restarted.events.filter((e) => e.type === 'upload').length, 0, 'nothing echoed back');
});

test('kill -9 mid-upload: the restart commits the file exactly once and sends no committed data again', async (t) => {
  t.timeout(FULL ? 600_000 : 170_000);
  const server = await startServer(t);
  const a = join(tempDir(t), 'a');
  mkdirSync(a);
  writeFileSync(join(a, 'big.bin'), randomBytes(BIG));
  const local = await hashFile(join(a, 'big.bin'));
  const client = new CairnClient({ endpoint: server.grpc, token: server.token });
  t.teardown(() => client.close());

  const syncA = startSync(t, server, a, '/up', ['--device', 'A']);
  // Killed once a quarter of the file is acknowledged durable by the server.
  await syncA.waitEvent((e) => e.type === 'upload-progress' && e.path === 'big.bin' && (e['doneBytes'] as number) >= BIG / 4, 150_000, 'upload progress');
  syncA.proc.kill('SIGKILL');
  await syncA.exited;
  const acked = Math.max(...syncA.events.filter((e) => e.type === 'upload-progress').map((e) => e['doneBytes'] as number));
  let committed = false;
  try {
    committed = (await client.stat('/up/big.bin')).contentHash === local.hash;
  } catch (err) {
    if (!isCairnError(err, 'CAIRN_NOT_FOUND')) throw err;
  }
  t.log(committed ? 'the commit landed before the kill' : 'killed before the commit');

  const restarted = await syncOnce(server, a, '/up', ['--device', 'A']);
  t.is(restarted.code, 0, restarted.stderr);
  const uploads = restarted.events.filter((e) => e.type === 'upload' && e.path === 'big.bin');
  if (committed) t.is(uploads.length, 0, 'committed data is adopted, not uploaded again');
  else {
    t.is(uploads.length, 1);
    t.log(`${acked} bytes were acknowledged before the kill; the restart sent ${String(uploads[0]!['bytesSent'])} of ${BIG}`);
    t.true((uploads[0]!['bytesSent'] as number) <= BIG - acked, 'acknowledged chunks are not sent again');
  }
  const versions = (await client.versions('/up/big.bin')).versions;
  t.is(versions.length, 1, 'one commit, no duplicate');
  t.is(versions[0]!.contentHash, local.hash);
  // A further run finds nothing to do.
  const again = await syncOnce(server, a, '/up', ['--device', 'A']);
  t.is(again.events.filter((e) => e.type === 'upload' || e.type === 'download').length, 0);
  t.false(existsSync(join(a, '.cairn-sync', 'tmp')));
  // Even with its state lost, the device recognises its committed file by content hash.
  rmSync(join(a, '.cairn-sync'), { recursive: true });
  const fresh = await syncOnce(server, a, '/up', ['--device', 'A']);
  t.is(fresh.code, 0, fresh.stderr);
  t.deepEqual(fresh.events.filter((e) => ['upload', 'download', 'conflict'].includes(e.type)), []);
  t.is((await client.versions('/up/big.bin')).versions.length, 1);
  // And a second device gets the whole file.
  const b = join(tempDir(t), 'b');
  t.is((await syncOnce(server, b, '/up', ['--device', 'B'])).code, 0);
  await converged(a, b, 10_000);
});
