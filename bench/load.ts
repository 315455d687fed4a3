// Load benchmark: `npm run bench -- load --clients 64 --seconds 60 [--nodes 3] [--json]`.
// 64 closed-loop clients and 4 watchers run a mixed workload (small and large puts, whole and
// ranged reads, lists; watchers time commit → notification) against a `cairn dev cluster` of
// real processes (RF 3, W 2). Reports p50/p99 per operation, throughput and errors; the headline
// is the error rate (target 0). The anchor, measured in the same run on the same machine, is a
// bare grpc-js unary echo at the same concurrency: what the loopback and event loop cost alone.
import * as grpc from '@grpc/grpc-js';
import { OPS, arg, newStats, percentile, runWorkload, startCluster } from './_workload.js';
import type { BenchMain } from './report.js';

async function echoAnchor(clients: number, seconds: number): Promise<{ p50: number; p99: number; opsPerSecond: number }> {
  const server = new grpc.Server();
  const id = (b: Buffer): Buffer => b;
  server.addService({ Echo: { path: '/bench.Echo/Echo', requestStream: false, responseStream: false, requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id } }, {
    Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request),
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const lat: number[] = [];
  const until = Date.now() + seconds * 1000;
  const payload = Buffer.alloc(512);
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (Date.now() < until) {
        const start = process.hrtime.bigint();
        await new Promise<void>((resolve, reject) => client.makeUnaryRequest('/bench.Echo/Echo', id, id, payload, (err) => (err ? reject(err) : resolve())));
        lat.push(Number(process.hrtime.bigint() - start) / 1e6);
      }
    }),
  );
  client.close();
  server.forceShutdown();
  return { p50: percentile(lat, 50), p99: percentile(lat, 99), opsPerSecond: lat.length / seconds };
}

export const run: BenchMain = async (args) => {
  const clients = Number(arg(args, '--clients', '64'));
  const seconds = Number(arg(args, '--seconds', '60'));
  const nodes = Number(arg(args, '--nodes', '3'));
  if (!(clients >= 1 && seconds >= 1 && nodes >= 1)) throw new Error('--clients, --seconds and --nodes must be positive');
  const anchor = await echoAnchor(clients, Math.min(10, seconds));
  const c = await startCluster(nodes);
  const stats = newStats();
  try {
    const token = await c.cluster.token('load', 'user');
    const stop = new AbortController();
    const timer = setTimeout(() => stop.abort(), seconds * 1000);
    const started = Date.now();
    await runWorkload(c.cluster.gatewayEndpoints[0]!, token, clients, 4, stop.signal, stats);
    clearTimeout(timer);
    const elapsed = (Date.now() - started) / 1000;
    const errors = [...stats.errors.values()].reduce((a, b) => a + b, 0);
    const figures: Record<string, number | string> = {
      clients,
      seconds,
      nodes,
      ops: stats.ops,
      errors,
      ops_per_second: stats.ops / elapsed,
      upload_MBps: stats.bytesUp / 1e6 / elapsed,
      download_MBps: stats.bytesDown / 1e6 / elapsed,
      anchor_echo_p50_ms: anchor.p50,
      anchor_echo_p99_ms: anchor.p99,
      anchor_echo_ops_per_second: anchor.opsPerSecond,
    };
    for (const op of OPS) {
      const l = stats.latencies.get(op)!;
      figures[`${op}_count`] = l.length;
      figures[`${op}_p50_ms`] = percentile(l, 50);
      figures[`${op}_p99_ms`] = percentile(l, 99);
    }
    if (errors > 0) figures['first_errors'] = [...stats.errors].slice(0, 3).map(([k, v]) => `${v}× ${k}`).join(' | ');
    return {
      bench: 'load',
      ratio: stats.ops === 0 ? 1 : errors / stats.ops,
      target: 0,
      better: 'lower',
      figures,
      rows: OPS.map((op) => {
        const l = stats.latencies.get(op)!;
        return { op, count: l.length, p50_ms: percentile(l, 50).toFixed(2), p99_ms: percentile(l, 99).toFixed(2) };
      }),
    };
  } finally {
    await c.close();
  }
};
