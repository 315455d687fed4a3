// Flow-control helpers: the concurrency limit queues up to its bound and then refuses with a
// retryable RESOURCE_EXHAUSTED; the worker pool runs everything and reports the first failure.
import test from 'ava';
import { ConcurrencyLimit, backoffMs, pool } from '../../src/blocknode/limits.js';

test('a concurrency limit runs `limit` at once, queues `maxQueue`, and refuses the rest', async (t) => {
  const limit = new ConcurrencyLimit(2, 1);
  const gates: Array<() => void> = [];
  const hold = (): Promise<void> => limit.run(() => new Promise<void>((resolve) => gates.push(resolve)));
  const a = hold();
  const b = hold();
  const c = hold();
  const refused = await t.throwsAsync(hold());
  t.is((refused as { code?: string }).code, 'CAIRN_RATE_LIMITED');
  t.is(limit.active, 2);
  gates.shift()!();
  await a;
  // The queued call took the freed slot.
  while (gates.length < 2) await new Promise((r) => setImmediate(r));
  t.is(limit.active, 2);
  gates.splice(0).forEach((g) => g());
  await Promise.all([b, c]);
  t.is(limit.active, 0);
});

test('pool runs every item with bounded width and rethrows the first failure', async (t) => {
  let running = 0;
  let peak = 0;
  const seen: number[] = [];
  await pool([1, 2, 3, 4, 5, 6], 2, async (n) => {
    running++;
    peak = Math.max(peak, running);
    await new Promise((r) => setImmediate(r));
    seen.push(n);
    running--;
  });
  t.is(peak, 2);
  t.deepEqual([...seen].sort(), [1, 2, 3, 4, 5, 6]);
  await t.throwsAsync(pool([1, 2, 3], 2, async (n) => {
    if (n === 2) throw new Error('boom');
  }), { message: 'boom' });
});

test('backoff stays within [0, min(max, base·2^attempt))', (t) => {
  for (let attempt = 0; attempt < 40; attempt++) {
    const d = backoffMs(attempt, 100, 5000);
    t.true(d >= 0 && d < Math.min(5000, 100 * 2 ** attempt));
  }
});
