// The job queue's behaviour on any KV backend (factory-driven, like the KV conformance suite):
// FIFO leases, lease expiry, exactly-once completion, backoff, dead letters, transactional enqueue.
import test, { type ExecutionContext } from 'ava';
import { isCairnError } from '../../src/common/errors.js';
import type { Kv } from '../../src/metadata/kv/index.js';
import {
  backoffMs,
  completeJob,
  enqueue,
  enqueueJob,
  failJob,
  getJob,
  leaseJobs,
  leaseJobsWaiting,
  listDeadLetters,
  queueDepth,
  retryDeadLetter,
} from '../../src/metadata/model/jobs.js';
import type { KvFactory } from './kv-conformance.js';

/** A clock the test moves by hand: no sleeping. */
function manualClock(start = 1_700_000_000_000): { t: number; now: () => number } {
  const c = { t: start, now: () => c.t };
  return c;
}

async function snapshot(kv: Kv): Promise<string[]> {
  return (await kv.scan({})).map(([k, v]) => `${k.toString('hex')}=${v.toString('hex')}`);
}

export function jobsSuite(name: string, factory: KvFactory): void {
  const open = async (t: ExecutionContext): Promise<Kv> => {
    t.timeout(60_000);
    const fixture = await factory();
    t.teardown(() => fixture.cleanup());
    return fixture.kv;
  };

  test(`${name}: jobs are leased oldest first, at most max, and completed once`, async (t) => {
    const kv = await open(t);
    const clock = manualClock();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push((await enqueue(kv, { tenant: 'acme', kind: 'media.thumb', payload: `{"n":${i}}` }, clock)).id);
      clock.t += i % 2; // some in the same millisecond: still FIFO
    }
    await enqueue(kv, { tenant: 'acme', kind: 'other', payload: 'x' }, clock);
    const first = await leaseJobs(kv, { kinds: ['media.thumb'], worker: 'w1', max: 3, leaseMs: 10_000 }, clock);
    t.deepEqual(first.map((l) => l.job.id), ids.slice(0, 3));
    t.true(first.every((l) => l.job.attempts === 1 && l.job.lease?.worker === 'w1'));
    const second = await leaseJobs(kv, { kinds: ['media.thumb'], worker: 'w2', max: 10, leaseMs: 10_000 }, clock);
    t.deepEqual(second.map((l) => l.job.id), ids.slice(3));
    t.deepEqual(await leaseJobs(kv, { kinds: ['media.thumb'], worker: 'w3', max: 10, leaseMs: 10_000 }, clock), [], 'leased jobs are not handed out twice');
    t.deepEqual((await queueDepth(kv, clock))['media.thumb'], { ready: 0, delayed: 0, leased: 5, dead: 0 });
    t.deepEqual((await queueDepth(kv, clock))['other'], { ready: 1, delayed: 0, leased: 0, dead: 0 });
    for (const l of [...first, ...second]) await completeJob(kv, l.job.id, l.leaseToken);
    const again = await t.throwsAsync(completeJob(kv, ids[0]!, first[0]!.leaseToken));
    t.true(isCairnError(again, 'CAIRN_NOT_FOUND'), String(again));
    t.is((await queueDepth(kv, clock))['media.thumb'], undefined, 'completed jobs are gone');
  });

  test(`${name}: an expired lease makes the job leasable again, counts the attempt, and fences the old token`, async (t) => {
    const kv = await open(t);
    const clock = manualClock();
    const job = await enqueue(kv, { tenant: 'acme', kind: 'k', payload: '{}' }, clock);
    const [a] = await leaseJobs(kv, { kinds: ['k'], worker: 'dies', max: 1, leaseMs: 1_000 }, clock);
    t.truthy(a);
    clock.t += 999;
    t.deepEqual(await leaseJobs(kv, { kinds: ['k'], worker: 'w2', max: 1, leaseMs: 1_000 }, clock), [], 'not before the lease expires');
    clock.t += 2;
    const [b] = await leaseJobs(kv, { kinds: ['k'], worker: 'w2', max: 1, leaseMs: 1_000 }, clock);
    t.is(b?.job.id, job.id);
    t.is(b?.job.attempts, 2, 'the expired lease counted as an attempt');
    t.regex(b?.job.lastError ?? '', /lease of worker dies expired/);
    const before = await snapshot(kv);
    const stale = await t.throwsAsync(completeJob(kv, job.id, a!.leaseToken));
    t.true(isCairnError(stale, 'CAIRN_FAILED_PRECONDITION'), String(stale));
    const staleFail = await t.throwsAsync(failJob(kv, job.id, a!.leaseToken, 'late', clock));
    t.true(isCairnError(staleFail, 'CAIRN_FAILED_PRECONDITION'), String(staleFail));
    t.deepEqual(await snapshot(kv), before, 'refused calls change nothing');
    await completeJob(kv, job.id, b!.leaseToken);
    const twice = await t.throwsAsync(completeJob(kv, job.id, b!.leaseToken));
    t.true(isCairnError(twice, 'CAIRN_NOT_FOUND'), 'exactly once');
  });

  test(`${name}: failures retry with exponential backoff and jitter, then dead-letter with the reason`, async (t) => {
    const kv = await open(t);
    const clock = manualClock();
    const rnd = { v: 0.5 };
    const q = { now: clock.now, random: () => rnd.v };
    const job = await enqueue(kv, { tenant: 'acme', kind: 'k', payload: 'p', maxAttempts: 4, backoffBaseMs: 1_000, backoffMaxMs: 60_000 }, clock);
    const delays: number[] = [];
    for (let attempt = 1; attempt <= 3; attempt++) {
      const [l] = await leaseJobs(kv, { kinds: ['k'], worker: 'w', max: 1, leaseMs: 30_000 }, clock);
      t.is(l?.job.attempts, attempt);
      const res = await failJob(kv, job.id, l!.leaseToken, `boom ${attempt}`, q);
      t.false(res.deadLettered);
      const delay = res.job.readyAtMs - clock.t;
      delays.push(delay);
      const nominal = 1_000 * 2 ** (attempt - 1);
      t.true(delay >= nominal / 2 && delay <= nominal, `attempt ${attempt}: ${delay} ms within [${nominal / 2}, ${nominal}]`);
      t.deepEqual((await queueDepth(kv, clock))['k'], { ready: 0, delayed: 1, leased: 0, dead: 0 });
      clock.t += delay - 1;
      t.deepEqual(await leaseJobs(kv, { kinds: ['k'], worker: 'w', max: 1, leaseMs: 30_000 }, clock), [], 'not before the backoff has passed');
      clock.t += 1;
    }
    t.true(delays[0]! < delays[1]! && delays[1]! < delays[2]!, `delays grow: ${delays.join(', ')}`);
    const [last] = await leaseJobs(kv, { kinds: ['k'], worker: 'w', max: 1, leaseMs: 30_000 }, clock);
    const res = await failJob(kv, job.id, last!.leaseToken, 'corrupt input: not an image', q);
    t.true(res.deadLettered);
    t.deepEqual(await leaseJobs(kv, { kinds: ['k'], worker: 'w', max: 1, leaseMs: 30_000 }, { now: () => clock.t + 3_600_000 }), [], 'dead letters are not leased');
    const dead = await listDeadLetters(kv, { kind: 'k' });
    t.deepEqual(dead.map((d) => [d.id, d.state, d.attempts, d.lastError]), [[job.id, 'dead', 4, 'corrupt input: not an image']]);
    t.deepEqual((await listDeadLetters(kv)).map((d) => d.id), [job.id]);
    t.is((await queueDepth(kv, clock))['k']?.dead, 1);
    const retried = await retryDeadLetter(kv, job.id, clock);
    t.is(retried.attempts, 0);
    t.deepEqual(await listDeadLetters(kv), []);
    const [again] = await leaseJobs(kv, { kinds: ['k'], worker: 'w', max: 1, leaseMs: 30_000 }, clock);
    t.is(again?.job.id, job.id);
    const notDead = await t.throwsAsync(retryDeadLetter(kv, job.id, clock));
    t.true(isCairnError(notDead, 'CAIRN_FAILED_PRECONDITION'));
  });

  test(`${name}: a lease that expires on the last attempt dead-letters the job`, async (t) => {
    const kv = await open(t);
    const clock = manualClock();
    const job = await enqueue(kv, { tenant: 'acme', kind: 'k', payload: 'p', maxAttempts: 2 }, clock);
    for (let i = 0; i < 2; i++) {
      t.is((await leaseJobs(kv, { kinds: ['k'], worker: `w${i}`, max: 1, leaseMs: 100 }, clock)).length, 1);
      clock.t += 101;
    }
    t.deepEqual(await leaseJobs(kv, { kinds: ['k'], worker: 'w2', max: 1, leaseMs: 100 }, clock), []);
    const [dead] = await listDeadLetters(kv, { kind: 'k' });
    t.is(dead?.id, job.id);
    t.regex(dead?.lastError ?? '', /lease expired on attempt 2 of 2/);
  });

  test(`${name}: enqueue inside a transaction that aborts leaves nothing; one that commits enqueues with its writes`, async (t) => {
    const kv = await open(t);
    const before = await snapshot(kv);
    await t.throwsAsync(
      kv.transact(async (tx) => {
        tx.put(Buffer.from('h\0acme\0/a.jpg'), Buffer.from('v1'));
        await enqueueJob(tx, { tenant: 'acme', kind: 'media.thumb', payload: '{"path":"/a.jpg"}', dedupeKey: '/a.jpg@1' });
        throw new Error('commit failed its checks');
      }),
      { message: 'commit failed its checks' },
    );
    t.deepEqual(await snapshot(kv), before, 'no job, no dedupe key, no other write');
    t.deepEqual(await leaseJobs(kv, { kinds: ['media.thumb'], worker: 'w', max: 10, leaseMs: 1_000 }), []);
    const job = await kv.transact(async (tx) => {
      tx.put(Buffer.from('h\0acme\0/a.jpg'), Buffer.from('v1'));
      return enqueueJob(tx, { tenant: 'acme', kind: 'media.thumb', payload: '{"path":"/a.jpg"}', dedupeKey: '/a.jpg@1' });
    });
    t.is((await getJob(kv, job.id)).payload, '{"path":"/a.jpg"}');
    const dup = await enqueue(kv, { tenant: 'acme', kind: 'media.thumb', payload: 'ignored', dedupeKey: '/a.jpg@1' });
    t.is(dup.id, job.id, 'the same dedupe key returns the live job');
    const [l] = await leaseJobs(kv, { kinds: ['media.thumb'], worker: 'w', max: 10, leaseMs: 1_000 });
    await completeJob(kv, l!.job.id, l!.leaseToken);
    const fresh = await enqueue(kv, { tenant: 'acme', kind: 'media.thumb', payload: 'again', dedupeKey: '/a.jpg@1' });
    t.not(fresh.id, job.id, 'once done, the key is free again');
  });

  test(`${name}: concurrent workers never lease the same job twice`, async (t) => {
    const kv = await open(t);
    const total = 40;
    await kv.transact(async (tx) => {
      for (let i = 0; i < total; i++) await enqueueJob(tx, { tenant: 'acme', kind: 'k', payload: String(i) });
    });
    const seen: string[] = [];
    await Promise.all(
      Array.from({ length: 4 }, async (_, w) => {
        for (;;) {
          const leased = await leaseJobs(kv, { kinds: ['k'], worker: `w${w}`, max: 3, leaseMs: 60_000 });
          if (leased.length === 0) return;
          for (const l of leased) {
            seen.push(l.job.id);
            await completeJob(kv, l.job.id, l.leaseToken);
          }
        }
      }),
    );
    t.is(seen.length, total);
    t.is(new Set(seen).size, total);
  });

  test(`${name}: a waiting lease answers when a job is enqueued or a delayed one comes due, else empty after the wait`, async (t) => {
    const kv = await open(t);
    const input = { kinds: ['media'], worker: 'w', max: 2, leaseMs: 30_000 };
    const never = new AbortController().signal;

    // Nothing ready: empty after the wait, not before.
    let t0 = performance.now();
    t.deepEqual(await leaseJobsWaiting(kv, input, 300, never), []);
    t.true(performance.now() - t0 >= 290, 'waited its time');

    // A job of another kind does not end the wait; one of ours, committed in a transaction
    // while the lease waits, ends it at once (the wait is 20 s).
    t0 = performance.now();
    const waiting = leaseJobsWaiting(kv, input, 20_000, never);
    await new Promise((r) => setTimeout(r, 150));
    await enqueue(kv, { tenant: 'acme', kind: 'other', payload: 'o' });
    await new Promise((r) => setTimeout(r, 150));
    const job = await kv.transact((tx) => enqueueJob(tx, { tenant: 'acme', kind: 'media', payload: 'p' }));
    const got = await waiting;
    t.deepEqual(got.map((l) => l.job.id), [job.id]);
    t.true(performance.now() - t0 < 10_000, `answered on the enqueue (${Math.round(performance.now() - t0)} ms)`);

    // A delayed job (a retry's backoff) is leased when its time comes, with no notification.
    const delayed = await enqueue(kv, { tenant: 'acme', kind: 'media', payload: 'later', notBeforeMs: Date.now() + 400 });
    t0 = performance.now();
    const due = await leaseJobsWaiting(kv, input, 20_000, never);
    t.deepEqual(due.map((l) => l.job.id), [delayed.id]);
    const took = performance.now() - t0;
    t.true(took >= 300 && took < 10_000, `leased when due (${Math.round(took)} ms)`);

    // Aborting the caller ends the wait with nothing leased.
    const abort = new AbortController();
    t0 = performance.now();
    const aborted = leaseJobsWaiting(kv, input, 20_000, abort.signal);
    setTimeout(() => abort.abort(), 100);
    t.deepEqual(await aborted, []);
    t.true(performance.now() - t0 < 5_000);
    t.is((await queueDepth(kv))['other']?.ready, 1, 'the other kind was never leased');
  });

  test(`${name}: bad input is INVALID_ARGUMENT and changes nothing`, async (t) => {
    const kv = await open(t);
    const job = await enqueue(kv, { tenant: 'acme', kind: 'k', payload: 'p' });
    const before = await snapshot(kv);
    const bad: Array<[string, () => Promise<unknown>]> = [
      ['bad kind', () => enqueue(kv, { tenant: 'acme', kind: 'Bad Kind', payload: '' })],
      ['bad tenant', () => enqueue(kv, { tenant: 'ACME!', kind: 'k', payload: '' })],
      ['huge payload', () => enqueue(kv, { tenant: 'acme', kind: 'k', payload: 'x'.repeat(64 * 1024 + 1) })],
      ['zero attempts', () => enqueue(kv, { tenant: 'acme', kind: 'k', payload: '', maxAttempts: 0 })],
      ['NUL dedupe key', () => enqueue(kv, { tenant: 'acme', kind: 'k', payload: '', dedupeKey: 'a\0b' })],
      ['no kinds', () => leaseJobs(kv, { kinds: [], worker: 'w', max: 1, leaseMs: 1 })],
      ['max too big', () => leaseJobs(kv, { kinds: ['k'], worker: 'w', max: 101, leaseMs: 1 })],
      ['negative lease', () => leaseJobs(kv, { kinds: ['k'], worker: 'w', max: 1, leaseMs: -5 })],
      ['wait too long', () => leaseJobsWaiting(kv, { kinds: ['k'], worker: 'w', max: 1, leaseMs: 1 }, 30_001, AbortSignal.timeout(1_000))],
      ['negative wait', () => leaseJobsWaiting(kv, { kinds: ['k'], worker: 'w', max: 1, leaseMs: 1 }, -1, AbortSignal.timeout(1_000))],
      ['bad job id', () => completeJob(kv, '../etc', 'a'.repeat(32))],
      ['bad token', () => completeJob(kv, job.id, 'nope')],
      ['bad id for retry', () => retryDeadLetter(kv, 'x')],
    ];
    for (const [what, fn] of bad) {
      const err = await t.throwsAsync(fn(), undefined, what);
      t.true(isCairnError(err, 'CAIRN_INVALID_ARGUMENT'), `${what}: ${String(err)}`);
    }
    t.deepEqual(await snapshot(kv), before);
  });
}

test('backoff doubles up to the cap, with jitter in [d/2, d]', (t) => {
  t.is(backoffMs(1, 1_000, 60_000, () => 0), 500);
  t.is(backoffMs(1, 1_000, 60_000, () => 1), 1_000);
  t.is(backoffMs(3, 1_000, 60_000, () => 1), 4_000);
  t.is(backoffMs(30, 1_000, 60_000, () => 1), 60_000);
  t.is(backoffMs(1000, 1_000, 60_000, () => 0), 30_000);
});
