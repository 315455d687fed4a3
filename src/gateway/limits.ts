// Per-tenant rate limits of a gateway: token buckets for requests per second (a call over budget
// is refused with CAIRN_RATE_LIMITED and a RetryInfo delay) and bytes per second (transfers are
// paced; while a tenant is in byte debt its new calls are refused the same way).
import { Counter, type Registry } from 'prom-client';
import { CairnError } from '../common/errors.js';

export interface RateLimits {
  /** Calls (gRPC and HTTP) per tenant per second; 0 = unlimited. */
  readonly requestsPerSecond?: number;
  /** Bytes read or written per tenant per second; 0 = unlimited. */
  readonly bytesPerSecond?: number;
  /** Bucket size as seconds of rate (the burst a quiet tenant may spend at once); default 5. */
  readonly burstSeconds?: number;
}

export const DEFAULT_LIMITS = Object.freeze({ requestsPerSecond: 1000, bytesPerSecond: 0, burstSeconds: 5 } satisfies Required<RateLimits>);

/** Buckets of tenants idle this long (and full) are forgotten. */
const IDLE_MS = 60_000;
const SWEEP_EVERY = 1024;

function checkRate(value: number, name: string): number {
  if (!Number.isFinite(value) || value < 0) throw new RangeError(`options.limits.${name} must be a number ≥ 0 (0 = unlimited)`);
  return value;
}

/** A token bucket refilled continuously at `rate` per second up to `capacity`. */
export class TokenBucket {
  readonly rate: number;
  readonly capacity: number;
  #tokens: number;
  #at: number;

  constructor(rate: number, capacity: number, now: number) {
    this.rate = rate;
    this.capacity = Math.max(1, capacity);
    this.#tokens = this.capacity;
    this.#at = now;
  }

  #refill(now: number): void {
    if (now > this.#at) {
      this.#tokens = Math.min(this.capacity, this.#tokens + ((now - this.#at) / 1000) * this.rate);
      this.#at = now;
    }
  }

  /** Takes `n` tokens if there are; otherwise takes none and returns the ms until there would be. */
  tryTake(n: number, now: number): number {
    this.#refill(now);
    if (this.#tokens >= n) {
      this.#tokens -= n;
      return 0;
    }
    return Math.ceil(((n - this.#tokens) / this.rate) * 1000);
  }

  /** Takes `n` tokens, going into debt if need be; returns the ms until the debt is repaid. */
  charge(n: number, now: number): number {
    this.#refill(now);
    this.#tokens -= n;
    return this.#tokens >= 0 ? 0 : Math.ceil((-this.#tokens / this.rate) * 1000);
  }

  /** Ms until the bucket is out of debt (0 when it is not in debt). */
  debtMs(now: number): number {
    this.#refill(now);
    return this.#tokens >= 0 ? 0 : Math.ceil((-this.#tokens / this.rate) * 1000);
  }

  isFull(now: number): boolean {
    this.#refill(now);
    return this.#tokens >= this.capacity;
  }

  get lastUse(): number {
    return this.#at;
  }
}

interface TenantBuckets {
  requests: TokenBucket | undefined;
  bytes: TokenBucket | undefined;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(new CairnError('CAIRN_CANCELLED', 'call cancelled'));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new CairnError('CAIRN_CANCELLED', 'call cancelled'));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** The gateway's per-tenant limits; one instance per gateway process. */
export class TenantLimiter {
  readonly limits: Readonly<Required<RateLimits>>;
  readonly #buckets = new Map<string, TenantBuckets>();
  readonly #now: () => number;
  readonly #refused: Counter<'limit'> | undefined;
  #calls = 0;

  constructor(limits: RateLimits = {}, options: { now?: () => number; registry?: Registry } = {}) {
    const merged = { ...DEFAULT_LIMITS, ...Object.fromEntries(Object.entries(limits).filter(([, v]) => v !== undefined)) } as Required<RateLimits>;
    checkRate(merged.requestsPerSecond, 'requestsPerSecond');
    checkRate(merged.bytesPerSecond, 'bytesPerSecond');
    if (!Number.isFinite(merged.burstSeconds) || merged.burstSeconds <= 0) throw new RangeError('options.limits.burstSeconds must be a number > 0');
    this.limits = Object.freeze(merged);
    this.#now = options.now ?? Date.now;
    this.#refused = options.registry === undefined ? undefined : new Counter({ name: 'cairn_gateway_rate_limited_total', help: 'Calls refused by per-tenant rate limits, by the budget that was exhausted.', labelNames: ['limit'], registers: [options.registry] });
  }

  #of(tenant: string): TenantBuckets {
    let b = this.#buckets.get(tenant);
    if (b === undefined) {
      const now = this.#now();
      const { requestsPerSecond: rps, bytesPerSecond: bps, burstSeconds } = this.limits;
      b = {
        requests: rps > 0 ? new TokenBucket(rps, rps * burstSeconds, now) : undefined,
        bytes: bps > 0 ? new TokenBucket(bps, bps * burstSeconds, now) : undefined,
      };
      this.#buckets.set(tenant, b);
      if (++this.#calls % SWEEP_EVERY === 0) this.#sweep(now);
    }
    return b;
  }

  #sweep(now: number): void {
    for (const [tenant, b] of this.#buckets) {
      const idle = [b.requests, b.bytes].every((x) => x === undefined || (now - x.lastUse > IDLE_MS && x.isFull(now)));
      if (idle) this.#buckets.delete(tenant);
    }
  }

  /**
   * Admits one call of `tenant`, or throws CAIRN_RATE_LIMITED (RESOURCE_EXHAUSTED) carrying the
   * delay after which the same call would be admitted.
   */
  admit(tenant: string): void {
    const b = this.#of(tenant);
    const now = this.#now();
    const debt = b.bytes?.debtMs(now) ?? 0;
    if (debt > 0) {
      this.#refused?.inc({ limit: 'bytes' });
      throw limited(tenant, debt, 'bytes');
    }
    const wait = b.requests?.tryTake(1, now) ?? 0;
    if (wait > 0) {
      this.#refused?.inc({ limit: 'requests' });
      throw limited(tenant, wait, 'requests');
    }
  }

  /** Charges `n` bytes to `tenant`; returns the ms until its byte bucket is out of debt again. */
  charge(tenant: string, n: number): number {
    const bucket = this.#of(tenant).bytes;
    if (bucket === undefined || n <= 0) return 0;
    return bucket.charge(n, this.#now());
  }

  /** Charges `n` bytes to `tenant` and waits until its byte bucket is out of debt again. */
  async pace(tenant: string, n: number, signal?: AbortSignal): Promise<void> {
    const wait = this.charge(tenant, n);
    if (wait > 0) await sleep(wait, signal);
  }

  /** Whether byte pacing is on (callers skip the per-message work otherwise). */
  get pacesBytes(): boolean {
    return this.limits.bytesPerSecond > 0;
  }
}

function limited(tenant: string, retryAfterMs: number, what: 'requests' | 'bytes'): CairnError {
  return new CairnError('CAIRN_RATE_LIMITED', `tenant ${tenant} is over its ${what} per second limit; retry in ${retryAfterMs} ms`, {
    retryAfterMs,
    metadata: { limit: what },
  });
}
