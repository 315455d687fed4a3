// Thumbnail serving latency: p50/p99 of HTTP thumbnail GETs (token auth, metadata lookup, ETag,
// cached decrypted bytes) at 32 concurrent clients against an embedded server, and the anchor: a
// bare node:http server in this process answering the same bytes to the same client in the same
// run. ratio = Cairn p99 / 10 ms (target ≤ 1); p99_vs_anchor compares with the anchor.
import { createServer, request, Agent, type IncomingHttpHeaders } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CairnClient } from '../src/client/index.js';
import type { BenchMain, BenchReport } from './report.js';
import { photo, startMediaServer } from './thumbnails.js';

const TARGET_P99_MS = 10;

interface Target {
  readonly host: string;
  readonly port: number;
  readonly paths: readonly string[];
  readonly headers: Record<string, string>;
}

function get(agent: Agent, target: Target, path: string): Promise<{ status: number; bytes: number; headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: target.host, port: target.port, path, agent, headers: target.headers }, (res) => {
      let bytes = 0;
      res.on('data', (d: Buffer) => (bytes += d.length));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, headers: res.headers }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

async function load(target: Target, clients: number, requests: number): Promise<{ p50: number; p99: number; mean: number; rps: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: clients });
  // Warm up connections and caches.
  await Promise.all(Array.from({ length: clients }, (_, i) => get(agent, target, target.paths[i % target.paths.length]!)));
  const times: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: clients }, async () => {
    while (next < requests) {
      const i = next++;
      const s = performance.now();
      const res = await get(agent, target, target.paths[i % target.paths.length]!);
      if (res.status !== 200) throw new Error(`GET answered ${res.status}`);
      times.push(performance.now() - s);
    }
  }));
  const seconds = (performance.now() - t0) / 1000;
  agent.destroy();
  times.sort((a, b) => a - b);
  const q = (p: number): number => times[Math.min(times.length - 1, Math.floor(p * times.length))]!;
  return { p50: q(0.5), p99: q(0.99), mean: times.reduce((a, b) => a + b, 0) / times.length, rps: requests / seconds };
}

export const run: BenchMain = async (args): Promise<BenchReport> => {
  const { values } = parseArgs({ args: [...args], options: { requests: { type: 'string', default: '5000' }, clients: { type: 'string', default: '32' }, images: { type: 'string', default: '16' } } });
  const requests = Number(values.requests);
  const clients = Number(values.clients);
  const count = Number(values.images);
  const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-serve-'));
  const server = await startMediaServer(join(dir, 'data'));
  try {
    const client = new CairnClient({ endpoint: server.grpc, token: server.token });
    const paths: string[] = [];
    for (let i = 0; i < count; i++) {
      const f = join(dir, `img-${i}.jpg`);
      await writeFile(f, await photo(i + 1, 1600, 1200));
      const info = await client.put(f, `/serve/img-${i}.jpg`);
      paths.push(`/v1/thumbnails?${new URLSearchParams({ path: `/serve/img-${i}.jpg`, size: '512', version: String(info.version) }).toString()}`);
    }
    client.close();
    const url = new URL(server.http);
    const cairn: Target = { host: url.hostname, port: Number(url.port), paths, headers: { authorization: `Bearer ${server.token}` } };
    // Generate every thumbnail first (on demand), and keep one body for the anchor.
    const agent = new Agent({ keepAlive: true });
    const bodies: Buffer[] = [];
    for (const p of paths) {
      const res = await new Promise<Buffer>((resolve, reject) => {
        request({ host: cairn.host, port: cairn.port, path: p, agent, headers: cairn.headers }, (r) => {
          const parts: Buffer[] = [];
          r.on('data', (d: Buffer) => parts.push(d));
          r.on('end', () => (r.statusCode === 200 ? resolve(Buffer.concat(parts)) : reject(new Error(`priming GET answered ${r.statusCode}`))));
        }).on('error', reject).end();
      });
      bodies.push(res);
    }
    agent.destroy();

    const anchorServer = createServer((req, res) => {
      const i = paths.indexOf(req.url ?? '');
      const body = bodies[i < 0 ? 0 : i]!;
      res.writeHead(200, { 'content-type': 'image/webp', 'content-length': String(body.length), etag: '"x"', 'cache-control': 'public, max-age=31536000, immutable' });
      res.end(body);
    });
    await new Promise<void>((resolve) => anchorServer.listen(0, '127.0.0.1', resolve));
    const anchorPort = (anchorServer.address() as { port: number }).port;
    const anchor = await load({ host: '127.0.0.1', port: anchorPort, paths, headers: cairn.headers }, clients, requests);
    const measured = await load(cairn, clients, requests);
    await new Promise<void>((resolve) => anchorServer.close(() => resolve()));
    return {
      bench: 'thumb-serve',
      ratio: measured.p99 / TARGET_P99_MS,
      target: 1,
      better: 'lower',
      figures: {
        clients,
        requests,
        thumbnail_bytes_mean: Math.round(bodies.reduce((a, b) => a + b.length, 0) / bodies.length),
        cairn_p50_ms: measured.p50,
        cairn_p99_ms: measured.p99,
        cairn_mean_ms: measured.mean,
        cairn_requests_per_s: measured.rps,
        anchor_p50_ms: anchor.p50,
        anchor_p99_ms: anchor.p99,
        anchor_requests_per_s: anchor.rps,
        p99_vs_anchor: measured.p99 / anchor.p99,
      },
    };
  } finally {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
};
