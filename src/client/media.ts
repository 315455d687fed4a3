// The SDK's media calls: thumbnails of image and video versions (one size of the 128/512/1024/2048
// ladder), the media metadata extracted from them, and a folder's files with their thumbnail
// state, a page at a time. A thumbnail not ready yet is CAIRN_UNAVAILABLE; `wait` polls for it.
import type * as grpc from '@grpc/grpc-js';
import { CairnError, isCairnError } from '../common/errors.js';
import { CHANNEL_OPTIONS, callMetadata, deadlineIn, unaryCall } from '../common/grpc-client.js';
import { clientCredentials } from '../common/grpc-server.js';
import { loadProto } from '../common/proto.js';
import { fromServiceError } from '../common/status.js';
import type { GetMediaInfoResponse__Output } from '../gen/cairn/v1/GetMediaInfoResponse.js';
import type { GetThumbnailResponse__Output } from '../gen/cairn/v1/GetThumbnailResponse.js';
import type { ListThumbnailsResponse__Output } from '../gen/cairn/v1/ListThumbnailsResponse.js';
import type { MediaClient } from '../gen/cairn/v1/Media.js';
import type { ProtoGrpcType as MediaProto } from '../gen/media.js';
import { OWNER_HEADER } from './sharing.js';
import type { ClientSettings } from './config.js';

/** The thumbnail ladder: 128 is a square crop, the others fit inside. */
export const THUMBNAIL_SIZES = Object.freeze([128, 512, 1024, 2048] as const);
export type ThumbnailSize = (typeof THUMBNAIL_SIZES)[number];

export interface Thumbnail {
  /** Encoded image bytes (empty when notModified). */
  readonly data: Buffer;
  /** e.g. image/webp. */
  readonly contentType: string;
  /** Strong ETag, quoted as in HTTP. */
  readonly etag: string;
  readonly width: number;
  readonly height: number;
  /** The version the thumbnail was derived from. */
  readonly version: number;
  /** The `ifNoneMatch` ETag matched: no data. */
  readonly notModified: boolean;
}

export type MediaState = 'pending' | 'ready' | 'failed';

export interface MediaInfo {
  readonly path: string;
  readonly version: number;
  readonly state: MediaState;
  /** What the server extracted (width, height, format, exif, gps for owners, video, …), as sent. */
  readonly media: Record<string, unknown> | undefined;
  /** Why processing failed (state failed). */
  readonly error: string;
}

export interface ThumbnailEntry {
  readonly path: string;
  readonly folder: boolean;
  readonly version: number;
  /** none (not media, or a folder), pending, ready or failed. */
  readonly state: 'none' | 'pending' | 'ready' | 'failed';
  /** Ready entries: the thumbnail's ETag, size and type. */
  readonly etag: string;
  readonly width: number;
  readonly height: number;
  readonly contentType: string;
}

export interface ThumbnailPage {
  readonly entries: ThumbnailEntry[];
  /** More entries lie in the direction of travel. */
  readonly hasMore: boolean;
}

export interface WaitOptions {
  /** Give up after this long (the last CAIRN_UNAVAILABLE is thrown). */
  readonly timeoutMs: number;
  /** First delay between attempts (default 250 ms, or the server's Retry-After if shorter). */
  readonly initialDelayMs?: number;
  /** Longest delay between attempts (default 5 s). */
  readonly maxDelayMs?: number;
  readonly signal?: AbortSignal;
  /** Called before each wait with the attempt number and the delay. */
  readonly onRetry?: (attempt: number, delayMs: number, err: CairnError) => void;
}

export interface ThumbnailOptions {
  /** 0 or absent: the current version. */
  readonly version?: number;
  readonly ifNoneMatch?: string;
  /** Poll with exponential backoff (full jitter) while the thumbnail is not ready. */
  readonly wait?: WaitOptions;
}

export function checkThumbnailSize(size: number): ThumbnailSize {
  if (!(THUMBNAIL_SIZES as readonly number[]).includes(size)) throw new CairnError('CAIRN_INVALID_ARGUMENT', `size must be one of ${THUMBNAIL_SIZES.join(', ')}, got ${size}`);
  return size as ThumbnailSize;
}

/** A page position is a name in the folder; a full path is reduced to its last segment. */
function nameOf(position: string): string {
  return position.slice(position.lastIndexOf('/') + 1);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) return reject(new CairnError('CAIRN_CANCELLED', 'cancelled'));
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', abort);
    };
    const abort = (): void => {
      done();
      reject(new CairnError('CAIRN_CANCELLED', 'cancelled'));
    };
    const timer = setTimeout(() => {
      done();
      resolve();
    }, ms);
    signal?.addEventListener('abort', abort, { once: true });
  });
}

