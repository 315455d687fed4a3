// Reusable read buffers. Every array buffer a Node process allocates counts towards V8's external
// memory, and each 64 MB or so of it starts a full garbage collection that marks the whole heap on
// every core; a GiB read through fresh buffers paid for about 16 of them in block reads alone. A
// read pipeline that knows when it is done with a buffer hands it back here instead.

export interface BufferPoolOptions {
  /** Size of each pooled slab; a larger request gets a fresh buffer. */
  readonly slabBytes: number;
  /** Slabs kept for reuse at most; more are left to the garbage collector. */
  readonly maxFree: number;
  /** Idle slabs are dropped when nothing was taken for this long (ms). */
  readonly idleMs?: number;
}

export class BufferPool {
  readonly slabBytes: number;
  readonly #maxFree: number;
  readonly #idleMs: number;
  readonly #free: ArrayBuffer[] = [];
  /** Slabs this pool made, handed out or free: release() ignores any other buffer. */
  readonly #owned = new WeakSet<ArrayBuffer>();
  /** Slabs handed out and not yet released: a second release of one is ignored. */
  readonly #out = new WeakSet<ArrayBuffer>();
  #taken = 0;
  #idleTimer: NodeJS.Timeout | undefined;

  constructor(options: BufferPoolOptions) {
    if (!Number.isSafeInteger(options.slabBytes) || options.slabBytes <= 0) throw new RangeError('slabBytes must be a positive integer');
    if (!Number.isSafeInteger(options.maxFree) || options.maxFree < 0) throw new RangeError('maxFree must be a non-negative integer');
    this.slabBytes = options.slabBytes;
    this.#maxFree = options.maxFree;
    this.#idleMs = options.idleMs ?? 10_000;
  }

  /** Slabs free for reuse now. */
  get free(): number {
    return this.#free.length;
  }

  /** A buffer of `bytes` (contents undefined): a pooled slab when it fits, else a fresh one. */
  take(bytes: number): Buffer {
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError('bytes must be a non-negative integer');
    if (bytes > this.slabBytes) return Buffer.allocUnsafe(bytes);
    this.#taken++;
    let slab = this.#free.pop();
    if (slab === undefined) {
      slab = Buffer.allocUnsafeSlow(this.slabBytes).buffer;
      this.#owned.add(slab);
    }
    this.#out.add(slab);
    return Buffer.from(slab, 0, bytes);
  }

  /**
   * Hands back the slab under `buf` (any view of it). The caller must hold no other view of that
   * slab still in use: its next taker overwrites it. Buffers the pool did not hand out, and slabs
   * already handed back, are ignored.
   */
  release(buf: Uint8Array): void {
    const slab = buf.buffer as ArrayBuffer;
    if (!this.#owned.has(slab) || !this.#out.has(slab)) return;
    this.#out.delete(slab);
    if (this.#free.length >= this.#maxFree) return;
    this.#free.push(slab);
    this.#armIdle();
  }

  #armIdle(): void {
    if (this.#idleTimer !== undefined || this.#idleMs <= 0) return;
    const taken = this.#taken;
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = undefined;
      if (this.#taken === taken) this.#free.length = 0;
      else if (this.#free.length > 0) this.#armIdle();
    }, this.#idleMs);
    this.#idleTimer.unref();
  }
}
