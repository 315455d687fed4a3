// `cairn put` killed mid-upload resumes on the next run: the rerun sends exactly the chunks the
// server did not store yet, and the file reads back byte-identical.
import test from 'ava';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chunkBuffer } from '../../src/chunking/index.js';
import { fromServiceError } from '../../src/common/status.js';
import { bearer, filesClient } from '../helpers/grpc.js';
import { CLI, ROOT, runCli, startServer, tempDir } from '../helpers/cluster.js';

test('cairn put killed mid-upload, then run again: sends only the rest; --json reports it', async (t) => {
  const server = await startServer(t);
  const dir = tempDir(t);
  const src = join(dir, 'big.bin');
  const data = randomBytes(96 * 1024 * 1024 + 5);
  writeFileSync(src, data);
  const env = { CAIRN_ENDPOINT: server.grpc, CAIRN_TOKEN: server.token, XDG_CACHE_HOME: join(dir, 'cache') };
  const cacheFiles = join(dir, 'cache', 'cairn', 'chunks');

  const proc = spawn(process.execPath, ['--import', 'tsx', CLI, 'put', '--streams', '2', src, '/cli/big.bin'], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  t.teardown(() => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
  });
  // What the server holds: the rerun must send exactly the chunks still missing.
  const hashes = chunkBuffer(data).map((c) => createHash('sha256').update(data.subarray(c.offset, c.offset + c.length)).digest());
  const files = filesClient(server.grpc);
  t.teardown(() => files.close());
  const countMissing = async (): Promise<number> => {
    let n = 0;
    for (let i = 0; i < hashes.length; i += 4096) {
      n += await new Promise<number>((resolve, reject) => files.FindMissingChunks({ plain_hashes: hashes.slice(i, i + 4096) }, bearer(server.token), (err, res) => (err ? reject(fromServiceError(err)) : resolve(res!.missing.length))));
    }
    return n;
  };
  // Kill it once the server holds some of the file (an upload id is recorded and chunks are
  // durable), well before the end; on a busy machine this may take a while.
  for (let i = 0; i < 1200; i++) {
    if (proc.exitCode !== null) break;
    const files = existsSync(cacheFiles) ? readdirSync(cacheFiles).filter((f) => f.endsWith('.json')) : [];
    const entry = files[0] === undefined ? undefined : (JSON.parse(readFileSync(join(cacheFiles, files[0]), 'utf8')) as { pending?: { uploadIds: string[] } });
    if ((entry?.pending?.uploadIds.length ?? 0) > 0 && (await countMissing()) < hashes.length) break;
    await sleep(50);
  }
  proc.kill('SIGKILL');
  await exited;
  // Calls the killed client had in flight may still finish on the server: wait until what the
  // server holds stops changing before counting.
  let missing = await countMissing();
  for (let previous = -1; previous !== missing; ) {
    await sleep(1000);
    previous = missing;
    missing = await countMissing();
  }
  t.true(missing > 0 && missing < hashes.length, `${missing} of ${hashes.length} chunks missing after the kill`);

  const rerun = await runCli(['--json', 'put', src, '/cli/big.bin'], env);
  t.is(rerun.code, 0, rerun.stderr);
  const res = JSON.parse(rerun.stdout) as { size: number; version: number; chunks: number; chunksSent: number; bytesSent: number };
  t.is(res.size, data.length);
  t.is(res.version, 1);
  t.is(res.chunks, hashes.length);
  t.is(res.chunksSent, missing);

  const back = join(dir, 'back.bin');
  const got = await runCli(['get', '/cli/big.bin', back], env);
  t.is(got.code, 0, got.stderr);
  t.true(readFileSync(back).equals(data));
});
