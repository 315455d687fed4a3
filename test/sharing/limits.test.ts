// Per-tenant rate limits: a tenant over its request budget gets RESOURCE_EXHAUSTED with reason
// CAIRN_RATE_LIMITED and a RetryInfo delay that the SDK decodes; other tenants are unaffected;
// HTTP answers 429 with Retry-After; a byte budget paces transfers and refuses calls in debt.
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'ava';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { CairnError, isCairnError } from '../../src/client/index.js';
import { startStack } from './harness.js';
import { clientsFor, mint, putBytes, random, readAll, request } from './helpers.js';

test('over the request budget: RESOURCE_EXHAUSTED, CAIRN_RATE_LIMITED and a retry delay', async (t) => {
  const stack = await startStack(t, { limits: { requestsPerSecond: 2, burstSeconds: 1 } });
  const a = clientsFor(t, stack, await mint(stack.secret, 'acme'));
  const b = clientsFor(t, stack, await mint(stack.secret, 'globex'));
  // Ten calls at once against a bucket of two: most are refused however slow the machine is.
  const settled = await Promise.allSettled(Array.from({ length: 10 }, () => a.files.list('/')));
  const err = settled.find((r) => r.status === 'rejected')?.reason as unknown;
  t.true(err instanceof CairnError);
  const e = err as CairnError;
  t.is(e.code, 'CAIRN_RATE_LIMITED');
  t.is(e.grpcCode, GrpcStatus.RESOURCE_EXHAUSTED);
  t.true(e.retryable);
  t.true(e.retryAfterMs !== undefined && e.retryAfterMs > 0 && e.retryAfterMs <= 1000, String(e.retryAfterMs));
  // Another tenant has its own bucket.
  t.deepEqual((await b.files.list('/')).entries, []);
  // HTTP shares the bucket: 429 with Retry-After.
  const bearer = { headers: { authorization: `Bearer ${await mint(stack.secret, 'acme')}` } };
  const answers = await Promise.all(Array.from({ length: 10 }, () => request(`${stack.http}/v1/files/x`, bearer)));
  const res = answers.find((r) => r.status === 429) ?? answers[0]!;
  t.is(res.status, 429);
  t.truthy(res.headers.get('retry-after'));
  t.is(((res.json()) as { error: { code: string } }).error.code, 'CAIRN_RATE_LIMITED');
  const scraped = (await request(`${stack.http}/metrics`)).body.toString();
  t.regex(scraped, /cairn_gateway_rate_limited_total\{limit="requests"\} [1-9]/);
  // Waiting the advised delays, as a client would, the tenant is admitted again.
  for (let attempt = 0; ; attempt++) {
    try {
      t.deepEqual((await a.files.list('/')).entries, []);
      break;
    } catch (retry) {
      if (!isCairnError(retry, 'CAIRN_RATE_LIMITED') || attempt > 20) throw retry;
      await sleep(retry.retryAfterMs ?? 500);
    }
  }
});

/** Calls `probe` until it is refused with CAIRN_RATE_LIMITED (returns the error) or `until` settles. */
async function refusedWhile(until: Promise<unknown>, probe: () => Promise<unknown>): Promise<CairnError | undefined> {
  let settled = false;
  void until.then(() => (settled = true), () => (settled = true));
  while (!settled) {
    try {
      await probe();
    } catch (err) {
      if (isCairnError(err, 'CAIRN_RATE_LIMITED')) return err;
      throw err;
    }
    await sleep(20);
  }
  return undefined;
}

test('a byte budget paces transfers: while a tenant is in byte debt its other calls are refused', async (t) => {
  const stack = await startStack(t, { limits: { requestsPerSecond: 0, bytesPerSecond: 256 * 1024, burstSeconds: 1 } });
  const a = clientsFor(t, stack, await mint(stack.secret, 'acme'));
  const b = clientsFor(t, stack, await mint(stack.secret, 'globex'));
  await putBytes(b.files, '/small.bin', random(1000));
  const data = random(1024 * 1024);
  const upload = a.files.putStream(Readable.from([data]), '/big.bin', { size: data.length });
  const duringUpload = await refusedWhile(upload, () => a.files.list('/'));
  await upload;
  t.truthy(duringUpload, 'a call during the paced upload was refused');
  t.true(duringUpload!.retryAfterMs! > 0);
  await sleep(1100); // let the budget refill (no assertion on timing)
  const download = readAll(a.files, '/big.bin');
  const duringDownload = await refusedWhile(download, () => a.files.list('/'));
  t.deepEqual(await download, data);
  t.truthy(duringDownload, 'a call during the paced download was refused');
  // The other tenant was never limited.
  t.is((await b.files.stat('/small.bin')).size, 1000);
});

test('limits are validated when the gateway is built', async (t) => {
  await t.throwsAsync(startStack(t, { limits: { requestsPerSecond: -1 } }), { instanceOf: RangeError, message: /requestsPerSecond/ });
});
