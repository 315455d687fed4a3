// The orphan-block sweep end to end: the metadata model (LevelDB) and three real block nodes over
// gRPC. Blocks no chunk names are deleted from every node only after the orphan grace period;
// committed, pinned and freshly written blocks stay; an address being (or just) deleted is refused
// to commits, and a commit restarts the grace clock. Also: the usage recount of old stores.
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ServiceTokenSource } from '../../src/common/auth.js';
import { isCairnError } from '../../src/common/errors.js';
import { createLogger } from '../../src/common/log.js';
import { createMetrics } from '../../src/common/metrics.js';
import { BlockClient, StaticMapSource, createBlockNode, type BlockNode } from '../../src/blocknode/index.js';
import { GcWorker, type GcNode } from '../../src/metadata/index.js';
import { openLevelKv } from '../../src/metadata/kv/index.js';
import * as m from '../../src/metadata/model/index.js';
import { tuple } from '../../src/metadata/model/keys.js';
import { decodeTenantRecord } from '../../src/metadata/model/tenant-record.js';
import { PARTITION_COUNT, type ClusterMap } from '../../src/placement/index.js';

const secret = randomBytes(32);
const tokens = new ServiceTokenSource(secret);
const token = (): Promise<string> => tokens.token();
const T = 'acme';
const HOUR = 3_600_000;
const GRACE = 24 * HOUR;
const HOLD = 10 * 60_000;
const KEEP = 7 * 24 * HOUR;

interface Chunk {
  readonly name: string;
  readonly data: Buffer;
  readonly record: m.ChunkRecord;
}

function chunk(name: string): Chunk {
  const data = randomBytes(3000);
  return { name, data, record: { plainHash: createHash('sha256').update(name).digest(), offset: 0, size: 2000, address: createHash('sha256').update(data).digest(), storedSize: data.length } };
}

function clusterMap(addrs: readonly string[]): ClusterMap {
  const ids = addrs.map((_, i) => `n${i}`);
  return { epoch: 2, replicationFactor: 3, nodes: addrs.map((addr, i) => ({ id: `n${i}`, addr, zone: `z${i}`, weight: 1, state: 'up' as const })), partitions: Array.from({ length: PARTITION_COUNT }, () => [...ids]) };
}

async function setup(t: ExecutionContext): Promise<{ ctx: m.ModelContext; clock: { t: number }; gc: GcWorker; nodes: BlockNode[]; clients: BlockClient[] }> {
  const dirs = [0, 1, 2].map(() => mkdtempSync(join(tmpdir(), 'cairn-orphan-bn-')));
  const metaDir = mkdtempSync(join(tmpdir(), 'cairn-orphan-meta-'));
  t.teardown(() => [...dirs, metaDir].forEach((d) => rmSync(d, { recursive: true, force: true })));
  const sources = dirs.map(() => new StaticMapSource(clusterMap(['127.0.0.1:1', '127.0.0.1:1', '127.0.0.1:1'])));
  const nodes: BlockNode[] = [];
  for (let i = 0; i < 3; i++) {
    nodes.push(await createBlockNode({
      dataDir: dirs[i]!, host: '127.0.0.1', port: 0, credentials: grpc.ServerCredentials.createInsecure(), authSecret: secret,
      log: createLogger({ level: 'silent', name: `${t.title}-n${i}` }), metrics: createMetrics({ processMetrics: false }),
      nodeId: `n${i}`, map: sources[i]!, peerCredentials: grpc.credentials.createInsecure(), token,
    }));
  }
  const map = clusterMap(nodes.map((n) => `127.0.0.1:${n.port}`));
  for (const s of sources) s.set(map);
  const clients = map.nodes.map((n) => new BlockClient({ address: n.addr, credentials: grpc.credentials.createInsecure(), token }));
  const kv = await openLevelKv({ dir: metaDir });
  const clock = { t: 1_700_000_000_000 };
  const ctx = m.createContext(kv, { clock: () => clock.t, deletionLeaseMs: HOLD });
  const gc = new GcWorker({
    source: { claim: (max) => m.claimDeletions(ctx, max), finish: (done) => m.finishDeletions(ctx, done), release: (c, ms) => m.releaseDeletions(ctx, c, ms) },
    nodes: async (): Promise<GcNode[]> => map.nodes.map((n) => ({ id: n.id, addr: n.addr, state: n.state })),
    credentials: grpc.credentials.createInsecure(),
    token,
    log: createLogger({ level: 'silent', name: t.title }),
    intervalMs: 0,
    now: () => clock.t,
    orphans: {
      source: {
        referenced: () => m.referencedAddresses(ctx),
        note: (c, g) => m.noteOrphans(ctx, c, g),
        claim: (a, h) => m.claimOrphans(ctx, a, h),
        end: (a, h, k) => m.endOrphanClaims(ctx, a, h, k),
        forget: (a) => m.forgetOrphans(ctx, a),
      },
      graceMs: GRACE,
      holdMs: HOLD,
      tombstoneMs: KEEP,
      intervalMs: 0,
    },
  });
  t.teardown(async () => {
    await gc.stop();
    for (const c of clients) c.close();
    for (const n of nodes) await n.stop(1000);
    await kv.close();
  });
  return { ctx, clock, gc, nodes, clients };
}

