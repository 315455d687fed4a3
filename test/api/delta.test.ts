// Delta uploads on a real embedded server: edits of a large file send only the changed chunks and
// a small diff of the chunk list; concurrent writers on one base version conflict; a stale cache
// falls back to asking the gateway.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CairnClient, CairnError } from '../../src/client/index.js';
import { Chunker, DEFAULT_MAX_SIZE } from '../../src/chunking/index.js';
import { startServer, suiteScope, tempDir, type ServerProcess } from '../helpers/cluster.js';

const suite = suiteScope('api-delta');
let server: ServerProcess;
let client: CairnClient;

test.before(async () => {
  server = await startServer(suite);
  client = new CairnClient({ endpoint: server.grpc, token: server.token });
});
test.after.always(async () => {
  client.close();
  await suite.close();
});

async function readAll(path: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of client.read(path)) if ('data' in p) parts.push(p.data);
  return Buffer.concat(parts);
}

const MiB = 1024 * 1024;

/** The plain hashes of a buffer's chunks, as the SDK's chunker cuts them. */
function chunkHashes(data: Buffer): string[] {
  const chunker = new Chunker();
  const out: string[] = [];
  for (const c of [...chunker.push(data), ...chunker.finish()]) out.push(createHash('sha256').update(c).digest('hex'));
  return out;
}

const edits: Array<[string, (b: Buffer) => Buffer, number]> = [
  ['insert 1 byte in the middle', (b) => Buffer.concat([b.subarray(0, b.length >> 1), Buffer.from([42]), b.subarray(b.length >> 1)]), 2],
  ['delete 5000 bytes at a third', (b) => Buffer.concat([b.subarray(0, b.length / 3), b.subarray(b.length / 3 + 5000)]), 2],
  ['overwrite 10 bytes at two thirds', (b) => {
    const c = Buffer.from(b);
    randomBytes(10).copy(c, Math.floor((c.length * 2) / 3));
    return c;
  }, 2],
  ['insert, delete and overwrite at once', (b) => {
    const q = b.length >> 2;
    const c = Buffer.concat([b.subarray(0, q), randomBytes(3000), b.subarray(q, 2 * q), b.subarray(2 * q + 777)]);
    randomBytes(16).copy(c, 3 * q);
    return c;
  }, 6],
];

for (const [name, edit, maxChunks] of edits) {
  test(`${name} of a 24 MiB file: only the changed chunks and a small diff are sent`, async (t) => {
    const dir = tempDir(t);
    const cacheDir = join(dir, 'cache');
    const src = join(dir, 'f');
    const original = randomBytes(24 * MiB + 123);
    writeFileSync(src, original);
    const path = `/delta/${name.replace(/\W+/g, '-')}`;
    const first = await client.upload(src, path, { cacheDir });
    t.is(first.chunksSent, first.chunks);
    const edited = edit(original);
    writeFileSync(src, edited);
    const second = await client.upload(src, path, { cacheDir });
    t.is(second.info.version, first.info.version + 1);
    // Exactly the chunks of the edited file that the original did not have (the chunker decides
    // how far an edit's effect runs before boundaries re-align: usually 1–2, on some data more).
    const before = new Set(chunkHashes(original));
    const changed = new Set(chunkHashes(edited).filter((h) => !before.has(h))).size;
    t.is(second.chunksSent, changed, `sent ${second.chunksSent} chunks, ${changed} changed`);
    // A local edit stays local: a handful of the file's ~340 chunks, never a cascade.
    t.true(changed >= 1 && changed <= 4 * maxChunks + 8, `${changed} chunks changed`);
    t.log(`${changed} chunk(s) changed and sent`);
    t.true(second.bytesSent <= changed * DEFAULT_MAX_SIZE);
    // The wire carries the new chunks and a diff of a few hashes, not the ~350-hash list.
    t.true(second.wireBytes < second.bytesSent + 4096 + 40 * changed, `wire ${second.wireBytes} for ${second.bytesSent} chunk bytes`);
    t.true((await readAll(path)).equals(edited));
    // An unchanged file sends no chunk at all.
    const third = await client.upload(src, path, { cacheDir });
    t.is(third.chunksSent, 0);
    t.true((await readAll(path)).equals(edited));
  });
}

test('two writers commit against the same base version: one wins, the other gets CAIRN_CONFLICT', async (t) => {
  const dir = tempDir(t);
  const path = '/delta/race.bin';
  writeFileSync(join(dir, 'base'), randomBytes(2 * MiB));
  const base = await client.upload(join(dir, 'base'), path, { cacheDir: join(dir, 'c0') });
  const files = [0, 1].map((i) => {
    const f = join(dir, `w${i}`);
    writeFileSync(f, randomBytes(MiB + i));
    return f;
  });
  // Delta uploads (separate caches, as on two machines) and sessions, each pair on one base.
  const results = await Promise.allSettled(files.map((f, i) => client.upload(f, path, { cacheDir: join(dir, `c${i + 1}`), baseVersion: base.info.version })));
  const won = results.filter((r) => r.status === 'fulfilled');
  const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  t.is(won.length, 1);
  t.is(lost.length, 1);
  t.true(lost[0]!.reason instanceof CairnError && (lost[0]!.reason).code === 'CAIRN_CONFLICT', String(lost[0]!.reason));
  const head = await client.stat(path);
  t.is(head.version, base.info.version + 1);

  const sessions = await Promise.all(files.map(() => client.startUpload(path, { baseVersion: head.version })));
  await Promise.all(sessions.map((s, i) => client.writeUpload(s.uploadId, 0, readFileSync(files[i]!), { finish: true })));
  const finished = await Promise.allSettled(sessions.map((s) => client.finishUpload(s.uploadId)));
  t.is(finished.filter((r) => r.status === 'fulfilled').length, 1);
  const loser = finished.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  t.true(loser?.reason instanceof CairnError && (loser.reason).code === 'CAIRN_CONFLICT');
  t.is((await client.stat(path)).version, head.version + 1);
});

test('without a base version, an upload whose cached version is stale replaces the file (full list, not a diff)', async (t) => {
  const dir = tempDir(t);
  const path = '/delta/stale.bin';
  const src = join(dir, 'f');
  writeFileSync(src, randomBytes(3 * MiB));
  const cacheDir = join(dir, 'cache');
  await client.upload(src, path, { cacheDir });
  // Someone else commits meanwhile.
  writeFileSync(join(dir, 'other'), randomBytes(MiB));
  await client.put(join(dir, 'other'), path);
  const data = randomBytes(3 * MiB);
  writeFileSync(src, data);
  const res = await client.upload(src, path, { cacheDir });
  t.is(res.info.version, 3);
  t.true((await readAll(path)).equals(data));
});
