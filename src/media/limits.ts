// Checks a source against the limits before anything decodes it: the header alone (dimensions,
// frame count) rejects decompression bombs in milliseconds; SVG is stripped of every external
// and local reference (or refused) so rasterising it can fetch or read nothing.
import sharp, { type Metadata } from 'sharp';
import { classifyDecodeError } from './decode.js';
import { MediaFailure, type MediaOptions } from './options.js';

export interface SourceHeader {
  readonly width: number;
  readonly height: number;
  readonly frames: number;
  readonly format: string;
  readonly orientation: number;
}

/** Reads only the header (no pixel is decoded) and enforces the pixel and frame limits. */
export async function checkHeader(input: Buffer, options: MediaOptions): Promise<SourceHeader> {
  let meta: Metadata;
  try {
    // limitInputPixels is off here on purpose: the check below gives the reason, and sharp's own
    // check would only run at decode time anyway.
    meta = await sharp(input, { limitInputPixels: false, pages: -1 }).metadata();
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new MediaFailure(classifyDecodeError(message), message);
  }
  const width = meta.width ?? 0;
  const height = meta.pageHeight !== undefined && (meta.pages ?? 1) > 1 ? meta.pageHeight : meta.height ?? 0;
  if (width <= 0 || height <= 0) throw new MediaFailure('corrupt', 'the image declares no dimensions');
  if (width * height > options.maxInputPixels) {
    throw new MediaFailure('pixel_limit', `${width}×${height} = ${width * height} pixels exceeds the limit of ${options.maxInputPixels}`);
  }
  const frames = meta.pages ?? 1;
  if (frames > options.maxFrames) throw new MediaFailure('frame_limit', `${frames} frames exceeds the limit of ${options.maxFrames}`);
  return { width, height, frames, format: meta.format ?? 'unknown', orientation: meta.orientation ?? 1 };
}

/**
 * An SVG with nothing that could make the rasteriser fetch or read: no DOCTYPE (entities), no
 * processing instructions (stylesheets), no href/src other than in-document "#fragments", no
 * url() other than url(#fragment), no @import. Throws `svg_refused` when SVG is refused.
 */
export function sanitizeSvg(input: Buffer, options: MediaOptions): Buffer {
  if (options.svg === 'refuse') throw new MediaFailure('svg_refused', 'SVG sources are refused by configuration');
  let text = input.toString('utf8');
  text = text.replace(/<!DOCTYPE[^>[]*(\[[\s\S]*?\])?\s*>/gi, '');
  text = text.replace(/<!ENTITY[\s\S]*?>/gi, '');
  // With the DOCTYPE gone only XML's own entities are defined: drop references to any other.
  text = text.replace(/&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-f]+);)[\w.:-]+;/gi, '');
  text = text.replace(/<\?(?!xml\s)[\s\S]*?\?>/gi, '');
  text = text.replace(/\b((?:[\w-]+:)?href|src)\s*=\s*("[^"]*"|'[^']*')/gi, (_m, name: string, quoted: string) => {
    const value = quoted.slice(1, -1).trim();
    return value.startsWith('#') && !/[\s"'()]/.test(value) ? `${name}="${value}"` : `${name}="#"`;
  });
  text = text.replace(/url\(\s*(['"]?)\s*([^)'"]*)\1\s*\)/gi, (_m, _q: string, target: string) => (target.trim().startsWith('#') ? `url(${target.trim()})` : 'none'));
  text = text.replace(/@import[^;]*;?/gi, '');
  return Buffer.from(text, 'utf8');
}
