// Block nodes managed by the metadata service: they register and heartbeat, follow the map it
// publishes, a gateway stores files across them, and a drain started through the Admin API
// completes (metadata sees no sole copies) with every block still at RF, file readable throughout.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { credentials } from '@grpc/grpc-js';
import { ServiceTokenSource, loadOrCreateSecret } from '../../src/common/auth.js';
import { BlockClient } from '../../src/blocknode/index.js';
import { CairnClient } from '../../src/client/index.js';
import { AdminClient } from '../../src/metadata/index.js';
import { runCli, startServer, tempDir } from '../helpers/cluster.js';
import { waitFor } from './harness.js';

test('a metadata-managed cluster stores a file at RF and drains a node without losing a copy', async (t) => {
  t.timeout(150_000);
  const root = tempDir(t, 'cairn-mdmap-');
  const secretPath = join(root, 'auth.key');
  const tokens = new ServiceTokenSource(loadOrCreateSecret(secretPath));
  const token = (): Promise<string> => tokens.token();
  const shared = ['--auth-secret-file', secretPath];
  const metadata = await startServer(t, [...shared, '--replication-factor', '3'], { role: 'metadata', dataDir: join(root, 'm') });
  const nodeArgs = [...shared, '--metadata-addr', metadata.grpc, '--heartbeat-interval-ms', '300', '--anti-entropy-interval-ms', '300', '--rebalance-settle-ms', '1500', '--scrub-interval-ms', '0', '--reserve-bytes', '0'];
  const ids = ['b1', 'b2', 'b3', 'b4'];
  const nodes = new Map<string, BlockClient>();
  await Promise.all(
    ids.map(async (id) => {
      const s = await startServer(t, [...nodeArgs, '--node-id', id], { role: 'blocknode', dataDir: join(root, id) });
      const c = new BlockClient({ address: s.grpc, credentials: credentials.createInsecure(), token });
      t.teardown(() => c.close());
      nodes.set(id, c);
    }),
  );
  const admin = new AdminClient({ address: metadata.grpc, credentials: credentials.createInsecure(), token });
  t.teardown(() => admin.close());
  let epoch = 0;
  await waitFor('a map with four nodes and three copies', async () => {
    const { map } = await admin.getClusterMap();
    epoch = map.epoch;
    return map.nodes.length === 4 && map.replicationFactor === 3 && map.partitions.every((r) => r.length === 3);
  });
  await waitFor('every node on the map epoch', async () => (await Promise.all([...nodes.values()].map((c) => c.stats()))).every((s) => Number(s.map_epoch) >= epoch));

  const gateway = await startServer(t, [...shared, '--metadata-addr', metadata.grpc], { role: 'gateway', dataDir: join(root, 'g') });
  const minted = await runCli(['token', 'create', '--auth-secret-file', secretPath, '--tenant', 'acme', '--role', 'user']);
  t.is(minted.code, 0, minted.stderr);
  const client = new CairnClient({ endpoint: gateway.grpc, token: minted.stdout.trim() });
  t.teardown(() => client.close());
  const data = randomBytes(3 * 1024 * 1024 + 17);
  const info = await client.putStream(Readable.from([data]), '/md/file.bin', { size: data.length });
  const readBack = async (): Promise<Buffer> => {
    const parts: Buffer[] = [];
    for await (const p of client.read('/md/file.bin')) if ('data' in p) parts.push(p.data);
    return Buffer.concat(parts);
  };
  t.true((await readBack()).equals(data));
  const chunks = info.chunkCount;
  const total = async (which: readonly string[]): Promise<number> => {
    let n = 0;
    for (const id of which) n += Number((await nodes.get(id)!.stats()).blocks);
    return n;
  };
  await waitFor('three copies of every chunk', async () => (await total(ids)) === 3 * chunks);

  await admin.drainNode('b4');
  await waitFor('the drain of b4 reported complete', async () => (await admin.getDrainStatus('b4')).done, 60_000, 500);
  t.true((await readBack()).equals(data));
  await waitFor('b4 empty and three copies on the others', async () => (await total(['b4'])) === 0 && (await total(['b1', 'b2', 'b3'])) === 3 * chunks, 60_000, 500);
  await admin.removeNode('b4');
  t.true((await readBack()).equals(data));
});
