// Block store recovery: torn tails, replay past the index's high-water mark, index loss and
// corruption rebuilt from segments, and bit rot caught by reads and scrub and quarantined.
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { appendFile, readFile, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BlockStore } from '../../src/blocknode/engine/index.js';
import { block, openStore, tempDir as engineTempDir } from './engine-helpers.js';
import { isCairnError } from '../../src/common/errors.js';
import { BufferPool } from '../../src/common/buffer-pool.js';




async function segmentPaths(dir: string): Promise<string[]> {
  return (await readdir(join(dir, 'segments'))).sort().map((n) => join(dir, 'segments', n));
}

/** The raw record bytes of a block, written by a throwaway store. */
async function recordOf(t: ExecutionContext, b: { address: Buffer; data: Buffer }): Promise<Buffer> {
  const dir = await engineTempDir(t, 'cairn-recovery');
  const side = await BlockStore.open({ dir });
  await side.put([b]);
  await side.close();
  return readFile((await segmentPaths(dir))[0] as string);
}

async function flipByteOf(dir: string, data: Buffer, delta = 7): Promise<void> {
  for (const path of await segmentPaths(dir)) {
    const bytes = await readFile(path);
    const at = bytes.indexOf(data);
    if (at < 0) continue;
    bytes[at + delta] = (bytes[at + delta] as number) ^ 0x55;
    await writeFile(path, bytes);
    return;
  }
  throw new Error('block not found in any segment');
}

test('garbage appended after the last record is truncated on open', async (t) => {
  const dir = await engineTempDir(t, 'cairn-recovery');
  const a = block(3000);
  const first = await BlockStore.open({ dir });
  await first.put([a]);
  await first.close();
  const [path] = await segmentPaths(dir);
  const size = (await stat(path as string)).size;
  await appendFile(path as string, randomBytes(777));
  const store = await openStore(t, dir);
  t.is((await stat(path as string)).size, size);
  t.true((await store.get(a.address))?.equals(a.data));
  t.is(store.stats().diskBytes, size);
});

test('a record torn mid-header or mid-payload past the indexed tail is cut off; a whole one is replayed', async (t) => {
  const dir = await engineTempDir(t, 'cairn-recovery');
  const a = block(3000);
  const b = block(70_000);
  const first = await BlockStore.open({ dir });
  await first.put([a]);
  await first.close();
  const [path] = await segmentPaths(dir);
  const size = (await stat(path as string)).size;
  const rec = await recordOf(t, b);

  for (const cut of [20, 52 + 1000, rec.length - 1]) {
    await appendFile(path as string, rec.subarray(0, cut));
    const store = await BlockStore.open({ dir });
    t.is((await stat(path as string)).size, size, `cut at ${cut}`);
    t.true((await store.get(a.address))?.equals(a.data));
    t.is(await store.get(b.address), undefined);
    await store.close();
  }

  // A complete record the index never heard of (a crash between fsync and index update) comes back.
  await appendFile(path as string, rec);
  const store = await openStore(t, dir);
  t.true((await store.get(b.address))?.equals(b.data));
  t.is(store.stats().blocks, 2);
});

test('a segment truncated below the indexed high-water mark forces a rebuild that drops the lost block', async (t) => {
  const dir = await engineTempDir(t, 'cairn-recovery');
  const a = block(3000);
  const b = block(9000);
  const first = await BlockStore.open({ dir });
  await first.put([a]);
  await first.put([b]);
  await first.close();
  const [path] = await segmentPaths(dir);
  const size = (await stat(path as string)).size;
  await truncate(path as string, size - 100);
  const store = await openStore(t, dir);
  t.true((await store.get(a.address))?.equals(a.data));
  t.is(await store.get(b.address), undefined);
  t.is(store.stats().blocks, 1);
  t.deepEqual(await store.put([b]), { stored: 1, bytes: 9000 });
  t.true((await store.get(b.address))?.equals(b.data));
});

