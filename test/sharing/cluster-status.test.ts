// `cairn cluster status --json` against an embedded-shape stack (one process: no registered block
// nodes) and a small cluster of separate processes (metadata + two block nodes that register),
// through a gateway that forwards to the metadata Admin API.
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'ava';
import { runCli, startServer, tempDir } from '../helpers/cluster.js';
import type { ClusterStatus } from '../../src/client/index.js';
import { startStack } from './harness.js';
import { clientsFor, mint, putBytes, random, request } from './helpers.js';

async function statusJson(grpc: string, token: string): Promise<ClusterStatus> {
  const res = await runCli(['--endpoint', grpc, '--token', token, '--json', 'cluster', 'status']);
  if (res.code !== 0) throw new Error(`cluster status exited ${res.code}: ${res.stderr}`);
  return JSON.parse(res.stdout) as ClusterStatus;
}

async function waitFor<T>(what: string, f: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(300);
  }
}

const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

test('embedded: status reports the map and job queues; non-admins are refused', async (t) => {
  // A sniffer like the media room's: a presigned PUT of a PNG enqueues one media job.
  const stack = await startStack(t, { extensions: [{ sniff: (head) => (Buffer.from(head.subarray(0, 8)).equals(PNG) ? 'image/png' : undefined) }] });
  const admin = await mint(stack.secret, 'acme', 'admin', 'root');
  const empty = await statusJson(stack.grpc, admin);
  t.is(empty.queueDepth, 0);
  const { sharing } = clientsFor(t, stack, await mint(stack.secret, 'acme'));
  const put = await request((await sharing.presign('/pics/a.png', { method: 'PUT' })).url, { method: 'PUT', body: Buffer.concat([PNG, random(2000)]) });
  t.is(put.status, 200);
  const s = await statusJson(stack.grpc, admin);
  t.is(s.nodes.length, 0);
  t.is(s.queueDepth, 1);
  t.deepEqual(s.queues.map((q) => [q.kind, q.ready + q.delayed + q.leased]), [['media', 1]]);
  t.is(s.soleCopies, 0);
  t.true(Number.isInteger(s.mapEpoch));
  const human = await runCli(['--endpoint', stack.grpc, '--token', admin, 'cluster', 'status']);
  t.is(human.code, 0, human.stderr);
  t.regex(human.stdout, /map epoch \d+, replication factor \d+, 0 node/);
  const user = await runCli(['--endpoint', stack.grpc, '--token', await mint(stack.secret, 'acme', 'user'), 'cluster', 'status']);
  t.is(user.code, 4);
  t.regex(user.stderr, /CAIRN_PERMISSION_DENIED/);
});

test('a multi-process cluster: nodes, states, capacity, usage and the map epoch', async (t) => {
  t.timeout(180_000);
  const root = tempDir(t, 'cairn-status-');
  const secretFile = join(root, 'auth.key');
  const shared = ['--auth-secret-file', secretFile];
  const metadata = await startServer(t, [...shared, '--replication-factor', '2'], { role: 'metadata', dataDir: join(root, 'm') });
  const nodeArgs = [...shared, '--metadata-addr', metadata.grpc, '--heartbeat-interval-ms', '300', '--anti-entropy-interval-ms', '300', '--scrub-interval-ms', '0', '--reserve-bytes', '0', '--zone'];
  // One at a time: on a loaded machine, processes started together may each miss the ready timeout.
  for (const [i, id] of ['b1', 'b2'].entries()) await startServer(t, [...nodeArgs, `z${i + 1}`, '--node-id', id, '--capacity-bytes', String(1024 ** 3)], { role: 'blocknode', dataDir: join(root, id) });
  const stack = await startStack(t, { metadataAddr: metadata.grpc, secretFile });
  const admin = await mint(stack.secret, 'ops', 'admin', 'root');

  // New nodes stay "joining" until an operator marks them up; they hold partitions meanwhile.
  const up = await waitFor('two nodes reporting on the current epoch', async () => {
    const s = await statusJson(stack.grpc, admin);
    return s.nodes.length === 2 && s.nodes.every((n) => n.mapEpoch === s.mapEpoch) ? s : undefined;
  });
  for (const n of up.nodes) t.true(['joining', 'up'].includes(n.state), n.state);
  t.is(up.replicationFactor, 2);
  t.true(up.mapEpoch >= 1);
  t.deepEqual(up.nodes.map((n) => [n.id, n.zone, n.capacityBytes]), [['b1', 'z1', 1024 ** 3], ['b2', 'z2', 1024 ** 3]]);
  for (const n of up.nodes) t.regex(n.address, /^127\.0\.0\.1:\d+$/);

  const { files } = clientsFor(t, stack, await mint(stack.secret, 'acme'));
  await putBytes(files, '/data.bin', random(600_000));
  const stored = await waitFor('both replicas reported in heartbeats', async () => {
    const s = await statusJson(stack.grpc, admin);
    return s.nodes.every((n) => n.blocks > 0 && n.usedBytes > 0) && s.soleCopies === 0 ? s : undefined;
  });
  t.is(stored.nodes[0]!.blocks, stored.nodes[1]!.blocks);
  t.is(stored.underReplicatedPartitions, 0);
});
