// A 1-byte edit in a large file sends only the changed chunks: asserted on the chunk bytes the
// SDK's delta upload reports, and on the wire bytes (the commit is a chunk-list diff).
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdirSync, openSync, writeSync, closeSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, tempDir } from '../helpers/cluster.js';
import { FULL, sha256, syncOnce } from './helpers.js';

const SIZE = (FULL ? 256 : 32) * 1024 * 1024;
const MAX_CHUNK = 256 * 1024;

test(`a 1-byte edit in a ${SIZE / 1024 / 1024} MiB file sends only the changed chunks`, async (t) => {
  t.timeout(FULL ? 600_000 : 170_000);
  const server = await startServer(t);
  const a = join(tempDir(t), 'a');
  mkdirSync(a);
  const file = join(a, 'disk.img');
  const fd = openSync(file, 'w');
  for (let off = 0; off < SIZE; off += 8 * 1024 * 1024) writeSync(fd, randomBytes(8 * 1024 * 1024));
  closeSync(fd);
  const first = await syncOnce(server, a, '/delta', ['--device', 'A']);
  t.is(first.code, 0, first.stderr);
  const full = first.events.find((e) => e.type === 'upload' && e.path === 'disk.img')!;
  t.is(full['bytesSent'], SIZE, 'the first upload sends everything');

  // Flip one byte in the middle.
  const edit = openSync(file, 'r+');
  const at = Math.floor(SIZE / 2) + 12345;
  const old = Buffer.alloc(1);
  readSync(edit, old, 0, 1, at);
  writeSync(edit, Buffer.from([old[0]! ^ 0xff]), 0, 1, at);
  closeSync(edit);
  const second = await syncOnce(server, a, '/delta', ['--device', 'A']);
  t.is(second.code, 0, second.stderr);
  const delta = second.events.find((e) => e.type === 'upload' && e.path === 'disk.img')!;
  t.log(`edit sent ${String(delta['bytesSent'])} chunk bytes, ${String(delta['chunksSent'])} chunks, ${String(delta['wireBytes'])} wire bytes; ${String(delta['newChunks'])} of ${String(delta['chunks'])} chunks new`);
  t.true((delta['bytesSent'] as number) > 0);
  t.true((delta['bytesSent'] as number) <= 2 * MAX_CHUNK, 'at most the chunks around the edit');
  t.true((delta['chunksSent'] as number) <= 2);
  t.true((delta['newChunks'] as number) <= 2);
  t.true((delta['wireBytes'] as number) < 4 * MAX_CHUNK, 'no full chunk list or file on the wire');

  // A second device gets the edited content.
  const b = join(tempDir(t), 'b');
  const pulled = await syncOnce(server, b, '/delta', ['--device', 'B']);
  t.is(pulled.code, 0, pulled.stderr);
  t.is(sha256(readFileSync(join(b, 'disk.img'))), sha256(readFileSync(file)));
});
