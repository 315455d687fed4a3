// Rebalance benchmark: four block-node processes (RF=3) loaded with data, a fifth joins, and
// anti-entropy moves data to it. Ratio = bytes moved ÷ the ideal 1/(N+1) of stored bytes; also
// rebalance throughput, against the replicated load throughput measured in the same run.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { mkdtemp, rm, writeFile, rename } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { credentials } from '@grpc/grpc-js';
import { BlockClient, ReplicatedBlockClient, StaticMapSource, emptyMap } from '../src/blocknode/index.js';
import { ServiceTokenSource, loadOrCreateSecret } from '../src/common/auth.js';
import { assign, owners, type ClusterMap, type MapNode } from '../src/placement/index.js';
import type { BenchMain } from './report.js';
import { cairnCommand } from './_embedded.js';

const MiB = 1024 * 1024;
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const RF = 3;

function arg(args: readonly string[], name: string, fallback: string): string {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? (args[i + 1] as string) : fallback;
}

interface Node {
  readonly id: string;
  readonly proc: ChildProcess;
  readonly grpc: string;
  readonly http: string;
  readonly client: BlockClient;
}

async function startNode(id: string, base: string, mapPath: string, secretPath: string, token: () => Promise<string>): Promise<Node> {
  const proc = spawn(
    process.execPath,
    [...cairnCommand(), 'server', '--role', 'blocknode', '--data-dir', join(base, id), '--grpc-port', '0', '--http-port', '0', '--log-level', 'warn',
      '--node-id', id, '--cluster-map', mapPath, '--auth-secret-file', secretPath, '--reserve-bytes', '0', '--scrub-interval-ms', '0',
      '--anti-entropy-interval-ms', '200', '--anti-entropy-bytes-per-second', '0', '--rebalance-settle-ms', '500'],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`node ${id} not ready in 60 s: ${err}`)), 60_000);
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const ready = out.split('\n').find((l) => l.includes('ready'));
      if (ready !== undefined) {
        clearTimeout(timer);
        resolve(ready);
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`node ${id} exited with ${code}: ${err}`));
    });
  });
  const grpc = /grpc=(\S+)/.exec(line)?.[1] ?? '';
  const http = /http=(\S+)/.exec(line)?.[1] ?? '';
  return { id, proc, grpc, http, client: new BlockClient({ address: grpc, credentials: credentials.createInsecure(), token, timeoutMs: 60_000 }) };
}

async function publish(mapPath: string, nodes: readonly Node[], previous: ClusterMap | null): Promise<ClusterMap> {
  const list: MapNode[] = nodes.map((n) => ({ id: n.id, addr: n.grpc, zone: '', weight: 1, state: 'up' }));
  const map = { ...assign(previous, list, RF), epoch: (previous?.epoch ?? 0) + 1 };
  await writeFile(`${mapPath}.tmp`, JSON.stringify({ ...map, ...(previous ? { previous } : {}) }));
  await rename(`${mapPath}.tmp`, mapPath);
  return map;
}

