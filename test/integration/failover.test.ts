// `--failover-delay-ms` reaches the metadata failure detector: in a real metadata process, a
// registered block node that stops heartbeating is marked down; nodes that heartbeat stay up.
import test from 'ava';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { credentials } from '@grpc/grpc-js';
import { ServiceTokenSource, loadOrCreateSecret } from '../../src/common/auth.js';
import { AdminClient } from '../../src/metadata/index.js';
import { startServer, tempDir } from '../helpers/cluster.js';

test('a silent block node is marked down after --failover-delay-ms; heartbeating ones stay up', async (t) => {
  const dataDir = tempDir(t);
  const metadata = await startServer(t, ['--failover-delay-ms', '2000', '--replication-factor', '2'], { role: 'metadata', dataDir });
  const tokens = new ServiceTokenSource(loadOrCreateSecret(join(dataDir, 'auth.key')));
  const admin = new AdminClient({ address: metadata.grpc, credentials: credentials.createInsecure(), token: () => tokens.token() });
  t.teardown(() => admin.close());
  const stats = { blocks: 0, bytes: 0, capacityBytes: 1 << 30, underReplicatedPartitions: 0, bytesToMove: 0, soleCopies: 0 };
  const nodes = [];
  for (const port of [9001, 9002, 9003]) nodes.push((await admin.registerNode({ addr: `127.0.0.1:${port}`, capacityBytes: 1 << 30 })).node);
  const [a, b, silent] = nodes as [(typeof nodes)[number], (typeof nodes)[number], (typeof nodes)[number]];
  const deadline = Date.now() + 30_000;
  let states: Record<string, string> = {};
  while (Date.now() < deadline) {
    await admin.heartbeat(a.id, a.incarnation, stats);
    await admin.heartbeat(b.id, b.incarnation, stats);
    states = Object.fromEntries((await admin.listNodes()).map((n) => [n.id, n.state]));
    if (states[silent.id] === 'down') break;
    await sleep(300);
  }
  t.is(states[silent.id], 'down', JSON.stringify(states));
  t.not(states[a.id], 'down');
  t.not(states[b.id], 'down');
});
