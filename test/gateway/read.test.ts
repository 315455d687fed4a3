// The gateway's read pipeline over real in-process block nodes: blocks are fetched without the
// block layer's hash (AES-GCM authenticates them), and a block that fails authentication is
// fetched again with verification — which quarantines the bad copy, reads another replica and
// repairs — so a reader never sees corrupt bytes.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ServiceTokenSource } from '../../src/common/auth.js';
import { isCairnError } from '../../src/common/errors.js';
import { createLogger } from '../../src/common/log.js';
import { createMetrics } from '../../src/common/metrics.js';
import { ReplicatedBlockClient, StaticMapSource, createBlockNode, type BlockNode } from '../../src/blocknode/index.js';
import { TenantKeys } from '../../src/gateway/keys.js';
import { fetchBlocks, readRange } from '../../src/gateway/read.js';
import { BufferPool } from '../../src/common/buffer-pool.js';
import { seal } from '../../src/gateway/seal.js';
import { assign, owners, type ClusterMap, type MapNode } from '../../src/placement/index.js';

const secret = randomBytes(32);
const tokens = new ServiceTokenSource(secret);

async function nodesUp(t: { title: string; teardown(fn: () => unknown): void }, n: number): Promise<BlockNode[]> {
  const out: BlockNode[] = [];
  for (let i = 0; i < n; i++) {
    const dir = mkdtempSync(join(tmpdir(), 'cairn-read-'));
    const node = await createBlockNode({ dataDir: dir, host: '127.0.0.1', port: 0, credentials: grpc.ServerCredentials.createInsecure(), authSecret: secret, log: createLogger({ level: 'silent', name: t.title }), metrics: createMetrics({ processMetrics: false }) });
    t.teardown(async () => {
      await node.stop(1000);
      rmSync(dir, { recursive: true, force: true });
    });
    out.push(Object.assign(node, { dir }));
  }
  return out;
}

/** Flips one byte of `needle` where it sits in a segment file of the node's store. */
function flip(dataDir: string, needle: Buffer): void {
  const dir = join(dataDir, 'blocks', 'segments');
  for (const name of readdirSync(dir)) {
    const bytes = readFileSync(join(dir, name));
    const at = bytes.indexOf(needle);
    if (at < 0) continue;
    bytes[at + 100] = bytes[at + 100]! ^ 0x55;
    writeFileSync(join(dir, name), bytes);
    return;
  }
  throw new Error('block not found in a segment');
}

/** A file of `n` random chunks sealed under a tenant key, its blocks stored through `client`. */
async function storeFile(client: ReplicatedBlockClient, keys: TenantKeys, n: number): Promise<{ plain: Buffer; sealed: Buffer[]; chunks: Array<{ plain_hash: Buffer; address: Buffer; offset: string }> }> {
  const key = await keys.get('acme');
  const pieces = Array.from({ length: n }, () => randomBytes(40_000));
  const chunks: Array<{ plain_hash: Buffer; address: Buffer; offset: string }> = [];
  const sealed: Buffer[] = [];
  let offset = 0;
  for (const p of pieces) {
    const plainHash = createHash('sha256').update(p).digest();
    const s = seal(key, plainHash, p);
    chunks.push({ plain_hash: plainHash, address: s.address, offset: String(offset) });
    sealed.push(s.sealed);
    offset += p.length;
  }
  await client.putBlocks(sealed.map((data, i) => ({ address: chunks[i]!.address, data })));
  return { plain: Buffer.concat(pieces), sealed, chunks };
}

function setUp(t: { teardown(fn: () => unknown): void }, nodes: BlockNode[]): { client: ReplicatedBlockClient; keys: TenantKeys; map: ClusterMap } {
  const addrs = nodes.map((n) => `127.0.0.1:${n.port}`);
  const mapNodes: MapNode[] = addrs.map((addr, i) => ({ id: `n${i + 1}`, addr, zone: '', weight: 1, state: 'up' }));
  const map = new StaticMapSource({ ...assign(null, mapNodes, nodes.length), epoch: 1 });
  // Every node is "in this process" (called directly, as the embedded server's own node is).
  const client = new ReplicatedBlockClient({ map, credentials: grpc.credentials.createInsecure(), token: () => tokens.token(), writeQuorum: nodes.length, localPeers: new Map(nodes.map((n, i) => [addrs[i]!, n.local])) });
  t.teardown(() => client.close());
  const wrapped = new Map<string, Buffer>();
  const keys = new TenantKeys(randomBytes(32), {
    async getOrCreateTenantKey(tenant, candidate) {
      if (!wrapped.has(tenant)) wrapped.set(tenant, Buffer.from(candidate));
      return { wrapped: wrapped.get(tenant)!, created: false };
    },
  });
  return { client, keys, map: map.current() };
}

