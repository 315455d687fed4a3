// The orphan sweep against a live upload, through a real gateway (HTTP PUT), a real block node
// and a real metadata service over gRPC, all on the wall clock: the gateway writes the first
// blocks of a large body mid-stream, the sweep deletes them as orphans (grace 0, hold 0.5 s),
// and the body ends after the hold. The commit must be refused (the file would name deleted
// blocks) and change nothing; without deletion tombstones it was accepted and unreadable.
import { randomBytes } from 'node:crypto';
import { request, type IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { ServiceTokenSource, loadOrCreateSecret, signToken } from '../../src/common/auth.js';
import { startHttpServer } from '../../src/common/http.js';
import { createLogger } from '../../src/common/log.js';
import { isCairnError } from '../../src/common/errors.js';
import { createMetrics } from '../../src/common/metrics.js';
import { CairnClient } from '../../src/client/index.js';
import { ReplicatedBlockClient, StaticMapSource, createBlockNode, singleNodeMap } from '../../src/blocknode/index.js';
import { TenantKeys, createGateway, loadMasterKey } from '../../src/gateway/index.js';
import { AdminClient, MetadataClient, createMetadataService } from '../../src/metadata/index.js';
import { tempDir } from '../helpers/cluster.js';

const H = '127.0.0.1';
const HOLD = 500;

async function body(res: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const p of res as AsyncIterable<Buffer>) parts.push(p);
  return Buffer.concat(parts).toString('utf8');
}

test('an HTTP PUT or UploadFile whose blocks the orphan sweep deleted mid-upload is refused after the hold, and changes nothing', async (t) => {
  t.timeout(90_000);
  const dataDir = tempDir(t, 'cairn-orphan-gw-');
  const secret = loadOrCreateSecret(join(dataDir, 'auth.key'));
  const log = createLogger({ level: 'silent', name: t.title });
  const tokens = new ServiceTokenSource(secret);
  const token = (): Promise<string> => tokens.token();
  const insecure = grpc.credentials.createInsecure();
  const serverCreds = grpc.ServerCredentials.createInsecure();
  const stops: Array<() => Promise<void> | void> = [];
  t.teardown(async () => {
    for (const stop of stops.reverse()) await stop();
  });
  const blocknode = await createBlockNode({ dataDir: join(dataDir, 'bn'), host: H, port: 0, credentials: serverCreds, authSecret: secret, log, metrics: createMetrics(), reserveBytes: 0 });
  stops.push(() => blocknode.stop(1000));
  const bnAddr = `${H}:${blocknode.port}`;
  const svc = await createMetadataService({
    dataDir, host: H, port: 0, credentials: serverCreds, authSecret: secret, log, metrics: createMetrics(),
    model: { deletionLeaseMs: HOLD },
    gc: { credentials: insecure, token, intervalMs: 0, orphanGraceMs: 0, orphanIntervalMs: 0, nodes: () => Promise.resolve([{ id: 'bn', addr: bnAddr, state: 'up' as const }]) },
  });
  stops.push(() => svc.stop(1000));
  const metadataAddr = `${H}:${svc.port}`;
  const admin = new AdminClient({ address: metadataAddr, credentials: insecure, token });
  const metadata = new MetadataClient({ address: metadataAddr, credentials: insecure, token });
  const map = new StaticMapSource(singleNodeMap('bn', bnAddr));
  const blocks = new ReplicatedBlockClient({ map, credentials: insecure, token, writeQuorum: 1 });
  stops.push(() => {
    metadata.close();
    blocks.close();
    map.close();
    admin.close();
  });
  const metrics = createMetrics();
  const gateway = await createGateway({
    host: H, port: 0, credentials: serverCreds, authSecret: secret, log, metrics, metadata, blocks,
    keys: new TenantKeys(loadMasterKey(join(dataDir, 'master.key'), {}), admin), maxFileBytes: 64 * 1024 * 1024, admin,
  });
  stops.push(() => gateway.stop(1000));
  const http = await startHttpServer(H, 0, { registry: metrics.registry, log, ready: () => true, routes: gateway.http });
  stops.push(() => http.close());
  const userToken = await signToken(secret, { tenant: 'acme', role: 'user', subject: 'u', ttlSeconds: 3600 });
  const bearer = `Bearer ${userToken}`;
  const gc = svc.gc!;
  /** Sweeps until the upload in flight has written blocks, then deletes them as orphans and waits out the hold. */
  const deleteInFlight = async (): Promise<void> => {
    let seen = 0;
    for (let i = 0; i < 200 && seen === 0; i++) {
      await sleep(50);
      seen = (await gc.sweepOrphans()).seen;
    }
    t.true(seen > 0, 'the upload wrote blocks before the end of its body');
    // Grace 0: due on the next sweep, deleted from the block node, held for HOLD ms.
    const swept = await gc.sweepOrphans();
    t.true(swept.deleted > 0, `deleted ${swept.deleted} orphan blocks`);
    await sleep(HOLD + 200);
  };

  // Start a 12 MiB PUT and send 10 MiB: the gateway flushes its first 8 MiB of blocks mid-stream.
  const data = randomBytes(12 * 1024 * 1024);
  const req = request({ host: H, port: http.port, method: 'PUT', path: '/v1/files/big.bin', headers: { authorization: bearer, 'content-length': String(data.length) } });
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    req.once('response', resolve);
    req.once('error', reject);
  });
  req.write(data.subarray(0, 10 * 1024 * 1024));
  await deleteInFlight();
  req.end(data.subarray(10 * 1024 * 1024));
  const res = await response;
  const text = await body(res);
  t.is(res.statusCode, 503, text);
  t.regex(text, /deleted as an orphan.*upload the file again/);
  // Nothing was committed.
  const get = await new Promise<IncomingMessage>((resolve, reject) => request({ host: H, port: http.port, method: 'GET', path: '/v1/files/big.bin', headers: { authorization: bearer } }, resolve).once('error', reject).end());
  await body(get);
  t.is(get.statusCode, 404);
  // Other uploads go on: a small file commits and reads back.
  const small = randomBytes(1000);
  const put = await new Promise<IncomingMessage>((resolve, reject) => request({ host: H, port: http.port, method: 'PUT', path: '/v1/files/small.bin', headers: { authorization: bearer, 'content-length': String(small.length) } }, resolve).once('error', reject).end(small));
  t.is(put.statusCode, 200, await body(put));

  // The same over gRPC UploadFile. Leftover orphans (the refused PUT's last blocks) go first.
  await gc.sweepOrphans();
  await gc.sweepOrphans();
  t.is((await gc.sweepOrphans()).seen, 0);
  const client = new CairnClient({ endpoint: `${H}:${gateway.port}`, token: userToken });
  t.teardown(() => client.close());
  const other = randomBytes(12 * 1024 * 1024);
  const source = new PassThrough();
  const upload = client.putStream(source, '/grpc.bin', { size: other.length });
  upload.catch(() => undefined);
  source.write(other.subarray(0, 10 * 1024 * 1024));
  await deleteInFlight();
  source.end(other.subarray(10 * 1024 * 1024));
  const err = await t.throwsAsync(upload);
  t.true(isCairnError(err, 'CAIRN_UNAVAILABLE'), String(err));
  t.regex(err.message, /deleted as an orphan.*upload the file again/);
  await t.throwsAsync(client.stat('/grpc.bin'), undefined, 'nothing committed');
});
