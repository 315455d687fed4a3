// The Admin API over real gRPC against a real `cairn server --role metadata` child process: a
// block-node-like client registers, heartbeats and watches the map; tenants and tokens honour
// who may mint what; bad input gets the right status and changes nothing.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { credentials } from '@grpc/grpc-js';
import { signToken, type Role } from '../../src/common/auth.js';
import { isCairnError } from '../../src/common/errors.js';
import { AdminClient, MetadataClient } from '../../src/metadata/index.js';
import { createHash } from 'node:crypto';
import { PARTITION_COUNT } from '../../src/placement/index.js';
import { startServer, suiteScope, type ServerProcess } from '../helpers/cluster.js';

const scope = suiteScope('admin-service');
let server: ServerProcess | undefined;
let secret: Uint8Array | undefined;

test.before(async () => {
  server = await startServer(scope, [], { role: 'metadata' });
  secret = Buffer.from(readFileSync(join(server.dataDir, 'auth.key'), 'utf8').trim(), 'base64url');
});

test.after.always(() => scope.close());

async function client(t: { teardown(fn: () => void): void }, tenant: string, role: Role): Promise<AdminClient> {
  if (server === undefined || secret === undefined) throw new Error('server did not start');
  const token = await signToken(secret, { tenant, role });
  const c = new AdminClient({ address: server.grpc, credentials: credentials.createInsecure(), token: () => token });
  t.teardown(() => c.close());
  return c;
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    return isCairnError(err) ? err.code : String(err);
  }
}

const stats = { blocks: 10, bytes: 1000, capacityBytes: 2 ** 40, underReplicatedPartitions: 0, bytesToMove: 0, soleCopies: 0 };

test.serial('a block node registers, heartbeats, gets and watches the map', async (t) => {
  t.timeout(60_000);
  const admin = await client(t, 'system', 'service');
  const abort = new AbortController();
  t.teardown(() => abort.abort());
  const start = (await admin.getClusterMap()).map.epoch;
  const watched: number[] = [];
  const watching = (async () => {
    for await (const map of admin.watchClusterMap(start, abort.signal)) {
      watched.push(map.epoch);
      if (watched.length === 3) return;
    }
  })();
  const nodes = [];
  for (let i = 0; i < 3; i++) {
    const r = await admin.registerNode({ id: `bn-${i}`, addr: `127.0.0.1:${7500 + i}`, zone: `z${i}`, capacityBytes: 2 ** 40 });
    t.true(r.newIncarnation);
    t.is(r.node.state, 'joining');
    nodes.push(r.node);
  }
  const again = await admin.registerNode({ id: 'bn-0', incarnation: nodes[0]!.incarnation, addr: '127.0.0.1:7500', zone: 'z0', capacityBytes: 2 ** 40 });
  t.false(again.newIncarnation, 'restart with the same storage');
  const beat = await admin.heartbeat('bn-1', nodes[1]!.incarnation, stats);
  t.is(beat.state, 'joining');
  const { map, previous } = await admin.getClusterMap();
  t.is(beat.epoch, map.epoch);
  t.is(map.epoch, start + 3);
  t.is(map.replicationFactor, 3);
  t.is(map.partitions.length, PARTITION_COUNT);
  t.true(map.partitions.every((row) => new Set(row).size === 3));
  t.is(previous?.epoch, map.epoch - 1);
  t.is((await admin.getClusterMap(start + 1)).map.nodes.length, 1);
  await Promise.race([watching, new Promise((_, reject) => setTimeout(() => reject(new Error(`watch saw ${watched.join(',')}`)), 30_000).unref())]);
  t.deepEqual(watched, [start + 1, start + 2, start + 3]);
  const listed = await admin.listNodes();
  t.deepEqual(listed.map((n) => n.id).filter((id) => id.startsWith('bn-')).sort(), ['bn-0', 'bn-1', 'bn-2']);
  t.is(listed.find((n) => n.id === 'bn-1')?.stats?.blocks, 10);
  t.deepEqual(await admin.getDrainStatus('bn-2'), { draining: false, soleCopies: 0, bytesToMove: 0, done: false });
  t.deepEqual(await admin.leaseJobs({ kinds: ['media.thumb'], worker: 'w1', max: 5 }), [], 'nothing queued');
  t.deepEqual(await admin.queueDepth(), {});
  const metrics = await (await fetch(`${server!.http}/metrics`)).text();
  t.regex(metrics, new RegExp(`^cairn_cluster_epoch ${map.epoch}$`, 'm'));
  t.regex(metrics, /^cairn_cluster_nodes\{state="joining"\} [1-9]/m);
});