async function metric(http: string, name: string): Promise<number> {
  const text = await (await fetch(`${http}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(name + ' '));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

async function waitEpoch(nodes: readonly Node[], epoch: number): Promise<void> {
  for (;;) {
    const stats = await Promise.all(nodes.map((n) => n.client.stats()));
    if (stats.every((s) => Number(s.map_epoch) >= epoch)) return;
    await sleep(100);
  }
}

export const run: BenchMain = async (args) => {
  const sizeMiB = Number(arg(args, '--size-mib', '128'));
  if (!Number.isInteger(sizeMiB) || sizeMiB < 1) throw new RangeError('--size-mib must be an integer ≥ 1');
  const base = await mkdtemp(join(arg(args, '--dir', tmpdir()), 'cairn-bench-rebalance-'));
  const mapPath = join(base, 'map.json');
  const secretPath = join(base, 'auth.key');
  const tokens = new ServiceTokenSource(loadOrCreateSecret(secretPath));
  const token = (): Promise<string> => tokens.token();
  const nodes: Node[] = [];
  const source = new StaticMapSource(emptyMap());
  const client = new ReplicatedBlockClient({ map: source, credentials: credentials.createInsecure(), token, writeQuorum: RF, timeoutMs: 120_000 });
  try {
    for (const id of ['n1', 'n2', 'n3', 'n4']) nodes.push(await startNode(id, base, mapPath, secretPath, token));
    const first = await publish(mapPath, nodes, null);
    source.set(first);
    await waitEpoch(nodes, first.epoch);

    // Load: 64–256 KiB blocks (the chunker's upper range), 8 MiB batches, 3 in flight, W = RF.
    const blocks: Array<{ address: Buffer; data: Buffer }> = [];
    for (let left = sizeMiB * MiB; left > 0; ) {
      const data = randomBytes(Math.min(left, randomInt(64 * 1024, 256 * 1024 + 1)));
      blocks.push({ address: createHash('sha256').update(data).digest(), data });
      left -= data.length;
    }
    const batches: (typeof blocks)[] = [];
    for (let i = 0, size = 0, cur: typeof blocks = []; i < blocks.length; i++) {
      cur.push(blocks[i]!);
      size += blocks[i]!.data.length;
      if (size >= 8 * MiB || i === blocks.length - 1) {
        batches.push(cur);
        cur = [];
        size = 0;
      }
    }
    const t0 = performance.now();
    let next = 0;
    await Promise.all(Array.from({ length: 3 }, async () => {
      while (next < batches.length) await client.putBlocks(batches[next++]!);
    }));
    const loadSeconds = (performance.now() - t0) / 1000;
    const storedBytes = RF * sizeMiB * MiB;
    // Let the load's own anti-entropy settle, so the counters below measure the rebalance only.
    await sleep(1000);
    const pushedBefore = (await Promise.all(nodes.map((n) => metric(n.http, 'cairn_blocknode_antientropy_pushed_bytes_total')))).reduce((a, b) => a + b, 0);

    nodes.push(await startNode('n5', base, mapPath, secretPath, token));
    const second = await publish(mapPath, nodes, first);
    const t1 = performance.now();
    let assignmentIdeal = 0;
    for (const b of blocks) assignmentIdeal += b.data.length * owners(second, b.address).filter((id) => !owners(first, b.address).includes(id)).length;
    // Converged: every block on exactly its new owners.
    let movedSeconds = 0;
    for (;;) {
      let complete = true;
      for (const n of nodes) {
        for (let i = 0; i < blocks.length; i += 4096) {
          const slice = blocks.slice(i, i + 4096);
          const present = await n.client.hasBlocks(slice.map((b) => b.address));
          slice.forEach((b, k) => {
            const own = owners(second, b.address).includes(n.id);
            if (present[k] !== own) complete = false;
          });
        }
      }
      if (movedSeconds === 0) {
        // Copies on the new owners done (deletes may lag by the settle time): the throughput clock stops here.
        const n5 = nodes[4]!;
        const want = blocks.filter((b) => owners(second, b.address).includes('n5'));
        const have = await n5.client.hasBlocks(want.map((b) => b.address));
        if (have.every(Boolean)) movedSeconds = (performance.now() - t1) / 1000;
      }
      if (complete) break;
      if (performance.now() - t1 > 600_000) throw new Error('rebalance did not converge in 10 minutes');
      await sleep(200);
    }
    const convergeSeconds = (performance.now() - t1) / 1000;
    const pushed = (await Promise.all(nodes.map((n) => metric(n.http, 'cairn_blocknode_antientropy_pushed_bytes_total')))).reduce((a, b) => a + b, 0) - pushedBefore;
    const ideal = storedBytes / nodes.length;
    return {
      bench: 'rebalance',
      ratio: pushed / ideal,
      target: 1.1,
      better: 'lower',
      figures: {
        size_MiB: sizeMiB,
        blocks: blocks.length,
        stored_MiB: storedBytes / MiB,
        ideal_moved_MiB: ideal / MiB,
        assignment_moved_MiB: assignmentIdeal / MiB,
        moved_MiB: pushed / MiB,
        moved_over_assignment: pushed / assignmentIdeal,
        rebalance_copy_seconds: movedSeconds,
        rebalance_converge_seconds: convergeSeconds,
        rebalance_MBps: pushed / 1e6 / movedSeconds,
        anchor_load_MBps: (storedBytes / 1e6) / loadSeconds,
      },
    };
  } finally {
    client.close();
    for (const n of nodes) {
      n.client.close();
      if (n.proc.exitCode === null) n.proc.kill('SIGKILL');
    }
    await rm(base, { recursive: true, force: true });
  }
};
