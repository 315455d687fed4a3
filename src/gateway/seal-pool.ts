// Sealing off the event loop: batches of chunks are sealed in a piscina worker pool so that
// AES-GCM, SHA-256 and snappy overlap the gateway's network and block-node I/O. Batches of up to
// one task are sealed inline, where handing them to a thread would cost more than it saves.
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { seal } from './seal.js';
import { MISMATCH, type SealResult, type SealTask } from './seal-worker.js';

const WORKER = fileURLToPath(import.meta.url).replace(/seal-pool\.(ts|js)$/, (_m, ext: string) => `seal-worker.${ext}`);
/** Bytes per task handed to a worker. */
const TASK_BYTES = 2 * 1024 * 1024;
/**
 * Batches of at most one task's bytes are sealed on the calling thread: the caller awaits the
 * batch, so a single task buys no parallelism, and its round trip (structured-clone copies both
 * ways, waking the worker) cost more CPU than sealing in place — an upload of 50 × 1.5 MB photos
 * took 1.9–2.1 s of server CPU through the pool and 1.5–1.6 s inline. Larger batches are split
 * into tasks that workers seal in parallel.
 */
const INLINE_BYTES = TASK_BYTES;

let pool: Piscina | undefined;

function threads(): number {
  return Math.max(1, Math.min(4, availableParallelism() - 1));
}

function getPool(): Piscina {
  // Idle workers are unref'd by piscina, so a stopped gateway does not keep its process alive.
  pool ??= new Piscina({ filename: WORKER, minThreads: 0, maxThreads: threads(), idleTimeout: 30_000 });
  return pool;
}

export interface SealInput {
  readonly hash: Buffer;
  readonly data: Buffer;
}

export interface SealOutput {
  readonly address: Buffer;
  readonly sealed: Buffer;
}

export interface SealOptions {
  /**
   * Check that each chunk's bytes hash to its `hash` before sealing any (for hashes a client
   * sent): in the worker that seals it, so a large batch costs the event loop no SHA-256. The
   * error for the first chunk that does not is made by `mismatch(index)` and thrown; nothing of
   * the batch is returned.
   */
  readonly mismatch?: (index: number) => Error;
}

/** Seals chunks in order, in the worker pool when the batch is large enough. */
export async function sealMany(key: Buffer, items: readonly SealInput[], options: SealOptions = {}): Promise<SealOutput[]> {
  const { mismatch } = options;
  const total = items.reduce((n, c) => n + c.data.length, 0);
  if (total <= INLINE_BYTES) {
    if (mismatch !== undefined) {
      items.forEach((c, i) => {
        if (!createHash('sha256').update(c.data).digest().equals(c.hash)) throw mismatch(i);
      });
    }
    return items.map((c) => seal(key, c.hash, c.data));
  }
  const tasks: Array<Promise<SealResult>> = [];
  const counts: number[] = [];
  for (let i = 0; i < items.length; ) {
    let end = i;
    let n = 0;
    while (end < items.length && (end === i || n + items[end]!.data.length <= TASK_BYTES)) n += items[end++]!.data.length;
    // One copy into a buffer the worker takes over: cloning the chunks would copy each one's whole
    // backing buffer (the gRPC message it arrived in) once per task.
    const data = new ArrayBuffer(n);
    const bytes = new Uint8Array(data);
    const hashes = new Uint8Array((end - i) * 32);
    const lengths: number[] = [];
    for (let j = i, at = 0; j < end; j++) {
      const c = items[j]!;
      bytes.set(c.data, at);
      hashes.set(c.hash, (j - i) * 32);
      lengths.push(c.data.length);
      at += c.data.length;
    }
    const task: SealTask = { key, hashes, lengths, data, verify: mismatch !== undefined };
    tasks.push(getPool().run(task, { transferList: [data] }) as Promise<SealResult>);
    counts.push(end - i);
    i = end;
  }
  const results = await Promise.all(tasks);
  let first = 0;
  results.forEach((r, t) => {
    if (r.byteLength === 8 && new DataView(r).getUint32(0, true) === MISMATCH && mismatch !== undefined) throw mismatch(first + new DataView(r).getUint32(4, true));
    first += counts[t]!;
  });
  const out: SealOutput[] = [];
  results.forEach((r, t) => {
    const n = counts[t]!;
    const view = new DataView(r);
    let at = n * 36;
    for (let j = 0; j < n; j++) {
      const len = view.getUint32(n * 32 + j * 4, true);
      // The address is copied out: callers keep addresses (a file's chunk list) long after its block is written.
      out.push({ address: Buffer.from(new Uint8Array(r, j * 32, 32)), sealed: Buffer.from(r, at, len) });
      at += len;
    }
  });
  return out;
}
