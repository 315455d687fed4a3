// Round trips on a real embedded server through the three upload paths (delta `upload`,
// resumable sessions, UploadFile): empty, 1 byte, chunk-boundary sizes and a 2 GiB sparse
// pattern, each read back whole and at random ranges equal to the same slice of the source.
import test from 'ava';
import { randomBytes, randomInt } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync, writeFileSync, writeSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { CairnClient } from '../../src/client/index.js';
import { DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE } from '../../src/chunking/index.js';
import { startServer, suiteScope, tempDir, type ServerProcess } from '../helpers/cluster.js';

const suite = suiteScope('api-roundtrip');
let server: ServerProcess;
let client: CairnClient;
let cacheDir: string;

test.before(async () => {
  server = await startServer(suite);
  client = new CairnClient({ endpoint: server.grpc, token: server.token });
  cacheDir = tempDir(suite, 'cairn-cache-');
});
test.after.always(async () => {
  client.close();
  await suite.close();
});

async function readRange(path: string, offset: number, limit: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of client.read(path, { offset, limit })) if ('data' in part) parts.push(part.data);
  return Buffer.concat(parts);
}

function slice(file: string, offset: number, length: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    const n = readSync(fd, buf, 0, length, offset);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

const sizes: Array<[string, number]> = [
  ['empty', 0],
  ['1 byte', 1],
  ['min chunk - 1', DEFAULT_MIN_SIZE - 1],
  ['min chunk', DEFAULT_MIN_SIZE],
  ['max chunk', DEFAULT_MAX_SIZE],
  ['max chunk + 1', DEFAULT_MAX_SIZE + 1],
  ['3 max chunks', 3 * DEFAULT_MAX_SIZE],
];

for (const [name, size] of sizes) {
  test(`${name} (${size} B) round-trips through upload, sessions and UploadFile`, async (t) => {
    const dir = tempDir(t);
    const src = join(dir, 'src');
    const data = randomBytes(size);
    writeFileSync(src, data);
    const tag = name.replace(/\W+/g, '-');

    const delta = await client.upload(src, `/rt/${tag}-delta`, { cacheDir });
    t.is(delta.info.size, size);
    const session = await client.putResumable(src, `/rt/${tag}-session`);
    t.is(session.size, size);
    const stream = await client.put(src, `/rt/${tag}-stream`);
    // All three paths chunk the same way, so the content hashes agree.
    t.is(delta.info.contentHash, stream.contentHash);
    t.is(session.contentHash, stream.contentHash);
    for (const p of ['delta', 'session', 'stream']) {
      t.deepEqual(await readRange(`/rt/${tag}-${p}`, 0, 0), data, p);
    }
    for (let i = 0; i < 5 && size > 0; i++) {
      const offset = randomInt(0, size);
      const limit = randomInt(1, size - offset + 1);
      t.deepEqual(await readRange(`/rt/${tag}-delta`, offset, limit), data.subarray(offset, offset + limit));
    }
  });
}

test('a 2 GiB sparse-pattern file round-trips through upload; random ranges equal the source', async (t) => {
  t.timeout(15 * 60_000);
  const dir = tempDir(t);
  const src = join(dir, 'sparse');
  const size = 2 * 1024 ** 3 + 12_345;
  const fd = openSync(src, 'w');
  ftruncateSync(fd, size);
  // Islands of random data in a sea of zeros; the same island repeats, so dedup keeps it small.
  const island = randomBytes(3 * 1024 * 1024 + 17);
  for (let i = 0; i < 12; i++) writeSync(fd, i % 3 === 0 ? randomBytes(512 * 1024) : island, 0, undefined, randomInt(0, size - island.length));
  closeSync(fd);

  const res = await client.upload(src, '/rt/sparse-2g', { cacheDir });
  t.is(res.info.size, size);
  t.true(res.bytesSent < 64 * 1024 * 1024, `sent ${res.bytesSent} bytes for a mostly repeating file`);
  for (let i = 0; i < 24; i++) {
    const offset = randomInt(0, size);
    const limit = randomInt(1, Math.min(4 * 1024 * 1024, size - offset) + 1);
    t.deepEqual(await readRange('/rt/sparse-2g', offset, limit), slice(src, offset, limit), `range ${offset}+${limit}`);
  }
  // The last bytes, exactly.
  t.deepEqual(await readRange('/rt/sparse-2g', size - 100, 0), slice(src, size - 100, 100));
});

test('get of a large file uses parallel ranged streams: the whole file and a range equal the source', async (t) => {
  const dir = tempDir(t);
  const src = join(dir, 'src');
  const data = randomBytes(70 * 1024 * 1024 + 4321);
  writeFileSync(src, data);
  await client.upload(src, '/rt/parallel.bin', { cacheDir });
  let last = 0;
  await client.get('/rt/parallel.bin', join(dir, 'whole'), { streams: 4, onProgress: (done) => (last = done) });
  t.true(readFileSync(join(dir, 'whole')).equals(data));
  t.is(last, data.length);
  const offset = 3 * 1024 * 1024 + 7;
  const limit = 40 * 1024 * 1024 + 11;
  await client.get('/rt/parallel.bin', join(dir, 'range'), { streams: 3, offset, limit });
  t.true(readFileSync(join(dir, 'range')).equals(data.subarray(offset, offset + limit)));
  // One stream gives the same bytes.
  await client.get('/rt/parallel.bin', join(dir, 'single'), { streams: 1, offset, limit });
  t.true(readFileSync(join(dir, 'single')).equals(data.subarray(offset, offset + limit)));
});
