// Chunk-level uploads on a real embedded server: FindMissingChunks, UploadChunks and CommitFile,
// with per-tenant answers, hash checks that store nothing, missing chunks named, and conflicts.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { CairnClient } from '../../src/client/index.js';
import { loadOrCreateSecret, signToken } from '../../src/common/auth.js';
import { decodeStatus } from '../../src/common/status.js';
import type { FilesClient } from '../../src/gen/cairn/v1/Files.js';
import type { FilesCommitFileRequest } from '../../src/gen/cairn/v1/FilesCommitFileRequest.js';
import type { FilesCommitFileResponse__Output } from '../../src/gen/cairn/v1/FilesCommitFileResponse.js';
import type { UploadChunksRequest } from '../../src/gen/cairn/v1/UploadChunksRequest.js';
import type { UploadChunksResponse__Output } from '../../src/gen/cairn/v1/UploadChunksResponse.js';
import { bearer, filesClient } from '../helpers/grpc.js';
import { startServer, suiteScope, tempDir, type ServerProcess } from '../helpers/cluster.js';

const suite = suiteScope('chunk-upload');
let server: ServerProcess;
let files: FilesClient;
let otherToken: string;

test.before(async () => {
  server = await startServer(suite);
  files = filesClient(server.grpc);
  otherToken = await signToken(loadOrCreateSecret(join(server.dataDir, 'auth.key')), { tenant: 'other', role: 'user', ttlSeconds: 3600 });
});
test.after.always(async () => {
  files.close();
  await suite.close();
});

const sha256 = (b: Buffer): Buffer => createHash('sha256').update(b).digest();

function reasonOf(err: ServiceError): string | undefined {
  const raw = err.metadata.get('grpc-status-details-bin')[0];
  return raw instanceof Buffer ? decodeStatus(raw).reason : undefined;
}

