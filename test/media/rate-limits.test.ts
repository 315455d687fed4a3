// Thumbnails count against the gateway's per-tenant rate limits, the same buckets as the Files
// API: over the request budget the HTTP routes (token and presigned) answer 429 with Retry-After
// and GetThumbnail RESOURCE_EXHAUSTED (CAIRN_RATE_LIMITED with RetryInfo); the bytes served are
// charged to the byte budget, and a tenant in byte debt is refused the same way. Waiting the
// advised delay, requests succeed again.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import test, { type ExecutionContext } from 'ava';
import * as grpc from '@grpc/grpc-js';
import sharp from 'sharp';
import { fromServiceError } from '../../src/common/status.js';
import { startServer, tempDir, type ServerProcess } from '../helpers/cluster.js';
import { call, getThumb, mediaClient, metric, put, tokenFor } from './helpers.js';

type Thumb = { data: Buffer; etag: string };

function presign(client: ReturnType<typeof mediaClient>, req: object, token: string): Promise<{ path_and_query: string }> {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  return new Promise((resolve, reject) => {
    (client as unknown as { PresignThumbnail: (r: object, m: grpc.Metadata, cb: (e: Error | null, r?: { path_and_query: string }) => void) => void }).PresignThumbnail(req, md, (e, r) => (e ? reject(e) : resolve(r!)));
  });
}

/** Runs `fn` until it does not fail with CAIRN_RATE_LIMITED, waiting the advised delay between tries. */
async function admitted<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const e = fromServiceError(err);
      if (e.code !== 'CAIRN_RATE_LIMITED' || attempt > 30) throw err;
      await sleep(e.retryAfterMs ?? 500);
    }
  }
}

/** An HTTP GET retried on 429 after its Retry-After; the first other answer. */
async function getAdmitted(get: () => Promise<Response>): Promise<Response> {
  for (let attempt = 0; ; attempt++) {
    const res = await get();
    if (res.status !== 429 || attempt > 30) return res;
    await res.arrayBuffer();
    await sleep(Number(res.headers.get('retry-after') ?? '1') * 1000);
  }
}

async function expect429(t: ExecutionContext, answers: Response[], limit: string): Promise<void> {
  const statuses = answers.map((r) => r.status);
  t.true(statuses.every((s) => s === 200 || s === 429), statuses.join(','));
  const refused = answers.find((r) => r.status === 429);
  t.truthy(refused, `no 429 among ${statuses.join(',')}`);
  if (refused === undefined) return;
  const retryAfter = Number(refused.headers.get('retry-after'));
  t.true(Number.isInteger(retryAfter) && retryAfter >= 1, `Retry-After ${refused.headers.get('retry-after')}`);
  const body = (await refused.json()) as { code: string; message: string };
  t.is(body.code, 'CAIRN_RATE_LIMITED');
  t.regex(body.message, new RegExp(`over its ${limit} per second limit`));
  for (const r of answers) if (!r.bodyUsed) await r.arrayBuffer();
}

test('over the request budget: 429 + Retry-After on both HTTP routes, RESOURCE_EXHAUSTED on gRPC; admitted again after the delay', async (t) => {
  t.timeout(120_000);
  const server = await startServer(t, [], { env: { CAIRN_RATE_LIMIT_REQUESTS_PER_SECOND: '2', CAIRN_RATE_LIMIT_BURST_SECONDS: '1', CAIRN_MEDIA_JOB_CONCURRENCY: '0' } });
  const dir = tempDir(t);
  const photo = await sharp({ create: { width: 640, height: 480, channels: 3, background: '#357' } }).jpeg().toBuffer();
  // The SDK itself waits out CAIRN_RATE_LIMITED.
  const { version } = await put(server, server.token, dir, '/r/a.jpg', photo);
  const client = mediaClient(server.grpc);
  t.teardown(() => client.close());
  const signed = await admitted(() => presign(client, { path: '/r/a.jpg', size: 128, version }, server.token));
  // Generated on demand once, so that the bursts below are only about admission.
  t.is((await getAdmitted(() => getThumb(server, server.token, '/r/a.jpg', 128, version))).status, 200);
  const refill = (): Promise<void> => sleep(1_100);

  // Ten at once against a bucket of two: most are refused however slow the machine is.
  await refill();
  await expect429(t, await Promise.all(Array.from({ length: 10 }, () => getThumb(server, server.token, '/r/a.jpg', 128, version))), 'requests');
  // Another tenant has its own bucket (and no such file).
  const other = await tokenFor(server.dataDir, 'admin', 'eve', 'other');
  t.is((await getThumb(server, other, '/r/a.jpg', 128, version)).status, 404);

  await refill();
  await expect429(t, await Promise.all(Array.from({ length: 10 }, () => fetch(`${server.http}${signed.path_and_query}`))), 'requests');

  await refill();
  const settled = await Promise.allSettled(Array.from({ length: 10 }, () => call<object, Thumb>(client, 'GetThumbnail', { path: '/r/a.jpg', size: 128, version }, server.token)));
  const rejected = settled.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  t.true(rejected.length > 0, 'no GetThumbnail was refused');
  for (const r of rejected) {
    t.is((r.reason as grpc.ServiceError).code, grpc.status.RESOURCE_EXHAUSTED);
    const e = fromServiceError(r.reason);
    t.is(e.code, 'CAIRN_RATE_LIMITED');
    t.true(e.retryAfterMs !== undefined && e.retryAfterMs > 0 && e.retryAfterMs <= 1_000, String(e.retryAfterMs));
  }
  t.true(await metric(server, 'cairn_gateway_rate_limited_total', { limit: 'requests' }) >= 3);

  // Waiting the advised delay, every route serves again.
  const again = await getAdmitted(() => getThumb(server, server.token, '/r/a.jpg', 128, version));
  t.is(again.status, 200);
  t.is((await getAdmitted(() => fetch(`${server.http}${signed.path_and_query}`))).status, 200);
  t.true((await admitted(() => call<object, Thumb>(client, 'GetThumbnail', { path: '/r/a.jpg', size: 128, version }, server.token))).data.length > 0);
});

