// Block store behaviour seen through its public API: writes, reads, dedup, limits, listing, accounting.
// Every store gets its own temp dir named after the test and is closed on teardown.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BlockStore } from '../../src/blocknode/engine/index.js';
import { block, openStore, tempDir as engineTempDir } from './engine-helpers.js';
import { isCairnError } from '../../src/common/errors.js';




async function segmentBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(join(dir, 'segments'))) total += (await readFile(join(dir, 'segments', name))).length;
  return total;
}

test('put, get, has and delete round-trip', async (t) => {
  const store = await openStore(t, await engineTempDir(t, 'cairn-engine'));
  const a = block(10_000);
  const b = block(100);
  const missing = block(10);
  t.deepEqual(await store.put([a, b]), { stored: 2, bytes: 10_100 });
  t.true((await store.get(a.address))?.equals(a.data));
  t.true((await store.get(b.address))?.equals(b.data));
  t.is(await store.get(missing.address), undefined);
  t.deepEqual(await store.has([a.address, missing.address, b.address]), [true, false, true]);
  t.is(await store.delete([a.address, missing.address, a.address]), 1);
  t.is(await store.get(a.address), undefined);
  t.deepEqual(await store.has([a.address, b.address]), [false, true]);
  t.is(await store.delete([a.address]), 0);
});

test('a hash mismatch rejects the whole batch and writes nothing', async (t) => {
  const dir = await engineTempDir(t, 'cairn-engine');
  const store = await openStore(t, dir);
  const good = block(5000);
  const bad = { address: block(10).address, data: randomBytes(5000) };
  const err = await t.throwsAsync(store.put([good, bad]));
  t.true(isCairnError(err, 'CAIRN_HASH_MISMATCH'));
  t.is(err?.message.includes(bad.address.toString('hex')), true);
  t.deepEqual(await store.has([good.address, bad.address]), [false, false]);
  t.is(store.stats().diskBytes, 0);
  t.is(await segmentBytes(dir), 0);
});

test('oversize blocks are refused before anything is written', async (t) => {
  const dir = await engineTempDir(t, 'cairn-engine');
  const store = await openStore(t, dir, { maxBlockBytes: 1024 });
  const small = block(1024);
  const big = block(1025);
  const err = await t.throwsAsync(store.put([small, big]));
  t.true(isCairnError(err, 'CAIRN_BLOCK_TOO_LARGE'));
  t.deepEqual(await store.has([small.address]), [false]);
  t.is(await segmentBytes(dir), 0);
  t.deepEqual(await store.put([small]), { stored: 1, bytes: 1024 });
});

test('duplicate puts are stored once', async (t) => {
  const dir = await engineTempDir(t, 'cairn-engine');
  const store = await openStore(t, dir);
  const a = block(8000);
  t.deepEqual(await store.put([a, a, a]), { stored: 1, bytes: 8000 });
  const before = await segmentBytes(dir);
  t.deepEqual(await store.put([a]), { stored: 0, bytes: 0 });
  const concurrent = await Promise.all([store.put([a]), store.put([a])]);
  t.deepEqual(concurrent, [{ stored: 0, bytes: 0 }, { stored: 0, bytes: 0 }]);
  t.is(await segmentBytes(dir), before);
  const b = block(8000);
  const racing = await Promise.all([store.put([b]), store.put([b]), store.put([b])]);
  t.is(racing.reduce((n, r) => n + r.stored, 0), 1);
  t.is(store.stats().blocks, 2);
});

test('inline blocks are served from the index, larger ones from segments', async (t) => {
  const dir = await engineTempDir(t, 'cairn-engine');
  const store = await openStore(t, dir, { inlineBytes: 1024 });
  const small = block(1000);
  const large = block(5000);
  await store.put([small, large]);
  // Damage both payloads on disk: the inline copy still serves the small block.
  const name = (await readdir(join(dir, 'segments')))[0] as string;
  const path = join(dir, 'segments', name);
  const bytes = await readFile(path);
  for (const b of [small, large]) {
    const at = bytes.indexOf(b.data);
    t.true(at > 0);
    bytes[at + 10] = (bytes[at + 10] as number) ^ 0xff;
  }
  await writeFile(path, bytes);
  t.true((await store.get(small.address))?.equals(small.data));
  const err = await t.throwsAsync(store.get(large.address));
  t.true(isCairnError(err, 'CAIRN_CORRUPT_BLOCK'));
});

