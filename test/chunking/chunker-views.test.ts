// Regression: chunks emitted as views of the chunker's carry buffer were overwritten by a
// later push, so a stored chunk's bytes no longer matched its hash (and downloads differed).
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { Chunker, chunkBuffer } from '../../src/chunking/index.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

test('chunks keep their bytes after later pushes, for every push size', (t) => {
  const all = randomBytes(6 * 1024 * 1024);
  for (const piece of [1000, 65_536, 300_000, 1024 * 1024]) {
    const chunker = new Chunker();
    const seen: Array<[Buffer, string]> = [];
    for (let i = 0; i < all.length; i += piece) {
      for (const c of chunker.push(all.subarray(i, i + piece))) seen.push([c, sha(c)]);
    }
    for (const c of chunker.finish()) seen.push([c, sha(c)]);
    t.true(seen.every(([c, h]) => sha(c) === h), `push size ${piece}: a chunk changed after it was emitted`);
    t.true(Buffer.concat(seen.map(([c]) => c)).equals(all), `push size ${piece}: chunks do not concatenate to the input`);
    t.is(seen.length, chunkBuffer(all).length);
  }
});