const putEverywhere = async (clients: readonly BlockClient[], chunks: readonly Chunk[]): Promise<void> => {
  for (const c of clients) await c.putBlocks(chunks.map((ch) => ({ address: ch.record.address, data: ch.data })));
};
const holders = (nodes: readonly BlockNode[], ch: Chunk): Promise<boolean[]> => Promise.all(nodes.map(async (n) => (await n.store.has([ch.record.address]))[0] === true));
const commit = (ctx: m.ModelContext, path: string, ch: Chunk, blocksSinceMs?: number): Promise<m.VersionRecord> => m.commitFile(ctx, { tenant: T, path, size: ch.record.size, mtimeMs: 1, authorDevice: 'd', chunks: [{ ...ch.record, offset: 0 }], blocksSinceMs });

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    return isCairnError(err) ? err.code : String(err);
  }
}

test.serial('orphan blocks go from every node after the grace period; referenced, pinned and fresh blocks stay', async (t) => {
  t.timeout(120_000);
  const { ctx, clock, gc, nodes, clients } = await setup(t);
  const [live, pinned, orphan, late, adopted] = ['live', 'pinned', 'orphan', 'late', 'adopted'].map(chunk) as [Chunk, Chunk, Chunk, Chunk, Chunk];
  await putEverywhere(clients, [live, pinned, orphan, adopted]);
  await commit(ctx, '/live', live);
  const session = await m.createSession(ctx, { tenant: T, path: '/upload', mtimeMs: 1, authorDevice: 'd' });
  await m.appendChunks(ctx, T, session.id, 0, [{ ...pinned.record, offset: 0 }]);

  t.like(await gc.sweepOrphans(), { seen: 2, deleted: 0 }, 'orphan and adopted are unreferenced, but only just');
  clock.t += GRACE / 2;
  await commit(ctx, '/adopted', adopted); // committed: its grace clock is gone
  await putEverywhere(clients, [late]); // a fresh upload's block, not committed yet
  t.like(await gc.sweepOrphans(), { seen: 2, deleted: 0 }, 'orphan and late');
  clock.t += GRACE / 2 + 1;
  t.like(await gc.sweepOrphans(), { seen: 2, deleted: 1 }, 'only the orphan is past its grace');
  t.deepEqual(await holders(nodes, orphan), [false, false, false], 'deleted on every node');
  for (const kept of [live, pinned, adopted, late]) t.deepEqual(await holders(nodes, kept), [true, true, true], `${kept.name} stays`);

  // The deleted address is refused for the hold period, and after it to an upload that began
  // writing its blocks before the deletion (it must write them again) for the tombstone retention;
  // an upload that began after the deletion wrote the block afresh and commits it.
  const deletedAt = clock.t;
  t.is(await code(commit(ctx, '/orphan', orphan, clock.t)), 'CAIRN_UNAVAILABLE');
  clock.t += HOLD + 1;
  t.is(await code(commit(ctx, '/orphan', orphan, deletedAt - GRACE)), 'CAIRN_UNAVAILABLE', 'an upload from before the deletion');
  t.is(await code(commit(ctx, '/orphan', orphan)), 'CAIRN_UNAVAILABLE', 'a writer that does not say');
  await putEverywhere(clients, [orphan]);
  await commit(ctx, '/orphan', orphan, deletedAt + m.BLOCKS_SINCE_SKEW_MS + 1);
  await commit(ctx, '/late', late);
  clock.t += GRACE + 1;
  t.like(await gc.sweepOrphans(), { seen: 0, deleted: 0 }, 'everything is referenced now');
  for (const kept of [live, pinned, adopted, late, orphan]) t.deepEqual(await holders(nodes, kept), [true, true, true], `${kept.name} stays`);
});