test.serial('MarkNodeDown marks a node down in a new epoch, is idempotent and respects the RF−1 cap', async (t) => {
  t.timeout(60_000);
  const admin = await client(t, 'system', 'service');
  for (let i = 3; i < 5; i++) await admin.registerNode({ id: `bn-${i}`, addr: `127.0.0.1:${7500 + i}`, zone: `z${i}`, capacityBytes: 2 ** 40 });
  const before = (await admin.getClusterMap()).map.epoch;
  const down = await admin.markNodeDown('bn-3');
  t.is(down.node.id, 'bn-3');
  t.is(down.node.state, 'down');
  t.is(down.epoch, before + 1);
  const { map } = await admin.getClusterMap();
  t.is(map.epoch, down.epoch);
  t.false(map.partitions.some((row) => row.includes('bn-3')), 'its replicas are placed elsewhere');
  const again = await admin.markNodeDown('bn-3');
  t.is(again.epoch, down.epoch, 'idempotent');
  t.is((await admin.markNodeDown('bn-4')).node.state, 'down', 'RF 3 tolerates two down');
  t.is(await code(admin.markNodeDown('bn-0')), 'CAIRN_FAILED_PRECONDITION', 'a third would exceed RF−1');
  t.is(await code(admin.markNodeDown('no-such-node')), 'CAIRN_NOT_FOUND');
  t.is((await admin.getClusterMap()).map.epoch, down.epoch + 1, 'refusals made no epoch');
  t.is((await admin.listNodes()).find((n) => n.id === 'bn-0')?.state, 'joining');
  // Bring them back so later tests see the cluster as it was.
  t.is((await admin.markNodeUp('bn-3')).node.state, 'up');
  t.is((await admin.markNodeUp('bn-4')).node.state, 'up');
  const root = await client(t, 'system', 'admin');
  t.is(await code(root.markNodeDown('bn-0')), 'CAIRN_PERMISSION_DENIED', 'a service token is needed');
});

test.serial('bad input gets the right status and changes nothing', async (t) => {
  t.timeout(60_000);
  const admin = await client(t, 'system', 'service');
  const before = await admin.getClusterMap();
  t.is(await code(admin.heartbeat('no-such-node', 'a'.repeat(32), stats)), 'CAIRN_NOT_FOUND');
  t.is(await code(admin.drainNode('no-such-node')), 'CAIRN_NOT_FOUND');
  t.is(await code(admin.getClusterMap(before.map.epoch + 100)), 'CAIRN_INVALID_ARGUMENT', 'an epoch from the future');
  t.is(await code(admin.registerNode({ id: 'neg', addr: '127.0.0.1:7600', zone: 'z', weight: -2 })), 'CAIRN_INVALID_ARGUMENT');
  t.is(await code(admin.registerNode({ id: 'Bad Id', addr: '127.0.0.1:7600' })), 'CAIRN_INVALID_ARGUMENT');
  t.is(await code(admin.removeNode('bn-0')), 'CAIRN_FAILED_PRECONDITION', 'remove before drain');
  t.is(await code(admin.leaseJobs({ kinds: ['Not A Kind'], worker: 'w' })), 'CAIRN_INVALID_ARGUMENT');
  t.is(await code(admin.leaseJobs({ kinds: ['media'], worker: 'w', waitMs: 30_001 })), 'CAIRN_INVALID_ARGUMENT', 'a wait over 30 s');
  t.is(await code(admin.completeJob('0'.repeat(32), 'f'.repeat(32))), 'CAIRN_NOT_FOUND');
  const abort = new AbortController();
  t.teardown(() => abort.abort());
  const ahead = admin.watchClusterMap(before.map.epoch + 5, abort.signal);
  t.is(await code(ahead.next()), 'CAIRN_INVALID_ARGUMENT');
  const after = await admin.getClusterMap();
  t.is(after.map.epoch, before.map.epoch, 'no new epoch');
  t.false((await admin.listNodes()).some((n) => n.id === 'neg'));
});

