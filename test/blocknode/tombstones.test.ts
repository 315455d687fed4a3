// GC tombstones on a real block node over gRPC: a GC delete records them, repair copies of a
// tombstoned block are refused, a fresh write stores the block again and clears the tombstone,
// HasBlocks reports them, they survive a restart and expire after their TTL.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ServiceTokenSource } from '../../src/common/auth.js';
import { createLogger } from '../../src/common/log.js';
import { createMetrics } from '../../src/common/metrics.js';
import { BlockClient, createBlockNode, type BlockNode } from '../../src/blocknode/index.js';
import { GcTombstones } from '../../src/blocknode/tombstones.js';

const secret = randomBytes(32);
const tokens = new ServiceTokenSource(secret);
const token = (): Promise<string> => tokens.token();

function block(): { address: Buffer; data: Buffer } {
  const data = randomBytes(3000);
  return { address: createHash('sha256').update(data).digest(), data };
}

async function start(t: { title: string; teardown(fn: () => unknown): void }, dir: string): Promise<{ node: BlockNode; client: BlockClient }> {
  const node = await createBlockNode({ dataDir: dir, host: '127.0.0.1', port: 0, credentials: grpc.ServerCredentials.createInsecure(), authSecret: secret, log: createLogger({ level: 'silent', name: t.title }), metrics: createMetrics({ processMetrics: false }) });
  const client = new BlockClient({ address: `127.0.0.1:${node.port}`, credentials: grpc.credentials.createInsecure(), token });
  return { node, client };
}

test('a GC delete leaves a tombstone that refuses repair copies until a fresh write clears it; it survives restarts', async (t) => {
  t.timeout(60_000);
  const dir = mkdtempSync(join(tmpdir(), 'cairn-tomb-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  let { node, client } = await start(t, dir);
  const [x, y, z] = [block(), block(), block()];
  await client.putBlocks([x, y, z]);
  t.is(await client.deleteBlocks([x.address, z.address], { tombstoneMs: Date.now() }), 2);
  t.is(await client.deleteBlocks([y.address]), 1, 'a plain delete (rebalance) leaves no tombstone');
  t.deepEqual(await client.presence([x.address, y.address, z.address]), { present: [false, false, false], tombstoned: [true, false, true] });
  const refused = await client.putBlocks([x, y], { repair: true });
  t.is(Number(refused.blocks_stored), 1);
  t.is(Number(refused.blocks_tombstoned), 1);
  t.deepEqual(await client.hasBlocks([x.address, y.address]), [false, true], 'the repair copy of x was refused, y was stored');

  client.close();
  await node.stop(1000);
  ({ node, client } = await start(t, dir));
  t.teardown(async () => {
    client.close();
    await node.stop(1000);
  });
  t.deepEqual((await client.presence([x.address, z.address])).tombstoned, [true, true], 'tombstones are durable');
  t.is(Number((await client.putBlocks([x], { repair: true })).blocks_stored), 0);
  const fresh = await client.putBlocks([x]);
  t.is(Number(fresh.blocks_stored), 1, 'a fresh write of the same content wins');
  t.deepEqual(await client.presence([x.address]), { present: [true], tombstoned: [false] });
  const data = [];
  for await (const got of client.getBlocks([x.address])) data.push(got.data);
  t.deepEqual(data[0], x.data);
  t.is(Number((await client.putBlocks([z], { repair: true })).blocks_tombstoned), 1, 'z is still deleted');
});

test('tombstones expire after their TTL and the sweep drops them', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-tomb-ttl-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const clock = { t: 1_000_000 };
  const store = await GcTombstones.open(dir, { ttlMs: 60_000, now: () => clock.t });
  t.teardown(() => store.close());
  const a = randomBytes(32);
  const b = randomBytes(32);
  await store.record([a], clock.t);
  clock.t += 30_000;
  await store.record([b], clock.t);
  t.deepEqual(await store.lookup([a, b]), [true, true]);
  clock.t += 30_001;
  t.deepEqual(await store.lookup([a, b]), [false, true], 'a is past its TTL');
  t.is(await store.sweep(), 1);
  t.is(store.size, 1);
  t.is(await store.clear([a, b]), 1);
  t.is(store.size, 0);
  t.deepEqual(await store.lookup([a, b]), [false, false]);
  await t.throwsAsync(GcTombstones.open(join(dir, 'never'), { ttlMs: 0 }), { instanceOf: RangeError });
});
