// FailJob `permanent`: a failure of the source itself (a bomb, a refused format) dead-letters the
// job at once with its reason instead of taking every retry; transient failures still back off.
// Runs the real job model on a real LevelDB store.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { isCairnError } from '../../src/common/errors.js';
import { openLevelKv, type Kv } from '../../src/metadata/kv/index.js';
import { enqueue, failJob, leaseJobs, listDeadLetters, queueDepth, retryDeadLetter } from '../../src/metadata/model/jobs.js';
import { MediaFailure } from '../../src/media/options.js';

async function open(t: ExecutionContext): Promise<Kv> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-permanent-'));
  const kv = await openLevelKv({ dir });
  t.teardown(async () => {
    await kv.close();
    await rm(dir, { recursive: true, force: true });
  });
  return kv;
}

async function snapshot(kv: Kv): Promise<string[]> {
  return (await kv.scan({})).map(([k, v]) => `${k.toString('hex')}=${v.toString('hex')}`);
}

const clock = { now: () => 1_700_000_000_000, random: () => 0.5 };
const lease = (kv: Kv): ReturnType<typeof leaseJobs> => leaseJobs(kv, { kinds: ['media'], worker: 'w', max: 1, leaseMs: 30_000 }, clock);

test('a permanent failure dead-letters on the first attempt with its reason and frees the dedupe key', async (t) => {
  const kv = await open(t);
  const job = await enqueue(kv, { tenant: 'acme', kind: 'media', payload: '{"v":1}', dedupeKey: 'f1@1', maxAttempts: 5 }, clock);
  const [l] = await lease(kv);
  t.is(l?.job.attempts, 1);
  const res = await failJob(kv, job.id, l!.leaseToken, 'pixel_limit: 65535×65535 exceeds 100 MP', clock, { permanent: true });
  t.true(res.deadLettered);
  t.deepEqual((await listDeadLetters(kv, { kind: 'media' })).map((d) => [d.id, d.state, d.attempts, d.maxAttempts, d.lastError]), [[job.id, 'dead', 1, 5, 'pixel_limit: 65535×65535 exceeds 100 MP']]);
  t.deepEqual((await queueDepth(kv, clock))['media'], { ready: 0, delayed: 0, leased: 0, dead: 1 });
  t.deepEqual(await leaseJobs(kv, { kinds: ['media'], worker: 'w', max: 1, leaseMs: 30_000 }, { now: () => clock.now() + 86_400_000 }), [], 'never leased again');
  // The dedupe key is free: a new commit of the same version enqueues a fresh job.
  const fresh = await enqueue(kv, { tenant: 'acme', kind: 'media', payload: '{"v":1}', dedupeKey: 'f1@1' }, clock);
  t.not(fresh.id, job.id);
  // An operator can still put it back with fresh attempts.
  t.is((await retryDeadLetter(kv, job.id, clock)).attempts, 0);
});

test('a transient failure (permanent false or absent) still retries with backoff', async (t) => {
  const kv = await open(t);
  const job = await enqueue(kv, { tenant: 'acme', kind: 'media', payload: '{}', maxAttempts: 3, backoffBaseMs: 1_000 }, clock);
  const [l1] = await lease(kv);
  const r1 = await failJob(kv, job.id, l1!.leaseToken, 'source_unavailable: block missing', clock, { permanent: false });
  t.false(r1.deadLettered);
  t.true(r1.job.readyAtMs > clock.now());
  const [l2] = await leaseJobs(kv, { kinds: ['media'], worker: 'w', max: 1, leaseMs: 30_000 }, { now: () => r1.job.readyAtMs });
  t.is(l2?.job.attempts, 2);
  const r2 = await failJob(kv, job.id, l2!.leaseToken, 'deadline: queued too long', { now: () => r1.job.readyAtMs, random: clock.random });
  t.false(r2.deadLettered);
  t.deepEqual(await listDeadLetters(kv), []);
});

test('bad permanent failures are refused and change nothing', async (t) => {
  const kv = await open(t);
  const job = await enqueue(kv, { tenant: 'acme', kind: 'media', payload: '{}', maxAttempts: 5 }, clock);
  const [l] = await lease(kv);
  const before = await snapshot(kv);
  const noReason = await t.throwsAsync(failJob(kv, job.id, l!.leaseToken, '  ', clock, { permanent: true }));
  t.true(isCairnError(noReason, 'CAIRN_INVALID_ARGUMENT'), String(noReason));
  const notBool = await t.throwsAsync(failJob(kv, job.id, l!.leaseToken, 'corrupt', clock, { permanent: 'yes' as unknown as boolean }));
  t.true(isCairnError(notBool, 'CAIRN_INVALID_ARGUMENT'), String(notBool));
  const staleLease = await t.throwsAsync(failJob(kv, job.id, 'f'.repeat(32), 'corrupt: bad', clock, { permanent: true }));
  t.true(isCairnError(staleLease, 'CAIRN_FAILED_PRECONDITION'), String(staleLease));
  t.deepEqual(await snapshot(kv), before);
});

test('the media worker marks source failures permanent and transient ones not', (t) => {
  for (const reason of ['pixel_limit', 'frame_limit', 'file_too_large', 'unsupported_format', 'svg_refused', 'corrupt', 'video_failed'] as const) {
    t.true(new MediaFailure(reason, 'x').permanent, reason);
  }
  for (const reason of ['ffmpeg_missing', 'deadline', 'overloaded', 'source_unavailable', 'internal'] as const) {
    t.false(new MediaFailure(reason, 'x').permanent, reason);
  }
  t.false(new MediaFailure('video_failed', 'ffprobe ran longer than 30000 ms', { transient: true }).permanent, 'a time cap may pass on a quieter worker');
});
