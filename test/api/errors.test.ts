// Bad input to the session and diff-commit RPCs gets a clear CAIRN_* error and changes nothing;
// tenants cannot reach each other's sessions, chunks or files through them.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import { CairnClient, CairnError, type ErrorCode } from '../../src/client/index.js';
import { chunkBuffer } from '../../src/chunking/index.js';
import { loadOrCreateSecret, signToken } from '../../src/common/auth.js';
import { fromServiceError } from '../../src/common/status.js';
import type { FilesClient } from '../../src/gen/cairn/v1/Files.js';
import type { FilesCommitFileRequest } from '../../src/gen/cairn/v1/FilesCommitFileRequest.js';
import type { FilesCommitFileResponse__Output } from '../../src/gen/cairn/v1/FilesCommitFileResponse.js';
import { bearer, filesClient } from '../helpers/grpc.js';
import { runCli, startServer, suiteScope, tempDir, type ServerProcess } from '../helpers/cluster.js';

const suite = suiteScope('api-errors');
let server: ServerProcess;
let a: CairnClient;
let b: CairnClient;
let raw: FilesClient;
let tokenB: string;

test.before(async () => {
  server = await startServer(suite);
  tokenB = await signToken(loadOrCreateSecret(join(server.dataDir, 'auth.key')), { tenant: 'bravo', role: 'user', ttlSeconds: 3600 });
  a = new CairnClient({ endpoint: server.grpc, token: server.token });
  b = new CairnClient({ endpoint: server.grpc, token: tokenB });
  raw = filesClient(server.grpc);
});
test.after.always(async () => {
  a.close();
  b.close();
  raw.close();
  await suite.close();
});

async function code(p: Promise<unknown>): Promise<CairnError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CairnError) return err;
    throw err;
  }
  throw new Error('expected an error');
}

function findMissing(hashes: Buffer[], token: string): Promise<Buffer[]> {
  return new Promise((resolve, reject) => raw.FindMissingChunks({ plain_hashes: hashes }, bearer(token), (err, res) => (err ? reject(fromServiceError(err)) : resolve(res!.missing))));
}

function commit(req: FilesCommitFileRequest, token = server.token): Promise<FilesCommitFileResponse__Output> {
  return new Promise((resolve, reject) => raw.CommitFile(req, bearer(token), (err, res) => (err ? reject(fromServiceError(err)) : resolve(res!))));
}