type Unary<Req, Res> = (req: Req, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => unknown;

/** Thumbnails and media metadata against one gateway. */
export class CairnMedia {
  readonly #media: MediaClient;
  readonly #token: string;
  readonly #owner: string | undefined;

  /** `owner`: act inside what that tenant shares with you. */
  constructor(settings: Pick<ClientSettings, 'endpoint' | 'token' | 'tlsCa' | 'tlsCert' | 'tlsKey'>, options: { owner?: string } = {}) {
    const v1 = (loadProto().proto as unknown as MediaProto).cairn.v1;
    this.#media = new v1.Media(settings.endpoint, clientCredentials({ ca: settings.tlsCa, cert: settings.tlsCert, key: settings.tlsKey }), CHANNEL_OPTIONS);
    this.#token = settings.token;
    this.#owner = options.owner;
  }

  async #call<Req, Res>(fn: Unary<Req, Res>, req: Req): Promise<Res> {
    const md = await callMetadata(() => this.#token);
    if (this.#owner !== undefined) md.set(OWNER_HEADER, this.#owner);
    try {
      return await unaryCall<Req, Res>(fn, req, md, deadlineIn(60_000));
    } catch (err) {
      throw fromServiceError(err);
    }
  }

  /**
   * One ladder size of a version's thumbnail. Not ready yet: CAIRN_UNAVAILABLE (with the server's
   * Retry-After as `retryAfterMs`), or with `wait` polled until ready or the timeout. Not an
   * image/video, or processing failed: CAIRN_FAILED_PRECONDITION.
   */
  async thumbnail(path: string, size: number, options: ThumbnailOptions = {}): Promise<Thumbnail> {
    const req = { path, size: checkThumbnailSize(size), version: options.version ?? 0, if_none_match: options.ifNoneMatch ?? '' };
    const once = async (): Promise<Thumbnail> => {
      const r = await this.#call<object, GetThumbnailResponse__Output>(this.#media.GetThumbnail.bind(this.#media), req);
      return { data: r.data, contentType: r.content_type, etag: r.etag, width: r.width, height: r.height, version: Number(r.version), notModified: r.not_modified };
    };
    if (options.wait === undefined) return once();
    return this.#poll(once, options.wait);
  }

  /** The media metadata of a version (0: current); `media` is undefined while pending. */
  async info(path: string, options: { version?: number } = {}): Promise<MediaInfo> {
    const r = await this.#call<object, GetMediaInfoResponse__Output>(this.#media.GetMediaInfo.bind(this.#media), { path, version: options.version ?? 0 });
    let media: Record<string, unknown> | undefined;
    if (r.media_json !== '') {
      try {
        media = JSON.parse(r.media_json) as Record<string, unknown>;
      } catch {
        throw new CairnError('CAIRN_INTERNAL', `the server sent unreadable media metadata for ${path}`);
      }
    }
    const state: MediaState = r.state === 'ready' || r.state === 'failed' ? r.state : 'pending';
    return { path: r.path, version: Number(r.version), state, media, error: r.error };
  }

  /**
   * One page of a folder's entries with the state of one thumbnail size (default 128), in name
   * order: `after` the last name (or path) of the previous page, or `before` the first one going back.
   */
  async listThumbnails(folder: string, options: { size?: number; pageSize?: number; after?: string; before?: string } = {}): Promise<ThumbnailPage> {
    if (options.after !== undefined && options.before !== undefined) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'give at most one of after and before');
    const r = await this.#call<object, ListThumbnailsResponse__Output>(this.#media.ListThumbnails.bind(this.#media), {
      path: folder,
      size: checkThumbnailSize(options.size ?? 128),
      page_size: options.pageSize ?? 0,
      previous_last: nameOf(options.after ?? ''),
      previous_first: nameOf(options.before ?? ''),
    });
    return {
      hasMore: r.has_more,
      entries: r.entries.map((e) => ({
        path: e.path,
        folder: e.folder,
        version: Number(e.version),
        state: e.state === 'pending' || e.state === 'ready' || e.state === 'failed' ? e.state : 'none',
        etag: e.etag,
        width: e.width,
        height: e.height,
        contentType: e.content_type,
      })),
    };
  }

  /** Every entry of a folder, fetching pages of `pageSize` as the caller iterates. */
  async *listAllThumbnails(folder: string, options: { size?: number; pageSize?: number } = {}): AsyncGenerator<ThumbnailEntry> {
    let after: string | undefined;
    for (;;) {
      const page = await this.listThumbnails(folder, { ...options, ...(after !== undefined ? { after } : {}) });
      yield* page.entries;
      if (!page.hasMore || page.entries.length === 0) return;
      after = page.entries.at(-1)!.path;
    }
  }

  async #poll<T>(fn: () => Promise<T>, wait: WaitOptions): Promise<T> {
    const deadline = Date.now() + wait.timeoutMs;
    let delay = wait.initialDelayMs ?? 250;
    const max = wait.maxDelayMs ?? 5_000;
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!isCairnError(err, 'CAIRN_UNAVAILABLE')) throw err;
        const left = deadline - Date.now();
        if (left <= 0) throw err;
        // Exponential backoff with full jitter, never past the server's Retry-After or the deadline.
        const cap = Math.min(max, delay, err.retryAfterMs ?? Infinity);
        const ms = Math.min(left, Math.max(50, Math.round(cap / 2 + Math.random() * (cap / 2))));
        wait.onRetry?.(attempt, ms, err);
        await sleep(ms, wait.signal);
        delay = Math.min(max, delay * 2);
      }
    }
  }

  close(): void {
    this.#media.close();
  }
}
