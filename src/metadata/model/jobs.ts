// The durable job queue (media work and the like): enqueue inside any transaction, lease with
// expiry, complete exactly once per lease, retry with exponential backoff, dead-letter with a reason.
import { randomBytes } from 'node:crypto';
import { validateTenant } from '../../common/auth.js';
import { CairnError } from '../../common/errors.js';
import type { Kv, KvReader, KvTx } from '../kv/types.js';
import { JOBS_CHANNEL, adminKeys } from './keys-admin.js';

export const DEFAULT_MAX_ATTEMPTS = 5;
export const DEFAULT_BACKOFF_BASE_MS = 1_000;
export const DEFAULT_BACKOFF_MAX_MS = 5 * 60_000;
export const MAX_PAYLOAD_BYTES = 64 * 1024;
export const MAX_LEASE_MS = 24 * 3600_000;
export const MAX_LEASE_BATCH = 100;
/** The longest a lease call may wait for a job (long poll). */
export const MAX_LEASE_WAIT_MS = 30_000;
const KIND_RE = /^[a-z][a-z0-9_.-]{0,62}$/;
const MAX_DEDUPE_BYTES = 512;
const MAX_REASON_CHARS = 2_000;

export interface EnqueueInput {
  readonly tenant: string;
  /** What the job is, e.g. "media.thumbnail"; workers lease by kind. */
  readonly kind: string;
  /** Opaque to the queue (typically JSON), ≤ 64 KiB. */
  readonly payload: string;
  /** While a live job with the same (tenant, kind, dedupeKey) exists, enqueueing returns it instead. */
  readonly dedupeKey?: string | undefined;
  readonly maxAttempts?: number | undefined;
  /** Earliest time the job may run (default: now). */
  readonly notBeforeMs?: number | undefined;
  readonly backoffBaseMs?: number | undefined;
  readonly backoffMaxMs?: number | undefined;
}

export type JobState = 'queued' | 'dead';

export interface JobRecord {
  readonly id: string;
  readonly tenant: string;
  readonly kind: string;
  readonly payload: string;
  readonly dedupeKey: string | undefined;
  readonly state: JobState;
  /** Leases handed out so far (an expired lease counts). */
  readonly attempts: number;
  readonly maxAttempts: number;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  readonly createdMs: number;
  /** When the job may next be leased (while leased: when the lease expires). */
  readonly readyAtMs: number;
  readonly lease: { readonly worker: string; readonly token: string; readonly expiresMs: number } | undefined;
  /** The reason given by the last failure (or lease expiry). */
  readonly lastError: string | undefined;
  /** Set on dead letters. */
  readonly deadMs: number | undefined;
}

/** Injectable clock and randomness, so tests drive time instead of sleeping. */
export interface QueueClock {
  readonly now?: () => number;
  readonly random?: () => number;
}

function invalid(message: string, field: string): CairnError {
  return new CairnError('CAIRN_INVALID_ARGUMENT', message, { fieldViolations: [{ field, description: message }] });
}

function checkInt(value: number, field: string, min: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) throw invalid(`${field} must be an integer in ${min}..${max}, got ${String(value)}`, field);
  return value;
}

export function validateKind(kind: string, field = 'kind'): void {
  if (typeof kind !== 'string' || !KIND_RE.test(kind)) throw invalid(`${field} "${String(kind)}" must be 1-63 of a-z, 0-9, "_", "." and "-", starting with a letter`, field);
}

function validateJobId(id: string): void {
  if (typeof id !== 'string' || !/^[0-9a-f]{32}$/.test(id)) throw invalid(`job id "${String(id)}" is malformed`, 'job_id');
}

let lastMs = 0;
let sequence = 0;

/**
 * Job ids sort by creation: 6 bytes of milliseconds, 4 of a per-process sequence, 6 random.
 * FIFO is exact within one process and by millisecond across replicas, without the shared
 * counter that would make every enqueuing commit conflict with every other.
 */
