// Thumbnail serving latency: p50/p99 of HTTP thumbnail GETs (token auth, metadata lookup, ETag,
// cached decrypted bytes) at 32 concurrent clients against an embedded server, and the anchor: a
// bare node:http server in this process answering the same bytes to the same client in the same
// run, in alternating rounds (median of the rounds). ratio = Cairn p99 / 10 ms (target ≤ 1);
// p99_vs_anchor and cairn_p99_over_anchor_ms compare with the anchor: the anchor's own p99 is
// what this machine and this client give a server that does nothing. A second anchor runs the
// same bare server in a process of its own (as Cairn's server is): p99_vs_process_anchor.
import { spawn } from 'node:child_process';
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

/** The server's own cairn_media_serve_seconds histogram (bearer, 2xx): cumulative bucket counts and sum. */
async function serveHistogram(http: string): Promise<{ buckets: Map<number, number>; sum: number; count: number }> {
  const text = await (await fetch(`${http}/metrics`)).text();
  const buckets = new Map<number, number>();
  let sum = 0;
  let count = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith('cairn_media_serve_seconds') || !line.includes('route="bearer"') || !line.includes('status="2xx"')) continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    const le = /le="([^"]+)"/.exec(line)?.[1];
    if (line.startsWith('cairn_media_serve_seconds_bucket') && le !== undefined) buckets.set(le === '+Inf' ? Infinity : Number(le), value);
    else if (line.startsWith('cairn_media_serve_seconds_sum')) sum = value;
    else if (line.startsWith('cairn_media_serve_seconds_count')) count = value;
  }
  return { buckets, sum, count };
}

/** Between two scrapes: the mean and the upper bound of the bucket holding the 99th percentile, in ms. */
function serverSide(a: Awaited<ReturnType<typeof serveHistogram>>, b: Awaited<ReturnType<typeof serveHistogram>>): { meanMs: number; p99UpperMs: number; requests: number } {
  const requests = b.count - a.count;
  let p99 = Infinity;
  for (const le of [...b.buckets.keys()].sort((x, y) => x - y)) {
    if ((b.buckets.get(le) ?? 0) - (a.buckets.get(le) ?? 0) >= 0.99 * requests) {
      p99 = le;
      break;
    }
  }
  return { meanMs: requests > 0 ? ((b.sum - a.sum) / requests) * 1000 : 0, p99UpperMs: p99 * 1000, requests };
}

