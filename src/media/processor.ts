// Derives one version's media: reads and unseals the source, checks the header against the
// limits, runs the ladder on the pool (or ffprobe/ffmpeg for video), seals the thumbnails as
// blocks of the tenant and records them with the metadata on the version. One derivation per
// version at a time in this process (single-flight); a version already derived is not redone.
import { createHash } from 'node:crypto';
import type { BlockAccess } from '../blocknode/index.js';
import { CairnError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { FileVersion__Output } from '../gen/cairn/v1/FileVersion.js';
import type { MediaDerivative } from '../gen/cairn/v1/MediaDerivative.js';
import { seal, unseal, type TenantKeys } from '../gateway/index.js';
import type { MetadataClient } from '../metadata/index.js';
import { checkHeader, sanitizeSvg } from './limits.js';
import type { MediaMetrics } from './metrics.js';
import { LADDER, MediaFailure, PERMANENT_REASONS, SQUARE_SIZE, type FailureReason, type MediaOptions } from './options.js';
import type { MediaPool } from './pool.js';
import { detectMedia, mediaClass } from './sniff.js';
import { probeVideo, type VideoInfo } from './video.js';
import type { ExifSummary, GpsPosition } from './worker.js';

/** What is stored as the version's media JSON. */
export interface MediaRecord {
  v: 1;
  state: 'ready' | 'failed';
  /** Detected source type, e.g. image/jpeg. */
  type?: string;
  kind?: 'image' | 'video';
  width?: number;
  height?: number;
  frames?: number;
  format?: string;
  exif?: ExifSummary;
  /** Returned to owners only (see GetMediaInfo). */
  gps?: GpsPosition;
  video?: VideoInfo;
  reason?: FailureReason;
  error?: string;
}

export const derivativeName = (size: number): string => `thumb-${size}`;

export function parseMediaRecord(json: string): MediaRecord | undefined {
  if (json === '') return undefined;
  try {
    const r = JSON.parse(json) as Partial<MediaRecord>;
    return r.v === 1 && (r.state === 'ready' || r.state === 'failed') ? (r as MediaRecord) : undefined;
  } catch {
    return undefined;
  }
}

/** Strong ETag of a derivative: its plain chunk hashes determine its bytes. */
export function derivativeEtag(d: { chunks: ReadonlyArray<{ plain_hash: Buffer | Uint8Array | string }> }): string {
  const h = createHash('sha256');
  for (const c of d.chunks) h.update(typeof c.plain_hash === 'string' ? Buffer.from(c.plain_hash, 'base64') : c.plain_hash);
  return `"${h.digest('hex').slice(0, 40)}"`;
}

/** A version names its file by id (jobs: survives renames) or by path (requests). */
export interface VersionRef {
  readonly tenant: string;
  readonly fileId?: string | undefined;
  readonly path?: string | undefined;
  readonly version: number;
}

export interface ProcessorDeps {
  readonly metadata: MetadataClient;
  readonly blocks: BlockAccess;
  readonly keys: TenantKeys;
  readonly pool: MediaPool;
  readonly options: MediaOptions;
  readonly metrics: MediaMetrics;
  readonly log: Logger;
}

/** Thumbnails are stored in pieces of at most this size (the block size the data path uses). */
const PIECE_BYTES = 1024 * 1024;
const READ_BATCH = 32;

export class MediaProcessor {
  readonly #d: ProcessorDeps;
  readonly #inflight = new Map<string, Promise<FileVersion__Output>>();

  constructor(deps: ProcessorDeps) {
    this.#d = deps;
  }

  /** The version's derivatives, deriving them first unless they exist (single-flight per version). */
  derive(ref: VersionRef, trigger: 'job' | 'on_demand'): Promise<FileVersion__Output> {
    const key = `${ref.tenant}\0${ref.fileId ?? ''}\0${ref.path ?? ''}\0${ref.version}`;
    let p = this.#inflight.get(key);
    if (p === undefined) {
      p = this.#derive(ref, trigger).finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, p);
    }
    return p;
  }

  async getVersion(ref: VersionRef, maxChunks: number): Promise<FileVersion__Output> {
    return this.#d.metadata.getFile({ tenant: ref.tenant, ...(ref.fileId !== undefined && ref.fileId !== '' ? { file_id: ref.fileId } : { path: ref.path ?? '' }), version: ref.version, max_chunks: maxChunks });
  }

  /** True when the version has every rung of the ladder in the configured format. */
  complete(v: FileVersion__Output): boolean {
    const names = new Map(v.derivatives.map((d) => [d.name, d.format]));
    return parseMediaRecord(v.media_json)?.state === 'ready' && LADDER.every((s) => names.get(derivativeName(s)) === this.#d.options.format);
  }

  async #derive(ref: VersionRef, trigger: 'job' | 'on_demand'): Promise<FileVersion__Output> {
    const { options, log, metrics } = this.#d;
    const v = await this.getVersion(ref, 0);
    if (v.deleted) throw new CairnError('CAIRN_NOT_FOUND', `version ${v.version} of ${v.path} is a deletion`);
    if (this.complete(v)) return v;
    const target: VersionRef = { tenant: ref.tenant, fileId: v.node_id, version: Number(v.version) };
    const started = performance.now();
    try {
      const size = Number(v.size);
      if (size > options.maxBytes) throw new MediaFailure('file_too_large', `${size} bytes exceeds the media limit of ${options.maxBytes}`);
      const source = await this.#readSource(v);
      const type = await detectMedia(source);
      const kind = mediaClass(type);
      if (type === undefined || kind === undefined) throw new MediaFailure('unsupported_format', 'the content is not an image or video format media workers process');
      const record: MediaRecord = { v: 1, state: 'ready', type, kind, format: options.format };
      let image: Buffer = source;
      if (kind === 'video') {
        const { info, poster } = await probeVideo(source, { timeoutMs: options.videoTimeoutMs, maxOutputBytes: options.videoMaxOutputBytes });
        record.video = info;
        image = poster;
      } else if (type === 'image/svg+xml') {
        image = sanitizeSvg(source, options);
      }
      const header = await checkHeader(image, options);
      const input = ownArrayBuffer(image);
      const result = await this.#d.pool.run({ input, sizes: LADDER, square: SQUARE_SIZE, format: options.format, quality: options.quality, maxInputPixels: options.maxInputPixels, exif: kind === 'image' && type !== 'image/svg+xml' });
      record.width = kind === 'video' ? record.video?.width ?? result.width : result.width;
      record.height = kind === 'video' ? record.video?.height ?? result.height : result.height;
      if (header.frames > 1) record.frames = header.frames;
      if (result.exif !== undefined) record.exif = result.exif;
      if (result.gps !== undefined) record.gps = result.gps;
      const key = await this.#d.keys.get(ref.tenant);
      const blocks: Array<{ address: Buffer; data: Buffer }> = [];
      const derivatives: MediaDerivative[] = [];
      for (const thumb of result.thumbs) {
        const bytes = Buffer.from(thumb.data);
        const chunks = [];
        for (let off = 0; off < bytes.length; off += PIECE_BYTES) {
          const piece = bytes.subarray(off, Math.min(bytes.length, off + PIECE_BYTES));
          const plainHash = createHash('sha256').update(piece).digest();
          const sealed = seal(key, plainHash, piece);
          blocks.push({ address: sealed.address, data: sealed.sealed });
          chunks.push({ plain_hash: plainHash, offset: off, size: piece.length, address: sealed.address, stored_size: sealed.sealed.length });
        }
        derivatives.push({ name: derivativeName(thumb.size), chunks, size: bytes.length, width: thumb.width, height: thumb.height, format: options.format });
        metrics.run.observe({ size: String(thumb.size), format: options.format }, ((result.encodeMs[thumb.size] ?? 0) + (thumb.size === LADDER[LADDER.length - 1] ? result.decodeMs : 0)) / 1000);
      }
      // Blocks first, then the version names them: a crash in between leaves only unreferenced
      // blocks (convergent: a retry writes the very same ones), never a dangling reference.
      // The version refuses derivative blocks the orphan sweep deleted after this (metadata orphans.ts).
      const blocksSinceMs = Date.now();
      await this.#d.blocks.putBlocks(blocks);
      const updated = await this.#d.metadata.setVersionMedia({ tenant: ref.tenant, file_id: target.fileId!, version: target.version, media_json: JSON.stringify(record), derivatives, blocks_since_ms: blocksSinceMs });
      metrics.generations.inc({ trigger });
      log.info({ tenant: ref.tenant, path: v.path, version: target.version, type, trigger, width: record.width, height: record.height, ms: Math.round(performance.now() - started) }, 'media derived');
      return { ...updated.file!, derivatives: updated.file!.derivatives.length > 0 ? updated.file!.derivatives : derivatives.map(toOutput) };
    } catch (err) {
      if (err instanceof MediaFailure && PERMANENT_REASONS.has(err.reason) && (err.permanent || err.reason === 'ffmpeg_missing')) {
        // Recorded on the version so readers learn why instead of waiting for a thumbnail.
        const failed: MediaRecord = { v: 1, state: 'failed', reason: err.reason, error: err.message.slice(0, 1000) };
        await this.#d.metadata.setVersionMedia({ tenant: ref.tenant, file_id: target.fileId!, version: target.version, media_json: JSON.stringify(failed), derivatives: [] }).catch((e: unknown) => log.warn({ err: e }, 'could not record the media failure on the version'));
      }
      throw err;
    }
  }

  async #readSource(v: FileVersion__Output): Promise<Buffer> {
    const key = await this.#d.keys.get(v.tenant);
    const out = Buffer.from(new ArrayBuffer(Number(v.size)));
    for (let i = 0; i < v.chunks.length; i += READ_BATCH) {
      const batch = v.chunks.slice(i, i + READ_BATCH);
      const got = new Map<string, Buffer>();
      const addresses = [...new Map(batch.map((c) => [c.address.toString('hex'), c.address])).values()];
      // BlockAccess hands back only blocks verified against their address (and unseal
      // authenticates each one under its plain hash): no second hash here.
      for await (const b of this.#d.blocks.getBlocks(addresses)) {
        if (b.data !== undefined) got.set(b.address.toString('hex'), b.data);
      }
      for (const c of batch) {
        const block = got.get(c.address.toString('hex'));
        if (block === undefined) throw new MediaFailure('source_unavailable', `block ${c.address.toString('hex')} of ${v.path} is unavailable on every replica`);
        unseal(key, c.plain_hash, block).copy(out, Number(c.offset));
      }
    }
    return out;
  }
}

function toOutput(d: MediaDerivative): FileVersion__Output['derivatives'][number] {
  return {
    name: d.name ?? '',
    chunks: (d.chunks ?? []).map((c) => ({ plain_hash: Buffer.from(c.plain_hash as Uint8Array), offset: String(c.offset), size: Number(c.size), address: Buffer.from(c.address as Uint8Array), stored_size: Number(c.stored_size) })),
    size: String(d.size),
    width: d.width ?? 0,
    height: d.height ?? 0,
    format: d.format ?? '',
  };
}

/** A buffer over its own whole ArrayBuffer (transferring it detaches nothing else). */
function ownArrayBuffer(b: Buffer): ArrayBuffer {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer) return b.buffer;
  const ab = new ArrayBuffer(b.byteLength);
  new Uint8Array(ab).set(b);
  return ab;
}