function newJobId(nowMs: number): string {
  if (nowMs > lastMs) {
    lastMs = nowMs;
    sequence = 0;
  } else {
    sequence++;
  }
  const b = Buffer.alloc(16);
  b.writeUIntBE(lastMs, 0, 6);
  b.writeUInt32BE(sequence >>> 0, 6);
  randomBytes(6).copy(b, 10);
  return b.toString('hex');
}

interface StoredJob {
  id: string;
  tenant: string;
  kind: string;
  payload: string;
  dedupe?: string;
  state: JobState;
  attempts: number;
  max: number;
  base: number;
  cap: number;
  created: number;
  ready: number;
  lease?: { worker: string; token: string; expires: number };
  error?: string;
  dead?: number;
}

function toRecord(s: StoredJob): JobRecord {
  return {
    id: s.id,
    tenant: s.tenant,
    kind: s.kind,
    payload: s.payload,
    dedupeKey: s.dedupe,
    state: s.state,
    attempts: s.attempts,
    maxAttempts: s.max,
    backoffBaseMs: s.base,
    backoffMaxMs: s.cap,
    createdMs: s.created,
    readyAtMs: s.ready,
    lease: s.lease === undefined ? undefined : { worker: s.lease.worker, token: s.lease.token, expiresMs: s.lease.expires },
    lastError: s.error,
    deadMs: s.dead,
  };
}

async function readJob(r: KvReader, id: string): Promise<StoredJob | undefined> {
  const raw = await r.get(adminKeys.job(id));
  return raw === undefined ? undefined : (JSON.parse(raw.toString('utf8')) as StoredJob);
}

function writeJob(tx: KvTx, job: StoredJob): void {
  tx.put(adminKeys.job(job.id), Buffer.from(JSON.stringify(job), 'utf8'));
}

/** Index value: 'l' while leased, so depth counts need not read every job. */
function writeReady(tx: KvTx, job: StoredJob): void {
  tx.put(adminKeys.jobReady(job.kind, job.ready, job.id), Buffer.from(job.lease !== undefined ? 'l' : ''));
}

function validateEnqueue(input: EnqueueInput): void {
  validateTenant(input.tenant);
  validateKind(input.kind);
  if (typeof input.payload !== 'string') throw invalid('payload must be a string', 'payload');
  if (Buffer.byteLength(input.payload, 'utf8') > MAX_PAYLOAD_BYTES) throw invalid(`payload exceeds ${MAX_PAYLOAD_BYTES} bytes`, 'payload');
  if (input.dedupeKey !== undefined) {
    if (typeof input.dedupeKey !== 'string' || input.dedupeKey === '' || input.dedupeKey.includes('\0') || Buffer.byteLength(input.dedupeKey) > MAX_DEDUPE_BYTES) {
      throw invalid(`dedupe_key must be 1..${MAX_DEDUPE_BYTES} bytes without NUL`, 'dedupe_key');
    }
  }
  if (input.maxAttempts !== undefined) checkInt(input.maxAttempts, 'max_attempts', 1, 100);
  if (input.notBeforeMs !== undefined) checkInt(input.notBeforeMs, 'not_before_ms', 0, 2 ** 47);
  if (input.backoffBaseMs !== undefined) checkInt(input.backoffBaseMs, 'backoff_base_ms', 1, MAX_LEASE_MS);
  if (input.backoffMaxMs !== undefined) checkInt(input.backoffMaxMs, 'backoff_max_ms', 1, MAX_LEASE_MS);
}

/**
 * Enqueues a job inside the caller's transaction (e.g. a commit enqueueing media work), so the
 * job exists if and only if that transaction commits. Returns the job (an existing live one when
 * `dedupeKey` matches). Validates before touching `tx`: bad input throws and writes nothing.
 */
