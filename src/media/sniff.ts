// Classifies content by its magic bytes, never its name. `sniffMedia` is synchronous (the
// gateway calls it at commit on the first plain bytes); workers confirm with `file-type` before
// decoding, and only the formats below are ever handed to a decoder.
import { fileTypeFromBuffer } from 'file-type';

/** Image types media workers decode (each maps to one allowed libvips loader family). */
export const IMAGE_TYPES: ReadonlySet<string> = new Set(['image/jpeg', 'image/png', 'image/webp', 'image/avif', 'image/heic', 'image/heif', 'image/gif', 'image/tiff', 'image/svg+xml']);
/** Video containers handed to ffprobe/ffmpeg. */
export const VIDEO_TYPES: ReadonlySet<string> = new Set(['video/mp4', 'video/quicktime', 'video/webm', 'video/x-matroska', 'video/matroska', 'video/x-msvideo', 'video/vnd.avi', 'video/mpeg', 'video/mp2t', 'video/3gpp', 'video/ogg']);

const ascii = (b: Uint8Array, at: number, s: string): boolean => {
  if (b.length < at + s.length) return false;
  for (let i = 0; i < s.length; i++) if (b[at + i] !== s.charCodeAt(i)) return false;
  return true;
};

const ISOBMFF_BRANDS: ReadonlyArray<readonly [RegExp, string]> = [
  [/^avi[fs]$/, 'image/avif'],
  [/^(heic|heix|heim|heis)$/, 'image/heic'],
  [/^(mif1|msf1|hevc|hevx)$/, 'image/heif'],
  [/^qt {2}$/, 'video/quicktime'],
  [/^(3gp\d|3g2\w)$/, 'video/3gpp'],
  [/^(isom|iso\d|mp4\d|mp41|mp42|avc1|M4V |M4VH|M4VP|dash|f4v |MSNV|NDAS|mmp4)$/, 'video/mp4'],
];

/** The media type of `head` (the first ≤ 4 KiB of a file), or undefined when it is not media. */
export function sniffMedia(head: Uint8Array): string | undefined {
  const b = head;
  if (b.length < 4) return undefined;
  if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'image/jpeg';
  if (b[0] === 0x89 && ascii(b, 1, 'PNG\r\n\x1a\n')) return 'image/png';
  if (ascii(b, 0, 'GIF87a') || ascii(b, 0, 'GIF89a')) return 'image/gif';
  if (ascii(b, 0, 'RIFF') && ascii(b, 8, 'WEBP')) return 'image/webp';
  if (ascii(b, 0, 'RIFF') && ascii(b, 8, 'AVI ')) return 'video/x-msvideo';
  if ((ascii(b, 0, 'II') && b[2] === 0x2a && b[3] === 0) || (ascii(b, 0, 'MM') && b[2] === 0 && b[3] === 0x2a)) return 'image/tiff';
  if (ascii(b, 4, 'ftyp') && b.length >= 12) {
    const brand = String.fromCharCode(b[8]!, b[9]!, b[10]!, b[11]!);
    for (const [re, type] of ISOBMFF_BRANDS) if (re.test(brand)) return type;
    return undefined;
  }
  if (b[0] === 0x1a && b[1] === 0x45 && b[2] === 0xdf && b[3] === 0xa3) {
    const text = Buffer.from(b.subarray(0, 64)).toString('latin1');
    return text.includes('webm') ? 'video/webm' : 'video/x-matroska';
  }
  if (ascii(b, 0, 'OggS') && Buffer.from(b.subarray(0, 64)).toString('latin1').includes('theora')) return 'video/ogg';
  if (b[0] === 0x47 && b.length >= 189 && b[188] === 0x47) return 'video/mp2t';
  if (b[0] === 0 && b[1] === 0 && b[2] === 1 && b[3] === 0xba) return 'video/mpeg';
  if (isSvg(b)) return 'image/svg+xml';
  return undefined;
}

/** SVG is text: an optional BOM, XML declaration, comments or doctype, then an <svg> root. */
function isSvg(b: Uint8Array): boolean {
  const text = Buffer.from(b.subarray(0, 4096)).toString('utf8').replace(/^\uFEFF/, '');
  const stripped = text.replace(/^(\s|<\?xml[\s\S]*?\?>|<!--[\s\S]*?-->|<!DOCTYPE[^>[]*(\[[\s\S]*?\])?\s*>)*/i, '');
  return /^<svg[\s>]/i.test(stripped);
}

export type MediaClass = 'image' | 'video';

export function mediaClass(type: string | undefined): MediaClass | undefined {
  if (type === undefined) return undefined;
  if (IMAGE_TYPES.has(type)) return 'image';
  if (VIDEO_TYPES.has(type)) return 'video';
  return undefined;
}

/**
 * The authoritative type of a whole source: file-type's detection for binary formats (it reads
 * deeper than the commit-time sniff), the SVG check for text. Undefined when not media.
 */
export async function detectMedia(data: Uint8Array): Promise<string | undefined> {
  // file-type reads SVG as generic XML; the SVG root check decides for text.
  if (isSvg(data)) return 'image/svg+xml';
  const found = await fileTypeFromBuffer(data);
  if (found !== undefined) {
    const mime = found.mime === 'image/heic-sequence' ? 'image/heic' : found.mime === 'image/heif-sequence' ? 'image/heif' : found.mime;
    return mediaClass(mime) !== undefined ? mime : undefined;
  }
  return undefined;
}
