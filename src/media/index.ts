// Media: durable thumbnail/metadata jobs on a piscina pool of sharp workers (ffprobe/ffmpeg for
// video), and the serving side (Media gRPC service, HTTP thumbnails) as a gateway extension.
import { hostname } from 'node:os';
import type { BlockAccess } from '../blocknode/index.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { loadProto } from '../common/proto.js';
import type { ProtoGrpcType as MediaProto } from '../gen/media.js';
import { shareRulesFor, type GatewayExtension, type TenantKeys, type TenantLimiter } from '../gateway/index.js';
import { NOT_MEDIA, type MetadataClient } from '../metadata/index.js';
import { mediaMetrics } from './metrics.js';
import { resolveMediaOptions, type MediaOptions, type MediaOptionsInput } from './options.js';
import { MediaPool } from './pool.js';
import { MediaProcessor } from './processor.js';
import { MediaJobRunner, type JobAdmin } from './runner.js';
import { ThumbnailService } from './serve.js';
import { sniffMedia } from './sniff.js';

export { LADDER, OUTPUT_FORMATS, FAILURE_REASONS, resolveMediaOptions, type MediaOptions, type MediaOptionsInput, type OutputFormat } from './options.js';
export { sniffMedia, detectMedia, mediaClass } from './sniff.js';
export { cgroupCpus, poolThreads } from './pool.js';
export { MEDIA_JOB_KIND } from './runner.js';
export { THUMBNAIL_ROUTE, IMMUTABLE, etagMatches } from './serve.js';
export { PRESIGNED_THUMBNAIL_PREFIX } from './presign.js';
export { derivativeName, parseMediaRecord, type MediaRecord } from './processor.js';

export const MEDIA_PERMISSIONS = Object.freeze({ GetThumbnail: 'read', GetMediaInfo: 'read', ListThumbnails: 'read', PresignThumbnail: 'read' } as const);

/** Share recipients (x-cairn-tenant) may call every Media method on paths shared with them for reading. */
export const MEDIA_SHARE_RULES = shareRulesFor(MEDIA_PERMISSIONS, {
  GetThumbnail: { field: 'path' },
  GetMediaInfo: { field: 'path' },
  ListThumbnails: { field: 'path', folder: true },
  PresignThumbnail: { field: 'path' },
});

export interface CreateMediaOptions {
  readonly metadata: MetadataClient;
  readonly blocks: BlockAccess;
  readonly keys: TenantKeys;
  readonly authSecret: Uint8Array;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly media?: MediaOptionsInput;
  /** The gateway's public HTTP base URL, so presigned thumbnail URLs come back absolute. */
  readonly publicHttpUrl?: () => string | undefined;
  /**
   * The gateway's per-tenant rate limits (the same instance the gateway's Files API uses): the
   * HTTP thumbnail routes admit each request and charge the bytes they serve, as GetThumbnail does.
   */
  readonly limiter?: TenantLimiter;
}

export interface Media {
  readonly options: MediaOptions;
  readonly pool: MediaPool;
  /** The Media service, HTTP thumbnails and the commit-time sniffer, for createGateway. */
  readonly extension: GatewayExtension;
  /** Starts leasing media jobs (a no-op when jobConcurrency is 0). */
  startJobs(admin: JobAdmin, worker?: string): void;
  stop(): Promise<void>;
}

export function createMedia(opts: CreateMediaOptions): Media {
  const options = resolveMediaOptions(opts.media);
  const log = opts.log.child({ component: 'media' });
  const metrics = mediaMetrics(opts.metrics.registry);
  const pool = new MediaPool(options, metrics);
  const processor = new MediaProcessor({ metadata: opts.metadata, blocks: opts.blocks, keys: opts.keys, pool, options, metrics, log });
  const serve = new ThumbnailService({ metadata: opts.metadata, blocks: opts.blocks, keys: opts.keys, processor, options, log, authSecret: opts.authSecret, metrics, ...(opts.publicHttpUrl !== undefined ? { publicHttpUrl: opts.publicHttpUrl } : {}), ...(opts.limiter !== undefined ? { limiter: opts.limiter } : {}) });
  const runners: MediaJobRunner[] = [];
  let stopping: Promise<void> | undefined;
  const definition = (loadProto().proto as unknown as MediaProto).cairn.v1.Media.service;
  log.info({ threads: pool.threads, format: options.format, maxInputPixels: options.maxInputPixels, svg: options.svg, onDemand: options.onDemand }, 'media pool started');
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      for (const r of runners) await r.stop();
      await pool.close();
    })();
    return stopping;
  };
  return {
    options,
    pool,
    extension: {
      service: { definition, implementation: serve.handlers(), permissions: MEDIA_PERMISSIONS, shareRules: MEDIA_SHARE_RULES },
      http: (req, res) => serve.http(req, res),
      // Content that is not media is recorded as such on its version (no job, no thumbnail).
      sniff: (head) => sniffMedia(head) ?? NOT_MEDIA,
      close: stop,
    },
    startJobs(admin, worker = `${hostname()}/${process.pid}`) {
      if (options.jobConcurrency === 0) return;
      const runner = new MediaJobRunner({ admin, processor, pool, options, metrics, log, worker });
      runners.push(runner);
      runner.start();
    },
    stop,
  };
}