async function readAll(client: ReplicatedBlockClient, keys: TenantKeys, chunks: Array<{ plain_hash: Buffer; address: Buffer; offset: string }>, start: number, end: number): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const piece of readRange({ blocks: client, keys }, 'acme', { path: '/f', chunks }, start, end, new AbortController().signal)) out.push(Buffer.from(piece.data));
  return Buffer.concat(out);
}

test('a corrupt copy fails AES-GCM, is fetched again verified, quarantined and repaired; the reader gets the right bytes', async (t) => {
  const nodes = await nodesUp(t, 2);
  const { client, keys, map } = setUp(t, nodes);
  const file = await storeFile(client, keys, 40);
  // Damage copies that a read asks for first: two on n1, one on n2.
  const firstOn = (id: string): number[] => file.chunks.flatMap((c, i) => (owners(map, c.address)[0] === id ? [i] : []));
  const damaged: Array<[number, number]> = [...firstOn('n1').slice(0, 2).map((i): [number, number] => [0, i]), [1, firstOn('n2')[0]!]];
  t.is(damaged.length, 3);
  for (const [n, i] of damaged) flip((nodes[n] as BlockNode & { dir: string }).dir, file.sealed[i]!);
  t.true((await readAll(client, keys, file.chunks, 0, file.plain.length)).equals(file.plain));
  t.true((await readAll(client, keys, file.chunks, 123_456, 900_001)).equals(file.plain.subarray(123_456, 900_001)));
  await client.settled();
  // Each corrupt copy was quarantined on its node and written back from the other (a repair
  // clears the quarantine record, so the good copy is what shows).
  for (const [n, i] of damaged) {
    const [got] = await nodes[n]!.store.getMany([file.chunks[i]!.address]);
    t.true(got?.data?.equals(file.sealed[i]!), `node ${n} block ${i}`);
  }
});

test('with no intact copy anywhere the read fails with CAIRN_DATA_LOSS, never with wrong bytes', async (t) => {
  const nodes = await nodesUp(t, 1);
  const { client, keys } = setUp(t, nodes);
  const file = await storeFile(client, keys, 5);
  flip((nodes[0] as BlockNode & { dir: string }).dir, file.sealed[2]!);
  const err = await t.throwsAsync(readAll(client, keys, file.chunks, 0, file.plain.length));
  t.true(isCairnError(err, 'CAIRN_DATA_LOSS'), String(err));
  t.deepEqual(await nodes[0]!.store.quarantined(), [file.chunks[2]!.address]);
  // The intact blocks still read.
  t.true((await readAll(client, keys, file.chunks, 0, 80_000)).equals(file.plain.subarray(0, 80_000)));
});

test('reads through pooled block buffers: interleaved reads and ranges of two files stay byte-exact', async (t) => {
  const nodes = await nodesUp(t, 2);
  const { client, keys } = setUp(t, nodes);
  const a = await storeFile(client, keys, 150);
  const b = await storeFile(client, keys, 150);
  for (let round = 0; round < 3; round++) {
    const [ga, gb, ra] = await Promise.all([readAll(client, keys, a.chunks, 0, a.plain.length), readAll(client, keys, b.chunks, 0, b.plain.length), readAll(client, keys, a.chunks, 1_000_001 + round, 4_500_000)]);
    t.true(ga.equals(a.plain), `round ${round}: file a`);
    t.true(gb.equals(b.plain), `round ${round}: file b`);
    t.true(ra.equals(a.plain.subarray(1_000_001 + round, 4_500_000)), `round ${round}: range of a`);
  }
});

test('a read repair writes a copy of the block: the reader reusing its pooled buffer at once cannot corrupt it', async (t) => {
  const nodes = await nodesUp(t, 2);
  const { client, keys, map } = setUp(t, nodes);
  const file = await storeFile(client, keys, 8);
  // Take every block away from the owner a read asks first: the read finds it on the other one
  // and repairs the first in the background.
  for (const c of file.chunks) await nodes[owners(map, c.address)[0] === 'n1' ? 0 : 1]!.store.delete([c.address]);
  const pool = new BufferPool({ slabBytes: 4 * 1024 * 1024, maxFree: 2, idleMs: 0 });
  const got = await fetchBlocks(client, file.chunks.map((c) => c.address), undefined, true, pool);
  t.is(got.size, file.chunks.length);
  for (const block of got.values()) pool.release(block);
  // The next taker overwrites the slab while the repairs are still being written.
  pool.take(4 * 1024 * 1024).fill(0xee);
  await client.settled();
  for (const [i, c] of file.chunks.entries()) {
    for (const node of nodes) {
      const [copy] = await node.store.getMany([c.address]);
      t.true(copy?.data?.equals(file.sealed[i]!), `block ${i} on ${node.port}`);
    }
  }
});
