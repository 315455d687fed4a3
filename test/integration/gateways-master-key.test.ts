// Two gateways of one cluster share the master key and so the tenants' data: a file written
// through one reads back through the other; a gateway with its own key cannot read it.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { CairnClient } from '../../src/client/index.js';
import { CairnError } from '../../src/common/errors.js';
import { runCli, startServer, tempDir } from '../helpers/cluster.js';

async function readAll(client: CairnClient, path: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of client.read(path)) if ('data' in p) parts.push(p.data);
  return Buffer.concat(parts);
}

test('gateways with the same master key file read each other\'s writes; another key gets CAIRN_DATA_LOSS', async (t) => {
  const root = tempDir(t);
  const secret = join(root, 'auth.key');
  const masterKey = join(root, 'master.key');
  writeFileSync(masterKey, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
  const shared = ['--auth-secret-file', secret];
  const metadata = await startServer(t, shared, { role: 'metadata', dataDir: join(root, 'm') });
  const blocknode = await startServer(t, shared, { role: 'blocknode', dataDir: join(root, 'b') });
  const gw = (name: string, extra: string[]): ReturnType<typeof startServer> =>
    startServer(t, [...shared, '--metadata-addr', metadata.grpc, '--blocknode-addr', blocknode.grpc, ...extra], { role: 'gateway', dataDir: join(root, name) });
  const [g1, g2, stranger] = await Promise.all([gw('g1', ['--master-key-file', masterKey]), gw('g2', ['--master-key-file', masterKey]), gw('g3', [])]);
  const minted = await runCli(['token', 'create', '--auth-secret-file', secret, '--tenant', 'acme', '--role', 'user']);
  t.is(minted.code, 0, minted.stderr);
  const token = minted.stdout.trim();
  const clients = [g1, g2, stranger].map((g) => new CairnClient({ endpoint: g.grpc, token }));
  t.teardown(() => clients.forEach((c) => c.close()));
  const [c1, c2, c3] = clients as [CairnClient, CairnClient, CairnClient];

  const data = randomBytes(3 * 1024 * 1024 + 11);
  // Both gateways' first uses race to create the tenant key; they must agree on one.
  const [a, b] = await Promise.all([
    c1.putStream(Readable.from([data]), '/shared/one.bin', { size: data.length }),
    c2.putStream(Readable.from([data.subarray(1000)]), '/shared/two.bin', { size: data.length - 1000 }),
  ]);
  t.is(a.size, data.length);
  t.is(b.size, data.length - 1000);
  t.true((await readAll(c2, '/shared/one.bin')).equals(data));
  t.true((await readAll(c1, '/shared/two.bin')).equals(data.subarray(1000)));
  const err = await t.throwsAsync(readAll(c3, '/shared/one.bin'));
  t.true(err instanceof CairnError && err.code === 'CAIRN_DATA_LOSS', String(err));
});
