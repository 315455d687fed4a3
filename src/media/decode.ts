// Decoding policy shared by the main thread and the pool's workers: the libvips decoder allowlist
// (sharp.block/unblock, process-wide) and the mapping of decoder errors to failure reasons.
import sharp from 'sharp';
import type { FailureReason } from './options.js';

/** Loader families allowed: the image formats (SVG only when rasterising is on). */
const ALLOWED_LOADERS = ['VipsForeignLoadJpeg', 'VipsForeignLoadPng', 'VipsForeignLoadWebp', 'VipsForeignLoadHeif', 'VipsForeignLoadNsgif', 'VipsForeignLoadTiff'];

/** Blocks every libvips loader, then unblocks the allowed families; idempotent. */
export function applyDecoderAllowlist(svg: 'rasterise' | 'refuse'): void {
  sharp.block({ operation: ['VipsForeignLoad'] });
  sharp.unblock({ operation: svg === 'rasterise' ? [...ALLOWED_LOADERS, 'VipsForeignLoadSvg'] : ALLOWED_LOADERS });
}

/** A decoder error's reason, from libvips/sharp messages (errors lose their class across threads). */
export function classifyDecodeError(message: string): FailureReason {
  if (/pixel limit/i.test(message)) return 'pixel_limit';
  if (/unsupported image format|is blocked|not permitted|no known loader|operation .* is blocked/i.test(message)) return 'unsupported_format';
  return 'corrupt';
}