export async function enqueueJob(tx: KvTx, input: EnqueueInput, clock: QueueClock = {}): Promise<JobRecord> {
  validateEnqueue(input);
  const now = (clock.now ?? Date.now)();
  if (input.dedupeKey !== undefined) {
    const existing = await tx.get(adminKeys.jobDedupe(input.tenant, input.kind, input.dedupeKey));
    if (existing !== undefined) {
      const job = await readJob(tx, existing.toString('utf8'));
      if (job !== undefined && job.state === 'queued') return toRecord(job);
    }
  }
  const job: StoredJob = {
    id: newJobId(now),
    tenant: input.tenant,
    kind: input.kind,
    payload: input.payload,
    state: 'queued',
    attempts: 0,
    max: input.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
    base: input.backoffBaseMs ?? DEFAULT_BACKOFF_BASE_MS,
    cap: input.backoffMaxMs ?? DEFAULT_BACKOFF_MAX_MS,
    created: now,
    ready: Math.max(now, input.notBeforeMs ?? 0),
  };
  if (input.dedupeKey !== undefined) {
    job.dedupe = input.dedupeKey;
    tx.put(adminKeys.jobDedupe(input.tenant, input.kind, input.dedupeKey), Buffer.from(job.id, 'utf8'));
  }
  writeJob(tx, job);
  writeReady(tx, job);
  tx.notify(JOBS_CHANNEL, input.kind);
  return toRecord(job);
}

/** Convenience for callers with no transaction of their own. */
export async function enqueue(kv: Kv, input: EnqueueInput, clock: QueueClock = {}): Promise<JobRecord> {
  validateEnqueue(input);
  return kv.transact((tx) => enqueueJob(tx, input, clock));
}

function deadLetter(tx: KvTx, job: StoredJob, reason: string, now: number): StoredJob {
  tx.del(adminKeys.jobReady(job.kind, job.ready, job.id));
  if (job.dedupe !== undefined) tx.del(adminKeys.jobDedupe(job.tenant, job.kind, job.dedupe));
  const dead: StoredJob = { ...job, state: 'dead', error: reason.slice(0, MAX_REASON_CHARS), dead: now };
  delete dead.lease;
  writeJob(tx, dead);
  tx.put(adminKeys.jobDead(job.kind, job.id), Buffer.alloc(0));
  return dead;
}

export interface LeaseInput {
  readonly kinds: readonly string[];
  /** Who holds the lease (for operators and logs). */
  readonly worker: string;
  readonly max: number;
  readonly leaseMs: number;
}

export interface LeasedJob {
  readonly job: JobRecord;
  /** Proof of this lease: completeJob/failJob with an older token are refused. */
  readonly leaseToken: string;
}

/**
 * Atomically leases up to `max` ready jobs of the given kinds, oldest first: queued jobs whose
 * time has come, including jobs whose lease expired (their worker died; that attempt counts).
 * A job that expired on its last attempt is dead-lettered instead of leased again.
 */
