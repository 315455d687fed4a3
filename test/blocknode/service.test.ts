// The BlockNode service against one in-process node: listing with opaque cursors, digests,
// deletes and stats; bad input (wrong hash, oversize, unknown partition, forged cursor) gets
// INVALID_ARGUMENT/OUT_OF_RANGE and changes nothing.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ServiceTokenSource } from '../../src/common/auth.js';
import { createLogger } from '../../src/common/log.js';
import { createMetrics } from '../../src/common/metrics.js';
import { BlockClient, createBlockNode, type BlockNode } from '../../src/blocknode/index.js';
import { partitionOf } from '../../src/placement/index.js';

interface Ctx {
  node: BlockNode;
  client: BlockClient;
  dir: string;
}

const secret = randomBytes(32);

async function start(t: { title: string; teardown(fn: () => unknown): void }): Promise<Ctx> {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-bn-svc-'));
  const node = await createBlockNode({
    dataDir: dir,
    host: '127.0.0.1',
    port: 0,
    credentials: grpc.ServerCredentials.createInsecure(),
    authSecret: secret,
    log: createLogger({ level: 'silent', name: t.title }),
    metrics: createMetrics({ processMetrics: false }),
  });
  const tokens = new ServiceTokenSource(secret);
  const client = new BlockClient({ address: `127.0.0.1:${node.port}`, credentials: grpc.credentials.createInsecure(), token: () => tokens.token() });
  t.teardown(async () => {
    client.close();
    await node.stop(1000);
    rmSync(dir, { recursive: true, force: true });
  });
  return { node, client, dir };
}

function block(data: Buffer): { address: Buffer; data: Buffer } {
  return { address: createHash('sha256').update(data).digest(), data };
}

/** A block whose address falls in `partition` (searched by brute force: 1 in 4096). */
function blockIn(partition: number): { address: Buffer; data: Buffer } {
  for (;;) {
    const b = block(randomBytes(64));
    if (partitionOf(b.address) === partition) return b;
  }
}

function codeOf(err: unknown): string | undefined {
  return (err as { code?: string }).code;
}

test('ListPartition pages through a partition with opaque cursors and refuses forged ones', async (t) => {
  const { client } = await start(t);
  const blocks = Array.from({ length: 7 }, () => blockIn(42));
  const other = blockIn(43);
  await client.putBlocks([...blocks, other]);
  const seen: string[] = [];
  let cursor = '';
  let pages = 0;
  do {
    const page = await client.listPartition(42, cursor, 3);
    seen.push(...page.addresses.map((a) => a.toString('hex')));
    cursor = page.cursor;
    pages++;
  } while (cursor !== '');
  t.deepEqual(seen, blocks.map((b) => b.address.toString('hex')).sort());
  t.is(pages, 3);

  const first = await client.listPartition(42, '', 3);
  t.is(codeOf(await t.throwsAsync(client.listPartition(43, first.cursor, 3))), 'CAIRN_INVALID_CURSOR');
  t.is(codeOf(await t.throwsAsync(client.listPartition(42, 'not a cursor!', 3))), 'CAIRN_INVALID_CURSOR');
  const forged = Buffer.from(first.cursor, 'base64url');
  forged[0] = 9;
  t.is(codeOf(await t.throwsAsync(client.listPartition(42, forged.toString('base64url'), 3))), 'CAIRN_INVALID_CURSOR');
  t.is(codeOf(await t.throwsAsync(client.listPartition(4096))), 'CAIRN_OUT_OF_RANGE');
  t.is(codeOf(await t.throwsAsync(client.listPartition(42, '', 5000))), 'CAIRN_INVALID_ARGUMENT');
});

test('PartitionDigest is the count and XOR of the held addresses and follows deletes', async (t) => {
  const { client } = await start(t);
  const blocks = Array.from({ length: 4 }, () => blockIn(7));
  await client.putBlocks(blocks);
  const xor = (list: Array<{ address: Buffer }>): Buffer => {
    const out = Buffer.alloc(32);
    for (const b of list) for (let i = 0; i < 32; i++) out[i]! ^= b.address[i]!;
    return out;
  };
  const [first7, d8] = await client.partitionDigests([7, 8]);
  let d7 = first7;
  t.is(d7?.count, 4);
  t.true(d7?.digest.equals(xor(blocks)));
  t.is(d8?.count, 0);
  t.true(d8?.digest.equals(Buffer.alloc(32)));

  t.is(await client.deleteBlocks([blocks[0]!.address, randomBytes(32)]), 1);
  [d7] = await client.partitionDigests([7]);
  t.is(d7?.count, 3);
  t.true(d7?.digest.equals(xor(blocks.slice(1))));
  t.deepEqual(await client.hasBlocks(blocks.map((b) => b.address)), [false, true, true, true]);
  t.is(codeOf(await t.throwsAsync(client.partitionDigests([1, 4096]))), 'CAIRN_OUT_OF_RANGE');
  const stats = await client.stats();
  t.is(Number(stats.blocks), 3);
});

