// Chaos with block nodes (RF 3, W 2) on a `cairn dev cluster`: kill -9 during uploads and check
// every acknowledged file byte for byte, then that replication is whole again.
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { waitFor } from '../cluster/harness.js';
import { Ledger, blockCounts, clientFor, startDevCluster } from './harness.js';

const WRITE_MS = Number(process.env['CAIRN_CHAOS_WRITE_MS'] ?? 4000);

test.serial('kill -9 one of three block nodes during uploads: no acknowledged file lost, RF restored after it returns', async (t) => {
  t.timeout(170_000);
  const cluster = await startDevCluster(t);
  const client = await clientFor(t, cluster);
  const ledger = new Ledger();
  const stop = new AbortController();
  const writers = Promise.all([0, 1, 2].map((w) => ledger.writeUntil(client, `/w${w}`, stop.signal)));
  await ledger.ackedAtLeast(10, WRITE_MS);
  await cluster.kill('blocknode-2');
  await ledger.ackedAtLeast(ledger.acked.size + 10, WRITE_MS);
  stop.abort();
  await writers;
  t.true(ledger.acked.size > 10, `only ${ledger.acked.size} uploads were acknowledged`);
  t.is(ledger.failures, 0, `with two of three nodes up every write has its quorum: ${ledger.errors.slice(0, 3).join('; ')}`);
  t.deepEqual(await ledger.verify(client), [], 'every acknowledged file reads back intact with a node down');

  await cluster.restart('blocknode-2');
  // With three nodes and RF 3 every node owns every block: back at RF means equal counts.
  await waitFor('the returned node to hold every block again', async () => {
    const counts = [...(await blockCounts(t, cluster)).values()];
    return counts.length === 3 && counts[0]! > 0 && counts.every((c) => c === counts[0]);
  }, 90_000, 1000);
  t.deepEqual(await ledger.verify(client), []);
});

test.serial('kill -9 two of three: reads still succeed, writes fail UNAVAILABLE, nothing corrupt, full recovery on return', async (t) => {
  t.timeout(170_000);
  const cluster = await startDevCluster(t);
  const client = await clientFor(t, cluster);
  const ledger = new Ledger();
  const stop = new AbortController();
  const writing = ledger.writeUntil(client, '/before', stop.signal, 200_000);
  await ledger.ackedAtLeast(6, WRITE_MS / 2);
  stop.abort();
  await writing;
  t.is(ledger.failures, 0);
  t.true(ledger.acked.size > 3);

  await cluster.kill('blocknode-1');
  await cluster.kill('blocknode-3');
  t.deepEqual(await ledger.verify(client), [], 'every file has a surviving replica on blocknode-2');
  const refused = new Ledger();
  const once = new AbortController();
  const attempt = refused.writeUntil(client, '/during', once.signal, 100_000);
  await sleep(1500);
  once.abort();
  await attempt;
  t.is(refused.acked.size, 0, 'no write is acknowledged without its quorum');
  t.true(refused.failures > 0);
  t.true(refused.errors.every((e) => /UNAVAILABLE|INSUFFICIENT|unavailable|replica/i.test(e)), refused.errors.slice(0, 3).join('; '));

  await cluster.restart('blocknode-1');
  await cluster.restart('blocknode-3');
  const after = new Ledger();
  const again = new AbortController();
  await waitFor('writes to succeed again', async () => {
    const probe = new Ledger();
    const c = new AbortController();
    const p = probe.writeUntil(client, '/probe', c.signal, 10_000);
    c.abort();
    await p;
    return probe.acked.size > 0 || (await Promise.resolve(false));
  }, 60_000, 1000).catch(() => undefined);
  const w = after.writeUntil(client, '/after', again.signal, 200_000);
  await after.ackedAtLeast(3, WRITE_MS / 2);
  again.abort();
  await w;
  t.true(after.acked.size > 0, `writes work again: ${after.errors.slice(0, 3).join('; ')}`);
  t.deepEqual(await ledger.verify(client), []);
  t.deepEqual(await after.verify(client), []);
  await waitFor('all three nodes to hold every block', async () => {
    const counts = [...(await blockCounts(t, cluster)).values()];
    return counts.length === 3 && counts[0]! > 0 && counts.every((c) => c === counts[0]);
  }, 90_000, 1000);
});
