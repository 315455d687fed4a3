// Chunking throughput: FastCDC alone and with SHA-256 per chunk, against a naive
// gear rolling-hash loop over the same data measured in the same run (ANCHORS.md).
import { createHash, randomFillSync } from 'node:crypto';
import { parseArgs } from 'node:util';
import { Chunker, GEAR, findBoundary, resolveChunkerOptions } from '../src/chunking/index.js';
import type { BenchMain, BenchReport } from './report.js';

const TARGET_MB_S = 500;
const MB = 1e6;

function mbps(bytes: number, ms: number): number {
  return bytes / MB / (ms / 1000);
}

/** The anchor: `h = ((h << 1) + GEAR[b]) | 0` over every byte, nothing else. */
function gearLoop(data: Uint8Array): number {
  const g = GEAR;
  let h = 0;
  for (let i = 0; i < data.length; i++) h = ((h << 1) + g[data[i]!]!) | 0;
  return h;
}

function best<T>(runs: number, f: () => T): { ms: number; value: T } {
  let ms = Infinity;
  let value = f();
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    value = f();
    ms = Math.min(ms, performance.now() - t0);
  }
  return { ms, value };
}

export const run: BenchMain = async (args): Promise<BenchReport> => {
  const { values } = parseArgs({
    args: [...args],
    options: { 'size-mib': { type: 'string', default: '256' }, runs: { type: 'string', default: '3' } },
  });
  const sizeMiB = Number(values['size-mib']);
  const runs = Number(values.runs);
  if (!Number.isInteger(sizeMiB) || sizeMiB < 1) throw new RangeError('--size-mib must be a positive integer');
  if (!Number.isInteger(runs) || runs < 1) throw new RangeError('--runs must be a positive integer');

  const data = Buffer.allocUnsafeSlow(sizeMiB * 1024 * 1024);
  for (let off = 0; off < data.length; off += 1 << 30) randomFillSync(data, off, Math.min(1 << 30, data.length - off));
  const opts = resolveChunkerOptions();

  const anchor = best(runs, () => gearLoop(data));
  const chunkOnly = best(runs, () => {
    const lengths: number[] = [];
    for (let p = 0; p < data.length; ) {
      const len = findBoundary(data, p, data.length, opts);
      lengths.push(len);
      p += len;
    }
    return lengths;
  });
  // The streaming API in 1 MiB pushes, as the gateway and SDK use it.
  const withHash = best(runs, () => {
    const chunker = new Chunker(opts);
    let n = 0;
    const hash = (chunks: Buffer[]) => {
      for (const c of chunks) {
        createHash('sha256').update(c).digest();
        n++;
      }
    };
    for (let p = 0; p < data.length; p += 1 << 20) hash(chunker.push(data.subarray(p, Math.min(p + (1 << 20), data.length))));
    hash(chunker.finish());
    return n;
  });

  const lengths = chunkOnly.value;
  const sorted = [...lengths].sort((a, b) => a - b);
  const median = sorted.length === 0 ? 0 : (sorted[(sorted.length - 1) >> 1]! + sorted[sorted.length >> 1]!) / 2;
  const bucket = 16 * 1024;
  const buckets = new Map<number, number>();
  for (const len of lengths) {
    const b = Math.floor(len / bucket);
    buckets.set(b, (buckets.get(b) ?? 0) + 1);
  }
  const rows = [...buckets.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([b, count]) => ({
      size_KiB: `${(b * bucket) / 1024}–${((b + 1) * bucket) / 1024}`,
      chunks: count,
      percent: Number(((100 * count) / lengths.length).toFixed(2)),
    }));

  const chunkHashMBs = mbps(data.length, withHash.ms);
  return {
    bench: 'chunking',
    ratio: chunkHashMBs / TARGET_MB_S,
    target: 1,
    better: 'higher',
    figures: {
      data_MiB: sizeMiB,
      runs,
      chunking_MB_s: mbps(data.length, chunkOnly.ms),
      chunk_sha256_MB_s: chunkHashMBs,
      anchor_gear_loop_MB_s: mbps(data.length, anchor.ms),
      chunking_vs_anchor: anchor.ms / chunkOnly.ms,
      chunk_sha256_vs_anchor: anchor.ms / withHash.ms,
      target_MB_s: TARGET_MB_S,
      chunks: lengths.length,
      mean_chunk_KiB: data.length / lengths.length / 1024,
      median_chunk_KiB: median / 1024,
      min_KiB: opts.minSize / 1024,
      avg_KiB: opts.avgSize / 1024,
      max_KiB: opts.maxSize / 1024,
    },
    rows,
  };
};
