// The media job loop: leases "media" jobs from the metadata service as the pool has room
// (backpressure reaches the queue, not memory; an empty queue is a long poll the service ends
// the moment a commit enqueues work), derives each version, completes the job under
// its lease (exactly once across re-leases), or fails it with a reason: transient failures are
// retried with backoff and dead-lettered after their attempts run out; failures of the source
// itself (bombs, refused/unsupported formats, over-limit or corrupt input) are dead-lettered at once.
import { z } from 'zod';
import { CairnError, isCairnError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { AdminClient, AdminLease } from '../metadata/index.js';
import type { MediaMetrics } from './metrics.js';
import { MediaFailure, type FailureReason, type MediaOptions } from './options.js';
import type { MediaPool } from './pool.js';
import { parseMediaRecord, type MediaProcessor } from './processor.js';

export const MEDIA_JOB_KIND = 'media';
/** The first poll after the queue was found empty; later ones double up to options.pollMs. */
const MIN_POLL_MS = 50;
/**
 * How long one lease call waits for work when the queue is empty (a long poll: the metadata
 * service answers the moment a commit enqueues a job, on any replica). A service that answers
 * sooner with nothing (one without long polls) gets the polling backoff instead.
 */
const LEASE_WAIT_MS = 10_000;

/** The payload the metadata commit writes: {tenant, path, file_id, version, size, media_kind}. */
const payloadSchema = z.object({
  tenant: z.string().min(1),
  path: z.string().optional(),
  file_id: z.string().optional(),
  version: z.union([z.number().int().positive(), z.string().regex(/^[1-9]\d*$/).transform(Number)]),
  media_kind: z.string().optional(),
}).refine((p) => (p.file_id ?? '') !== '' || (p.path ?? '') !== '', 'payload names neither file_id nor path');

export type JobAdmin = Pick<AdminClient, 'leaseJobs' | 'completeJob' | 'failJob'>;

export interface RunnerDeps {
  readonly admin: JobAdmin;
  readonly processor: MediaProcessor;
  readonly pool: MediaPool;
  readonly options: MediaOptions;
  readonly metrics: MediaMetrics;
  readonly log: Logger;
  /** Names this worker in leases (host/pid). */
  readonly worker: string;
}

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });

export class MediaJobRunner {
  readonly #d: RunnerDeps;
  readonly #stop = new AbortController();
  readonly #active = new Set<Promise<void>>();
  #loop: Promise<void> | undefined;

  constructor(deps: RunnerDeps) {
    this.#d = deps;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  async #run(): Promise<void> {
    const { options, log } = this.#d;
    const signal = this.#stop.signal;
    let failures = 0;
    let idlePolls = 0;
    while (!signal.aborted) {
      const room = Math.min(options.jobConcurrency - this.#active.size, this.#d.pool.free);
      if (room <= 0) {
        await Promise.race([...this.#active, sleep(options.pollMs, signal)]);
        continue;
      }
      let leases: AdminLease[];
      const asked = performance.now();
      try {
        leases = await this.#d.admin.leaseJobs({ kinds: [MEDIA_JOB_KIND], worker: this.#d.worker, max: room, leaseMs: options.leaseMs, waitMs: LEASE_WAIT_MS, signal });
        failures = 0;
      } catch (err) {
        if (signal.aborted) break;
        failures++;
        const cap = Math.min(30_000, 200 * 2 ** Math.min(failures, 8));
        log.warn({ err, failures }, 'cannot lease media jobs; backing off');
        await sleep(cap / 2 + Math.random() * (cap / 2), signal);
        continue;
      }
      if (leases.length === 0) {
        if (signal.aborted) break;
        // The long poll waited its time: ask again at once.
        if (performance.now() - asked >= LEASE_WAIT_MS / 2) continue;
        // Answered early with nothing (a service without long polls, or one shutting down): poll
        // again soon after finding work, backing off to pollMs while the queue stays empty.
        const wait = Math.min(options.pollMs, MIN_POLL_MS * 2 ** Math.min(idlePolls++, 16));
        await sleep(wait * (0.8 + Math.random() * 0.4), signal);
        continue;
      }
      idlePolls = 0;
      for (const lease of leases) {
        const p: Promise<void> = this.#handle(lease).finally(() => this.#active.delete(p));
        this.#active.add(p);
      }
    }
  }

  async #handle(lease: AdminLease): Promise<void> {
    const { admin, processor, metrics } = this.#d;
    const job = lease.job;
    const log = this.#d.log.child({ job: job.id, tenant: job.tenant, attempt: job.attempts });
    const started = performance.now();
    let type: string | undefined;
    try {
      const parsed = payloadSchema.safeParse(JSON.parse(job.payload));
      if (!parsed.success) throw new MediaFailure('internal', `malformed media job payload: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
      const p = parsed.data;
      if (p.tenant !== job.tenant) throw new MediaFailure('internal', 'the payload names another tenant than the job');
      log.info({ path: p.path, fileId: p.file_id, version: p.version, mediaKind: p.media_kind }, 'media job started');
      const v = await processor.derive({ tenant: p.tenant, fileId: p.file_id, path: p.path, version: p.version }, 'job');
      type = parseMediaRecord(v.media_json)?.type;
      await admin.completeJob(job.id, lease.leaseToken);
      metrics.completed.inc({ format: (type ?? 'unknown').replace(/^\w+\//, '') });
      log.info({ path: v.path, version: Number(v.version), type, ms: Math.round(performance.now() - started) }, 'media job completed');
    } catch (err) {
      if (isCairnError(err, 'CAIRN_NOT_FOUND')) {
        // The file or version is gone (deleted, pruned): nothing to derive, the job is done.
        await admin.completeJob(job.id, lease.leaseToken).catch((e: unknown) => log.warn({ err: e }, 'could not complete a media job'));
        log.info({ reason: err.message }, 'media job skipped: the version no longer exists');
        return;
      }
      const reason: FailureReason = err instanceof MediaFailure ? err.reason : isCairnError(err, 'CAIRN_DATA_LOSS') ? 'source_unavailable' : 'internal';
      const message = err instanceof Error ? (err instanceof MediaFailure || err instanceof CairnError ? err.message : `${reason}: ${err.message}`) : String(err);
      metrics.failed(reason);
      try {
        // A failure of the source itself is dead-lettered now; retries are for transient failures.
        const permanent = err instanceof MediaFailure && err.permanent;
        const res = await admin.failJob(job.id, lease.leaseToken, message.slice(0, 1_900), { permanent });
        log.warn({ reason, error: message, permanent, deadLettered: res.deadLettered, retryAtMs: res.retryAtMs, ms: Math.round(performance.now() - started) }, res.deadLettered ? 'media job dead-lettered' : 'media job failed; will retry');
      } catch (e) {
        log.warn({ err: e, reason, error: message }, 'could not fail a media job (lease lost?)');
      }
    }
  }

  /** Stops leasing and waits for the jobs in hand (their leases expire if we are killed). */
  async stop(): Promise<void> {
    this.#stop.abort();
    await this.#loop;
    await Promise.allSettled([...this.#active]);
  }
}
