// Export through a running service and the import guard, with real processes: `cairn admin export
// --metadata` streams a consistent snapshot from a serving embedded server (which keeps serving),
// and an import refuses a store a live metadata service uses (LevelDB lock; PostgreSQL sessions).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import test from 'ava';
import pg from 'pg';
import { ServerCredentials } from '@grpc/grpc-js';
import { isCairnError } from '../../src/common/errors.js';
import { createLogger } from '../../src/common/log.js';
import { createMetrics } from '../../src/common/metrics.js';
import { createMetadataService, openImportTarget, openMetadataStore, verifyExport } from '../../src/metadata/index.js';
import * as m from '../../src/metadata/model/index.js';
import { runCli, startServer, suiteScope, tempDir } from '../helpers/cluster.js';
import { startPostgres, type PostgresServer } from '../helpers/postgres.js';

const scope = suiteScope('export-live');
let pgServer: PostgresServer | undefined;
test.before(async () => {
  pgServer = await startPostgres();
});
test.after.always(async () => {
  await scope.close();
  await pgServer?.stop();
});

test.serial('cairn admin export --metadata streams a verified snapshot from a serving server', async (t) => {
  t.timeout(120_000);
  const server = await startServer(scope);
  const env = { CAIRN_DATA_DIR: server.dataDir, CAIRN_ENDPOINT: undefined, CAIRN_TOKEN: undefined };
  const dir = tempDir(scope, 'export-live-');
  const src = join(dir, 'a.bin');
  writeFileSync(src, randomBytes(20_000));
  t.is((await runCli(['put', src, '/docs/a.bin'], env)).code, 0);
  const admin = (JSON.parse(readFileSync(join(server.dataDir, 'client.json'), 'utf8')) as { adminEndpoint: string }).adminEndpoint;
  const out = join(dir, 'live.export');
  const r = await runCli(['--json', 'admin', 'export', out, '--metadata', admin, '--data-dir', server.dataDir], env);
  t.is(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout) as { entries: number; sha256: string; backend: string };
  t.true(summary.entries > 0);
  t.is(summary.backend, 'level');
  const verified = await verifyExport(out);
  t.is(verified.checksum, summary.sha256);
  // The server kept serving throughout.
  t.is((await runCli(['put', src, '/docs/b.bin'], env)).code, 0);
  // The export loads into a fresh store and holds the file.
  const target = join(dir, 'restored');
  const imp = await runCli(['--json', 'admin', 'import', out, '--data-dir', target]);
  t.is(imp.code, 0, imp.stderr);
  const kv = await openMetadataStore({ backend: 'level', dataDir: target }, true);
  t.teardown(() => kv.close());
  const file = await m.getFile(m.createContext(kv), 'default', '/docs/a.bin');
  t.is(file.size, 20_000);
  // Refusals: a tenant admin's token, and importing into the live server's own data dir.
  const tenantToken = (JSON.parse(readFileSync(join(server.dataDir, 'client.json'), 'utf8')) as { token: string }).token;
  const denied = await runCli(['admin', 'export', join(dir, 'no.export'), '--metadata', admin, '--token', tenantToken], env);
  t.not(denied.code, 0);
  t.regex(denied.stderr, /CAIRN_PERMISSION_DENIED/);
  const intoLive = await runCli(['admin', 'import', out, '--data-dir', server.dataDir, '--force'], env);
  t.not(intoLive.code, 0);
  t.regex(intoLive.stderr, /server running/);
});

test.serial('an import refuses a PostgreSQL store a metadata service is using', async (t) => {
  t.timeout(120_000);
  const url = await pgServer!.createDatabase('live');
  const dir = tempDir(scope, 'export-live-pg-');
  const svc = await createMetadataService({
    dataDir: dir, host: '127.0.0.1', port: 0, credentials: ServerCredentials.createInsecure(), authSecret: randomBytes(32),
    log: createLogger({ level: 'silent', name: t.title }), metrics: createMetrics({ processMetrics: false }), postgresUrl: url,
  });
  let stopped = false;
  t.teardown(async () => {
    if (!stopped) await svc.stop(2000);
  });
  const refused = await t.throwsAsync(openImportTarget({ backend: 'postgres', url }));
  t.true(isCairnError(refused, 'CAIRN_FAILED_PRECONDITION'), String(refused));
  t.regex(String(refused), /stop every metadata service/);
  const forced = await openImportTarget({ backend: 'postgres', url }, { force: true });
  await forced.close();
  t.pass('force into the still empty store is allowed');
  await m.commitFile(m.createContext(svc.kv), { tenant: 'acme', path: '/x', size: 1, mtimeMs: 1, authorDevice: '', chunks: [{ plainHash: randomBytes(32), offset: 0, size: 1, address: randomBytes(32), storedSize: 1 }] });
  const notEmpty = await t.throwsAsync(openImportTarget({ backend: 'postgres', url }, { force: true }));
  t.true(isCairnError(notEmpty, 'CAIRN_FAILED_PRECONDITION'), 'not even with force once it holds data');
  await svc.stop(2000);
  stopped = true;
  const free = await openImportTarget({ backend: 'postgres', url });
  await free.close();
  t.pass('with the service stopped the import may proceed');
});

test.serial('an import right after a metadata service hung up waits for its session to end', async (t) => {
  t.timeout(60_000);
  const url = await pgServer!.createDatabase('hangup');
  // A session that looks like a metadata service's and ends a moment after the import starts
  // checking, as a stopped service's backend does after its client hung up.
  const lingering = new pg.Client({ connectionString: url, application_name: 'cairn-metadata' });
  await lingering.connect();
  const hangUp = setTimeout(() => void lingering.end(), 300);
  t.teardown(async () => {
    clearTimeout(hangUp);
    await lingering.end().catch(() => undefined);
  });
  const started = Date.now();
  const kv = await openImportTarget({ backend: 'postgres', url });
  await kv.close();
  t.true(Date.now() - started >= 250, 'the import waited for the session to end instead of refusing at once');
});
