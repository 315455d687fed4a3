// kill -9 the metadata service during uploads: LevelDB (one process, restarted) and PostgreSQL
// (two replicas; one is killed and the clients fail over). No acknowledged commit may be lost,
// and no partial commit may be visible: every file present reads back as exactly what was sent.
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CairnClient } from '../../src/client/index.js';
import { startPostgres } from '../helpers/postgres.js';
import { waitFor } from '../cluster/harness.js';
import { Ledger, clientFor, sha256, startDevCluster } from './harness.js';

const WRITE_MS = Number(process.env['CAIRN_CHAOS_WRITE_MS'] ?? 4000);

/** Every file under the prefixes must be one that was sent (whole), acknowledged or not. */
async function noPartialCommits(client: CairnClient, ledger: Ledger, prefixes: readonly string[]): Promise<string[]> {
  const bad: string[] = [];
  for (const prefix of prefixes) {
    let token: string | undefined;
    do {
      const page = await client.list(prefix, { pageSize: 1000, ...(token !== undefined ? { pageToken: token } : {}) }).catch(() => undefined);
      if (page === undefined) break;
      for (const e of page.entries) {
        if (e.folder) continue;
        const sent = ledger.sent.get(e.path);
        if (sent === undefined) {
          bad.push(`${e.path}: never sent`);
          continue;
        }
        const parts: Buffer[] = [];
        for await (const p of client.read(e.path)) if ('data' in p) parts.push(p.data);
        if (sha256(Buffer.concat(parts)) !== sent) bad.push(`${e.path}: content is not what was sent`);
      }
      token = page.nextPageToken === '' ? undefined : page.nextPageToken;
    } while (token !== undefined);
  }
  return bad;
}

test.serial('kill -9 the LevelDB metadata service mid-commit: every acknowledged commit survives, none is partial', async (t) => {
  t.timeout(170_000);
  const cluster = await startDevCluster(t);
  const client = await clientFor(t, cluster);
  const ledger = new Ledger();
  const stop = new AbortController();
  const writers = Promise.all([0, 1, 2].map((w) => ledger.writeUntil(client, `/m${w}`, stop.signal, 200_000)));
  for (let round = 0; round < 2; round++) {
    await ledger.ackedAtLeast(ledger.acked.size + 4, WRITE_MS / 2);
    await cluster.kill('metadata-1');
    await sleep(500);
    await cluster.restart('metadata-1');
  }
  await ledger.ackedAtLeast(ledger.acked.size + 4, WRITE_MS / 2);
  stop.abort();
  await writers;
  t.log(`acknowledged ${ledger.acked.size}, failed ${ledger.failures}`);
  t.true(ledger.acked.size > 5);
  t.deepEqual(await ledger.verify(client), [], 'every acknowledged commit is present and intact');
  t.deepEqual(await noPartialCommits(client, ledger, ['/m0', '/m1', '/m2']), []);
});

test.serial('PostgreSQL with two metadata replicas: kill -9 one during uploads, clients fail over, nothing lost or partial', async (t) => {
  t.timeout(170_000);
  const pg = await startPostgres();
  t.teardown(() => pg.stop());
  const url = await pg.createDatabase('chaos');
  const cluster = await startDevCluster(t, { backend: 'postgres', postgresUrl: url, metadataReplicas: 2, gateways: 2 });
  const clients = [await clientFor(t, cluster, 0), await clientFor(t, cluster, 1)];
  const ledger = new Ledger();
  const stop = new AbortController();
  const writers = Promise.all([0, 1, 2, 3].map((w) => ledger.writeUntil(clients[w % 2]!, `/q${w}`, stop.signal, 200_000)));
  await ledger.ackedAtLeast(8, WRITE_MS);
  await cluster.kill('metadata-1');
  const atKill = ledger.acked.size;
  await ledger.ackedAtLeast(atKill + 8, WRITE_MS * 1.5);
  stop.abort();
  await writers;
  t.log(`acknowledged ${ledger.acked.size} (${ledger.acked.size - atKill} after the kill), failed ${ledger.failures}`);
  t.true(ledger.acked.size - atKill > 0, `uploads continue through the surviving replica: ${ledger.errors.slice(-3).join('; ')}`);
  for (const c of clients) t.deepEqual(await ledger.verify(c), []);
  t.deepEqual(await noPartialCommits(clients[0]!, ledger, ['/q0', '/q1', '/q2', '/q3']), []);
  await cluster.restart('metadata-1');
  await waitFor('the restarted replica to serve', async () => (await ledger.verify(clients[0]!)).length === 0, 30_000, 1000);
});