export async function leaseJobs(kv: Kv, input: LeaseInput, clock: QueueClock = {}): Promise<LeasedJob[]> {
  const kinds: readonly string[] = input.kinds;
  if (kinds.length === 0 || kinds.length > 32) throw invalid('kinds must name 1..32 job kinds', 'kinds');
  kinds.forEach((k, i) => validateKind(k, `kinds[${i}]`));
  if (typeof input.worker !== 'string' || input.worker === '' || input.worker.length > 256) throw invalid('worker must be 1..256 characters', 'worker');
  checkInt(input.max, 'max', 1, MAX_LEASE_BATCH);
  checkInt(input.leaseMs, 'lease_ms', 1, MAX_LEASE_MS);
  const unique = [...new Set(kinds)];
  const now = (clock.now ?? Date.now)();
  return kv.transact(async (tx) => {
    // Candidates from every kind, merged by (readyAt, id): FIFO across kinds too.
    const candidates: Array<{ ready: number; id: string }> = [];
    for (const kind of unique) {
      const range = adminKeys.jobReadyUntil(kind, now);
      for (const [k] of await tx.scan({ ...range, limit: input.max })) {
        const tail = k.subarray(range.gte.length);
        candidates.push({ ready: Number(tail.readBigUInt64BE(0)), id: tail.subarray(9).toString('utf8') });
      }
    }
    candidates.sort((a, b) => a.ready - b.ready || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const leased: LeasedJob[] = [];
    for (const c of candidates) {
      if (leased.length >= input.max) break;
      const job = await readJob(tx, c.id);
      if (job === undefined || job.state !== 'queued') continue;
      if (job.lease !== undefined && job.attempts >= job.max) {
        deadLetter(tx, job, `lease expired on attempt ${job.attempts} of ${job.max} (worker ${job.lease.worker})${job.error !== undefined ? `; last error: ${job.error}` : ''}`, now);
        continue;
      }
      tx.del(adminKeys.jobReady(job.kind, job.ready, job.id));
      const token = randomBytes(16).toString('hex');
      const next: StoredJob = {
        ...job,
        attempts: job.attempts + 1,
        ready: now + input.leaseMs,
        lease: { worker: input.worker, token, expires: now + input.leaseMs },
        ...(job.lease !== undefined ? { error: `lease of worker ${job.lease.worker} expired` } : {}),
      };
      writeJob(tx, next);
      writeReady(tx, next);
      leased.push({ job: toRecord(next), leaseToken: token });
    }
    return leased;
  });
}

/** When the next queued job of `kinds` becomes ready after `now` (a delayed retry, an expiring lease). */
export async function nextReadyAt(kv: KvReader, kinds: readonly string[], now: number): Promise<number | undefined> {
  let next: number | undefined;
  for (const kind of new Set(kinds)) {
    const range = adminKeys.jobReadyFrom(kind, now + 1);
    const [first] = await kv.scan({ ...range, limit: 1 });
    if (first === undefined) continue;
    const ready = Number(first[0].readBigUInt64BE(range.gte.length - 8));
    if (next === undefined || ready < next) next = ready;
  }
  return next;
}

/**
 * `leaseJobs` as a long poll: when nothing is ready it waits up to `waitMs` and leases as soon as
 * a job of these kinds is enqueued or retried (a notification from any replica) or a delayed
 * job's time comes, then answers empty. A lost notification costs at most the wait.
 */
export async function leaseJobsWaiting(kv: Kv, input: LeaseInput, waitMs: number, signal: AbortSignal, clock: QueueClock = {}): Promise<LeasedJob[]> {
  checkInt(waitMs, 'wait_ms', 0, MAX_LEASE_WAIT_MS);
  if (waitMs === 0) return leaseJobs(kv, input, clock);
  const kinds = new Set(input.kinds);
  const deadline = performance.now() + waitMs;
  let notifications = 0;
  let wake: (() => void) | undefined;
  // Subscribed before the first attempt, so a job enqueued in between still wakes this call.
  const unsubscribe = kv.subscribe(JOBS_CHANNEL, (kind) => {
    if (!kinds.has(kind)) return;
    notifications++;
    wake?.();
  });
  try {
    for (;;) {
      const seen = notifications;
      const leased = await leaseJobs(kv, input, clock);
      const left = deadline - performance.now();
      if (leased.length > 0 || left <= 0 || signal.aborted) return leased;
      if (notifications !== seen) continue;
      const now = (clock.now ?? Date.now)();
      const next = await nextReadyAt(kv, input.kinds, now);
      if (notifications !== seen) continue;
      const sleepMs = Math.max(1, Math.min(left, next === undefined ? left : next - now + 1));
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          signal.removeEventListener('abort', done);
          wake = undefined;
          resolve();
        };
        const timer = setTimeout(done, sleepMs);
        signal.addEventListener('abort', done, { once: true });
        wake = done;
      });
    }
  } finally {
    unsubscribe();
  }
}

async function leasedJob(tx: KvTx, jobId: string, leaseToken: string): Promise<StoredJob> {
  const job = await readJob(tx, jobId);
  if (job === undefined) throw new CairnError('CAIRN_NOT_FOUND', `no job ${jobId} (completed or never enqueued)`);
  if (job.lease === undefined || job.lease.token !== leaseToken) {
    throw new CairnError('CAIRN_FAILED_PRECONDITION', `job ${jobId} is not held under this lease (${job.state === 'dead' ? 'dead-lettered' : 'it was released or leased again'})`, { metadata: { job_state: job.state } });
  }
  return job;
}