test.serial('LeaseJobs with wait_ms is a long poll that a media commit ends at once', async (t) => {
  t.timeout(60_000);
  const admin = await client(t, 'system', 'service');
  const serviceToken = await signToken(secret!, { tenant: 'system', role: 'service' });
  const metadata = new MetadataClient({ address: server!.grpc, credentials: credentials.createInsecure(), token: () => serviceToken });
  t.teardown(() => metadata.close());
  const h = createHash('sha256').update('long-poll').digest();
  const started = performance.now();
  const waiting = admin.leaseJobs({ kinds: ['media'], worker: 'w-long', max: 4, leaseMs: 30_000, waitMs: 25_000 });
  await new Promise((r) => setTimeout(r, 300));
  await metadata.commitFile({ tenant: 'longpoll', path: '/long-poll.jpg', size: 100, mtime_ms: 1, author_device: 'd', chunks: [{ plain_hash: h, offset: 0, size: 100, address: createHash('sha256').update(h).digest(), stored_size: 128 }], media_kind: 'image/jpeg' });
  const leased = await waiting;
  const took = performance.now() - started;
  t.is(leased.length, 1);
  t.regex(leased[0]!.job.payload, /long-poll\.jpg/);
  t.true(took >= 250 && took < 10_000, `answered on the commit, not at the end of the wait (${Math.round(took)} ms)`);
  await admin.completeJob(leased[0]!.job.id, leased[0]!.leaseToken);

  // Cancelling the call ends the wait on both sides.
  const abort = new AbortController();
  const cancelled = admin.leaseJobs({ kinds: ['media'], worker: 'w-long', waitMs: 25_000, signal: abort.signal });
  setTimeout(() => abort.abort(), 200);
  t.is(await code(cancelled), 'CAIRN_CANCELLED');
});

test.serial('tenants and tokens: cluster admins create tenants; tenant admins mint only for their own tenant', async (t) => {
  t.timeout(60_000);
  const root = await client(t, 'system', 'admin');
  const created = await root.createTenant('acme', 'Acme Corp');
  t.is(created.name, 'acme');
  t.is(await code(root.createTenant('acme')), 'CAIRN_ALREADY_EXISTS');
  t.is(await code(root.createTenant('Bad Tenant!')), 'CAIRN_INVALID_ARGUMENT');
  await root.createTenant('globex');
  const page1 = await root.listTenants({ pageSize: 1 });
  t.deepEqual(page1.tenants.map((x) => x.name), ['acme']);
  const page2 = await root.listTenants({ pageSize: 1, pageToken: page1.nextPageToken });
  t.deepEqual(page2.tenants.map((x) => x.name), ['globex']);
  t.is(await code(root.listTenants({ pageToken: '!!!' })), 'CAIRN_INVALID_PAGE_TOKEN');

  const minted = await root.createToken({ tenant: 'acme', role: 'admin', ttlSeconds: 3600 });
  t.true(minted.expiresMs > Date.now());
  const acmeAdmin = new AdminClient({ address: server!.grpc, credentials: credentials.createInsecure(), token: () => minted.token });
  t.teardown(() => acmeAdmin.close());
  const userToken = await acmeAdmin.createToken({ tenant: 'acme', role: 'user' });
  t.truthy(userToken.token, 'a tenant admin mints for its own tenant');
  t.is(await code(acmeAdmin.createToken({ tenant: 'globex', role: 'user' })), 'CAIRN_PERMISSION_DENIED', '…but not for another');
  t.is(await code(acmeAdmin.createToken({ tenant: 'acme', role: 'service' as 'user' })), 'CAIRN_PERMISSION_DENIED', 'never service tokens');
  t.is(await code(acmeAdmin.createToken({ tenant: 'acme', role: 'root' as 'user' })), 'CAIRN_INVALID_ARGUMENT');
  t.is(await code(acmeAdmin.createToken({ tenant: 'Bad Tenant!', role: 'user' })), 'CAIRN_INVALID_ARGUMENT');
  t.is(await code(acmeAdmin.createTenant('initech')), 'CAIRN_PERMISSION_DENIED', 'only cluster admins create tenants');
  t.is(await code(root.createToken({ tenant: 'nowhere', role: 'user' })), 'CAIRN_NOT_FOUND');

  // The minted user token works as an identity but has no Admin rights.
  const user = new AdminClient({ address: server!.grpc, credentials: credentials.createInsecure(), token: () => userToken.token });
  t.teardown(() => user.close());
  t.is(await code(user.createToken({ tenant: 'acme', role: 'user' })), 'CAIRN_PERMISSION_DENIED');
  t.is(await code(user.getClusterMap()), 'CAIRN_PERMISSION_DENIED');
  t.is(await code(user.registerNode({ addr: '127.0.0.1:7700' })), 'CAIRN_PERMISSION_DENIED');
  // Node and job methods need a service token, even from an admin.
  t.is(await code(acmeAdmin.drainNode('bn-0')), 'CAIRN_PERMISSION_DENIED');
  t.deepEqual((await root.listTenants()).tenants.map((x) => x.name), ['acme', 'globex'], 'refused calls created nothing');
});

