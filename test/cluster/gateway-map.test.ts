// The development path of the README: block nodes and a gateway reading one static map file
// (--cluster-map); a file uploaded through the gateway lands as three copies of every chunk.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { CairnClient } from '../../src/client/index.js';
import { runCli, startServer } from '../helpers/cluster.js';
import { TestCluster, waitFor } from './harness.js';

test('a gateway with --cluster-map writes every chunk to its three owners and reads it back', async (t) => {
  t.timeout(90_000);
  const cluster = new TestCluster(t);
  await Promise.all(['n1', 'n2', 'n3'].map((id) => cluster.startNode(id)));
  cluster.publish(3);
  await cluster.waitForEpoch();
  const shared = ['--auth-secret-file', cluster.secretPath];
  const metadata = await startServer(t, shared, { role: 'metadata', dataDir: join(cluster.root, 'm') });
  const gateway = await startServer(t, [...shared, '--metadata-addr', metadata.grpc, '--cluster-map', cluster.mapPath], { role: 'gateway', dataDir: join(cluster.root, 'g') });
  const minted = await runCli(['token', 'create', '--auth-secret-file', cluster.secretPath, '--tenant', 'acme', '--role', 'user']);
  t.is(minted.code, 0, minted.stderr);
  const client = new CairnClient({ endpoint: gateway.grpc, token: minted.stdout.trim() });
  t.teardown(() => client.close());
  const data = randomBytes(2 * 1024 * 1024 + 5);
  const info = await client.putStream(Readable.from([data]), '/map/file.bin', { size: data.length });
  // W = 2 acknowledges the upload; the third copy may land a moment later.
  await waitFor('three copies of every chunk', async () => {
    let blocks = 0;
    for (const n of cluster.nodes.values()) blocks += Number((await n.client.stats()).blocks);
    return blocks === 3 * info.chunkCount;
  });
  const parts: Buffer[] = [];
  for await (const p of client.read('/map/file.bin')) if ('data' in p) parts.push(p.data);
  t.true(Buffer.concat(parts).equals(data));
});