function validateLeaseRef(jobId: string, leaseToken: string): void {
  validateJobId(jobId);
  if (typeof leaseToken !== 'string' || !/^[0-9a-f]{32}$/.test(leaseToken)) throw invalid('lease_token is malformed', 'lease_token');
}

/**
 * Completes a job under the lease that handed it out. The job is deleted, so a second completion
 * (or one with the token of an earlier lease, after the job was leased again) is refused.
 */
export async function completeJob(kv: Kv, jobId: string, leaseToken: string): Promise<void> {
  validateLeaseRef(jobId, leaseToken);
  await kv.transact(async (tx) => {
    const job = await leasedJob(tx, jobId, leaseToken);
    tx.del(adminKeys.jobReady(job.kind, job.ready, job.id));
    if (job.dedupe !== undefined) tx.del(adminKeys.jobDedupe(job.tenant, job.kind, job.dedupe));
    tx.del(adminKeys.job(job.id));
  });
}

/** Delay before retry `attempt` (1-based): base·2^(attempt-1) capped, with "equal jitter" in [d/2, d]. */
export function backoffMs(attempt: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  const d = Math.min(capMs, baseMs * 2 ** Math.min(attempt - 1, 40));
  return Math.round(d / 2 + random() * (d / 2));
}

export interface FailResult {
  readonly job: JobRecord;
  /** True when this failure used up the attempts and the job is now a dead letter. */
  readonly deadLettered: boolean;
}

export interface FailOptions {
  /** The failure cannot succeed on a retry: dead-letter now with the reason, whatever attempts are left. */
  readonly permanent?: boolean | undefined;
}

/**
 * Reports a failed attempt: the job is retried after a backoff, or dead-lettered with `reason`
 * when it is out of attempts or the failure is `permanent`.
 */
export async function failJob(kv: Kv, jobId: string, leaseToken: string, reason: string, clock: QueueClock = {}, options: FailOptions = {}): Promise<FailResult> {
  validateLeaseRef(jobId, leaseToken);
  if (typeof reason !== 'string') throw invalid('reason must be a string', 'reason');
  if (options.permanent !== undefined && typeof options.permanent !== 'boolean') throw invalid('permanent must be a boolean', 'permanent');
  const permanent = options.permanent === true;
  if (permanent && reason.trim() === '') throw invalid('a permanent failure needs a reason', 'reason');
  const now = (clock.now ?? Date.now)();
  const random = clock.random ?? Math.random;
  return kv.transact(async (tx) => {
    const job = await leasedJob(tx, jobId, leaseToken);
    if (permanent || job.attempts >= job.max) return { job: toRecord(deadLetter(tx, job, reason, now)), deadLettered: true };
    tx.del(adminKeys.jobReady(job.kind, job.ready, job.id));
    const next: StoredJob = { ...job, ready: now + backoffMs(job.attempts, job.base, job.cap, random), error: reason.slice(0, MAX_REASON_CHARS) };
    delete next.lease;
    writeJob(tx, next);
    writeReady(tx, next);
    return { job: toRecord(next), deadLettered: false };
  });
}

export async function getJob(kv: KvReader, jobId: string): Promise<JobRecord> {
  validateJobId(jobId);
  const job = await readJob(kv, jobId);
  if (job === undefined) throw new CairnError('CAIRN_NOT_FOUND', `no job ${jobId}`);
  return toRecord(job);
}

export interface ListDeadLettersInput {
  readonly kind?: string | undefined;
  readonly limit?: number | undefined;
  /** Continue after this job id (from the previous page's last job). */
  readonly after?: string | undefined;
}