test.serial('quotas and users over the Admin API: cluster admins set quotas, tenant admins manage their own users', async (t) => {
  t.timeout(60_000);
  const root = await client(t, 'system', 'admin');
  const acme = await client(t, 'acme', 'admin');
  const globex = await client(t, 'globex', 'admin');
  const serviceToken = await signToken(secret!, { tenant: 'system', role: 'service' });
  const metadata = new MetadataClient({ address: server!.grpc, credentials: credentials.createInsecure(), token: () => serviceToken });
  t.teardown(() => metadata.close());
  const chunk = (seed: string): { plain_hash: Buffer; offset: number; size: number; address: Buffer; stored_size: number } => {
    const h = createHash('sha256').update(seed).digest();
    return { plain_hash: h, offset: 0, size: 100, address: createHash('sha256').update('sealed:' + seed).digest(), stored_size: 128 };
  };
  const commit = (path: string, seed: string): Promise<unknown> => metadata.commitFile({ tenant: 'acme', path, size: 100, mtime_ms: 1, author_device: 'd', chunks: [chunk(seed)] });

  t.like(await root.setTenantQuota('acme', 150), { tenant: 'acme', quotaBytes: 150, versionBytes: 0 });
  await commit('/one', 'one');
  t.is(await code(commit('/two', 'two')), 'CAIRN_QUOTA_EXCEEDED');
  t.like(await acme.getTenantUsage(), { tenant: 'acme', versionBytes: 100, versions: 1, storedBytes: 128, chunks: 1, quotaBytes: 150 }, 'a tenant admin sees its own usage');
  t.like(await root.getTenantUsage('acme'), { versionBytes: 100 });
  t.is(await code(globex.getTenantUsage('acme')), 'CAIRN_PERMISSION_DENIED');
  t.is(await code(acme.setTenantQuota('acme', 10_000)), 'CAIRN_PERMISSION_DENIED', 'only cluster admins set quotas');
  t.is(await code(root.setTenantQuota('acme', -5)), 'CAIRN_INVALID_ARGUMENT');
  await root.setTenantQuota('acme', 0);
  await commit('/two', 'two');

  // Users, so shares can name them.
  t.is(await code(metadata.grantShare({ tenant: 'acme', path: '/one', user: 'alice', permission: 'SHARE_PERMISSION_READ', granted_by: 'admin' })), 'CAIRN_NOT_FOUND', 'no such user yet');
  t.like(await acme.createUser({ user: 'alice', displayName: 'Alice' }), { tenant: 'acme', user: 'alice', displayName: 'Alice' });
  await root.createUser({ tenant: 'acme', user: 'bob' });
  t.is(await code(globex.createUser({ tenant: 'acme', user: 'mallory' })), 'CAIRN_PERMISSION_DENIED');
  t.is(await code(acme.createUser({ user: 'bad user!' })), 'CAIRN_INVALID_ARGUMENT');
  await metadata.grantShare({ tenant: 'acme', path: '/one', user: 'alice', permission: 'SHARE_PERMISSION_READ', granted_by: 'admin' });
  const page1 = await acme.listUsers({ pageSize: 1 });
  t.deepEqual(page1.users.map((u) => u.user), ['alice']);
  const page2 = await acme.listUsers({ pageSize: 1, pageToken: page1.nextPageToken });
  t.deepEqual(page2.users.map((u) => u.user), ['bob']);
  t.is(await code(acme.listUsers({ pageToken: '!!' })), 'CAIRN_INVALID_PAGE_TOKEN');
  t.deepEqual((await globex.listUsers()).users, [], 'tenants see only their own users');
  await acme.deleteUser({ user: 'alice' });
  t.is(await code(acme.deleteUser({ user: 'alice' })), 'CAIRN_NOT_FOUND');
  t.deepEqual((await acme.listUsers()).users.map((u) => u.user), ['bob']);
  t.deepEqual((await metadata.listShares({ tenant: 'acme', path: '/one' })).grants, [], 'deleting a user removed its grants');

  // GC claims need a service token.
  t.is(await code(root.claimDeletions()), 'CAIRN_PERMISSION_DENIED');
  const svc = await client(t, 'system', 'service');
  t.deepEqual((await svc.claimDeletions()).deletions, [], 'nothing is due yet');
  t.is(await code(svc.claimDeletions(5000)), 'CAIRN_INVALID_ARGUMENT');
  t.is(await code(svc.finishDeletions({ done: [{ tenant: 'acme', plainHash: Buffer.alloc(3) }] })), 'CAIRN_INVALID_HASH');
});