test('a wrong hash or an oversize block is INVALID_ARGUMENT and stores nothing of the batch', async (t) => {
  const { client } = await start(t);
  const good = block(randomBytes(1000));
  const bad = { address: block(randomBytes(10)).address, data: randomBytes(10) };
  const e1 = await t.throwsAsync(client.putBlocks([good, bad]));
  t.is(codeOf(e1), 'CAIRN_HASH_MISMATCH');
  // Only a node in the caller's own process takes the caller's word for its hashing: over the
  // wire the node verifies whatever the caller says.
  t.is(codeOf(await t.throwsAsync(client.putBlocks([good, bad], { callerHashed: true }))), 'CAIRN_HASH_MISMATCH');
  // One message is one batch: the client sends a block over 4 MiB in a message of its own.
  const big = block(randomBytes(4 * 1024 * 1024 + 1));
  t.is(codeOf(await t.throwsAsync(client.putBlocks([big]))), 'CAIRN_BLOCK_TOO_LARGE');
  t.deepEqual(await client.hasBlocks([good.address, bad.address, big.address]), [false, false, false]);
  t.is(Number((await client.stats()).blocks), 0);
  t.is(codeOf(await t.throwsAsync(client.hasBlocks([Buffer.alloc(5)]))), 'CAIRN_INVALID_HASH');
  t.is(codeOf(await t.throwsAsync(client.deleteBlocks(Array.from({ length: 4097 }, () => randomBytes(32))))), 'CAIRN_INVALID_ARGUMENT');
});

test('the node in this process stores blocks its caller hashed without hashing them again; scrub still checks them', async (t) => {
  const { node, client } = await start(t);
  const blocks = Array.from({ length: 4 }, () => block(randomBytes(5000)));
  await node.local.putBlocks(blocks, { callerHashed: true });
  t.deepEqual(await client.hasBlocks(blocks.map((b) => b.address)), [true, true, true, true]);
  const read = [];
  for await (const b of node.local.getBlocks(blocks.map((x) => x.address))) read.push(b.data);
  t.true(read.every((d, i) => d?.equals(blocks[i]!.data)));
  // Without the flag the local node checks as the remote one does.
  const bad = { address: block(randomBytes(10)).address, data: randomBytes(10) };
  t.is(codeOf(await t.throwsAsync(node.local.putBlocks([bad]))), 'CAIRN_HASH_MISMATCH');
  // The flag is the caller's word, taken as given: a caller whose address is wrong gets its block
  // stored, and scrub is what finds it (alone, with no replica to repair it from).
  const lied = { address: block(randomBytes(3000)).address, data: randomBytes(3000) };
  await node.local.putBlocks([lied], { callerHashed: true });
  const r = await client.scrub();
  t.is(Number(r.checked), 5);
  t.deepEqual(r.corrupt.map((a) => Buffer.from(a).toString('hex')), [lied.address.toString('hex')]);
});

test('Scrub on a healthy node checks every block and finds nothing', async (t) => {
  const { client } = await start(t);
  await client.putBlocks(Array.from({ length: 5 }, () => block(randomBytes(8192))));
  const r = await client.scrub();
  t.is(Number(r.checked), 5);
  t.deepEqual(r.corrupt, []);
  t.is(Number(r.repaired), 0);
});

test('GetBlocks: concurrent calls across many groups come back byte-exact, in order', async (t) => {
  const { client } = await start(t);
  const blocks = Array.from({ length: 150 }, (_, i) => block(randomBytes(1000 + ((i * 7919) % 90_000))));
  for (let i = 0; i < blocks.length; i += 50) await client.putBlocks(blocks.slice(i, i + 50));
  const missing = block(randomBytes(100));
  const read = async (list: Array<{ address: Buffer; data: Buffer }>): Promise<Array<Buffer | undefined>> => {
    const out: Array<Buffer | undefined> = [];
    for await (const got of client.getBlocks(list.map((b) => b.address))) out.push(got.data);
    return out;
  };
  const orders = [blocks, [...blocks].reverse(), [missing, ...blocks.slice(0, 70), missing, blocks[3]!, ...blocks.slice(70)]];
  for (let round = 0; round < 2; round++) {
    const results = await Promise.all(orders.map(read));
    results.forEach((got, k) => {
      t.is(got.length, orders[k]!.length);
      t.true(
        got.every((data, i) => (orders[k]![i] === missing ? data === undefined : data?.equals(orders[k]![i]!.data) === true)),
        `round ${round}, order ${k}`,
      );
    });
  }
});
