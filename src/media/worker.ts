// A piscina worker thread: decodes one source once (first frame, auto-oriented, sRGB, capped at
// the largest rung), derives the thumbnail ladder from successive rungs, extracts EXIF, and
// returns the encoded thumbnails as transferred ArrayBuffers (no copy back to the main thread).
import { workerData } from 'node:worker_threads';
import exifr from 'exifr';
import { Piscina } from 'piscina';
import sharp, { type OutputInfo, type Sharp } from 'sharp';
import { applyDecoderAllowlist, classifyDecodeError } from './decode.js';
import type { OutputFormat } from './options.js';

export interface ImageTask {
  /** The source bytes, transferred into this thread. */
  readonly input: ArrayBuffer;
  readonly sizes: readonly number[];
  /** The size cut as a square (attention crop); the others fit inside. */
  readonly square: number;
  readonly format: OutputFormat;
  readonly quality: number;
  readonly maxInputPixels: number;
  /** Extract EXIF (not for SVG or video posters). */
  readonly exif: boolean;
}

export interface ExifSummary {
  dateTaken?: string;
  make?: string;
  model?: string;
  lens?: string;
  orientation?: number;
}

export interface GpsPosition {
  latitude: number;
  longitude: number;
  altitude?: number;
}

export interface DerivedThumb {
  readonly size: number;
  readonly width: number;
  readonly height: number;
  readonly data: ArrayBuffer;
}

export interface ImageResult {
  /** Upright dimensions of the source (after auto-orientation). */
  readonly width: number;
  readonly height: number;
  readonly exif: ExifSummary | undefined;
  readonly gps: GpsPosition | undefined;
  readonly thumbs: DerivedThumb[];
  readonly decodeMs: number;
  readonly encodeMs: Record<number, number>;
}

const init = workerData as { svg?: 'rasterise' | 'refuse' } | undefined;
if (init?.svg !== undefined) applyDecoderAllowlist(init.svg);

interface Raw {
  readonly data: Buffer;
  readonly width: number;
  readonly height: number;
  readonly channels: 1 | 2 | 3 | 4;
}

function fromRaw(r: Raw): Sharp {
  return sharp(r.data, { raw: { width: r.width, height: r.height, channels: r.channels } });
}

