// The same components as separate processes: metadata, block node and gateway, each with its own
// data dir, sharing one signing secret, talking gRPC to each other. What the README describes.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { credentials } from '@grpc/grpc-js';
import { BlockClient } from '../../src/blocknode/index.js';
import { CairnClient } from '../../src/client/index.js';
import { runCli, startServer, tempDir } from '../helpers/cluster.js';

test('metadata, blocknode and gateway as separate processes round-trip a file', async (t) => {
  const root = tempDir(t);
  const secret = join(root, 'auth.key');
  const shared = ['--auth-secret-file', secret];
  const metadata = await startServer(t, shared, { role: 'metadata', dataDir: join(root, 'm') });
  const blocknode = await startServer(t, shared, { role: 'blocknode', dataDir: join(root, 'b') });
  const gateway = await startServer(t, [...shared, '--metadata-addr', metadata.grpc, '--blocknode-addr', blocknode.grpc], { role: 'gateway', dataDir: join(root, 'g') });
  const minted = await runCli(['token', 'create', '--auth-secret-file', secret, '--tenant', 'acme', '--role', 'user']);
  t.is(minted.code, 0, minted.stderr);
  const client = new CairnClient({ endpoint: gateway.grpc, token: minted.stdout.trim() });
  t.teardown(() => client.close());
  const data = randomBytes(2 * 1024 * 1024 + 3);
  const info = await client.putStream(Readable.from([data]), '/split/file.bin', { size: data.length });
  t.is(info.size, data.length);
  const parts: Buffer[] = [];
  for await (const p of client.read('/split/file.bin')) if ('data' in p) parts.push(p.data);
  t.true(Buffer.concat(parts).equals(data));
  // Internal services refuse tenant tokens: a user cannot talk to a block node directly.
  const direct = new BlockClient({ address: blocknode.grpc, credentials: credentials.createInsecure(), token: () => minted.stdout.trim() });
  t.teardown(() => direct.close());
  const err = await t.throwsAsync(direct.hasBlocks([randomBytes(32)]));
  t.is((err as { code?: string }).code, 'CAIRN_PERMISSION_DENIED');
});
