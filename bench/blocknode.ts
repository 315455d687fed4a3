// Block store write benchmark: durable puts of random 64 KiB–1 MiB blocks against
// `dd conv=fdatasync` on the same filesystem in the same run (ratio = cairn MB/s ÷ dd MB/s).
import { execFile } from 'node:child_process';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlockStore } from '../src/blocknode/engine/index.js';
import type { BenchMain } from './report.js';

const MiB = 1024 * 1024;
// A stream's blocks are sent in batches with a few batches in flight, as the gateway does;
// group commit then turns them into one fdatasync per batch of batches.
const PUT_BATCH_BYTES = 16 * MiB;
const PUTS_IN_FLIGHT = 8;
const GETS_IN_FLIGHT = 8;

function arg(args: readonly string[], name: string, fallback: string): string {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? (args[i + 1] as string) : fallback;
}

function dd(path: string, mib: number): Promise<{ bytes: number; seconds: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    execFile('dd', ['if=/dev/zero', `of=${path}`, 'bs=1M', `count=${mib}`, 'conv=fdatasync'], (err, _stdout, stderr) => {
      if (err) return reject(new Error(`dd failed: ${stderr}`, { cause: err }));
      const elapsed = (performance.now() - started) / 1000;
      // "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 1.23 s, 873 MB/s"
      const m = /^(\d+) bytes.*copied, ([\d.]+) s/m.exec(stderr);
      resolve(m ? { bytes: Number(m[1]), seconds: Number(m[2]) } : { bytes: mib * MiB, seconds: elapsed });
    });
  });
}

function makeBlocks(totalBytes: number): { address: Buffer; data: Buffer }[] {
  const pool = randomBytes(2 * MiB);
  const blocks: { address: Buffer; data: Buffer }[] = [];
  let left = totalBytes;
  let n = 0;
  while (left > 0) {
    const size = Math.min(left, randomInt(64 * 1024, MiB + 1));
    const data = Buffer.allocUnsafe(size);
    pool.copy(data, 0, randomInt(0, pool.length - size + 1));
    data.writeUInt32BE(n++, 0); // distinct blocks, so dedup never skips a write
    data.writeUInt32BE(randomInt(0, 2 ** 32), 4);
    blocks.push({ address: createHash('sha256').update(data).digest(), data });
    left -= size;
  }
  return blocks;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

async function pool<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: width }, worker));
}

export const run: BenchMain = async (args) => {
  const sizeMiB = Number(arg(args, '--size-mib', '1024'));
  if (!Number.isInteger(sizeMiB) || sizeMiB < 1) throw new RangeError('--size-mib must be an integer ≥ 1');
  const base = await mkdtemp(join(arg(args, '--dir', tmpdir()), 'cairn-bench-blocknode-'));
  try {
    const blocks = makeBlocks(sizeMiB * MiB);
    const batches: (typeof blocks)[] = [];
    let current: typeof blocks = [];
    let currentBytes = 0;
    for (const b of blocks) {
      current.push(b);
      currentBytes += b.data.length;
      if (currentBytes >= PUT_BATCH_BYTES) {
        batches.push(current);
        current = [];
        currentBytes = 0;
      }
    }
    if (current.length > 0) batches.push(current);

    // dd and cairn alternate so a noisy neighbour hurts both sides alike; medians are reported.
    const rounds = Number(arg(args, '--rounds', '2'));
    if (!Number.isInteger(rounds) || rounds < 1) throw new RangeError('--rounds must be an integer ≥ 1');
    const ddRuns: number[] = [];
    const putRuns: number[] = [];
    let getSeconds = 0;
    let stats: ReturnType<BlockStore['stats']> | undefined;
    const ddOnce = async (): Promise<void> => {
      const r = await dd(join(base, 'dd.bin'), sizeMiB);
      await rm(join(base, 'dd.bin'));
      ddRuns.push(r.bytes / 1e6 / r.seconds);
    };
    for (let round = 0; round < rounds; round++) {
      await ddOnce();
      const store = await BlockStore.open({ dir: join(base, 'store') });
      try {
        const t0 = performance.now();
        await pool(batches, PUTS_IN_FLIGHT, async (batch) => {
          await store.put(batch);
        });
        putRuns.push((sizeMiB * MiB) / 1e6 / ((performance.now() - t0) / 1000));
        stats = store.stats();
        if (round === rounds - 1) {
          const t1 = performance.now();
          await pool(blocks, GETS_IN_FLIGHT, async (b) => {
            const got = await store.get(b.address);
            if (!got?.equals(b.data)) throw new Error(`block ${b.address.toString('hex')} did not read back`);
          });
          getSeconds = (performance.now() - t1) / 1000;
        }
      } finally {
        await store.close();
      }
      await rm(join(base, 'store'), { recursive: true, force: true });
    }
    await ddOnce();
    const bytes = sizeMiB * MiB;
    const cairnMBps = median(putRuns);
    const ddMBps = median(ddRuns);
    const last = stats as ReturnType<BlockStore['stats']>;
    return {
      bench: 'blocknode',
      ratio: cairnMBps / ddMBps,
      target: 0.8,
      better: 'higher',
      figures: {
        size_MiB: sizeMiB,
        blocks: blocks.length,
        rounds,
        cairn_put_MBps: cairnMBps,
        cairn_put_runs_MBps: putRuns.map((v) => v.toFixed(0)).join(' '),
        dd_MBps: ddMBps,
        dd_runs_MBps: ddRuns.map((v) => v.toFixed(0)).join(' '),
        cairn_get_MBps: bytes / 1e6 / getSeconds,
        fsync_batches: last.fsyncBatches,
        blocks_per_fsync: last.fsyncBlocks / Math.max(1, last.fsyncBatches),
        segments: last.segments,
        put_batch_MiB: PUT_BATCH_BYTES / MiB,
        puts_in_flight: PUTS_IN_FLIGHT,
      },
    };
  } finally {
    await rm(base, { recursive: true, force: true });
  }
};
