// Gear table and judgement masks for FastCDC. Every value here is frozen forever:
// dedup across clients and releases depends on boundaries never moving.

/**
 * Seed of the gear table: ASCII "CAIR". Changing it (or the generator below)
 * changes every chunk boundary ever computed, which silently breaks dedup.
 */
const GEAR_SEED = 0x43414952;

/**
 * mulberry32: a tiny, well-known 32-bit PRNG. Chosen over a cryptographic
 * derivation because the table only needs to look random to the data, and a
 * self-contained generator keeps the module pure and the table reproducible
 * in any language from this one function.
 */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

function makeGear(): Uint32Array {
  const next = mulberry32(GEAR_SEED);
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) table[i] = next();
  return table;
}

/** The 32-bit gear table (256 entries). */
export const GEAR: Uint32Array = makeGear();

/**
 * The same bits viewed as signed integers: V8 keeps int32 loads in registers,
 * whereas uint32 values above 2^31 may be widened to doubles in the hot loop.
 */
export const GEAR_I32: Int32Array = new Int32Array(GEAR.buffer, GEAR.byteOffset, GEAR.length);

/**
 * A mask of `bits` contiguous ones ending at bit 30. High bits of a gear hash
 * depend on the most recent 14–31 bytes, so they make a wider effective window
 * than low bits; bit 31 stays clear so the two-bytes-per-step form
 * (hash << 2, mask << 1) is exactly equivalent to the one-byte definition.
 */
export function judgementMask(bits: number): number {
  return (((1 << bits) - 1) << (31 - bits)) | 0;
}
