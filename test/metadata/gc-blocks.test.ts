// The block GC end to end: the metadata model (LevelDB) decides, three real block nodes over gRPC
// (RF 3, anti-entropy on) delete. Only zero-ref, unpinned chunks past their grace period go; a
// chunk re-uploaded around a GC run is never lost; a replica that missed the deletion cannot
// bring the block back through anti-entropy.
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
import { PARTITION_COUNT, type ClusterMap } from '../../src/placement/index.js';

const secret = randomBytes(32);
const tokens = new ServiceTokenSource(secret);
const token = (): Promise<string> => tokens.token();
const T = 'acme';
const MIN = 60_000;

interface Chunk {
  readonly name: string;
  readonly data: Buffer;
  readonly record: m.ChunkRecord;
}

function chunk(name: string): Chunk {
  const data = randomBytes(4000);
  const address = createHash('sha256').update(data).digest();
  return { name, data, record: { plainHash: createHash('sha256').update(name).digest(), offset: 0, size: 3000, address, storedSize: data.length } };
}

interface Cluster {
  readonly nodes: Array<BlockNode | undefined>;
  readonly clients: BlockClient[];
  readonly sources: StaticMapSource[];
  map: ClusterMap;
  readonly dirs: string[];
  restart(i: number): Promise<void>;
  stopNode(i: number): Promise<void>;
  holders(c: Chunk): Promise<boolean[]>;
  passes(i: number): number;
}

function clusterMap(epoch: number, addrs: readonly string[]): ClusterMap {
  const ids = addrs.map((_, i) => `n${i}`);
  return { epoch, replicationFactor: 3, nodes: addrs.map((addr, i) => ({ id: `n${i}`, addr, zone: `z${i}`, weight: 1, state: 'up' as const })), partitions: Array.from({ length: PARTITION_COUNT }, () => [...ids]) };
}

