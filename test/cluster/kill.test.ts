// kill -9 a block node in the middle of replicated writes (RF=3, W=2): every acknowledged block
// stays readable, and once the node is back anti-entropy restores RF copies of every block.
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { TestCluster, makeBlocks, unreadable, waitFor, type Block } from './harness.js';

test('kill -9 during writes loses no acknowledged block and anti-entropy restores RF', async (t) => {
  t.timeout(90_000);
  const cluster = new TestCluster(t);
  await Promise.all(['n1', 'n2', 'n3', 'n4'].map((id) => cluster.startNode(id)));
  cluster.publish(3);
  await cluster.waitForEpoch();
  const client = cluster.replicated(2);

  const acked: Block[] = [];
  let failed = 0;
  let stop = false;
  const writer = async (): Promise<void> => {
    while (!stop) {
      const batch = makeBlocks(16);
      try {
        await client.putBlocks(batch);
        acked.push(...batch);
      } catch {
        failed++;
      }
    }
  };
  const writers = [writer(), writer()];
  await waitFor('some writes before the kill', async () => acked.length >= 100, 30_000, 50);
  await cluster.kill('n2');
  const atKill = acked.length;
  await waitFor('writes after the kill', async () => acked.length >= atKill + 150, 30_000, 50);
  stop = true;
  await Promise.all(writers);
  t.log(`acknowledged ${acked.length} blocks (${atKill} before the kill), ${failed} batches failed`);

  // Every acknowledged block reads back intact while n2 is down.
  t.deepEqual(await unreadable(client, acked), []);

  await cluster.restart('n2');
  await waitFor('every block on all of its owners', () => cluster.fullyReplicated(acked), 60_000, 500);
  t.deepEqual(await unreadable(client, acked), []);
  // Handed-off copies on n4 (or wherever) are deleted once the owners have theirs.
  await waitFor('no copies left on non-owners', async () => {
    const held = await cluster.holders(acked);
    return acked.every((b) => held.get(b.address.toString('hex'))!.length === 3);
  }, 30_000, 500);
  await sleep(0);
  t.pass();
});
