// Conversions between wire types (64-bit integers as decimal strings) and JS numbers,
// rejecting values a JS number cannot hold exactly.
import { CairnError } from './errors.js';

/** Parses a uint64/int64 wire value; throws CAIRN_INVALID_ARGUMENT naming `field` when unsafe. */
export function wireInt(value: string | number | undefined, field: string, { min = 0 } = {}): number {
  const n = typeof value === 'number' ? value : value === undefined || value === '' ? 0 : Number(value);
  if (!Number.isSafeInteger(n) || n < min) {
    throw new CairnError('CAIRN_INVALID_ARGUMENT', `${field} must be an integer in ${min}..${Number.MAX_SAFE_INTEGER}, got ${String(value)}`, { fieldViolations: [{ field, description: 'out of range' }] });
  }
  return n;
}
