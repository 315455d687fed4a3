// Interrupted uploads resume through another gateway: two gateway processes share one metadata
// and one block-node process. A connection is cut (the client cancels) or a gateway is killed
// (SIGKILL) mid-upload; the upload continues through the other gateway, the result is
// byte-identical, and at most one chunk per stream is sent again.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CairnClient } from '../../src/client/index.js';
import { DEFAULT_MAX_SIZE } from '../../src/chunking/index.js';
import { loadOrCreateSecret, signToken } from '../../src/common/auth.js';
import { startServer, tempDir, type Scope, type ServerProcess } from '../helpers/cluster.js';

interface Cluster {
  readonly g1: ServerProcess;
  readonly g2: ServerProcess;
  readonly c1: CairnClient;
  readonly c2: CairnClient;
}

async function cluster(t: Scope): Promise<Cluster> {
  const root = tempDir(t);
  const secret = join(root, 'auth.key');
  const masterKey = join(root, 'master.key');
  writeFileSync(masterKey, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
  const shared = ['--auth-secret-file', secret];
  const [metadata, blocknode] = await Promise.all([
    startServer(t, shared, { role: 'metadata', dataDir: join(root, 'm') }),
    startServer(t, shared, { role: 'blocknode', dataDir: join(root, 'b') }),
  ]);
  const gw = (name: string): Promise<ServerProcess> =>
    startServer(t, [...shared, '--metadata-addr', metadata.grpc, '--blocknode-addr', blocknode.grpc, '--master-key-file', masterKey], { role: 'gateway', dataDir: join(root, name) });
  const [g1, g2] = await Promise.all([gw('g1'), gw('g2')]);
  const token = await signToken(loadOrCreateSecret(secret), { tenant: 'acme', role: 'user', ttlSeconds: 3600 });
  const c1 = new CairnClient({ endpoint: g1.grpc, token });
  const c2 = new CairnClient({ endpoint: g2.grpc, token });
  t.teardown(() => {
    c1.close();
    c2.close();
  });
  return { g1, g2, c1, c2 };
}

async function readAll(client: CairnClient, path: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of client.read(path)) if ('data' in p) parts.push(p.data);
  return Buffer.concat(parts);
}

/** Yields `data` in 1 MiB pieces, then waits until `hold` is aborted (the stream stays open). */
async function* thenHold(data: Buffer, hold: AbortSignal): AsyncGenerator<Buffer> {
  for (let i = 0; i < data.length; i += 1024 * 1024) yield data.subarray(i, i + 1024 * 1024);
  await new Promise<void>((resolve) => hold.addEventListener('abort', () => resolve(), { once: true }));
}

/** Polls QueryUpload until the committed offset stops moving. */
async function settledOffset(client: CairnClient, uploadId: string): Promise<number> {
  let last = -1;
  for (let i = 0; i < 200; i++) {
    const { committedOffset } = await client.queryUpload(uploadId);
    if (committedOffset === last && committedOffset > 0) return committedOffset;
    last = committedOffset;
    await sleep(300);
  }
  throw new Error('the committed offset never settled');
}

for (const cut of ['connection', 'gateway'] as const) {
  test.serial(`session: cut the ${cut} mid-upload, resume through the other gateway; ≤ one chunk resent`, async (t) => {
    const { g1, c1, c2 } = await cluster(t);
    const data = randomBytes(24 * 1024 * 1024 + 333);
    const sentBeforeCut = 10 * 1024 * 1024;
    const { uploadId } = await c1.startUpload('/resume/session.bin', { size: data.length });
    const hold = new AbortController();
    const cancel = new AbortController();
    const writing = c1.writeUpload(uploadId, 0, thenHold(data.subarray(0, sentBeforeCut), hold.signal), { signal: cancel.signal });
    writing.catch(() => undefined);
    // The gateway checkpoints what it has cut into chunks once the stream goes quiet.
    const committed = await settledOffset(c2, uploadId);
    if (cut === 'gateway') {
      g1.proc.kill('SIGKILL');
      await g1.exited;
    } else {
      cancel.abort();
    }
    await t.throwsAsync(writing);
    hold.abort();

    const state = await c2.queryUpload(uploadId);
    t.is(state.committedOffset, committed);
    t.false(state.complete);
    const resent = sentBeforeCut - state.committedOffset;
    t.true(resent >= 0 && resent <= DEFAULT_MAX_SIZE, `resends ${resent} bytes`);
    const end = await c2.writeUpload(uploadId, state.committedOffset, data.subarray(state.committedOffset), { finish: true });
    t.is(end, data.length);
    const info = await c2.finishUpload(uploadId, data.length);
    t.is(info.size, data.length);
    t.true((await readAll(c2, '/resume/session.bin')).equals(data));
    // The same bytes through UploadFile chunk identically: the restart at a boundary changed nothing.
    const direct = await c2.put(writeTemp(t, data), '/resume/direct.bin');
    t.is(info.contentHash, direct.contentHash);
  });

  test.serial(`delta upload: cut the ${cut} mid-upload, resume through the other gateway; ≤ one chunk per stream resent`, async (t) => {
    const { g1, c1, c2 } = await cluster(t);
    const cacheDir = tempDir(t, 'cairn-cache-');
    const data = randomBytes(40 * 1024 * 1024 + 77);
    const src = writeTemp(t, data);
    const streams = 4;
    let sentBefore = 0;
    const abort = new AbortController();
    const first = c1.upload(src, '/resume/delta.bin', {
      cacheDir,
      streams,
      retries: 0,
      // One chunk per call: each call is acknowledged once its chunk is durable.
      batchBytes: 1,
      signal: abort.signal,
      onSent: (n) => {
        sentBefore += n;
        if (sentBefore >= 100 && !abort.signal.aborted) {
          if (cut === 'gateway') g1.proc.kill('SIGKILL');
          else abort.abort();
        }
      },
    });
    await t.throwsAsync(first);
    const res = await c2.upload(src, '/resume/delta.bin', { cacheDir, streams });
    t.is(res.info.size, data.length);
    t.true((await readAll(c2, '/resume/delta.bin')).equals(data));
    // Random data: every chunk is distinct, so everything sent beyond `chunks` was sent twice.
    const resent = sentBefore + res.chunksSent - res.chunks;
    t.true(sentBefore < res.chunks, 'the cut came before the end');
    t.true(resent <= streams, `resent ${resent} chunks over ${streams} streams (sent ${sentBefore} + ${res.chunksSent} of ${res.chunks})`);
    t.true(res.chunksSent < res.chunks);
  });
}

function writeTemp(t: Scope, data: Buffer): string {
  const file = join(tempDir(t), 'src.bin');
  writeFileSync(file, data);
  t.teardown(() => undefined);
  readFileSync(file);
  return file;
}
