// What every model operation shares: the KV, a clock (injectable so retention and expiry are
// testable), the validated, frozen model options, and the small error helpers for bad input.
import { z } from 'zod';
import { CairnError } from '../../common/errors.js';
import type { Kv, KvTx } from '../kv/types.js';
import { WriteLanes, type Prefetch } from './lanes.js';
import { ORPHAN_PREFIX } from './keys.js';

const DAY_MS = 24 * 3600 * 1000;

/** How long old versions and deleted entries are kept. Days are whole days. */
export interface RetentionPolicy {
  /** Keep the newest N versions of a file (including the current one). */
  readonly keepLast?: number | undefined;
  /** Keep versions for D days after they stopped being current. */
  readonly keepDays?: number | undefined;
  /** Days a deleted file or folder stays restorable before it is purged. */
  readonly trashDays?: number | undefined;
}

export const retentionPolicySchema = z.object({
  keepLast: z.number().int().min(1).max(1_000_000).optional(),
  keepDays: z.number().int().min(0).max(36_500).optional(),
  trashDays: z.number().int().min(0).max(36_500).optional(),
}).strict();

/** What a commit hook learns about a committed file version (e.g. to enqueue media jobs). */
export interface CommittedFile {
  readonly tenant: string;
  readonly path: string;
  readonly nodeId: string;
  readonly version: number;
  readonly size: number;
  readonly revision: number;
}

/**
 * Runs inside the commit's transaction, so what it writes commits (or not) with the version.
 * Like the transaction function it may run several times: no side effects outside `tx`.
 */
export type CommitHook = (tx: KvTx, file: CommittedFile) => Promise<void>;

export interface ModelOptions {
  readonly clock?: () => number;
  /** Largest file a version may describe (default 10 GiB). */
  readonly maxFileBytes?: number;
  /** Upload sessions expire this long after their last activity (default 7 days). */
  readonly sessionTtlMs?: number;
  /** A chunk with no refs and no pins waits this long in the delete queue (default 10 min). */
  readonly deleteGraceMs?: number;
  /** A claimed deletion not finished within this time is handed out again (default 10 min). */
  readonly deletionLeaseMs?: number;
  /** Change-feed events are kept this long (default 30 days). */
  readonly changeRetentionMs?: number;
  /** Policy of tenants that set none (default: keep versions 30 days, trash 30 days). */
  readonly defaultPolicy?: RetentionPolicy;
  readonly onCommit?: CommitHook;
}

const optionsSchema = z.object({
  clock: z.custom<() => number>((v) => typeof v === 'function', 'must be a function').optional(),
  maxFileBytes: z.number().int().positive().optional(),
  sessionTtlMs: z.number().int().positive().optional(),
  deleteGraceMs: z.number().int().min(0).optional(),
  deletionLeaseMs: z.number().int().positive().optional(),
  changeRetentionMs: z.number().int().positive().optional(),
  defaultPolicy: retentionPolicySchema.optional(),
  onCommit: z.custom<CommitHook>((v) => typeof v === 'function', 'must be a function').optional(),
}).strict();

export interface ModelContext {
  readonly kv: Kv;
  /**
   * Runs a write of `tenant`'s data: like kv.transact, but the tenant's writes in this process are
   * queued and batched instead of conflicting with each other on the tenant's revision (on a
   * page-granular KV, every tenant's writes share one lane).
   */
  readonly write: <T>(tenant: string, fn: (tx: KvTx) => Promise<T>, prefetch?: Prefetch) => Promise<T>;
  readonly now: () => number;
  readonly maxFileBytes: number;
  readonly sessionTtlMs: number;
  readonly deleteGraceMs: number;
  readonly deletionLeaseMs: number;
  readonly changeRetentionMs: number;
  readonly defaultPolicy: Required<Pick<RetentionPolicy, 'trashDays'>> & RetentionPolicy;
  readonly onCommit: CommitHook | undefined;
}

