// Media settings (limits secure by default, output formats, pool sizing), validated once with zod
// and frozen: the ladder, the decoder allowlist and every limit a source must pass.
import { z } from 'zod';

/** The thumbnail ladder: the first size is a square attention crop, the rest fit inside. */
export const LADDER = Object.freeze([128, 512, 1024, 2048] as const);
export type LadderSize = (typeof LADDER)[number];
export const SQUARE_SIZE: LadderSize = 128;

export const OUTPUT_FORMATS = ['webp', 'avif', 'jpeg'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

export const CONTENT_TYPES: Readonly<Record<OutputFormat, string>> = { webp: 'image/webp', avif: 'image/avif', jpeg: 'image/jpeg' };

export const mediaOptionsSchema = z.object({
  /** Pool threads; 0 = from the cgroup CPU limit so that threads × sharp.concurrency() ≤ CPUs. */
  threads: z.number().int().min(0).max(256).default(0),
  /** Tasks waiting for a thread beyond which new work is refused (backpressure). */
  maxQueue: z.number().int().min(1).max(100_000).default(64),
  /** A task still queued after this long is aborted (running tasks always finish). */
  taskDeadlineMs: z.number().int().min(1).max(3_600_000).default(60_000),
  format: z.enum(OUTPUT_FORMATS).default('webp'),
  quality: z.number().int().min(1).max(100).default(80),
  maxInputPixels: z.number().int().min(1).max(2 ** 40).default(100_000_000),
  /** Largest source file processed (bytes). */
  maxBytes: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).default(256 * 1024 * 1024),
  /** Animated sources declaring more frames are refused (only the first frame is ever decoded). */
  maxFrames: z.number().int().min(1).max(1_000_000).default(1_000),
  /** SVG: rasterise with every external and local reference removed, or refuse. */
  svg: z.enum(['rasterise', 'refuse']).default('rasterise'),
  /** A thumbnail asked for before its job ran: generate it now (single-flight) or answer 503. */
  onDemand: z.enum(['generate', 'unavailable']).default('generate'),
  /** Retry-After (seconds) for `unavailable`. */
  retryAfterSeconds: z.number().int().min(1).max(3600).default(5),
  /** ffprobe/ffmpeg: wall-clock cap per child process and cap on what it may print. */
  videoTimeoutMs: z.number().int().min(100).max(3_600_000).default(60_000),
  videoMaxOutputBytes: z.number().int().min(1024).max(1024 ** 3).default(64 * 1024 * 1024),
  /** Jobs one worker process holds at once (0 = this process runs no jobs). */
  jobConcurrency: z.number().int().min(0).max(1_000).default(4),
  /** Lease of a job: a worker that dies mid-job loses it after this long. */
  leaseMs: z.number().int().min(1_000).max(24 * 3600_000).default(120_000),
  /** Idle wait between lease polls when the queue is empty. */
  pollMs: z.number().int().min(10).max(600_000).default(500),
}).strict();

export type MediaOptionsInput = z.input<typeof mediaOptionsSchema>;
export type MediaOptions = Readonly<z.output<typeof mediaOptionsSchema>>;

export function resolveMediaOptions(input: MediaOptionsInput = {}): MediaOptions {
  const parsed = mediaOptionsSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new RangeError(`options.${issue?.path.join('.') ?? '?'}: ${issue?.message ?? 'invalid'}`);
  }
  return Object.freeze(parsed.data);
}

/** Why a media job failed: a bounded set (metric label), each with a detail in the job's reason. */
export const FAILURE_REASONS = [
  'file_too_large', 'pixel_limit', 'frame_limit', 'unsupported_format', 'corrupt', 'svg_refused',
  'ffmpeg_missing', 'video_failed', 'deadline', 'overloaded', 'source_unavailable', 'internal',
] as const;
export type FailureReason = (typeof FAILURE_REASONS)[number];

/** Failures recorded on the version (state "failed") so readers learn why instead of waiting for a thumbnail. */
export const PERMANENT_REASONS: ReadonlySet<FailureReason> = new Set(['file_too_large', 'pixel_limit', 'frame_limit', 'unsupported_format', 'corrupt', 'svg_refused', 'ffmpeg_missing', 'video_failed']);

/**
 * Failures of the source itself (a bomb, a refused or unsupported format, an over-limit or corrupt
 * input): a retry fails the same way, so the job is dead-lettered at once (FailJob permanent).
 * `ffmpeg_missing` is not among them: another media worker may have ffmpeg.
 */
export const NO_RETRY_REASONS: ReadonlySet<FailureReason> = new Set(['file_too_large', 'pixel_limit', 'frame_limit', 'unsupported_format', 'corrupt', 'svg_refused', 'video_failed']);

export class MediaFailure extends Error {
  readonly reason: FailureReason;
  /** A retry cannot succeed: the job is dead-lettered immediately. */
  readonly permanent: boolean;
  /** `transient` overrides the reason's default (an ffmpeg time cap on a loaded worker may pass next time). */
  constructor(reason: FailureReason, detail: string, options: { transient?: boolean } = {}) {
    super(`${reason}: ${detail}`);
    this.name = 'MediaFailure';
    this.reason = reason;
    this.permanent = options.transient !== true && NO_RETRY_REASONS.has(reason);
  }
}
