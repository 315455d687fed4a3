// BlockStore options: validated once at open with zod, defaults applied, then frozen.
// Programmer mistakes surface as TypeError/RangeError naming the offending option.
import { z } from 'zod';

export interface BlockStoreLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export interface BlockStoreOptions {
  /** Directory holding `segments/` and `index/`; created when missing. */
  dir: string;
  /** Largest accepted block (default 4 MiB). */
  maxBlockBytes?: number;
  /** Segment file size at which the writer rolls to a new segment (default 256 MiB). */
  segmentBytes?: number;
  /** Blocks up to this size are also kept in the index value, so reads skip the segment (default 4 KiB). */
  inlineBytes?: number;
  /** Upper bound for segment bytes on disk; puts beyond it fail with CAIRN_DISK_FULL. */
  capacityBytes?: number;
  /** Free filesystem space (statfs) a put must leave untouched (default 0: unchecked). */
  reserveBytes?: number;
  /** Segments whose dead/total ratio exceeds this are rewritten by compact() (default 0.5). */
  compactDeadRatio?: number;
  logger?: BlockStoreLogger;
}

export interface ResolvedOptions {
  readonly dir: string;
  readonly maxBlockBytes: number;
  readonly segmentBytes: number;
  readonly inlineBytes: number;
  readonly capacityBytes: number | null;
  readonly reserveBytes: number;
  readonly compactDeadRatio: number;
  readonly logger: BlockStoreLogger;
}

const MiB = 1024 * 1024;

const loggerSchema = z.custom<BlockStoreLogger>(
  (v) =>
    typeof v === 'object' &&
    v !== null &&
    typeof (v as { warn?: unknown }).warn === 'function' &&
    typeof (v as { info?: unknown }).info === 'function',
  { message: 'must have warn(obj, msg) and info(obj, msg) methods' },
);

const schema = z.object({
  dir: z.string().min(1),
  maxBlockBytes: z.number().int().min(1).max(1024 * MiB).default(4 * MiB),
  // Offsets are stored as 48-bit integers; 1 TiB segments leave plenty of room.
  segmentBytes: z.number().int().min(4096).max(1024 * 1024 * MiB).default(256 * MiB),
  inlineBytes: z.number().int().min(0).max(64 * 1024).default(4096),
  capacityBytes: z.number().int().positive().optional(),
  reserveBytes: z.number().int().min(0).default(0),
  compactDeadRatio: z.number().min(0).max(1).default(0.5),
  logger: loggerSchema.optional(),
});

const silent: BlockStoreLogger = { warn() {}, info() {} };

export function resolveOptions(options: BlockStoreOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object');
  const parsed = schema.safeParse(options);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const name = ['options', ...(issue?.path ?? []).map(String)].join('.');
    const message = `${name}: ${issue?.message ?? 'invalid'}`;
    throw (issue?.code === 'too_small' || issue?.code === 'too_big') && issue.origin === 'number' ? new RangeError(message) : new TypeError(message);
  }
  const o = parsed.data;
  return Object.freeze({
    dir: o.dir,
    maxBlockBytes: o.maxBlockBytes,
    segmentBytes: o.segmentBytes,
    inlineBytes: o.inlineBytes,
    capacityBytes: o.capacityBytes ?? null,
    reserveBytes: o.reserveBytes,
    compactDeadRatio: o.compactDeadRatio,
    logger: o.logger ?? silent,
  });
}
