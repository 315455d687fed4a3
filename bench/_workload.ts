// The mixed client workload shared by the `load` and `soak` benchmarks: small and large puts,
// whole and ranged reads, folder lists, and watchers, against a `cairn dev cluster` of real
// processes. Latencies are kept per operation; every error is counted and kept for the report.
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { CairnClient } from '../src/client/index.js';
import { DevCluster } from '../src/cli/dev-cluster.js';
import { cairnCommand } from './_embedded.js';

export function arg(args: readonly string[], name: string, fallback: string): string {
  const eq = args.find((a) => a.startsWith(`${name}=`));
  if (eq !== undefined) return eq.slice(name.length + 1);
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? (args[i + 1] as string) : fallback;
}

export type Op = 'put_small' | 'put_large' | 'get' | 'get_range' | 'list' | 'watch_notify';
export const OPS: readonly Op[] = ['put_small', 'put_large', 'get', 'get_range', 'list', 'watch_notify'];

export interface Stats {
  readonly latencies: Map<Op, number[]>;
  readonly errors: Map<string, number>;
  bytesUp: number;
  bytesDown: number;
  ops: number;
}

export function newStats(): Stats {
  return { latencies: new Map(OPS.map((o) => [o, []])), errors: new Map(), bytesUp: 0, bytesDown: 0, ops: 0 };
}

export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

export interface Cluster {
  readonly cluster: DevCluster;
  readonly dir: string;
  close(): Promise<void>;
}

export async function startCluster(nodes: number): Promise<Cluster> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-load-'));
  const cluster = await DevCluster.start({
    dataDir: dir,
    nodes,
    replicationFactor: Math.min(3, nodes),
    writeQuorum: Math.min(2, nodes),
    gateways: 1,
    mediaWorkers: 0,
    backend: 'level',
    metadataReplicas: 1,
    heartbeatIntervalMs: 1000,
    logLevel: 'error',
    entry: { execPath: process.execPath, args: cairnCommand() },
    extraArgs: { blocknode: ['--reserve-bytes', '0'] },
  });
  return {
    cluster,
    dir,
    async close() {
      await cluster.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function record(stats: Stats, op: Op, startNs: bigint): void {
  stats.latencies.get(op)!.push(Number(process.hrtime.bigint() - startNs) / 1e6);
  stats.ops++;
}

function fail(stats: Stats, op: Op, err: unknown): void {
  const key = `${op}: ${(err as Error).message.split('\n')[0]!.slice(0, 120)}`;
  stats.errors.set(key, (stats.errors.get(key) ?? 0) + 1);
}

/**
 * Runs `clients` closed-loop clients until `signal` aborts, plus `watchers` watch streams that
 * time commit → notification for the files the clients write.
 */
export async function runWorkload(endpoint: string, token: string, clients: number, watchers: number, signal: AbortSignal, stats: Stats): Promise<void> {
  const seedClient = new CairnClient({ endpoint, token });
  const seeded: Array<{ path: string; size: number }> = [];
  for (let i = 0; i < 16; i++) {
    const data = randomBytes(randomInt(64 * 1024, 1024 * 1024));
    await seedClient.putStream(Readable.from([data]), `/seed/s${i}.bin`, { size: data.length });
    seeded.push({ path: `/seed/s${i}.bin`, size: data.length });
  }
  const committedAt = new Map<string, bigint>();
  const watching = Array.from({ length: watchers }, async () => {
    const c = new CairnClient({ endpoint, token });
    try {
      for await (const batch of c.watch({ signal })) {
        for (const ch of batch.changes) {
          const at = committedAt.get(ch.path);
          if (at !== undefined) record(stats, 'watch_notify', at);
        }
      }
    } catch (err) {
      if (!signal.aborted) fail(stats, 'watch_notify', err);
    } finally {
      c.close();
    }
  });
  const small = randomBytes(64 * 1024);
  const large = randomBytes(4 * 1024 * 1024);
  const loops = Array.from({ length: clients }, async (_, id) => {
    const c = new CairnClient({ endpoint, token });
    let n = 0;
    try {
      while (!signal.aborted) {
        const roll = randomInt(100);
        const start = process.hrtime.bigint();
        const op: Op = roll < 30 ? 'put_small' : roll < 33 ? 'put_large' : roll < 63 ? 'get' : roll < 83 ? 'get_range' : 'list';
        try {
          if (op === 'put_small' || op === 'put_large') {
            const size = op === 'put_small' ? randomInt(1024, small.length) : large.length;
            const body = (op === 'put_small' ? small : large).subarray(0, size);
            // A fresh prefix per file keeps content unique enough to be written, not deduplicated.
            const data = Buffer.concat([randomBytes(64), body]);
            const path = `/load/c${id}/f${n++}.bin`;
            committedAt.set(path, process.hrtime.bigint());
            await c.putStream(Readable.from([data]), path, { size: data.length });
            stats.bytesUp += data.length;
          } else if (op === 'get' || op === 'get_range') {
            const f = seeded[randomInt(seeded.length)]!;
            const offset = op === 'get_range' ? randomInt(f.size) : 0;
            const limit = op === 'get_range' ? Math.min(f.size - offset, randomInt(1, 128 * 1024)) : 0;
            for await (const p of c.read(f.path, { offset, limit })) if ('data' in p) stats.bytesDown += p.data.length;
          } else {
            await c.list('/seed', { pageSize: 100 });
          }
          record(stats, op, start);
        } catch (err) {
          if (!signal.aborted) fail(stats, op, err);
        }
      }
    } finally {
      c.close();
    }
  });
  await Promise.all(loops);
  await Promise.race([Promise.all(watching), new Promise((r) => setTimeout(r, 2000))]);
  seedClient.close();
}
