// A block-node cluster of real child processes for the cluster tests: a shared signing secret,
// a static map file every node watches, and a ReplicatedBlockClient in the test process.
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { credentials } from '@grpc/grpc-js';
import { loadOrCreateSecret, ServiceTokenSource } from '../../src/common/auth.js';
import { BlockClient, ReplicatedBlockClient, StaticMapSource, emptyMap } from '../../src/blocknode/index.js';
import { assign, owners, type ClusterMap, type MapNode } from '../../src/placement/index.js';
import { startServer, tempDir, type Scope, type ServerProcess } from '../helpers/cluster.js';

export interface Block {
  readonly address: Buffer;
  readonly data: Buffer;
}

export function makeBlocks(count: number, minBytes = 8 * 1024, maxBytes = 48 * 1024): Block[] {
  return Array.from({ length: count }, () => {
    const data = randomBytes(randomInt(minBytes, maxBytes + 1));
    return { address: createHash('sha256').update(data).digest(), data };
  });
}

export function hex(b: Buffer): string {
  return b.toString('hex');
}

/** Polls `check` until it returns true; throws with `what` after `timeoutMs`. */
export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 40_000, everyMs = 250): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

export interface NodeHandle {
  readonly id: string;
  readonly dataDir: string;
  server: ServerProcess;
  addr: string;
  client: BlockClient;
}

export class TestCluster {
  readonly root: string;
  readonly mapPath: string;
  readonly secretPath: string;
  readonly tokens: ServiceTokenSource;
  readonly nodes = new Map<string, NodeHandle>();
  readonly source = new StaticMapSource(emptyMap());
  map: ClusterMap = emptyMap();
  readonly #t: Scope;
  readonly #nodeArgs: string[];

  constructor(t: Scope, nodeArgs: string[] = []) {
    this.#t = t;
    this.root = tempDir(t, 'cairn-cluster-');
    this.mapPath = join(this.root, 'map.json');
    this.secretPath = join(this.root, 'auth.key');
    this.tokens = new ServiceTokenSource(loadOrCreateSecret(this.secretPath));
    this.#nodeArgs = nodeArgs;
    t.teardown(() => {
      for (const n of this.nodes.values()) n.client.close();
    });
  }

  readonly token = (): Promise<string> => this.tokens.token();

  /** Starts a block node (before or after it is in the map); `args` add or override flags. */
  async startNode(id: string, args: string[] = [], dataDir = join(this.root, id)): Promise<NodeHandle> {
    const server = await startServer(
      this.#t,
      ['--node-id', id, '--cluster-map', this.mapPath, '--auth-secret-file', this.secretPath, '--reserve-bytes', '0', '--anti-entropy-interval-ms', '300', '--rebalance-settle-ms', '1500', '--scrub-interval-ms', '0', ...this.#nodeArgs, ...args],
      { role: 'blocknode', dataDir },
    );
    const old = this.nodes.get(id);
    old?.client.close();
    const client = new BlockClient({ address: server.grpc, credentials: credentials.createInsecure(), token: this.token, timeoutMs: 30_000 });
    const handle: NodeHandle = { id, dataDir, server, addr: server.grpc, client };
    this.nodes.set(id, handle);
    return handle;
  }

  /** kill -9, then wait for the exit. */
  async kill(id: string): Promise<void> {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no node ${id}`);
    n.server.proc.kill('SIGKILL');
    await n.server.exited;
  }

  /** Restarts a killed node on its old port and data dir, so the map stays valid. */
  async restart(id: string): Promise<NodeHandle> {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no node ${id}`);
    const port = n.addr.split(':').pop()!;
    return this.startNode(id, ['--grpc-port', port], n.dataDir);
  }

  /** Computes the next map from the previous one (minimal movement) and publishes it to every node and the test client. */
  publish(rf: number, states: Record<string, MapNode['state']> = {}, extra: Partial<MapNode>[] = []): ClusterMap {
    const nodes: MapNode[] = [...this.nodes.values()].map((n) => ({ id: n.id, addr: n.addr, zone: '', weight: 1, state: states[n.id] ?? 'up', ...extra.find((e) => e.id === n.id) }));
    const prev = this.map.epoch === 0 ? null : this.map;
    const next = { ...assign(prev, nodes, rf), epoch: this.map.epoch + 1 };
    const body = { ...next, ...(prev ? { previous: prev } : {}) };
    const tmp = `${this.mapPath}.tmp`;
    writeFileSync(tmp, JSON.stringify(body));
    renameSync(tmp, this.mapPath);
    this.source.set(next, prev ?? undefined);
    this.map = next;
    return next;
  }

  /** Waits until every running node works from the current map epoch. */
  async waitForEpoch(ids: readonly string[] = [...this.nodes.keys()]): Promise<void> {
    await waitFor(`map epoch ${this.map.epoch} on ${ids.join(',')}`, async () => {
      const stats = await Promise.all(ids.map((id) => this.nodes.get(id)!.client.stats()));
      return stats.every((s) => Number(s.map_epoch) === this.map.epoch);
    });
  }

  replicated(writeQuorum = 2): ReplicatedBlockClient {
    const c = new ReplicatedBlockClient({ map: this.source, credentials: credentials.createInsecure(), token: this.token, writeQuorum, timeoutMs: 20_000 });
    this.#t.teardown(() => c.close());
    return c;
  }

  /** Nodes holding each block (asked directly), keyed by address hex. */
  async holders(blocks: readonly Block[], ids: readonly string[] = [...this.nodes.keys()]): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>(blocks.map((b) => [hex(b.address), []]));
    for (const id of ids) {
      const n = this.nodes.get(id)!;
      for (let i = 0; i < blocks.length; i += 4096) {
        const slice = blocks.slice(i, i + 4096);
        const present = await n.client.hasBlocks(slice.map((b) => b.address));
        slice.forEach((b, k) => {
          if (present[k] === true) out.get(hex(b.address))!.push(id);
        });
      }
    }
    return out;
  }

  /** True when every block is on all of its current owners. */
  async fullyReplicated(blocks: readonly Block[], ids?: readonly string[]): Promise<boolean> {
    const held = await this.holders(blocks, ids);
    return blocks.every((b) => owners(this.map, b.address).every((id) => held.get(hex(b.address))!.includes(id)));
  }
}

/** Reads every block through the replicated client; returns the addresses that did not come back intact. */
export async function unreadable(client: ReplicatedBlockClient, blocks: readonly Block[]): Promise<string[]> {
  const bad: string[] = [];
  for (let i = 0; i < blocks.length; i += 64) {
    const slice = blocks.slice(i, i + 64);
    const want = new Map(slice.map((b) => [hex(b.address), b.data]));
    for await (const got of client.getBlocks(slice.map((b) => b.address))) {
      if (got.data === undefined || !got.data.equals(want.get(hex(got.address))!)) bad.push(hex(got.address));
    }
  }
  return bad;
}