export const DEFAULTS = Object.freeze({
  maxFileBytes: 10 * 1024 ** 3,
  sessionTtlMs: 7 * DAY_MS,
  deleteGraceMs: 10 * 60 * 1000,
  deletionLeaseMs: 10 * 60 * 1000,
  changeRetentionMs: 30 * DAY_MS,
  policy: Object.freeze({ keepDays: 30, trashDays: 30 }),
});

/** Validates options once (programmer errors are TypeErrors naming the option) and freezes them. */
export function createContext(kv: Kv, options: ModelOptions = {}): ModelContext {
  const parsed = optionsSchema.safeParse(options);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new TypeError(`options.${issue?.path.join('.') ?? '?'} ${issue?.message ?? 'is invalid'}`);
  }
  const o = parsed.data;
  const policy = o.defaultPolicy ?? DEFAULTS.policy;
  // LevelDB reads synchronously: half of a busy lane's committers per batch, so one batch runs
  // while the one before it syncs. On PostgreSQL a batch's cost is its round trips: 64.
  const lanes = new WriteLanes(kv, { maxBatch: kv.conflictGranularity === 'page' ? 64 : 32 });
  // Where the KV detects conflicts per page, writers of different tenants conflict on shared
  // B-tree pages (64 committers in 64 tenants lost 67 commits to CAIRN_TX_CONFLICT after 16
  // retries on PostgreSQL), so this process's writes share one lane: one write transaction at a
  // time, batching every tenant's queued operations (group commit). Key-precise KVs keep a lane
  // per tenant, whose transactions run side by side.
  const laneOf = kv.conflictGranularity === 'page' ? () => '' : (tenant: string) => tenant;
  kv.indexSparsePrefix?.(ORPHAN_PREFIX);
  return Object.freeze({
    kv,
    write: <T>(tenant: string, fn: (tx: KvTx) => Promise<T>, prefetch?: Prefetch) => lanes.run(laneOf(tenant), fn, prefetch),
    now: o.clock ?? Date.now,
    maxFileBytes: o.maxFileBytes ?? DEFAULTS.maxFileBytes,
    sessionTtlMs: o.sessionTtlMs ?? DEFAULTS.sessionTtlMs,
    deleteGraceMs: o.deleteGraceMs ?? DEFAULTS.deleteGraceMs,
    deletionLeaseMs: o.deletionLeaseMs ?? DEFAULTS.deletionLeaseMs,
    changeRetentionMs: o.changeRetentionMs ?? DEFAULTS.changeRetentionMs,
    defaultPolicy: Object.freeze({ ...policy, trashDays: policy.trashDays ?? DEFAULTS.policy.trashDays }),
    onCommit: o.onCommit,
  });
}

export function daysMs(days: number): number {
  return days * DAY_MS;
}

export function invalid(field: string, message: string): CairnError {
  return new CairnError('CAIRN_INVALID_ARGUMENT', message, { fieldViolations: [{ field, description: message }] });
}

export function notFound(message: string): CairnError {
  return new CairnError('CAIRN_NOT_FOUND', message);
}

export function failedPrecondition(message: string, metadata?: Record<string, string>): CairnError {
  return new CairnError('CAIRN_FAILED_PRECONDITION', message, metadata === undefined ? {} : { metadata });
}

export function checkCount(value: number, field: string, { min = 0, max = Number.MAX_SAFE_INTEGER } = {}): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) throw invalid(field, `${field} must be an integer in ${min}..${max}`);
  return value;
}

const USER_RE = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$/;

/** User ids are the subjects of tokens: 1-128 of letters, digits and . _ @ + -. */
export function validateUser(user: string, field = 'user'): string {
  if (typeof user !== 'string' || !USER_RE.test(user)) throw invalid(field, `invalid ${field} "${String(user).slice(0, 64)}": use 1-128 of letters, digits and . _ @ + - (starting with a letter or digit)`);
  return user;
}
