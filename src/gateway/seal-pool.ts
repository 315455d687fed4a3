// Sealing off the event loop: batches of chunks are sealed in a piscina worker pool so that
// AES-GCM, SHA-256 and snappy overlap the gateway's network and block-node I/O. Batches of up to
// one task are sealed inline, where handing them to a thread would cost more than it saves.
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { seal } from './seal.js';
import type { SealResult, SealTask } from './seal-worker.js';

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

const asBuffer = (u: Uint8Array): Buffer => Buffer.from(u.buffer, u.byteOffset, u.length);

/** Seals chunks in order, in the worker pool when the batch is large enough. */
export async function sealMany(key: Buffer, items: readonly SealInput[]): Promise<SealOutput[]> {
  const total = items.reduce((n, c) => n + c.data.length, 0);
  if (total <= INLINE_BYTES) return items.map((c) => seal(key, c.hash, c.data));
  const tasks: Array<Promise<SealResult>> = [];
  for (let i = 0; i < items.length; ) {
    const task: { key: Buffer; hashes: Buffer[]; data: Buffer[] } = { key, hashes: [], data: [] };
    let n = 0;
    while (i < items.length && (task.data.length === 0 || n + items[i]!.data.length <= TASK_BYTES)) {
      task.hashes.push(items[i]!.hash);
      task.data.push(items[i]!.data);
      n += items[i]!.data.length;
      i++;
    }
    tasks.push(getPool().run(task satisfies SealTask) as Promise<SealResult>);
  }
  const out: SealOutput[] = [];
  for (const r of await Promise.all(tasks)) {
    for (let j = 0; j < r.sealed.length; j++) out.push({ address: asBuffer(r.addresses[j]!), sealed: asBuffer(r.sealed[j]!) });
  }
  return out;
}