test('a deleted index directory is rebuilt from segments; deleted blocks stay deleted', async (t) => {
  const dir = await engineTempDir(t, 'cairn-recovery');
  const options = { segmentBytes: 64 * 1024, inlineBytes: 2048 };
  const blocks = Array.from({ length: 60 }, (_, i) => block(i % 3 === 0 ? 500 : 4000 + i * 100));
  const first = await BlockStore.open({ dir, ...options });
  await first.put(blocks.slice(0, 40));
  await first.delete(blocks.slice(0, 10).map((b) => b.address));
  await first.put(blocks.slice(40));
  // Delete then re-put: the later put must win over the earlier tombstone.
  await first.delete([(blocks[45] as { address: Buffer }).address]);
  await first.put([blocks[45] as { address: Buffer; data: Buffer }]);
  const before = first.stats();
  await first.close();
  t.true(before.segments > 2);

  await rm(join(dir, 'index'), { recursive: true, force: true });
  const store = await openStore(t, dir, options);
  for (const [i, b] of blocks.entries()) {
    const got = await store.get(b.address);
    if (i < 10) t.is(got, undefined, `block ${i} should stay deleted`);
    else t.true(got?.equals(b.data), `block ${i} should be back`);
  }
  t.like(store.stats(), { blocks: 50, bytes: before.bytes, deadBytes: before.deadBytes, segments: before.segments });
});

test('an unreadable index is discarded and rebuilt', async (t) => {
  const dir = await engineTempDir(t, 'cairn-recovery');
  const blocks = Array.from({ length: 20 }, () => block(5000));
  const first = await BlockStore.open({ dir });
  await first.put(blocks);
  await first.close();
  const indexDir = join(dir, 'index');
  for (const name of await readdir(indexDir)) {
    if (name === 'CURRENT' || name.startsWith('MANIFEST')) await writeFile(join(indexDir, name), randomBytes(64));
  }
  const warnings: string[] = [];
  const store = await openStore(t, dir, { logger: { warn: (_o, msg) => warnings.push(msg), info() {} } });
  for (const b of blocks) t.true((await store.get(b.address))?.equals(b.data));
  t.true(warnings.length > 0);
});

test('a flipped byte makes get throw CAIRN_CORRUPT_BLOCK and quarantines the block; scrub finds the rest', async (t) => {
  const dir = await engineTempDir(t, 'cairn-recovery');
  const store = await openStore(t, dir, { inlineBytes: 1024 });
  const blocks = [block(10_000), block(20_000), block(30_000), block(500), block(100_000)];
  await store.put(blocks);
  const [victim, other, , inline, big] = blocks as [typeof blocks[0], typeof blocks[0], typeof blocks[0], typeof blocks[0], typeof blocks[0]];
  await flipByteOf(dir, victim.data);

  const err = await t.throwsAsync(store.get(victim.address));
  t.true(isCairnError(err, 'CAIRN_CORRUPT_BLOCK'));
  t.is(err?.message.includes(victim.address.toString('hex')), true);
  t.deepEqual(await store.quarantined(), [victim.address]);
  t.deepEqual(await store.has([victim.address]), [false]);
  t.is(await store.get(victim.address), undefined);
  t.is(store.stats().blocks, 4);

  await flipByteOf(dir, other.data, 9000);
  await flipByteOf(dir, inline.data, 3);
  await flipByteOf(dir, big.data, 99_000);
  const seen: boolean[] = [];
  const result = await store.scrub({ onRecord: (r) => seen.push(r.ok) });
  t.is(result.checked, 4);
  t.deepEqual(seen.sort(), [false, false, false, true]);
  t.deepEqual(
    result.corrupt.map((a) => a.toString('hex')).sort(),
    [other, inline, big].map((b) => b.address.toString('hex')).sort(),
  );
  t.is((await store.quarantined()).length, 4);
  t.is(store.stats().blocks, 1);
  t.deepEqual(await store.scrub({ maxBytesPerSecond: 1e9 }), { checked: 1, corrupt: [] });

  // A repaired copy (e.g. from another replica) is accepted again and leaves quarantine.
  await store.put([victim]);
  t.true((await store.get(victim.address))?.equals(victim.data));
  t.is((await store.quarantined()).length, 3);
});

test('a corrupt record stays out of a rebuilt index', async (t) => {
  const dir = await engineTempDir(t, 'cairn-recovery');
  const good = block(8000);
  const bad = block(8000);
  const last = block(8000);
  const first = await BlockStore.open({ dir });
  await first.put([good, bad, last]);
  await first.close();
  await flipByteOf(dir, bad.data);
  await rm(join(dir, 'index'), { recursive: true, force: true });
  const store = await openStore(t, dir);
  t.true((await store.get(good.address))?.equals(good.data));
  t.true((await store.get(last.address))?.equals(last.data));
  t.is(await store.get(bad.address), undefined);
  t.deepEqual(await store.quarantined(), [bad.address]);
});

