// The sharp pool: piscina worker threads sized from the cgroup CPU limit so that
// threads × sharp.concurrency() ≤ CPUs, behind a bounded FIFO queue (backpressure) whose
// deadlines abort tasks still waiting; a task handed to a thread always runs to completion.
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import sharp from 'sharp';
import { applyDecoderAllowlist } from './decode.js';
import type { MediaMetrics } from './metrics.js';
import { FAILURE_REASONS, MediaFailure, type FailureReason, type MediaOptions } from './options.js';
import type { ImageResult, ImageTask } from './worker.js';

/** CPUs this process may use: the cgroup v2/v1 quota when set, else the machine's parallelism. */
export function cgroupCpus(read: (path: string) => string = (p) => readFileSync(p, 'utf8')): number {
  const machine = availableParallelism();
  let quota: number | undefined;
  try {
    const [max, period] = read('/sys/fs/cgroup/cpu.max').trim().split(/\s+/);
    if (max !== undefined && max !== 'max' && period !== undefined) quota = Number(max) / Number(period);
  } catch {
    try {
      const q = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us').trim());
      const p = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_period_us').trim());
      if (q > 0 && p > 0) quota = q / p;
    } catch {
      quota = undefined;
    }
  }
  if (quota === undefined || !Number.isFinite(quota) || quota <= 0) return machine;
  return Math.max(1, Math.min(machine, Math.floor(quota)));
}

/** Threads so that threads × libvips threads per task ≤ CPUs (at least one). */
export function poolThreads(cpus: number, sharpConcurrency: number): number {
  return Math.max(1, Math.floor(cpus / Math.max(1, sharpConcurrency)));
}

/** Errors lose their class crossing threads: the worker prefixes messages with the reason. */
function fromWorker(err: unknown): unknown {
  const message = err instanceof Error ? err.message : String(err);
  const m = /^([a-z_]+): ([\s\S]*)$/.exec(message);
  if (m !== null && (FAILURE_REASONS as readonly string[]).includes(m[1]!)) return new MediaFailure(m[1] as FailureReason, m[2]!.trim());
  return err;
}

interface Queued {
  readonly task: ImageTask;
  readonly enqueuedMs: number;
  readonly timer: NodeJS.Timeout;
  readonly resolve: (r: ImageResult) => void;
  readonly reject: (e: unknown) => void;
}

const here = fileURLToPath(import.meta.url);
const WORKER = here.replace(/pool\.(ts|js)$/, (_m, ext: string) => `worker.${ext}`);

export class MediaPool {
  readonly threads: number;
  readonly #piscina: Piscina;
  readonly #options: MediaOptions;
  readonly #metrics: MediaMetrics;
  readonly #queue: Queued[] = [];
  #running = 0;
  #closed = false;

  constructor(options: MediaOptions, metrics: MediaMetrics) {
    this.#options = options;
    this.#metrics = metrics;
    applyDecoderAllowlist(options.svg);
    this.threads = options.threads > 0 ? options.threads : poolThreads(cgroupCpus(), sharp.concurrency());
    this.#piscina = new Piscina({
      filename: WORKER,
      minThreads: this.threads,
      maxThreads: this.threads,
      // This class queues; piscina never holds more than one task per thread.
      concurrentTasksPerWorker: 1,
      idleTimeout: 60_000,
      workerData: { svg: options.svg },
    });
  }

  /** Tasks waiting for a thread. */
  get queued(): number {
    return this.#queue.length;
  }

  /** Room left in the queue (what job leasing may take on). */
  get free(): number {
    return Math.max(0, this.threads - this.#running) + Math.max(0, this.#options.maxQueue - this.#queue.length);
  }

  /**
   * Runs one image task. `input` is transferred to the worker (the caller's buffer is detached).
   * Refused with `overloaded` when the queue is full; `deadline` when it waited too long.
   */
  run(task: ImageTask): Promise<ImageResult> {
    if (this.#closed) return Promise.reject(new MediaFailure('overloaded', 'the media pool is closed'));
    if (this.#running >= this.threads && this.#queue.length >= this.#options.maxQueue) {
      return Promise.reject(new MediaFailure('overloaded', `the media pool queue is full (${this.#options.maxQueue} tasks waiting)`));
    }
    return new Promise<ImageResult>((resolve, reject) => {
      const item: Queued = {
        task,
        enqueuedMs: performance.now(),
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.#queue.indexOf(item);
          if (i < 0) return; // already running: never aborted
          this.#queue.splice(i, 1);
          this.#metrics.queueDepth.set(this.#queue.length);
          reject(new MediaFailure('deadline', `waited ${this.#options.taskDeadlineMs} ms for a pool thread`));
        }, this.#options.taskDeadlineMs),
      };
      item.timer.unref();
      this.#queue.push(item);
      this.#metrics.queueDepth.set(this.#queue.length);
      this.#pump();
    });
  }

  #pump(): void {
    while (this.#running < this.threads && this.#queue.length > 0) {
      const item = this.#queue.shift()!;
      clearTimeout(item.timer);
      this.#metrics.queueDepth.set(this.#queue.length);
      this.#metrics.queueWait.observe((performance.now() - item.enqueuedMs) / 1000);
      this.#running++;
      this.#piscina.run(item.task, { transferList: [item.task.input] }).then(
        (r: ImageResult) => item.resolve(r),
        (err: unknown) => item.reject(fromWorker(err)),
      ).finally(() => {
        this.#running--;
        this.#pump();
      });
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const item of this.#queue.splice(0)) {
      clearTimeout(item.timer);
      item.reject(new MediaFailure('overloaded', 'the media pool is closing'));
    }
    this.#metrics.queueDepth.set(0);
    await this.#piscina.destroy();
  }
}