test('session calls: wrong offsets, ids and sizes are refused and leave the session as it was', async (t) => {
  const data = randomBytes(600_000);
  const { uploadId } = await a.startUpload('/errors/s.bin', { size: data.length });
  t.is(await a.writeUpload(uploadId, 0, data.subarray(0, 300_000)), (await a.queryUpload(uploadId)).committedOffset);
  const before = await a.queryUpload(uploadId);
  t.true(before.committedOffset > 0);

  const wrong = await code(a.writeUpload(uploadId, before.committedOffset + 1, data.subarray(before.committedOffset + 1)));
  t.is(wrong.code, 'CAIRN_OUT_OF_RANGE');
  t.is(wrong.metadata['committed_offset'], String(before.committedOffset));
  t.is((await code(a.writeUpload(uploadId, 0, data))).code, 'CAIRN_OUT_OF_RANGE');
  // Past the announced size.
  t.is((await code(a.writeUpload(uploadId, before.committedOffset, Buffer.concat([data.subarray(before.committedOffset), Buffer.alloc(10)]), { finish: true }))).code, 'CAIRN_SIZE_MISMATCH');
  t.is((await code(a.finishUpload(uploadId))).code, 'CAIRN_SIZE_MISMATCH');
  t.is((await code(a.finishUpload(uploadId, 5))).code, 'CAIRN_SIZE_MISMATCH');
  t.deepEqual(await a.queryUpload(uploadId), { ...before, expiresMs: (await a.queryUpload(uploadId)).expiresMs });

  t.is((await code(a.queryUpload('nope'))).code, 'CAIRN_INVALID_ARGUMENT');
  t.is((await code(a.queryUpload('us_AAAAAAAAAAAAAAAAAAAAAA'))).code, 'CAIRN_NOT_FOUND');
  t.is((await code(a.writeUpload('', 0, data))).code, 'CAIRN_INVALID_ARGUMENT');
  t.is((await code(a.startUpload('/errors/../x'))).code, 'CAIRN_INVALID_PATH');
  t.is((await code(a.startUpload('/errors/huge', { size: 11 * 1024 ** 3 }))).code, 'CAIRN_FILE_TOO_LARGE');
  t.is((await code(a.startUpload('/.cairn-chunk-upload'))).code, 'CAIRN_INVALID_PATH');

  // The session still completes from where it was.
  await a.writeUpload(uploadId, before.committedOffset, data.subarray(before.committedOffset), { finish: true });
  const info = await a.finishUpload(uploadId, data.length);
  t.is(info.size, data.length);
  t.is((await code(a.queryUpload(uploadId))).code, 'CAIRN_NOT_FOUND');

  const aborted = await a.startUpload('/errors/aborted.bin');
  await a.abortUpload(aborted.uploadId);
  t.is((await code(a.finishUpload(aborted.uploadId))).code, 'CAIRN_NOT_FOUND');
  t.is((await code(a.stat('/errors/aborted.bin'))).code, 'CAIRN_NOT_FOUND');
});

test('diff commits: bad splices, a missing base and mixed forms are refused and change nothing', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'f'), randomBytes(2 * 1024 * 1024));
  const res = await a.upload(join(dir, 'f'), '/errors/d.bin', { cacheDir: join(dir, 'c') });
  const v = res.info.version;
  const n = res.chunks;
  const chunk = { plain_hash: createHash('sha256').update('x').digest(), size: 1 };
  const bad: Array<[string, FilesCommitFileRequest, ErrorCode]> = [
    ['overlapping splices', { path: '/errors/d.bin', base_version: v, diff: { splices: [{ start: 2, delete_count: 2, insert: [] }, { start: 3, delete_count: 0, insert: [] }] } }, 'CAIRN_INVALID_ARGUMENT'],
    ['past the end', { path: '/errors/d.bin', base_version: v, diff: { splices: [{ start: n, delete_count: 1, insert: [] }] } }, 'CAIRN_INVALID_ARGUMENT'],
    ['no base version', { path: '/errors/d.bin', diff: { splices: [] } }, 'CAIRN_INVALID_ARGUMENT'],
    ['chunks and a diff', { path: '/errors/d.bin', base_version: v, chunks: [chunk], diff: { splices: [] } }, 'CAIRN_INVALID_ARGUMENT'],
    ['an unknown inserted chunk', { path: '/errors/d.bin', base_version: v, diff: { splices: [{ start: 0, delete_count: 0, insert: [chunk] }] } }, 'CAIRN_FAILED_PRECONDITION'],
    ['a stale base', { path: '/errors/d.bin', base_version: v + 5, diff: { splices: [] } }, 'CAIRN_CONFLICT'],
  ];
  for (const [name, req, expected] of bad) t.is((await code(commit(req))).code, expected, name);
  t.is((await a.stat('/errors/d.bin')).version, v);
  // A valid empty diff keeps the content and makes a new version.
  const same = await commit({ path: '/errors/d.bin', base_version: v, mtime_ms: 5, diff: { splices: [] } });
  t.is(Number(same.file?.version), v + 1);
  t.is(same.file?.content_hash, res.info.contentHash);
});

