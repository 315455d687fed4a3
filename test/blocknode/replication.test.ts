// ReplicatedBlockClient against in-process block nodes: acknowledgement after W copies,
// CAIRN_INSUFFICIENT_REPLICAS when fewer succeed, handoff past a dead owner, and verified reads
// that fall back to other replicas.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ServiceTokenSource } from '../../src/common/auth.js';
import { createLogger } from '../../src/common/log.js';
import { createMetrics } from '../../src/common/metrics.js';
import { BlockClient, ReplicatedBlockClient, StaticMapSource, createBlockNode, type BlockNode } from '../../src/blocknode/index.js';
import { assign, owners, type MapNode } from '../../src/placement/index.js';

const secret = randomBytes(32);
const tokens = new ServiceTokenSource(secret);
const token = (): Promise<string> => tokens.token();
/** Nothing listens here: connecting fails at once. */
const DEAD = '127.0.0.1:1';

async function nodesUp(t: { title: string; teardown(fn: () => unknown): void }, n: number): Promise<BlockNode[]> {
  const out: BlockNode[] = [];
  for (let i = 0; i < n; i++) {
    const dir = mkdtempSync(join(tmpdir(), 'cairn-repl-'));
    const node = await createBlockNode({ dataDir: dir, host: '127.0.0.1', port: 0, credentials: grpc.ServerCredentials.createInsecure(), authSecret: secret, log: createLogger({ level: 'silent', name: t.title }), metrics: createMetrics({ processMetrics: false }) });
    t.teardown(async () => {
      await node.stop(1000);
      rmSync(dir, { recursive: true, force: true });
    });
    out.push(node);
  }
  return out;
}

function blocks(n: number): Array<{ address: Buffer; data: Buffer }> {
  return Array.from({ length: n }, () => {
    const data = randomBytes(2048);
    return { address: createHash('sha256').update(data).digest(), data };
  });
}

function mapOf(addrs: string[], rf: number): StaticMapSource {
  const nodes: MapNode[] = addrs.map((addr, i) => ({ id: `n${i + 1}`, addr, zone: '', weight: 1, state: 'up' }));
  return new StaticMapSource({ ...assign(null, nodes, rf), epoch: 1 });
}

test('writes are acknowledged with W of RF copies and fail with INSUFFICIENT_REPLICAS below W', async (t) => {
  const [a, b] = await nodesUp(t, 2);
  const source = mapOf([`127.0.0.1:${a!.port}`, `127.0.0.1:${b!.port}`, DEAD], 3);
  const w2 = new ReplicatedBlockClient({ map: source, credentials: grpc.credentials.createInsecure(), token, writeQuorum: 2 });
  const w3 = new ReplicatedBlockClient({ map: source, credentials: grpc.credentials.createInsecure(), token, writeQuorum: 3 });
  t.teardown(() => {
    w2.close();
    w3.close();
  });
  const list = blocks(20);
  const res = await w2.putBlocks(list);
  t.is(res.blocks, 20);
  t.is(res.copies, 40);
  const err = await t.throwsAsync(w3.putBlocks(blocks(3)));
  t.is((err as { code?: string }).code, 'CAIRN_INSUFFICIENT_REPLICAS');
  for await (const got of w2.getBlocks(list.map((x) => x.address))) t.truthy(got.data);
});

test('a dead owner is replaced by a handoff node, and reads find the handed-off copy', async (t) => {
  const live = await nodesUp(t, 3);
  const addrs = [DEAD, ...live.map((n) => `127.0.0.1:${n.port}`)];
  const source = mapOf(addrs, 2);
  const client = new ReplicatedBlockClient({ map: source, credentials: grpc.credentials.createInsecure(), token, writeQuorum: 2 });
  t.teardown(() => client.close());
  // Blocks owned by the dead node n1 and one live node: two copies need a handoff.
  const owned = blocks(400).filter((b) => owners(source.current(), b.address).includes('n1')).slice(0, 10);
  t.true(owned.length > 0);
  const res = await client.putBlocks(owned);
  t.is(res.copies, owned.length * 2);
  for await (const got of client.getBlocks(owned.map((x) => x.address))) t.truthy(got.data);
});

test('a read skips a replica that lacks the block or holds a bad copy, and repairs it', async (t) => {
  const [a, b] = await nodesUp(t, 2);
  const source = mapOf([`127.0.0.1:${a!.port}`, `127.0.0.1:${b!.port}`], 2);
  const client = new ReplicatedBlockClient({ map: source, credentials: grpc.credentials.createInsecure(), token, writeQuorum: 2 });
  t.teardown(() => client.close());
  const list = blocks(10);
  await client.putBlocks(list);
  // Remove the copies from each block's first owner, then read: every block comes back.
  const direct = [a!, b!].map((n) => new BlockClient({ address: `127.0.0.1:${n.port}`, credentials: grpc.credentials.createInsecure(), token }));
  t.teardown(() => direct.forEach((c) => c.close()));
  for (const x of list) await direct[owners(source.current(), x.address)[0] === 'n1' ? 0 : 1]!.deleteBlocks([x.address]);
  for await (const got of client.getBlocks(list.map((x) => x.address))) t.truthy(got.data);
  await client.settled();
  t.deepEqual(await direct[0]!.hasBlocks(list.map((x) => x.address)), list.map(() => true));
  t.deepEqual(await direct[1]!.hasBlocks(list.map((x) => x.address)), list.map(() => true));
});