export const run: BenchMain = async (args): Promise<BenchReport> => {
  const { values } = parseArgs({ args: [...args], options: { requests: { type: 'string', default: '5000' }, clients: { type: 'string', default: '32' }, images: { type: 'string', default: '16' }, rounds: { type: 'string', default: '3' } } });
  const requests = Number(values.requests);
  const clients = Number(values.clients);
  const count = Number(values.images);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) throw new RangeError('--rounds must be a positive integer');
  const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-serve-'));
  // One tenant sends 32 × 5,000 GETs per round, far past the default per-tenant budget of
  // 1,000 requests/s: the limiter is switched off so the bench measures serving, not refusals.
  const server = await startMediaServer(join(dir, 'data'), { CAIRN_RATE_LIMIT_REQUESTS_PER_SECOND: '0' });
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
    const anchorTarget: Target = { host: '127.0.0.1', port: anchorPort, paths, headers: cairn.headers };
    // The same bare server in a process of its own, like Cairn's: on a shared machine the hop
    // between two processes (each waiting for the scheduler) is part of every request.
    for (let i = 0; i < bodies.length; i++) await writeFile(join(dir, `body-${i}`), bodies[i]!);
    const script = `const http = require('node:http'); const fs = require('node:fs');
      const paths = JSON.parse(process.argv[1]); const bodies = paths.map((_, i) => fs.readFileSync(process.argv[2] + '/body-' + i));
      const s = http.createServer((req, res) => { const i = paths.indexOf(req.url); const body = bodies[i < 0 ? 0 : i];
        res.writeHead(200, { 'content-type': 'image/webp', 'content-length': String(body.length), etag: '"x"', 'cache-control': 'public, max-age=31536000, immutable' }); res.end(body); });
      s.keepAliveTimeout = 5000; s.listen(0, '127.0.0.1', () => console.log(s.address().port));`;
    const child = spawn(process.execPath, ['-e', script, JSON.stringify(paths), dir], { stdio: ['ignore', 'pipe', 'inherit'] });
    const childPort = await new Promise<number>((resolve, reject) => {
      child.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
      child.once('exit', (code) => reject(new Error(`anchor process exited with ${code}`)));
    });
    const processTarget: Target = { host: '127.0.0.1', port: childPort, paths, headers: cairn.headers };
    const processAnchors: Array<Awaited<ReturnType<typeof load>>> = [];
    // Rounds alternate which side goes first, so a burst of load from other processes on the
    // shared machine hits both sides alike; each figure is the median over the rounds.
    const anchors: Array<Awaited<ReturnType<typeof load>>> = [];
    const measured: Array<Awaited<ReturnType<typeof load>>> = [];
    const h0 = await serveHistogram(server.http);
    for (let r = 0; r < rounds; r++) {
      if (r % 2 === 0) {
        anchors.push(await load(anchorTarget, clients, requests));
        processAnchors.push(await load(processTarget, clients, requests));
        measured.push(await load(cairn, clients, requests));
      } else {
        measured.push(await load(cairn, clients, requests));
        processAnchors.push(await load(processTarget, clients, requests));
        anchors.push(await load(anchorTarget, clients, requests));
      }
    }
    const inServer = serverSide(h0, await serveHistogram(server.http));
    await new Promise<void>((resolve) => anchorServer.close(() => resolve()));
    child.kill('SIGTERM');
    const median = (xs: number[]): number => {
      const s = [...xs].sort((a, b) => a - b);
      return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
    };
    const cairnP99 = median(measured.map((m) => m.p99));
    const anchorP99 = median(anchors.map((m) => m.p99));
    return {
      bench: 'thumb-serve',
      ratio: cairnP99 / TARGET_P99_MS,
      target: 1,
      better: 'lower',
      figures: {
        clients,
        requests,
        rounds,
        thumbnail_bytes_mean: Math.round(bodies.reduce((a, b) => a + b.length, 0) / bodies.length),
        cairn_p50_ms: median(measured.map((m) => m.p50)),
        cairn_p99_ms: cairnP99,
        cairn_p99_rounds_ms: measured.map((m) => Math.round(m.p99 * 100) / 100).join(' '),
        cairn_mean_ms: median(measured.map((m) => m.mean)),
        cairn_requests_per_s: median(measured.map((m) => m.rps)),
        anchor_p50_ms: median(anchors.map((m) => m.p50)),
        anchor_p99_ms: anchorP99,
        anchor_p99_rounds_ms: anchors.map((m) => Math.round(m.p99 * 100) / 100).join(' '),
        anchor_requests_per_s: median(anchors.map((m) => m.rps)),
        p99_vs_anchor: cairnP99 / anchorP99,
        anchor_process_p50_ms: median(processAnchors.map((m) => m.p50)),
        anchor_process_p99_ms: median(processAnchors.map((m) => m.p99)),
        anchor_process_p99_rounds_ms: processAnchors.map((m) => Math.round(m.p99 * 100) / 100).join(' '),
        p99_vs_process_anchor: cairnP99 / median(processAnchors.map((m) => m.p99)),
        // What Cairn adds over a bare node:http server on this machine, in this run.
        cairn_p99_over_anchor_ms: cairnP99 - anchorP99,
        // The server's own histogram: routing to response written, without the client and the wire.
        server_requests: inServer.requests,
        server_mean_ms: inServer.meanMs,
        server_p99_at_most_ms: inServer.p99UpperMs,
      },
    };
  } finally {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
};