async function storedBytes(): Promise<number> {
  const text = await (await fetch(`${server.http}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('cairn_blocknode_stored_bytes '));
  return Number(line?.slice(line.lastIndexOf(' ') + 1));
}

function findMissing(hashes: Buffer[], token = server.token): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    files.FindMissingChunks({ plain_hashes: hashes }, bearer(token), (err, res) => (err ? reject(err) : resolve(res!.missing)));
  });
}

function uploadChunks(messages: UploadChunksRequest[], token = server.token): Promise<UploadChunksResponse__Output> {
  return new Promise((resolve, reject) => {
    const call = files.UploadChunks(bearer(token), (err, res) => (err ? reject(err) : resolve(res!)));
    for (const m of messages) call.write(m);
    call.end();
  });
}

function commit(req: FilesCommitFileRequest, token = server.token): Promise<FilesCommitFileResponse__Output> {
  return new Promise((resolve, reject) => {
    files.CommitFile(req, bearer(token), (err, res) => (err ? reject(err) : resolve(res!)));
  });
}

function chunksOf(count: number, size = 40_000): Buffer[] {
  return Array.from({ length: count }, () => randomBytes(size + Math.floor(Math.random() * 1000)));
}

async function readBack(t: { title: string; teardown(fn: () => void): void }, path: string, token = server.token): Promise<Buffer> {
  const client = new CairnClient({ endpoint: server.grpc, token });
  t.teardown(() => client.close());
  const dir = tempDir(t);
  await client.get(path, join(dir, 'back'));
  return readFileSync(join(dir, 'back'));
}

test.serial('find missing, upload them in batches, commit: the file reads back; a second upload stores nothing', async (t) => {
  const chunks = chunksOf(12);
  const hashes = chunks.map(sha256);
  t.deepEqual((await findMissing(hashes)).map((h) => h.toString('hex')), hashes.map((h) => h.toString('hex')));
  const before = await storedBytes();
  const res = await uploadChunks([
    { chunks: chunks.slice(0, 5).map((data, i) => ({ plain_hash: hashes[i], data })) },
    { chunks: chunks.slice(5).map((data, i) => ({ plain_hash: hashes[i + 5], data })) },
  ]);
  t.is(res.chunks_received, 12);
  t.is(res.chunks_stored, 12);
  t.not(res.upload_id, '');
  t.is(await storedBytes() - before, Number(res.stored_bytes));
  t.deepEqual(await findMissing(hashes), []);

  // The file repeats a chunk: each chunk is uploaded once, referenced twice.
  const order = [...chunks, chunks[0]!];
  const committed = await commit({ path: '/chunks/a.bin', chunks: order.map((c) => ({ plain_hash: sha256(c), size: c.length })), upload_ids: [res.upload_id], mtime_ms: 1234 });
  t.is(committed.file?.version, '1');
  t.is(Number(committed.file?.size), order.reduce((n, c) => n + c.length, 0));
  t.true((await readBack(t, '/chunks/a.bin')).equals(Buffer.concat(order)));

  const again = await uploadChunks([{ chunks: chunks.map((data, i) => ({ plain_hash: hashes[i], data })) }]);
  t.is(again.chunks_stored, 0);
  t.is(await storedBytes() - before, Number(res.stored_bytes));
});

test.serial('a chunk whose data does not match its hash fails the batch with CAIRN_HASH_MISMATCH and stores nothing', async (t) => {
  const [good, bad] = chunksOf(2);
  const before = await storedBytes();
  const err = await t.throwsAsync<ServiceError>(uploadChunks([{ chunks: [{ plain_hash: sha256(good!), data: good }, { plain_hash: sha256(good!), data: bad }] }]));
  t.is(err?.code, status.INVALID_ARGUMENT);
  t.is(reasonOf(err), 'CAIRN_HASH_MISMATCH');
  t.is(await storedBytes(), before);
  t.is((await findMissing([sha256(good!)])).length, 1, 'the good chunk of the refused batch was not stored either');

  // A message large enough for the seal worker, which verifies what it seals: a bad chunk in the
  // middle still fails the whole message, names its index, and stores nothing.
  const many = Array.from({ length: 48 }, () => randomBytes(64 * 1024));
  const wire = many.map((data) => ({ plain_hash: sha256(data), data }));
  wire[30] = { plain_hash: wire[30]!.plain_hash, data: randomBytes(64 * 1024) };
  const large = await t.throwsAsync<ServiceError>(uploadChunks([{ chunks: wire }]));
  t.is(reasonOf(large), 'CAIRN_HASH_MISMATCH');
  t.regex(large?.details ?? '', /chunks\[30\]/);
  t.is(await storedBytes(), before);
  t.is((await findMissing(wire.map((c) => c.plain_hash))).length, 48);

  const short = await t.throwsAsync<ServiceError>(uploadChunks([{ chunks: [{ plain_hash: Buffer.alloc(31), data: good }] }]));
  t.is(reasonOf(short), 'CAIRN_INVALID_HASH');
  const empty = await t.throwsAsync<ServiceError>(uploadChunks([{ chunks: [{ plain_hash: sha256(Buffer.alloc(0)), data: Buffer.alloc(0) }] }]));
  t.is(reasonOf(empty), 'CAIRN_INVALID_ARGUMENT');
  const malformed = await t.throwsAsync<ServiceError>(uploadChunks([{ upload_id: 'no such upload', chunks: [{ plain_hash: sha256(good!), data: good }] }]));
  t.is(malformed?.code, status.INVALID_ARGUMENT);
  // Another tenant's upload id is unknown to this tenant.
  const [theirs] = chunksOf(1);
  const other = await uploadChunks([{ chunks: [{ plain_hash: sha256(theirs!), data: theirs }] }], otherToken);
  const before2 = await storedBytes();
  const unknown = await t.throwsAsync<ServiceError>(uploadChunks([{ upload_id: other.upload_id, chunks: [{ plain_hash: sha256(good!), data: good }] }]));
  t.is(unknown?.code, status.NOT_FOUND);
  t.is(await storedBytes(), before2);
});

test.serial('FindMissingChunks refuses more than 4096 hashes and malformed ones', async (t) => {
  const many = await t.throwsAsync<ServiceError>(findMissing(Array.from({ length: 4097 }, () => randomBytes(32))));
  t.is(many?.code, status.INVALID_ARGUMENT);
  t.is(reasonOf(many), 'CAIRN_INVALID_ARGUMENT');
  const bad = await t.throwsAsync<ServiceError>(findMissing([randomBytes(32), randomBytes(33)]));
  t.is(reasonOf(bad), 'CAIRN_INVALID_HASH');
  t.is((await findMissing(Array.from({ length: 4096 }, () => randomBytes(32)))).length, 4096);
});

test.serial('CommitFile names the missing chunks and commits nothing; bad sizes and paths are refused', async (t) => {
  const [have, lack] = chunksOf(2);
  const up = await uploadChunks([{ chunks: [{ plain_hash: sha256(have!), data: have }] }]);
  const err = await t.throwsAsync<ServiceError>(commit({ path: '/chunks/missing.bin', chunks: [have!, lack!].map((c) => ({ plain_hash: sha256(c), size: c.length })), upload_ids: [up.upload_id] }));
  t.is(err?.code, status.FAILED_PRECONDITION);
  t.is(reasonOf(err), 'CAIRN_FAILED_PRECONDITION');
  t.true(err?.details.includes(sha256(lack!).toString('hex')), err?.details);
  t.false(err?.details.includes(sha256(have!).toString('hex')), err?.details);
  const client = new CairnClient({ endpoint: server.grpc, token: server.token });
  t.teardown(() => client.close());
  const stat = await t.throwsAsync(client.stat('/chunks/missing.bin'));
  t.is((stat as { code?: string } | undefined)?.code, 'CAIRN_NOT_FOUND');

  const wrongSize = await t.throwsAsync<ServiceError>(commit({ path: '/chunks/size.bin', chunks: [{ plain_hash: sha256(have!), size: have!.length + 1 }] }));
  t.is(wrongSize?.code, status.INVALID_ARGUMENT);
  const zero = await t.throwsAsync<ServiceError>(commit({ path: '/chunks/zero.bin', chunks: [{ plain_hash: sha256(have!), size: 0 }] }));
  t.is(reasonOf(zero), 'CAIRN_INVALID_ARGUMENT');
  const path = await t.throwsAsync<ServiceError>(commit({ path: 'relative/../x', chunks: [{ plain_hash: sha256(have!), size: have!.length }] }));
  t.is(reasonOf(path), 'CAIRN_INVALID_PATH');
  // The upload still pins the chunk: a later commit can use it.
  const ok = await commit({ path: '/chunks/later.bin', chunks: [{ plain_hash: sha256(have!), size: have!.length }], upload_ids: [up.upload_id] });
  t.is(ok.file?.version, '1');
});

test.serial('two commits against the same base version: one wins, the other gets CAIRN_CONFLICT', async (t) => {
  const [a, b] = chunksOf(2);
  await uploadChunks([{ chunks: [a!, b!].map((c) => ({ plain_hash: sha256(c), data: c })) }]);
  const results = await Promise.allSettled([a!, b!].map((c) => commit({ path: '/chunks/race.bin', base_version: 0, chunks: [{ plain_hash: sha256(c), size: c.length }] })));
  t.is(results.filter((r) => r.status === 'fulfilled').length, 1);
  const lost = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  t.is((lost?.reason as ServiceError).code, status.ABORTED);
  t.is(reasonOf(lost?.reason as ServiceError), 'CAIRN_CONFLICT');
});

test.serial('another tenant sees none of these chunks and cannot commit them by hash', async (t) => {
  const [c] = chunksOf(1);
  await uploadChunks([{ chunks: [{ plain_hash: sha256(c!), data: c }] }]);
  await commit({ path: '/chunks/private.bin', chunks: [{ plain_hash: sha256(c!), size: c!.length }] });
  t.is((await findMissing([sha256(c!)], otherToken)).length, 1);
  const err = await t.throwsAsync<ServiceError>(commit({ path: '/chunks/stolen.bin', chunks: [{ plain_hash: sha256(c!), size: c!.length }] }, otherToken));
  t.is(err?.code, status.FAILED_PRECONDITION);
  // Uploading the bytes itself works and gives the other tenant its own sealed copy.
  const before = await storedBytes();
  const up = await uploadChunks([{ chunks: [{ plain_hash: sha256(c!), data: c }] }], otherToken);
  t.is(up.chunks_stored, 1);
  t.true((await storedBytes()) > before);
  await commit({ path: '/chunks/own.bin', chunks: [{ plain_hash: sha256(c!), size: c!.length }], upload_ids: [up.upload_id] }, otherToken);
  t.true((await readBack(t, '/chunks/own.bin', otherToken)).equals(c!));
});