test('scrub stops early when aborted', async (t) => {
  const store = await openStore(t, await engineTempDir(t, 'cairn-recovery'));
  await store.put(Array.from({ length: 30 }, () => block(10_000)));
  const controller = new AbortController();
  const scrubbing = store.scrub({ maxBytesPerSecond: 50_000, signal: controller.signal });
  setTimeout(() => controller.abort(), 200);
  const result = await scrubbing;
  t.true(result.checked < 30);
  t.deepEqual(result.corrupt, []);
});

test('close does not wait out a rate-limited scrub', async (t) => {
  const store = await BlockStore.open({ dir: await engineTempDir(t, 'cairn-recovery') });
  await store.put(Array.from({ length: 5 }, () => block(100_000)));
  const scrubbing = store.scrub({ maxBytesPerSecond: 1000 }); // would take minutes
  await new Promise((r) => setTimeout(r, 100));
  const started = Date.now();
  await store.close();
  const result = await scrubbing;
  t.true(Date.now() - started < 5000);
  t.true(result.checked < 5);
});

test('getMany reads neighbours with one pread, in request order; a flipped byte is quarantined unless the caller verifies', async (t) => {
  const dir = await engineTempDir(t, 'cairn-recovery');
  const store = await openStore(t, dir, { inlineBytes: 1024 });
  const blocks = [block(10_000), block(20_000), block(500), block(70_000), block(30_000)];
  await store.put(blocks);
  const [victim, , inline, , last] = blocks as [typeof blocks[0], typeof blocks[0], typeof blocks[0], typeof blocks[0], typeof blocks[0]];
  const missing = block(100);
  // Any order, duplicates and a missing address: each answered in its place.
  const order = [last, missing, ...blocks, victim];
  const got = await store.getMany(order.map((b) => b.address));
  for (let i = 0; i < order.length; i++) t.true(order[i] === missing ? got[i]!.data === undefined : got[i]!.data!.equals(order[i]!.data), `position ${i}`);

  await flipByteOf(dir, victim.data);
  // Without verification the payload comes back as stored (the header still names the block);
  // inline copies (kept in the index) go through the verifying single-block path either way.
  const unverified = await store.getMany([victim.address, inline.address, last.address], { verify: false });
  t.false(unverified[0]!.data!.equals(victim.data));
  t.is(unverified[0]!.corrupt, undefined);
  t.true(unverified[1]!.data!.equals(inline.data));
  t.true(unverified[2]!.data!.equals(last.data));
  // With it, the corrupt copy is quarantined and reads as missing from then on.
  const verified = await store.getMany([victim.address, last.address]);
  t.deepEqual(verified.map((g) => [g.data === undefined, g.corrupt === true]), [[true, true], [false, false]]);
  t.deepEqual(await store.quarantined(), [victim.address]);
  t.deepEqual((await store.getMany([victim.address])).map((g) => [g.data, g.corrupt]), [[undefined, undefined]]);
  await t.throwsAsync(store.getMany([Buffer.alloc(3)]), { instanceOf: RangeError });
});

test('getMany with a pool reads every run of a call into one pooled slab; a call larger than a slab gets its own buffer', async (t) => {
  const store = await openStore(t, await engineTempDir(t, 'cairn-recovery'));
  const blocks = Array.from({ length: 6 }, () => block(20_000));
  await store.put(blocks);
  const pool = new BufferPool({ slabBytes: 256 * 1024, maxFree: 2, idleMs: 0 });
  const got = await store.getMany(blocks.map((b) => b.address), { verify: false, pool });
  for (let i = 0; i < blocks.length; i++) t.true(got[i]!.data!.equals(blocks[i]!.data), `block ${i}`);
  const slab = got[0]!.data!.buffer;
  t.is(slab.byteLength, 256 * 1024);
  t.true(got.every((g) => g.data!.buffer === slab), 'one slab for the whole call');
  pool.release(got[0]!.data!);
  t.is(pool.free, 1);
  const again = await store.getMany([blocks[5]!.address, blocks[0]!.address], { pool });
  t.is(again[0]!.data!.buffer, slab, 'the released slab is read into again');
  t.true(again[0]!.data!.equals(blocks[5]!.data) && again[1]!.data!.equals(blocks[0]!.data));
  const small = new BufferPool({ slabBytes: 50_000, maxFree: 2, idleMs: 0 });
  const large = await store.getMany(blocks.map((b) => b.address), { pool: small });
  t.true(large.every((g, i) => g.data!.equals(blocks[i]!.data)));
  small.release(large[0]!.data!);
  t.is(small.free, 0, 'a buffer larger than the slab is not pooled');
});