test('tenants cannot reach each other through sessions, find-missing, diffs or reads', async (t) => {
  const dir = tempDir(t);
  const secret = randomBytes(1024 * 1024);
  writeFileSync(join(dir, 'b'), secret);
  const up = await b.upload(join(dir, 'b'), '/private/b.bin', { cacheDir: join(dir, 'cb') });
  const { uploadId } = await b.startUpload('/private/open.bin');
  await b.writeUpload(uploadId, 0, secret.subarray(0, 300_000));

  // Knowing B's upload id gives A nothing.
  t.is((await code(a.queryUpload(uploadId))).code, 'CAIRN_NOT_FOUND');
  t.is((await code(a.writeUpload(uploadId, 0, Buffer.from('x')))).code, 'CAIRN_NOT_FOUND');
  t.is((await code(a.finishUpload(uploadId))).code, 'CAIRN_NOT_FOUND');
  t.is((await code(a.abortUpload(uploadId))).code, 'CAIRN_NOT_FOUND');
  t.true((await b.queryUpload(uploadId)).committedOffset > 0);
  // Knowing B's chunk hashes gives A nothing: they are missing for A, and A cannot commit them.
  const chunks = chunkBuffer(secret).map((c) => ({ plain_hash: createHash('sha256').update(secret.subarray(c.offset, c.offset + c.length)).digest(), size: c.length }));
  const hashes = chunks.map((c) => c.plain_hash);
  t.is((await findMissing(hashes, server.token)).length, hashes.length);
  t.is((await findMissing(hashes, tokenB)).length, 0);
  const refused = await code(commit({ path: '/mine/stolen.bin', chunks }));
  t.is(refused.code, 'CAIRN_FAILED_PRECONDITION');
  t.is((await code(a.stat('/mine/stolen.bin'))).code, 'CAIRN_NOT_FOUND');
  const bDir = tempDir(t);
  writeFileSync(join(bDir, 'same'), secret);
  const mine = await a.upload(join(bDir, 'same'), '/mine/same.bin', { cacheDir: join(bDir, 'ca') });
  t.is(mine.chunksSent, mine.chunks, 'A uploads every chunk although B has them all');
  t.is(up.chunks, mine.chunks);
  // A diff against B's path is a diff against A's (absent) path.
  t.is((await code(commit({ path: '/private/b.bin', base_version: 1, diff: { splices: [] } }))).code, 'CAIRN_CONFLICT');
  t.is((await code(a.stat('/private/b.bin'))).code, 'CAIRN_NOT_FOUND');
  t.is((await code(a.get('/private/b.bin', join(dir, 'x')))).code, 'CAIRN_NOT_FOUND');
  const listed = await code(a.list('/private'));
  t.is(listed.code, 'CAIRN_NOT_FOUND');
});

test('cairn get --range: start-end, start- and -suffix equal the same slice; bad ranges exit with a usage error', async (t) => {
  const dir = tempDir(t);
  const data = randomBytes(700_000);
  writeFileSync(join(dir, 'f'), data);
  await a.put(join(dir, 'f'), '/errors/range.bin');
  const env = { CAIRN_ENDPOINT: server.grpc, CAIRN_TOKEN: server.token, XDG_CACHE_HOME: join(dir, 'cache') };
  const cases: Array<[string, Buffer]> = [
    ['1000-1999', data.subarray(1000, 2000)],
    ['699000-', data.subarray(699_000)],
    ['-4096', data.subarray(data.length - 4096)],
    ['0-0', data.subarray(0, 1)],
    ['650000-999999', data.subarray(650_000)],
  ];
  for (const [range, want] of cases) {
    const out = join(dir, `out-${range}`);
    const r = await runCli(['get', '--range', range, '/errors/range.bin', out], env);
    t.is(r.code, 0, r.stderr);
    t.true(readFileSync(out).equals(want), range);
  }
  for (const range of ['5-2', 'abc', '-', '-0']) {
    const r = await runCli(['get', '--range', range, '/errors/range.bin', join(dir, 'bad')], env);
    t.not(r.code, 0, range);
    t.regex(r.stderr, /range/i);
  }
});