test('blocks persist across reopen', async (t) => {
  const dir = await engineTempDir(t, 'cairn-engine');
  const blocks = Array.from({ length: 50 }, (_, i) => block(100 + i * 997));
  const first = await BlockStore.open({ dir, segmentBytes: 64 * 1024 });
  await first.put(blocks.slice(0, 30));
  await first.put(blocks.slice(30));
  await first.delete(blocks.slice(0, 5).map((b) => b.address));
  const statsBefore = first.stats();
  await first.close();
  const store = await openStore(t, dir, { segmentBytes: 64 * 1024 });
  for (const [i, b] of blocks.entries()) {
    const got = await store.get(b.address);
    if (i < 5) t.is(got, undefined);
    else t.true(got?.equals(b.data));
  }
  const after = store.stats();
  t.is(after.blocks, 45);
  t.is(after.bytes, statsBefore.bytes);
  t.is(after.deadBytes, statsBefore.deadBytes);
  t.is(after.segments, statsBefore.segments);
});

test('listAddresses pages through a partition and the whole keyspace in address order', async (t) => {
  const store = await openStore(t, await engineTempDir(t, 'cairn-engine'));
  const blocks = Array.from({ length: 400 }, () => block(64));
  await store.put(blocks);
  const sorted = blocks.map((b) => b.address).sort((x, y) => Buffer.compare(x, y));

  const all: Buffer[] = [];
  for (let after: Buffer | undefined; ; ) {
    const page = await store.listAddresses({ limit: 37, ...(after ? { after } : {}) });
    all.push(...page);
    if (page.length < 37) break;
    after = page[page.length - 1];
  }
  t.deepEqual(all.map((a) => a.toString('hex')), sorted.map((a) => a.toString('hex')));

  const partition = ((sorted[200] as Buffer)[0] as number) * 16 + (((sorted[200] as Buffer)[1] as number) >> 4);
  const expected = sorted.filter((a) => (a[0] as number) * 16 + ((a[1] as number) >> 4) === partition);
  const paged: Buffer[] = [];
  for (let after: Buffer | undefined; ; ) {
    const page = await store.listAddresses({ partition, limit: 1, ...(after ? { after } : {}) });
    if (page.length === 0) break;
    paged.push(...page);
    after = page[0];
  }
  t.deepEqual(paged, expected);
  t.deepEqual(await store.listAddresses({ partition, limit: 1000, after: Buffer.alloc(32) }), expected);
  t.deepEqual(await store.listAddresses({ partition: 4095, limit: 1000, after: Buffer.alloc(32, 0xff) }), []);
});

test('stats account for live, dead and on-disk bytes', async (t) => {
  const dir = await engineTempDir(t, 'cairn-engine');
  const store = await openStore(t, dir, { segmentBytes: 100_000 });
  t.like(store.stats(), { blocks: 0, bytes: 0, deadBytes: 0, segments: 1, diskBytes: 0, capacityBytes: null });
  const blocks = Array.from({ length: 10 }, () => block(30_000));
  await store.put(blocks);
  const s1 = store.stats();
  t.is(s1.blocks, 10);
  t.is(s1.bytes, 300_000);
  t.is(s1.deadBytes, 0);
  t.true(s1.segments >= 4);
  t.is(s1.diskBytes, await segmentBytes(dir));
  t.true(s1.fsyncBatches >= 1);
  t.is(s1.fsyncBlocks, 10);
  await store.delete(blocks.slice(0, 4).map((b) => b.address));
  const s2 = store.stats();
  t.is(s2.blocks, 6);
  t.is(s2.bytes, 180_000);
  t.true(s2.deadBytes >= 120_000);
  t.is(s2.diskBytes, await segmentBytes(dir));
});

