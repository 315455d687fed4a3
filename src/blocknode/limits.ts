// Flow control shared by the block node's service and background loops: a concurrency limit
// with a bounded wait queue, a byte-rate token bucket, and jittered exponential backoff.
import { setTimeout as sleep } from 'node:timers/promises';
import { CairnError } from '../common/errors.js';

/**
 * At most `limit` holders at once; up to `maxQueue` callers wait their turn, more are refused
 * with RESOURCE_EXHAUSTED (CAIRN_RATE_LIMITED) so a flood cannot pile up memory on the node.
 */
export class ConcurrencyLimit {
  #active = 0;
  readonly #waiting: Array<() => void> = [];

  constructor(
    readonly limit: number,
    readonly maxQueue: number,
  ) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError('limit must be an integer ≥ 1');
    if (!Number.isInteger(maxQueue) || maxQueue < 0) throw new RangeError('maxQueue must be an integer ≥ 0');
  }

  get active(): number {
    return this.#active;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#active >= this.limit) {
      if (this.#waiting.length >= this.maxQueue) {
        throw new CairnError('CAIRN_RATE_LIMITED', `block node busy: ${this.#active} calls running and ${this.#waiting.length} waiting`, { retryAfterMs: 200 });
      }
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    } else {
      this.#active++;
    }
    try {
      return await fn();
    } finally {
      const next = this.#waiting.shift();
      // The slot passes straight to the next waiter, so #active stays counted.
      if (next) next();
      else this.#active--;
    }
  }
}

/** A byte budget per second; take() sleeps until the bytes fit. Rate 0 means unlimited. */
export class TokenBucket {
  #tokens: number;
  #last = performance.now();

  constructor(readonly bytesPerSecond: number) {
    if (!(bytesPerSecond >= 0)) throw new RangeError('bytesPerSecond must be a number ≥ 0');
    // One second of burst keeps small pushes from waiting behind the clock.
    this.#tokens = bytesPerSecond;
  }

  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    if (this.bytesPerSecond === 0) return;
    const now = performance.now();
    this.#tokens = Math.min(this.bytesPerSecond, this.#tokens + ((now - this.#last) / 1000) * this.bytesPerSecond);
    this.#last = now;
    this.#tokens -= bytes;
    if (this.#tokens < 0) {
      const waitMs = (-this.#tokens / this.bytesPerSecond) * 1000;
      await sleep(waitMs, undefined, signal ? { signal } : {}).catch(() => undefined);
    }
  }
}

/** Exponential backoff with full jitter: a random delay in [0, min(max, base·2^attempt)). */
export function backoffMs(attempt: number, baseMs: number, maxMs: number): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(Math.random() * ceiling);
}

/** Runs fn over items with at most `width` in flight; the first failure rejects after the rest settle. */
export async function pool<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (next < items.length && failure === undefined) {
      const item = items[next++] as T;
      try {
        await fn(item);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  if (failure !== undefined) throw failure.err;
}