test.serial('retention policy over the Admin API: pruning by count releases refs exactly once; usage recount', async (t) => {
  t.timeout(60_000);
  const root = await client(t, 'system', 'admin');
  const initech = await client(t, 'initech', 'admin');
  const globex = await client(t, 'globex', 'admin');
  const serviceToken = await signToken(secret!, { tenant: 'system', role: 'service' });
  const metadata = new MetadataClient({ address: server!.grpc, credentials: credentials.createInsecure(), token: () => serviceToken });
  t.teardown(() => metadata.close());
  const chunk = (seed: string): { plain_hash: Buffer; offset: number; size: number; address: Buffer; stored_size: number } => {
    const h = createHash('sha256').update(seed).digest();
    return { plain_hash: h, offset: 0, size: 100, address: createHash('sha256').update('sealed:' + seed).digest(), stored_size: 128 };
  };
  const commit = (seed: string): Promise<unknown> => metadata.commitFile({ tenant: 'initech', path: '/doc', size: 100, mtime_ms: 1, author_device: 'd', chunks: [chunk(seed)] });

  t.like(await initech.getRetentionPolicy(), { tenant: 'initech', policy: { keepDays: 30, trashDays: 30 } }, 'the service default');
  t.deepEqual(await initech.setRetentionPolicy('', { keepLast: 2 }), { tenant: 'initech', policy: { keepLast: 2, trashDays: 30 } });
  t.deepEqual((await root.getRetentionPolicy('initech')).policy, { keepLast: 2, trashDays: 30 });
  t.is(await code(globex.setRetentionPolicy('initech', { keepLast: 1 })), 'CAIRN_PERMISSION_DENIED', 'another tenant\'s admin');
  t.is(await code(initech.setRetentionPolicy('', { keepLast: 0 })), 'CAIRN_INVALID_ARGUMENT');
  t.is(await code(initech.setRetentionPolicy('', { keepDays: 40_000 })), 'CAIRN_INVALID_ARGUMENT');
  t.deepEqual((await initech.getRetentionPolicy()).policy, { keepLast: 2, trashDays: 30 }, 'bad input changed nothing');

  for (const seed of ['v1', 'v2', 'v3', 'v4']) await commit(seed);
  const versions = await metadata.listVersions({ tenant: 'initech', path: '/doc', page_size: 100, page_token: '' });
  t.is(versions.versions.length, 2, 'keep-last 2 pruned the older versions');
  const refs = await metadata.findChunks({ tenant: 'initech', plain_hashes: ['v1', 'v2', 'v3', 'v4'].map((s) => chunk(s).plain_hash) });
  t.deepEqual(refs.chunks.map((c) => Number(c.refs)).sort(), [0, 0, 1, 1], 'each pruned version released its ref once');
  const usage = await root.getTenantUsage('initech');
  t.like(usage, { versionBytes: 200, versions: 2, chunks: 4 });
  t.deepEqual(await root.recountUsage('initech'), usage, 'a recount of consistent counters changes nothing');
  t.is(await code(initech.recountUsage('initech')), 'CAIRN_PERMISSION_DENIED', 'only cluster admins recount');
  t.is(await code(root.recountUsage('')), 'CAIRN_INVALID_ARGUMENT');
});
