// Bit rot on a live cluster: random bytes flipped in one block node's segment files while it is
// down. Reads still return every acknowledged file intact (other replicas answer), scrub reports
// the damage and repairs it from replicas, and the node ends holding every block again.
import test from 'ava';
import { randomInt } from 'node:crypto';
import { closeSync, openSync, readSync, readdirSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { BlockClient } from '../../src/blocknode/index.js';
import { ServiceTokenSource, loadOrCreateSecret } from '../../src/common/auth.js';
import { waitFor } from '../cluster/harness.js';
import { Ledger, blockCounts, clientFor, startDevCluster } from './harness.js';

/** Flips `count` random bytes across the segment files under dataDir; returns how many. */
function flipRandomBytes(dataDir: string, count: number): number {
  const dir = join(dataDir, 'blocks', 'segments');
  const files = readdirSync(dir).map((n) => join(dir, n)).filter((p) => statSync(p).size > 0);
  let flipped = 0;
  for (let i = 0; i < count; i++) {
    const path = files[randomInt(files.length)]!;
    const size = statSync(path).size;
    // Past the first 64 bytes: a segment's own header is covered by the engine's recovery tests.
    const pos = 64 + randomInt(Math.max(1, size - 64));
    const fd = openSync(path, 'r+');
    try {
      const b = Buffer.alloc(1);
      readSync(fd, b, 0, 1, pos);
      writeSync(fd, Buffer.from([b[0]! ^ (1 << randomInt(8))]), 0, 1, pos);
      flipped++;
    } finally {
      closeSync(fd);
    }
  }
  return flipped;
}

test('random bytes flipped in a block node’s segments: detected, repaired from replicas, scrub reports them, nothing lost', async (t) => {
  t.timeout(170_000);
  const cluster = await startDevCluster(t);
  const client = await clientFor(t, cluster);
  const ledger = new Ledger();
  const stop = new AbortController();
  const writing = Promise.all([0, 1].map((w) => ledger.writeUntil(client, `/c${w}`, stop.signal, 400_000)));
  await ledger.ackedAtLeast(12, 3000);
  stop.abort();
  await writing;
  t.is(ledger.failures, 0);
  await waitFor('three copies of every block', async () => {
    const counts = [...(await blockCounts(t, cluster)).values()];
    return counts.length === 3 && counts[0]! > 0 && counts.every((c) => c === counts[0]);
  }, 60_000, 500);
  const before = (await blockCounts(t, cluster)).get('blocknode-2')!;

  await cluster.kill('blocknode-2', 'SIGTERM');
  const flipped = flipRandomBytes(cluster.get('blocknode-2').dataDir, 40);
  t.log(`flipped ${flipped} random bytes in blocknode-2's segments (${before} blocks)`);
  await cluster.restart('blocknode-2');

  const tokens = new ServiceTokenSource(loadOrCreateSecret(cluster.secretPath));
  const node = new BlockClient({ address: cluster.get('blocknode-2').grpc, credentials: credentials.createInsecure(), token: () => tokens.token(), timeoutMs: 60_000 });
  t.teardown(() => node.close());
  const first = await node.scrub();
  t.log(`scrub: checked ${first.checked}, corrupt ${first.corrupt.length}, repaired ${first.repaired}, unrepaired ${first.unrepaired}`);
  t.true(first.corrupt.length > 0 || Number(first.checked) < before, 'the damage is found (by scrub, or by recovery dropping damaged records)');
  t.is(Number(first.unrepaired), 0, 'every corrupt copy is restored from a replica');
  t.deepEqual(await ledger.verify(client), [], 'every acknowledged file reads back intact');
  await waitFor('blocknode-2 to hold every block again', async () => {
    const counts = [...(await blockCounts(t, cluster)).values()];
    return counts.length === 3 && counts.every((c) => c === before);
  }, 90_000, 1000);
  const second = await node.scrub();
  t.is(second.corrupt.length, 0, 'a second scrub finds nothing');
  t.deepEqual(await ledger.verify(client), []);
});
