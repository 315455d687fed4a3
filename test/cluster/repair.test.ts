// Corruption and full disks on a live cluster: a flipped byte in a segment is caught on read
// (the read still returns correct data and the copy is repaired) or by scrub (which reports it
// and repairs it); a node whose disk is capped small fills up and puts go elsewhere, losing nothing.
import test from 'ava';
import { readdirSync, openSync, readSync, writeSync, closeSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { owners } from '../../src/placement/index.js';
import { TestCluster, hex, makeBlocks, unreadable, waitFor, type Block } from './harness.js';

/** Flips one byte in the middle of a block's payload inside n's segment files. */
function flipByte(dataDir: string, block: Block): void {
  const dir = join(dataDir, 'blocks', 'segments');
  const needle = block.data.subarray(0, 64);
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const size = statSync(path).size;
    const buf = Buffer.alloc(size);
    const fd = openSync(path, 'r+');
    try {
      readSync(fd, buf, 0, size, 0);
      const at = buf.indexOf(needle);
      if (at < 0) continue;
      const pos = at + (block.data.length >> 1);
      writeSync(fd, Buffer.from([buf[pos]! ^ 0xff]), 0, 1, pos);
      return;
    } finally {
      closeSync(fd);
    }
  }
  throw new Error('block not found in any segment');
}

async function metric(http: string, name: string): Promise<number> {
  const text = await (await fetch(`${http}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(name + ' '));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

test('a flipped byte is served correctly, repaired on read, and found and repaired by scrub', async (t) => {
  t.timeout(90_000);
  const cluster = new TestCluster(t);
  await Promise.all(['n1', 'n2', 'n3'].map((id) => cluster.startNode(id)));
  const map = cluster.publish(3);
  await cluster.waitForEpoch();
  const client = cluster.replicated(3);
  // Blocks above the inline size live only in segments; pick ones n1 is asked first for.
  const all = makeBlocks(200, 16 * 1024, 32 * 1024);
  await client.putBlocks(all);
  const first = all.filter((b) => owners(map, b.address)[0] === 'n1');
  const [onRead, onScrub] = first;
  if (onRead === undefined || onScrub === undefined) throw new Error('no block with n1 first');
  const n1 = cluster.nodes.get('n1')!;
  flipByte(n1.dataDir, onRead);
  flipByte(n1.dataDir, onScrub);

  // The read path: n1's copy fails verification, the client reads another replica and repairs n1.
  t.deepEqual(await unreadable(client, [onRead]), []);
  await client.settled();
  await waitFor('n1 holds a good copy again', async () => {
    for await (const b of n1.client.getBlocks([onRead.address])) return b.data?.equals(onRead.data) === true;
    return false;
  }, 20_000);

  // The scrub path: the corrupt record is reported and restored from a replica.
  const scrub = await n1.client.scrub();
  t.true(Number(scrub.checked) >= first.length);
  t.deepEqual(scrub.corrupt.map(hex), [hex(onScrub.address)]);
  t.is(Number(scrub.repaired), 1);
  t.is(Number(scrub.unrepaired), 0);
  for await (const b of n1.client.getBlocks([onScrub.address])) t.true(b.data?.equals(onScrub.data));
  t.true((await metric(n1.server.http, 'cairn_blocknode_scrub_errors_total')) >= 1);
  t.is(Number((await n1.client.stats()).quarantined), 0);
  t.deepEqual(await unreadable(client, all), []);
});

test('a node with a small disk fills up, puts go elsewhere and nothing acknowledged is lost', async (t) => {
  t.timeout(90_000);
  const cluster = new TestCluster(t);
  const cap = 1024 * 1024;
  await cluster.startNode('n1', ['--capacity-bytes', String(cap)]);
  await Promise.all(['n2', 'n3', 'n4'].map((id) => cluster.startNode(id)));
  cluster.publish(3);
  await cluster.waitForEpoch();
  const client = cluster.replicated(2);
  const acked: Block[] = [];
  for (let i = 0; i < 40; i++) {
    const batch = makeBlocks(16, 8 * 1024, 16 * 1024);
    await client.putBlocks(batch);
    acked.push(...batch);
  }
  const s1 = await cluster.nodes.get('n1')!.client.stats();
  t.log(`n1 holds ${String(s1.blocks)} blocks, ${String(s1.disk_bytes)} bytes on disk (cap ${cap})`);
  t.true(Number(s1.disk_bytes) <= cap);
  t.deepEqual(await unreadable(client, acked), []);
  // Every block keeps three copies: on its owners, or on a handoff node in n1's place.
  await waitFor('three copies of every block', async () => {
    const held = await cluster.holders(acked);
    return acked.every((b) => held.get(hex(b.address))!.length >= 3);
  }, 30_000, 500);
  t.true(acked.some((b) => owners(cluster.map, b.address).includes('n1')));
});