async function rawOf(s: Sharp): Promise<Raw> {
  const { data, info } = await s.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

function encode(s: Sharp, format: OutputFormat, quality: number): Sharp {
  // Encoders write no metadata unless asked (withMetadata/keepExif): derivatives carry no EXIF/GPS.
  if (format === 'avif') return s.avif({ quality });
  if (format === 'jpeg') return s.flatten({ background: '#ffffff' }).jpeg({ quality, mozjpeg: false });
  return s.webp({ quality });
}

const text = (v: unknown): string | undefined => (typeof v === 'string' && v.trim() !== '' ? v.trim().slice(0, 256) : undefined);

async function readExif(input: Buffer): Promise<{ exif: ExifSummary | undefined; gps: GpsPosition | undefined }> {
  let raw: Record<string, unknown> | undefined;
  try {
    raw = (await exifr.parse(input, { translateValues: false, reviveValues: true, gps: true, tiff: true, exif: true, mergeOutput: true })) as Record<string, unknown> | undefined;
  } catch {
    return { exif: undefined, gps: undefined }; // no or unreadable EXIF is not a failure
  }
  if (raw === undefined || raw === null) return { exif: undefined, gps: undefined };
  const exif: ExifSummary = {};
  const taken = raw['DateTimeOriginal'] ?? raw['CreateDate'] ?? raw['ModifyDate'];
  if (taken instanceof Date && !Number.isNaN(taken.getTime())) exif.dateTaken = taken.toISOString();
  else if (text(taken) !== undefined) exif.dateTaken = text(taken)!;
  const make = text(raw['Make']);
  const model = text(raw['Model']);
  const lens = text(raw['LensModel']) ?? text(raw['LensMake']);
  if (make !== undefined) exif.make = make;
  if (model !== undefined) exif.model = model;
  if (lens !== undefined) exif.lens = lens;
  if (typeof raw['Orientation'] === 'number') exif.orientation = raw['Orientation'];
  let gps: GpsPosition | undefined;
  const lat = raw['latitude'];
  const lon = raw['longitude'];
  if (typeof lat === 'number' && typeof lon === 'number' && Number.isFinite(lat) && Number.isFinite(lon)) {
    gps = { latitude: lat, longitude: lon };
    if (typeof raw['GPSAltitude'] === 'number' && Number.isFinite(raw['GPSAltitude'])) gps.altitude = raw['GPSAltitude'];
  }
  return { exif: Object.keys(exif).length > 0 ? exif : undefined, gps };
}

/** What `fit: inside` without enlargement gives for a `size` box (sharp rounds the same way). */
export function fitInside(width: number, height: number, size: number): [number, number] {
  if (width <= size && height <= size) return [width, height];
  if (width >= height) return [size, Math.max(1, Math.round((height * size) / width))];
  return [Math.max(1, Math.round((width * size) / height)), size];
}

/**
 * A fresh ArrayBuffer holding exactly `b`, so it can be transferred without detaching anything
 * else. Always a copy (thumbnails are small): sharp's output buffers are backed by native
 * (external) memory, which Node 24 refuses to transfer ("Cannot transfer object of unsupported
 * type"), while Node 20 allowed it.
 */
function ownBuffer(b: Buffer): ArrayBuffer {
  const ab = new ArrayBuffer(b.byteLength);
  new Uint8Array(ab).set(b);
  return ab;
}

async function derive(task: ImageTask): Promise<ImageResult> {
  const input = Buffer.from(task.input);
  const sizes = [...new Set(task.sizes)].sort((a, b) => b - a);
  const top = sizes[0];
  if (top === undefined) throw new RangeError('task.sizes must not be empty');
  const meta = task.exif ? await readExif(input) : { exif: undefined, gps: undefined };

  const t0 = performance.now();
  let current: Raw;
  try {
    // The one decode: first frame only, rotated upright from EXIF, shrunk on load where the codec
    // allows (JPEG), converted to sRGB, 8 bits per channel.
    current = await rawOf(
      sharp(input, { limitInputPixels: task.maxInputPixels, pages: 1, page: 0, failOn: 'error', sequentialRead: true })
        .rotate()
        .resize({ width: top, height: top, fit: 'inside', withoutEnlargement: true })
        .toColourspace('srgb'),
    );
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new Error(`${classifyDecodeError(message)}: ${message}`, { cause: err });
  }
  const decodeMs = performance.now() - t0;
  // Upright source dimensions (the header, no decode): every rung's size is computed from them,
  // so chaining rungs never drifts from what a direct resize of the source would give.
  const probe = await sharp(input, { limitInputPixels: task.maxInputPixels, pages: 1 }).metadata();
  const upright = (probe.orientation ?? 1) >= 5;
  const pageHeight = (probe.pages ?? 1) > 1 ? probe.pageHeight : undefined;
  const width = upright ? pageHeight ?? probe.height ?? current.width : probe.width ?? current.width;
  const height = upright ? probe.width ?? current.height : pageHeight ?? probe.height ?? current.height;

  const thumbs: DerivedThumb[] = [];
  const encodeMs: Record<number, number> = {};
  for (const size of sizes) {
    const t = performance.now();
    let out: { data: Buffer; info: OutputInfo };
    if (size === task.square) {
      out = await encode(fromRaw(current).resize(size, size, { fit: 'cover', position: 'attention' }), task.format, task.quality).toBuffer({ resolveWithObject: true });
    } else {
      // Each rung is resized from the previous (larger) one: cheaper than from the source.
      if (size !== top) {
        const [w, h] = fitInside(width, height, size);
        current = await rawOf(fromRaw(current).resize(w, h, { fit: 'fill' }));
      }
      out = await encode(fromRaw(current), task.format, task.quality).toBuffer({ resolveWithObject: true });
    }
    thumbs.push({ size, width: out.info.width, height: out.info.height, data: ownBuffer(out.data) });
    encodeMs[size] = performance.now() - t;
  }
  thumbs.sort((a, b) => a.size - b.size);
  return { width, height, exif: meta.exif, gps: meta.gps, thumbs, decodeMs, encodeMs };
}

/** The piscina entry point: the result travels with its thumbnails' buffers transferred. */
export default async function run(task: ImageTask): Promise<unknown> {
  const result = await derive(task);
  const transfer = result.thumbs.map((th) => th.data);
  return Piscina.move({
    get [Piscina.transferableSymbol]() {
      return transfer;
    },
    get [Piscina.valueSymbol]() {
      return result;
    },
  } as unknown as ArrayBuffer);
}
