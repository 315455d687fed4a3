// Content-defined chunking (FastCDC-2020, normalized level 2) for dedup and delta sync.
// Pure: no I/O, no config, no logging; boundaries are stable forever.

export { resolveChunkerOptions, DEFAULT_MIN_SIZE, DEFAULT_AVG_SIZE, DEFAULT_MAX_SIZE, type ChunkerOptions } from './options.js';
export { findBoundary, chunkBuffer } from './fastcdc.js';
export { Chunker } from './chunker.js';
export { GEAR } from './gear.js';
