// Chunker size options: defaults, validation and the derived judgement masks.
// Validated once, then frozen, so the hot loop never re-checks them.

export interface ChunkerOptions {
  /** Smallest chunk (except the last one of a stream). Default 16 KiB. */
  minSize?: number;
  /** Target average before normalization; must be a power of two. Default 64 KiB. */
  avgSize?: number;
  /** Largest chunk. Default 256 KiB. */
  maxSize?: number;
}

export const DEFAULT_MIN_SIZE = 16 * 1024;
export const DEFAULT_AVG_SIZE = 64 * 1024;
export const DEFAULT_MAX_SIZE = 256 * 1024;

const LOWEST = 64;
const HIGHEST = 64 * 1024 * 1024;

function checkSize(name: keyof ChunkerOptions, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new TypeError(`options.${name} must be an integer number of bytes`);
  }
  if (value < LOWEST || value > HIGHEST) {
    throw new RangeError(`options.${name} must be between ${LOWEST} and ${HIGHEST} bytes, got ${value}`);
  }
  return value;
}

/** Fills in defaults and validates; the result is frozen. */
export function resolveChunkerOptions(o: ChunkerOptions = {}): Required<ChunkerOptions> {
  const minSize = checkSize('minSize', o.minSize ?? DEFAULT_MIN_SIZE);
  const avgSize = checkSize('avgSize', o.avgSize ?? DEFAULT_AVG_SIZE);
  const maxSize = checkSize('maxSize', o.maxSize ?? DEFAULT_MAX_SIZE);
  if ((avgSize & (avgSize - 1)) !== 0) {
    throw new RangeError(`options.avgSize must be a power of two, got ${avgSize}`);
  }
  if (!(minSize < avgSize)) {
    throw new RangeError(`options.minSize must be smaller than options.avgSize (${minSize} ≥ ${avgSize})`);
  }
  if (!(avgSize < maxSize)) {
    throw new RangeError(`options.maxSize must be larger than options.avgSize (${maxSize} ≤ ${avgSize})`);
  }
  return Object.freeze({ minSize, avgSize, maxSize });
}