test('capacity and reserve refuse a put with CAIRN_DISK_FULL and write nothing', async (t) => {
  const dir = await engineTempDir(t, 'cairn-engine');
  const store = await openStore(t, dir, { capacityBytes: 10_000 });
  t.is(store.stats().capacityBytes, 10_000);
  const first = block(5000);
  await store.put([first]);
  const used = await segmentBytes(dir);
  const a = block(2500);
  const b = block(2500);
  const err = await t.throwsAsync(store.put([a, b]));
  t.true(isCairnError(err, 'CAIRN_DISK_FULL'));
  t.deepEqual(await store.has([a.address, b.address]), [false, false]);
  t.is(await segmentBytes(dir), used);
  t.deepEqual(await store.put([a]), { stored: 1, bytes: 2500 });

  const reserved = await openStore(t, await engineTempDir(t, 'cairn-engine'), { reserveBytes: Number.MAX_SAFE_INTEGER });
  const err2 = await t.throwsAsync(reserved.put([block(10)]));
  t.true(isCairnError(err2, 'CAIRN_DISK_FULL'));
  t.is(reserved.stats().diskBytes, 0);
});

test('programmer mistakes throw TypeError or RangeError naming the argument', async (t) => {
  const store = await openStore(t, await engineTempDir(t, 'cairn-engine'));
  const bad = store as unknown as { get(a: unknown): Promise<unknown>; put(b: unknown): Promise<unknown> };
  await t.throwsAsync(bad.get('abc'), { instanceOf: TypeError, message: /address/ });
  await t.throwsAsync(store.get(Buffer.alloc(31)), { instanceOf: RangeError, message: /address/ });
  await t.throwsAsync(bad.put([{ address: Buffer.alloc(32), data: 'x' }]), { instanceOf: TypeError, message: /blocks\[0\]\.data/ });
  await t.throwsAsync(store.has([Buffer.alloc(32), Buffer.alloc(3)]), { instanceOf: RangeError, message: /addresses\[1\]/ });
  await t.throwsAsync(store.listAddresses({ limit: 0 }), { instanceOf: RangeError, message: /limit/ });
  await t.throwsAsync(store.listAddresses({ limit: 1, partition: 4096 }), { instanceOf: RangeError, message: /partition/ });
  await t.throwsAsync(BlockStore.open({ dir: '' }), { instanceOf: TypeError, message: /options\.dir/ });
  await t.throwsAsync(BlockStore.open({ dir: 'x', segmentBytes: 10 }), { instanceOf: RangeError, message: /options\.segmentBytes/ });
});

test('closed stores refuse work with CAIRN_SHUTTING_DOWN', async (t) => {
  const store = await BlockStore.open({ dir: await engineTempDir(t, 'cairn-engine') });
  await store.close();
  await store.close();
  const err = await t.throwsAsync(store.get(Buffer.alloc(32)));
  t.true(isCairnError(err, 'CAIRN_SHUTTING_DOWN'));
});

test('a second open of the same directory fails and leaves the first store working', async (t) => {
  const dir = await engineTempDir(t, 'cairn-engine');
  const store = await openStore(t, dir);
  const a = block(5000);
  await store.put([a]);
  const err = await t.throwsAsync(BlockStore.open({ dir }));
  t.true(isCairnError(err, 'CAIRN_FAILED_PRECONDITION'));
  t.true((await store.get(a.address))?.equals(a.data));
  await store.put([block(100)]);
  t.is(store.stats().blocks, 2);
});

test('empty blocks and blocks larger than a segment round-trip through reopen and rebuild', async (t) => {
  const dir = await engineTempDir(t, 'cairn-engine');
  const options = { segmentBytes: 8192, inlineBytes: 0 };
  const empty = block(0);
  const huge = block(50_000);
  const first = await BlockStore.open({ dir, ...options });
  t.deepEqual(await first.put([empty, huge, block(100)]), { stored: 3, bytes: 50_100 });
  t.true((await first.get(empty.address))?.equals(Buffer.alloc(0)));
  await first.close();
  await rm(join(dir, 'index'), { recursive: true, force: true });
  const store = await openStore(t, dir, options);
  t.true((await store.get(empty.address))?.equals(Buffer.alloc(0)));
  t.true((await store.get(huge.address))?.equals(huge.data));
  t.is(store.stats().blocks, 3);
});
