// Streaming FastCDC: emits exactly the chunks chunkBuffer would produce for the
// concatenated input, however the input is split into pushes.

import { findBoundary } from './fastcdc.js';
import { resolveChunkerOptions, type ChunkerOptions } from './options.js';

function view(data: Uint8Array, offset: number, length: number): Buffer {
  return Buffer.from(data.buffer, data.byteOffset + offset, length);
}

/**
 * A cut is only decided once maxSize bytes past the chunk start are known (or at
 * finish), because findBoundary never looks further than that: so streaming and
 * one-shot cut points agree.
 *
 * Chunks are zero-copy views where possible: of the pushed input, or of an
 * internal carry buffer that is never written twice (it is replaced, not
 * compacted in place). Callers therefore must not modify a pushed buffer
 * afterwards, as Node's writable streams already require.
 */
export class Chunker {
  readonly #opts: Required<ChunkerOptions>;
  /** Unchunked bytes from earlier pushes live in #carry[#start, #end). */
  #carry: Buffer | null = null;
  #start = 0;
  #end = 0;

  constructor(opts?: ChunkerOptions) {
    this.#opts = resolveChunkerOptions(opts);
  }

  /** Bytes pushed but not yet emitted as chunks. */
  get pending(): number {
    return this.#end - this.#start;
  }

  push(data: Uint8Array): Buffer[] {
    const out: Buffer[] = [];
    const max = this.#opts.maxSize;
    let pos = 0;
    if (this.#end > this.#start) {
      // Copy at most maxSize bytes across the seam: enough for every chunk that
      // starts inside the carry; once a cut lands in `data`, continue there
      // without copying.
      const take = Math.min(data.length, max);
      const carry = this.#reserve(take);
      const seam = this.#end;
      carry.set(take === data.length ? data : data.subarray(0, take), seam);
      this.#end += take;
      const all = take === data.length;
      while (this.#end - this.#start >= max && (all || this.#start < seam)) {
        const len = findBoundary(carry, this.#start, this.#end, this.#opts);
        out.push(view(carry, this.#start, len));
        this.#start += len;
      }
      if (all) return out;
      pos = this.#start - seam;
      // Emitted chunks may be views of this carry buffer: never write it again.
      this.#carry = null;
      this.#start = this.#end = 0;
    }
    while (data.length - pos >= max) {
      const len = findBoundary(data, pos, data.length, this.#opts);
      out.push(view(data, pos, len));
      pos += len;
    }
    if (pos < data.length) {
      const rest = data.length - pos;
      this.#reserve(rest).set(data.subarray(pos), this.#end);
      this.#end += rest;
    }
    return out;
  }

  /** Emits the remaining chunks (the last may be shorter than minSize) and resets. */
  finish(): Buffer[] {
    const out: Buffer[] = [];
    const carry = this.#carry;
    if (carry !== null) {
      while (this.#start < this.#end) {
        const len = findBoundary(carry, this.#start, this.#end, this.#opts);
        out.push(view(carry, this.#start, len));
        this.#start += len;
      }
    }
    this.#carry = null;
    this.#start = this.#end = 0;
    return out;
  }

  /** Makes room for `extra` bytes after #end, moving live bytes to a fresh buffer if needed. */
  #reserve(extra: number): Buffer {
    const live = this.#end - this.#start;
    const carry = this.#carry;
    if (carry !== null && this.#end + extra <= carry.length) return carry;
    // Grow geometrically from small (a tiny object must not pin a large buffer
    // through its chunk view) up to 4 × maxSize: live bytes are < maxSize and
    // extra ≤ maxSize, so at full size each byte is moved at most ½ time.
    const max = this.#opts.maxSize;
    const cap = Math.min(4 * max, 2 * max + (8 << 20));
    const size = Math.max(live + extra, Math.min(cap, Math.max(2 * (carry?.length ?? 0), 16 * 1024)));
    const next = Buffer.allocUnsafeSlow(size);
    if (carry !== null && live > 0) carry.copy(next, 0, this.#start, this.#end);
    this.#carry = next;
    this.#start = 0;
    this.#end = live;
    return next;
  }
}