/** Dead letters oldest first (by creation), optionally of one kind. */
export async function listDeadLetters(kv: KvReader, input: ListDeadLettersInput = {}): Promise<JobRecord[]> {
  if (input.kind !== undefined) validateKind(input.kind);
  const limit = checkInt(input.limit ?? 100, 'limit', 1, 1000);
  if (input.after !== undefined) validateJobId(input.after);
  const out: JobRecord[] = [];
  if (input.kind !== undefined) {
    const range = adminKeys.jobDeadKind(input.kind);
    const rows = await kv.scan(input.after !== undefined ? { gt: adminKeys.jobDead(input.kind, input.after), lt: range.lt, limit } : { ...range, limit });
    for (const [k] of rows) {
      const job = await readJob(kv, k.subarray(range.gte.length).toString('utf8'));
      if (job !== undefined) out.push(toRecord(job));
    }
    return out;
  }
  // Across kinds the index is ordered by kind first; dead letters are few, so sort in memory.
  const ids = (await kv.scan(adminKeys.jobDeadAll())).map(([k]) => k.toString('utf8').split('\0').at(-1) ?? '');
  ids.sort();
  for (const id of ids.filter((id) => input.after === undefined || id > input.after).slice(0, limit)) {
    const job = await readJob(kv, id);
    if (job !== undefined) out.push(toRecord(job));
  }
  return out;
}

/** Puts a dead letter back in the queue with fresh attempts, ready now. */
export async function retryDeadLetter(kv: Kv, jobId: string, clock: QueueClock = {}): Promise<JobRecord> {
  validateJobId(jobId);
  const now = (clock.now ?? Date.now)();
  return kv.transact(async (tx) => {
    const job = await readJob(tx, jobId);
    if (job === undefined) throw new CairnError('CAIRN_NOT_FOUND', `no job ${jobId}`);
    if (job.state !== 'dead') throw new CairnError('CAIRN_FAILED_PRECONDITION', `job ${jobId} is not a dead letter`);
    tx.del(adminKeys.jobDead(job.kind, job.id));
    const next: StoredJob = { ...job, state: 'queued', attempts: 0, ready: now };
    delete next.dead;
    if (job.dedupe !== undefined) {
      // Another job may have taken the dedupe key meanwhile; then this one runs undeduplicated.
      const dk = adminKeys.jobDedupe(job.tenant, job.kind, job.dedupe);
      if ((await tx.get(dk)) === undefined) tx.put(dk, Buffer.from(job.id, 'utf8'));
      else delete next.dedupe;
    }
    writeJob(tx, next);
    writeReady(tx, next);
    tx.notify(JOBS_CHANNEL, job.kind);
    return toRecord(next);
  });
}

export interface QueueDepth {
  /** Queued and leasable now. */
  ready: number;
  /** Queued, waiting for notBefore or a retry backoff. */
  delayed: number;
  /** Held by a worker under an unexpired lease. */
  leased: number;
  dead: number;
}

/** Queue depth per kind (every kind with at least one job). */
export async function queueDepth(kv: KvReader, clock: QueueClock = {}): Promise<Record<string, QueueDepth>> {
  const now = (clock.now ?? Date.now)();
  const out: Record<string, QueueDepth> = {};
  const entry = (kind: string): QueueDepth => (out[kind] ??= { ready: 0, delayed: 0, leased: 0, dead: 0 });
  const all = adminKeys.jobReadyAll();
  for (const [k, v] of await kv.scan(all)) {
    const tail = k.subarray(all.gte.length);
    const sep = tail.indexOf(0);
    const kind = tail.subarray(0, sep).toString('utf8');
    const ready = Number(tail.readBigUInt64BE(sep + 1));
    const e = entry(kind);
    if (ready <= now) e.ready++;
    else if (v.length > 0) e.leased++;
    else e.delayed++;
  }
  const dead = adminKeys.jobDeadAll();
  for (const [k] of await kv.scan(dead)) {
    const tail = k.subarray(dead.gte.length);
    entry(tail.subarray(0, tail.indexOf(0)).toString('utf8')).dead++;
  }
  return out;
}