test.serial('a block adopted between the orphan claim and the deletion is kept', async (t) => {
  t.timeout(120_000);
  const { ctx, clock, gc, nodes, clients } = await setup(t);
  const x = chunk('x');
  await putEverywhere(clients, [x]);
  await gc.sweepOrphans();
  clock.t += GRACE + 1;
  // Claim by hand, as the sweep would, then race a commit: it is refused while the claim holds.
  const hex = x.record.address.toString('hex');
  t.deepEqual(await m.noteOrphans(ctx, new Set([hex]), GRACE), [hex]);
  t.deepEqual(await m.claimOrphans(ctx, [hex], HOLD), [hex]);
  t.is(await code(commit(ctx, '/x', x)), 'CAIRN_UNAVAILABLE', 'claimed: refused');
  await m.endOrphanClaims(ctx, [hex], 0); // handed back
  await commit(ctx, '/x', x);
  t.like(await gc.sweepOrphans(), { seen: 0, deleted: 0 });
  t.deepEqual(await holders(nodes, x), [true, true, true]);
});

test.serial('stores written before the usage counters are recounted once', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-recount-'));
  const kv = await openLevelKv({ dir });
  t.teardown(async () => {
    await kv.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const ctx = m.createContext(kv, { defaultPolicy: { keepLast: 2 } });
  for (const [tenant, n] of [['a', 3], ['b', 1]] as const) {
    for (let i = 0; i < n; i++) await m.commitFile(ctx, { tenant, path: '/f', size: 2000, mtimeMs: 1, authorDevice: 'd', chunks: [{ ...chunk(`${tenant}${i}`).record, offset: 0 }] });
  }
  await commit(ctx, '/h', chunk('acme-h'));
  await m.commitFile(ctx, { tenant: 'b', path: '/g', size: 2000, mtimeMs: 1, authorDevice: 'd', chunks: [{ ...chunk('b-g').record, offset: 0 }] });
  const before = await Promise.all(['a', 'b', T].map((x) => m.getUsage(kv, x)));
  // Strip the counters, as a store written before they existed has none.
  for (const tenant of ['a', 'b', T]) {
    await kv.transact(async (tx) => {
      const key = tuple('t', tenant);
      const raw = await tx.get(key);
      const rec = raw === undefined ? {} : { ...decodeTenantRecord(raw) };
      delete rec.u;
      tx.put(key, Buffer.from(JSON.stringify(rec)));
    });
  }
  t.like(await m.getUsage(kv, T), { versions: 0, versionBytes: 0 }, 'no counters');
  const recounted = await m.recountUncounted(ctx, (after) => m.listTenantIds(ctx, after));
  t.deepEqual(recounted.sort(), ['a', 'acme', 'b'].sort());
  t.deepEqual(await Promise.all(['a', 'b', T].map((x) => m.getUsage(kv, x))), before, 'recounted to the same figures');
  t.deepEqual(await m.recountUncounted(ctx, (after) => m.listTenantIds(ctx, after)), [], 'only once');
});