/** Fires `burst` and probes with `probe` every 50 ms until the burst settles: every answer. */
async function whileBurst(burst: Array<Promise<Response | Error>>, probe: () => Promise<Response>): Promise<Response[]> {
  let settled = false;
  const all = Promise.all(burst).finally(() => (settled = true));
  const probes: Response[] = [];
  await sleep(30);
  while (!settled) {
    const res = await probe();
    probes.push(res);
    if (res.status === 429) break;
    await res.arrayBuffer();
    await sleep(50);
  }
  const answers = (await all).filter((r): r is Response => r instanceof Response);
  return [...answers, ...probes];
}

async function noisyJpeg(): Promise<Buffer> {
  // Noise: its thumbnails are tens of kilobytes, so a few of them exceed a small byte budget.
  return sharp(randomBytes(400 * 300 * 3), { raw: { width: 400, height: 300, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
}

test('served thumbnail bytes are charged to the byte budget (HTTP and gRPC): a tenant in debt gets 429, then is served again', async (t) => {
  t.timeout(120_000);
  // 100 kB/s with a one-second bucket; the source (~100 kB) is uploaded within it.
  const server: ServerProcess = await startServer(t, [], { env: { CAIRN_RATE_LIMIT_BYTES_PER_SECOND: '100000', CAIRN_RATE_LIMIT_BURST_SECONDS: '1', CAIRN_MEDIA_JOB_CONCURRENCY: '0' } });
  const dir = tempDir(t);
  const { version } = await put(server, server.token, dir, '/b/noise.jpg', await noisyJpeg());
  const first = await getAdmitted(() => getThumb(server, server.token, '/b/noise.jpg', 512, version));
  t.is(first.status, 200);
  const size = (await first.arrayBuffer()).byteLength;
  t.true(size > 50_000, `a ${size} byte thumbnail is too small to exceed the budget in two`);
  const get = (): Promise<Response> => getThumb(server, server.token, '/b/noise.jpg', 512, version);

  // Three at once overdraw the bucket: while the debt is paid back, the tenant is refused.
  await sleep(1_200);
  await expect429(t, await whileBurst(Array.from({ length: 3 }, () => get()), get), 'bytes');
  t.true(await metric(server, 'cairn_gateway_rate_limited_total', { limit: 'bytes' }) >= 1);

  // GetThumbnail's bytes go to the same bucket.
  const client = mediaClient(server.grpc);
  t.teardown(() => client.close());
  await sleep(1_200);
  const viaGrpc = Array.from({ length: 3 }, () => call<object, Thumb>(client, 'GetThumbnail', { path: '/b/noise.jpg', size: 512, version }, server.token).then(() => new Response('ok'), (e: unknown) => e as Error));
  const answers = await whileBurst(viaGrpc, get);
  t.true(answers.some((r) => r.status === 429), `no refusal while GetThumbnail bytes were paid back: ${answers.map((r) => r.status).join(',')}`);

  // Paid back: served again.
  t.is((await getAdmitted(get)).status, 200);
});
