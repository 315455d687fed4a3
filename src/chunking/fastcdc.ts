// FastCDC-2020 cut-point search (normalized chunking, level 2) over one contiguous view.
// Pure and allocation-free: the streaming Chunker and chunkBuffer both call findBoundary.

import { GEAR_I32, judgementMask } from './gear.js';
import { resolveChunkerOptions, type ChunkerOptions } from './options.js';

/**
 * Length of the chunk that starts at `start`, looking no further than `end`.
 *
 * Definition (the one dedup depends on): the hash restarts at 0 for every chunk
 * and skips the first minSize bytes; for each byte i from start+minSize on,
 * `h = (h << 1) + GEAR[data[i]]` (mod 2^32), and the chunk ends before byte i
 * when `h & mask == 0`, with the stricter mask (avg bits + 2) before start+avgSize
 * and the looser one (avg bits − 2) after it. A chunk never exceeds maxSize;
 * when fewer than minSize bytes remain they form the last chunk.
 *
 * The loop consumes two bytes per step (`h << 2` with a pre-shifted gear value,
 * then `+ GEAR[b]`), testing `mask << 1` in between; because the masks never use
 * bit 31 this yields exactly the one-byte definition's cut points.
 */
export function findBoundary(data: Uint8Array, start: number, end: number, opts: Required<ChunkerOptions>): number {
  let n = end - start;
  if (n <= opts.minSize) return n;
  if (n > opts.maxSize) n = opts.maxSize;
  const normal = n < opts.avgSize ? n : opts.avgSize;
  const bits = 31 - Math.clz32(opts.avgSize);
  const maskS = judgementMask(bits + 2);
  const maskL = judgementMask(bits - 2);
  const maskS2 = maskS << 1;
  const maskL2 = maskL << 1;
  const g = GEAR_I32;
  let h = 0;
  let i = start + opts.minSize;
  const mid = start + normal;
  const stop = start + n;
  // Two bytes per step while both are before the normal point.
  for (const last = mid - 1; i < last; i += 2) {
    h = ((h << 2) + (g[data[i]!]! << 1)) | 0;
    if ((h & maskS2) === 0) return i - start;
    h = (h + g[data[i + 1]!]!) | 0;
    if ((h & maskS) === 0) return i + 1 - start;
  }
  if (i < mid) {
    h = ((h << 1) + g[data[i]!]!) | 0;
    if ((h & maskS) === 0) return i - start;
    i++;
  }
  for (const last = stop - 1; i < last; i += 2) {
    h = ((h << 2) + (g[data[i]!]! << 1)) | 0;
    if ((h & maskL2) === 0) return i - start;
    h = (h + g[data[i + 1]!]!) | 0;
    if ((h & maskL) === 0) return i + 1 - start;
  }
  if (i < stop) {
    h = ((h << 1) + g[data[i]!]!) | 0;
    if ((h & maskL) === 0) return i - start;
  }
  return n;
}

/** Reference form of findBoundary, one byte per step; kept for tests and benchmarks. */
export function findBoundaryPlain(data: Uint8Array, start: number, end: number, opts: Required<ChunkerOptions>): number {
  let n = end - start;
  if (n <= opts.minSize) return n;
  if (n > opts.maxSize) n = opts.maxSize;
  const normal = n < opts.avgSize ? n : opts.avgSize;
  const bits = 31 - Math.clz32(opts.avgSize);
  const maskS = judgementMask(bits + 2);
  const maskL = judgementMask(bits - 2);
  const g = GEAR_I32;
  let h = 0;
  let i = start + opts.minSize;
  for (const mid = start + normal; i < mid; i++) {
    h = ((h << 1) + g[data[i]!]!) | 0;
    if ((h & maskS) === 0) return i - start;
  }
  for (const stop = start + n; i < stop; i++) {
    h = ((h << 1) + g[data[i]!]!) | 0;
    if ((h & maskL) === 0) return i - start;
  }
  return n;
}

/** One-shot chunking of a whole buffer: offsets and lengths, in order. */
export function chunkBuffer(data: Uint8Array, opts?: ChunkerOptions): Array<{ offset: number; length: number }> {
  const o = resolveChunkerOptions(opts);
  const out: Array<{ offset: number; length: number }> = [];
  for (let offset = 0; offset < data.length; ) {
    const length = findBoundary(data, offset, data.length, o);
    out.push({ offset, length });
    offset += length;
  }
  return out;
}