async function cluster(t: ExecutionContext): Promise<Cluster> {
  const dirs = [0, 1, 2].map(() => mkdtempSync(join(tmpdir(), 'cairn-gc-bn-')));
  t.teardown(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  const placeholder = clusterMap(1, ['127.0.0.1:1', '127.0.0.1:1', '127.0.0.1:1']);
  const sources = dirs.map(() => new StaticMapSource(placeholder));
  const nodes: Array<BlockNode | undefined> = [];
  const addrs: string[] = [];
  const clients: BlockClient[] = [];
  const open = async (i: number): Promise<BlockNode> => createBlockNode({
    dataDir: dirs[i]!, host: '127.0.0.1', port: 0, credentials: grpc.ServerCredentials.createInsecure(), authSecret: secret,
    log: createLogger({ level: 'silent', name: `${t.title}-n${i}` }), metrics: createMetrics({ processMetrics: false }),
    nodeId: `n${i}`, map: sources[i]!, peerCredentials: grpc.credentials.createInsecure(), token,
    antiEntropy: { intervalMs: 200, settleMs: 0 },
  });
  for (let i = 0; i < 3; i++) {
    const node = await open(i);
    nodes.push(node);
    addrs.push(`127.0.0.1:${node.port}`);
  }
  const c: Cluster = {
    nodes, clients, sources, dirs,
    map: clusterMap(2, addrs),
    async stopNode(i) {
      await nodes[i]?.stop(1000);
      nodes[i] = undefined;
    },
    async restart(i) {
      const node = await open(i);
      nodes[i] = node;
      addrs[i] = `127.0.0.1:${node.port}`;
      clients[i]?.close();
      clients[i] = new BlockClient({ address: addrs[i], credentials: grpc.credentials.createInsecure(), token });
      c.map = clusterMap(c.map.epoch + 1, addrs);
      for (const s of sources) s.set(c.map);
    },
    async holders(ch) {
      return Promise.all(nodes.map(async (n) => (n === undefined ? false : (await n.store.has([ch.record.address]))[0] === true)));
    },
    passes: (i) => nodes[i]?.status().antientropyPasses ?? 0,
  };
  for (let i = 0; i < 3; i++) clients.push(new BlockClient({ address: addrs[i]!, credentials: grpc.credentials.createInsecure(), token }));
  for (const s of sources) s.set(c.map);
  t.teardown(async () => {
    for (const cl of clients) cl.close();
    for (const n of nodes) await n?.stop(1000);
  });
  return c;
}

async function model(t: ExecutionContext): Promise<{ ctx: m.ModelContext; clock: { t: number } }> {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-gc-meta-'));
  const kv = await openLevelKv({ dir });
  t.teardown(async () => {
    await kv.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const clock = { t: 1_700_000_000_000 };
  return { ctx: m.createContext(kv, { clock: () => clock.t, defaultPolicy: { keepLast: 1 } }), clock };
}

function worker(t: ExecutionContext, ctx: m.ModelContext, c: Cluster, hooks: { afterClaim?: (claims: readonly m.ClaimedDeletion[]) => Promise<void> } = {}): GcWorker {
  const gc = new GcWorker({
    source: {
      claim: async (max) => {
        const claims = await m.claimDeletions(ctx, max);
        if (claims.length > 0) await hooks.afterClaim?.(claims);
        return claims;
      },
      finish: (done) => m.finishDeletions(ctx, done),
      release: (claims, ms) => m.releaseDeletions(ctx, claims, ms),
    },
    nodes: async (): Promise<GcNode[]> => c.map.nodes.map((n) => ({ id: n.id, addr: n.addr, state: n.state })),
    credentials: grpc.credentials.createInsecure(),
    token,
    log: createLogger({ level: 'silent', name: t.title }),
    intervalMs: 0,
    now: () => Date.now(),
  });
  t.teardown(() => gc.stop());
  return gc;
}

async function putEverywhere(c: Cluster, chunks: readonly Chunk[]): Promise<void> {
  for (const cl of c.clients) await cl.putBlocks(chunks.map((ch) => ({ address: ch.record.address, data: ch.data })));
}

function file(path: string, ...chunks: Chunk[]): m.CommitInput {
  let offset = 0;
  const list = chunks.map((ch) => {
    const r = { ...ch.record, offset };
    offset += r.size;
    return r;
  });
  return { tenant: T, path, size: offset, mtimeMs: 1, authorDevice: 'd', chunks: list };
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until every running node completed `n` more anti-entropy passes. */
async function antiEntropyPasses(c: Cluster, n = 2): Promise<void> {
  const start = [0, 1, 2].map((i) => c.passes(i));
  await waitFor('anti-entropy passes', () => [0, 1, 2].every((i) => c.nodes[i] === undefined || c.passes(i) >= start[i]! + n));
}

test.serial('GC deletes only zero-ref, unpinned chunks past their grace period, on every replica', async (t) => {
  t.timeout(120_000);
  const c = await cluster(t);
  const { ctx, clock } = await model(t);
  const [a, b, cc, d, e] = ['a', 'b', 'c', 'd', 'e'].map(chunk) as [Chunk, Chunk, Chunk, Chunk, Chunk];
  await putEverywhere(c, [a, b, cc, d, e]);
  await m.commitFile(ctx, file('/f', a, b));
  await m.commitFile(ctx, file('/f', b, cc)); // keep-last 1: a drops to zero refs
  const session = await m.createSession(ctx, { tenant: T, path: '/upload', mtimeMs: 1, authorDevice: 'd' });
  await m.appendChunks(ctx, T, session.id, 0, [{ ...d.record, offset: 0 }]); // d: pinned, no refs
  clock.t += 11 * MIN;
  await m.commitFile(ctx, file('/g', e));
  await m.commitFile(ctx, file('/g', cc)); // e: zero refs, but only just
  const gc = worker(t, ctx, c);
  const run = await gc.runOnce();
  t.like(run, { claimed: 1, finished: 1, released: 0, blocksDeleted: 3 });
  t.deepEqual(await c.holders(a), [false, false, false], 'a is gone from every replica');
  for (const kept of [b, cc, d, e]) t.deepEqual(await c.holders(kept), [true, true, true], `${kept.name} is kept`);
  t.deepEqual(await m.findChunks(ctx, T, [a.record.plainHash]), [], 'its index entry is gone');
  clock.t += 11 * MIN;
  t.like(await gc.runOnce(), { claimed: 1, finished: 1 }, 'e once its grace period passed');
  t.deepEqual(await c.holders(e), [false, false, false]);
  t.deepEqual(await c.holders(d), [true, true, true], 'the pinned chunk stays');
  await antiEntropyPasses(c);
  t.deepEqual(await c.holders(a), [false, false, false], 'anti-entropy brought nothing back');
});

test.serial('a chunk re-uploaded around a GC run is never lost', async (t) => {
  t.timeout(120_000);
  const c = await cluster(t);
  const { ctx, clock } = await model(t);
  const [x, y] = [chunk('x'), chunk('y')];
  await putEverywhere(c, [x, y]);
  await m.commitFile(ctx, file('/f', x));
  await m.commitFile(ctx, file('/f', y));
  clock.t += 11 * MIN;
  let during: unknown;
  const gc = worker(t, ctx, c, {
    afterClaim: async () => {
      // An upload of x while GC holds the claim: the index reports x as being deleted, and a
      // commit naming it is refused (retryably) instead of racing the block deletion.
      const found = await m.findChunks(ctx, T, [x.record.plainHash]);
      t.true(found[0]?.beingDeleted);
      during = await m.commitFile(ctx, file('/h', x)).catch((err: unknown) => err);
    },
  });
  t.like(await gc.runOnce(), { claimed: 1, finished: 1 });
  t.true(isCairnError(during, 'CAIRN_UNAVAILABLE'), String(during));
  t.deepEqual(await c.holders(x), [false, false, false]);
  // The retry after GC: x is missing now, so the uploader writes it afresh and commits it.
  t.deepEqual(await m.findChunks(ctx, T, [x.record.plainHash]), []);
  await putEverywhere(c, [x]);
  const v = await m.commitFile(ctx, file('/h', x));
  t.is(v.version, 1);
  await antiEntropyPasses(c);
  t.deepEqual(await c.holders(x), [true, true, true], 'the fresh write won over the tombstones');
  const got = [];
  for await (const r of c.clients[0]!.getBlocks([x.record.address])) got.push(r.data);
  t.deepEqual(got[0], x.data);
  // And a GC run now leaves it alone: it is referenced.
  clock.t += 30 * MIN;
  t.like(await gc.runOnce(), { claimed: 0 });
  t.deepEqual(await c.holders(x), [true, true, true]);
});

test.serial('a replica that missed the deletion cannot bring the block back; GC finishes once it is reachable', async (t) => {
  t.timeout(120_000);
  const c = await cluster(t);
  const { ctx, clock } = await model(t);
  const [z, keep] = [chunk('z'), chunk('keep')];
  await putEverywhere(c, [z, keep]);
  await m.commitFile(ctx, file('/f', z));
  await m.commitFile(ctx, file('/f', keep));
  clock.t += 11 * MIN;
  await c.stopNode(2);
  const gc = worker(t, ctx, c);
  const first = await gc.runOnce();
  t.like(first, { claimed: 1, finished: 0, released: 1 }, 'n2 unreachable: the claim is handed back, not finished');
  t.deepEqual(await c.holders(z), [false, false, false], 'deleted (with tombstones) on n0 and n1; n2 is down');
  t.is((await m.findChunks(ctx, T, [z.record.plainHash]))[0]?.beingDeleted, false, 'the index entry waits for the retry');
  // n2 comes back with its stale copy; its anti-entropy pushes it to n0 and n1, who refuse it.
  await c.restart(2);
  t.deepEqual(await c.holders(z), [false, false, true]);
  await antiEntropyPasses(c);
  t.deepEqual(await c.holders(z), [false, false, true], 'the tombstones refused the repair copies');
  t.deepEqual(await c.holders(keep), [true, true, true]);
  clock.t += 2 * MIN;
  t.like(await gc.runOnce(), { claimed: 1, finished: 1, released: 0 });
  t.deepEqual(await c.holders(z), [false, false, false]);
  t.deepEqual(await m.findChunks(ctx, T, [z.record.plainHash]), []);
  await antiEntropyPasses(c);
  t.deepEqual(await c.holders(z), [false, false, false]);
});
