// The walking skeleton end to end: a real `cairn server --embedded` child process, real gRPC,
// real LevelDB and segment files. Put/get, health, reflection, metrics, auth and bad paths.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { CairnClient } from '../../src/client/index.js';
import { decodeStatus } from '../../src/common/status.js';
import { bearer, filesClient, healthCheck, listServices, promisify } from '../helpers/grpc.js';
import { runCli, startServer, suiteScope, tempDir, type ServerProcess } from '../helpers/cluster.js';

const suite = suiteScope('embedded');
let server: ServerProcess;

test.before(async () => {
  server = await startServer(suite);
});
test.after.always(() => suite.close());

function reasonOf(err: ServiceError): string | undefined {
  const raw = err.metadata.get('grpc-status-details-bin')[0];
  return raw instanceof Buffer ? decodeStatus(raw).reason : undefined;
}

async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${server.http}/metrics`)).text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

test('put and get of a 20 MiB random file are byte-identical, and ranges match', async (t) => {
  const dir = tempDir(t);
  const src = join(dir, 'random.bin');
  const data = randomBytes(20 * 1024 * 1024);
  writeFileSync(src, data);
  const client = new CairnClient({ endpoint: server.grpc, token: server.token });
  t.teardown(() => client.close());
  const info = await client.put(src, '/it/random.bin');
  t.is(info.size, data.length);
  t.is(info.version, 1);
  t.true(info.chunkCount > 100, 'content-defined chunks of ~64 KiB');
  const back = join(dir, 'back.bin');
  await client.get('/it/random.bin', back);
  t.true(readFileSync(back).equals(data));
  const offset = 5_000_123;
  await client.get('/it/random.bin', join(dir, 'range.bin'), { offset, limit: 777_777 });
  t.true(readFileSync(join(dir, 'range.bin')).equals(data.subarray(offset, offset + 777_777)));
  const stat = await client.stat('/it/random.bin');
  t.is(stat.contentHash, info.contentHash);
});

test('the CLI finds the endpoint and token in client.json and round-trips a file', async (t) => {
  const dir = tempDir(t);
  const src = join(dir, 'cli.bin');
  const data = randomBytes(3 * 1024 * 1024 + 17);
  writeFileSync(src, data);
  const env = { CAIRN_DATA_DIR: server.dataDir, CAIRN_ENDPOINT: undefined, CAIRN_TOKEN: undefined, HOME: dir, XDG_CONFIG_HOME: undefined };
  const put = await runCli(['put', src, '/it/cli.bin'], env);
  t.is(put.code, 0, put.stderr);
  const get = await runCli(['get', '/it/cli.bin', join(dir, 'cli.back')], env);
  t.is(get.code, 0, get.stderr);
  t.is(createHash('sha256').update(readFileSync(join(dir, 'cli.back'))).digest('hex'), createHash('sha256').update(data).digest('hex'));
  const missing = await runCli(['stat', '/it/none'], env);
  t.is(missing.code, 3);
  t.regex(missing.stderr, /CAIRN_NOT_FOUND/);
});

test('the gRPC health check answers SERVING', async (t) => {
  t.is(await healthCheck(server.grpc), 'SERVING');
  t.is(await healthCheck(server.grpc, 'cairn.v1.Files'), 'SERVING');
});

test('reflection lists the services', async (t) => {
  const services = await listServices(server.grpc);
  t.true(services.includes('cairn.v1.Files'), services.join(','));
  t.true(services.includes('grpc.health.v1.Health'), services.join(','));
});

test('/metrics shows grpc_server_handled_total for the calls made, and /healthz, /readyz answer', async (t) => {
  const client = new CairnClient({ endpoint: server.grpc, token: server.token });
  t.teardown(() => client.close());
  await t.throwsAsync(client.stat('/metrics/probe'));
  t.true((await metric('grpc_server_handled_total', { grpc_service: 'cairn.v1.Files', grpc_method: 'Stat', grpc_code: 'NotFound' })) >= 1);
  t.true((await metric('grpc_server_handling_seconds_count', { grpc_service: 'cairn.v1.Files', grpc_method: 'Stat' })) >= 1);
  t.is((await fetch(`${server.http}/healthz`)).status, 200);
  t.is((await fetch(`${server.http}/readyz`)).status, 200);
});

test('a domain error reaches the client with its status and ErrorInfo reason', async (t) => {
  const files = filesClient(server.grpc);
  t.teardown(() => files.close());
  const err = await t.throwsAsync(promisify<{ path: string }, unknown>((req, cb) => files.Stat(req, bearer(server.token), cb), { path: '/nope' }));
  const se = err as unknown as ServiceError;
  t.is(se.code, status.NOT_FOUND);
  t.is(reasonOf(se), 'CAIRN_NOT_FOUND');
});

test('a missing or tampered token gets UNAUTHENTICATED', async (t) => {
  const files = filesClient(server.grpc);
  t.teardown(() => files.close());
  const none = await t.throwsAsync(promisify<{ path: string }, unknown>((req, cb) => files.Stat(req, cb), { path: '/x' }));
  t.is((none as unknown as ServiceError).code, status.UNAUTHENTICATED);
  t.is(reasonOf(none as unknown as ServiceError), 'CAIRN_UNAUTHENTICATED');
  const [h, p, s] = server.token.split('.') as [string, string, string];
  const forgedPayload = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), tenant: 'other' })).toString('base64url');
  for (const bad of [`${h}.${forgedPayload}.${s}`, `${h}.${p}.${s.slice(0, -2)}${s.endsWith('AA') ? 'BB' : 'AA'}`, 'not-a-jwt']) {
    const err = await t.throwsAsync(promisify<{ path: string }, unknown>((req, cb) => files.Stat(req, bearer(bad), cb), { path: '/x' }));
    t.is((err as unknown as ServiceError).code, status.UNAUTHENTICATED, bad);
  }
});

for (const [name, path] of [['dot-dot', '/a/../etc/passwd'], ['NUL', '/a/b\u0000c'], ['relative', 'a/b']] as const) {
  test.serial(`an upload to a ${name} path gets INVALID_ARGUMENT and nothing is written`, async (t) => {
    const blocksBefore = await metric('cairn_blocknode_blocks');
    const putsBefore = await metric('grpc_server_handled_total', { grpc_service: 'cairn.v1.BlockNode', grpc_method: 'PutBlocks' });
    const files = filesClient(server.grpc);
    t.teardown(() => files.close());
    const err = await new Promise<ServiceError>((resolve) => {
      const call = files.UploadFile(bearer(server.token), (e) => resolve(e as ServiceError));
      call.write({ header: { path } });
      call.write({ data: randomBytes(300_000) });
      call.end();
    });
    t.is(err.code, status.INVALID_ARGUMENT);
    t.is(reasonOf(err), 'CAIRN_INVALID_PATH');
    t.is(await metric('cairn_blocknode_blocks'), blocksBefore);
    t.is(await metric('grpc_server_handled_total', { grpc_service: 'cairn.v1.BlockNode', grpc_method: 'PutBlocks' }), putsBefore);
  });
}

test('an upload whose data does not match the announced size commits nothing', async (t) => {
  const client = new CairnClient({ endpoint: server.grpc, token: server.token });
  t.teardown(() => client.close());
  const { Readable } = await import('node:stream');
  const err = await t.throwsAsync(client.putStream(Readable.from([randomBytes(1000)]), '/it/short.bin', { size: 2000 }));
  t.is((err as { code?: string }).code, 'CAIRN_SIZE_MISMATCH');
  const missing = await t.throwsAsync(client.stat('/it/short.bin'));
  t.is((missing as { code?: string }).code, 'CAIRN_NOT_FOUND');
});
