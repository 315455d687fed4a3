// Soak benchmark: `npm run bench -- soak --minutes 10 [--clients 16] [--json]`. The mixed
// workload of `load` runs for the whole time against a `cairn dev cluster`; each process's RSS
// is sampled after a warm-up and at the end. Ratio = the largest RSS growth of any process over
// its warmed-up size (target ≤ 0.5, i.e. no process grows by half); errors must stay 0. The
// anchor is the benchmark's own client process (the same Node runtime doing the same work).
import { readFileSync } from 'node:fs';
import { arg, newStats, runWorkload, startCluster } from './_workload.js';
import type { BenchMain } from './report.js';

function rssMiB(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? 0 : Number(m[1]) / 1024;
  } catch {
    return 0;
  }
}

export const run: BenchMain = async (args) => {
  const minutes = Number(arg(args, '--minutes', '10'));
  const clients = Number(arg(args, '--clients', '16'));
  if (!(minutes > 0 && clients >= 1)) throw new Error('--minutes and --clients must be positive');
  const c = await startCluster(3);
  const stats = newStats();
  try {
    const token = await c.cluster.token('soak', 'user');
    const stop = new AbortController();
    const totalMs = minutes * 60_000;
    const warmupMs = Math.min(60_000, totalMs / 5);
    const samples = new Map<string, { start: number; end: number; peak: number }>();
    const sample = (phase: 'start' | 'end'): void => {
      for (const p of [...c.cluster.processes.values()].map((x) => ({ name: x.name, pid: x.proc.pid })).concat([{ name: 'bench-client', pid: process.pid }])) {
        const v = rssMiB(p.pid);
        const s = samples.get(p.name) ?? { start: v, end: v, peak: v };
        s[phase] = v;
        s.peak = Math.max(s.peak, v);
        samples.set(p.name, s);
      }
    };
    const warm = setTimeout(() => sample('start'), warmupMs);
    const peak = setInterval(() => {
      for (const [name, s] of samples) {
        const x = c.cluster.processes.get(name);
        s.peak = Math.max(s.peak, rssMiB(x?.proc.pid ?? (name === 'bench-client' ? process.pid : undefined)));
      }
    }, 5000);
    const timer = setTimeout(() => stop.abort(), totalMs);
    await runWorkload(c.cluster.gatewayEndpoints[0]!, token, clients, 2, stop.signal, stats);
    clearTimeout(timer);
    clearTimeout(warm);
    clearInterval(peak);
    sample('end');
    const errors = [...stats.errors.values()].reduce((a, b) => a + b, 0);
    const growth = [...samples].map(([name, s]) => ({ name, start: s.start, end: s.end, peak: s.peak, growth: s.start > 0 ? (s.end - s.start) / s.start : 0 }));
    const worst = growth.filter((g) => g.name !== 'bench-client').reduce((a, b) => (b.growth > a.growth ? b : a), { name: '', start: 0, end: 0, peak: 0, growth: 0 });
    const anchor = growth.find((g) => g.name === 'bench-client');
    return {
      bench: 'soak',
      ratio: worst.growth,
      target: 0.5,
      better: 'lower',
      figures: { minutes, clients, ops: stats.ops, errors, worst_process: worst.name, worst_growth_MiB: worst.end - worst.start, anchor_client_growth_ratio: anchor?.growth ?? 0 },
      rows: growth.map((g) => ({ process: g.name, rss_start_MiB: g.start.toFixed(1), rss_end_MiB: g.end.toFixed(1), peak_MiB: g.peak.toFixed(1), growth_pct: (g.growth * 100).toFixed(1) })),
    };
  } finally {
    await c.close();
  }
};
