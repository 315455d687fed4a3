// Export and import of the whole metadata store: LevelDB → PostgreSQL with every model record
// intact and the change feed continuing, consistent snapshots under load, resumable imports
// (injected failure and kill -9), and bad files or non-empty targets refused with nothing written.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { isCairnError } from '../../src/common/errors.js';
import { openKv, openLevelKv, openPostgresKv, type Kv } from '../../src/metadata/kv/index.js';
import { IMPORT_MARKER_KEY, exportStore, importStore } from '../../src/metadata/export.js';
import * as m from '../../src/metadata/model/index.js';
import { enqueueJob, getJob } from '../../src/metadata/model/jobs.js';
import { getClusterMap, listNodes, registerNode } from '../../src/metadata/model/cluster.js';
import { credentials, ServerCredentials } from '@grpc/grpc-js';
import { signToken } from '../../src/common/auth.js';
import { createLogger } from '../../src/common/log.js';
import { createMetrics } from '../../src/common/metrics.js';
import { CairnClient } from '../../src/client/index.js';
import { createMetadataService, MetadataClient, type MetadataService } from '../../src/metadata/index.js';
import { CLI, ROOT, runCli, startServer, tempDir } from '../helpers/cluster.js';
import { startPostgres, type PostgresServer } from '../helpers/postgres.js';

test.serial.before(async () => {
  pg = await startPostgres();
});
test.after.always(async () => {
  await pg?.stop();
});

let pg: PostgresServer | undefined;
const T = 'acme';
const sha = (s: string): Buffer => createHash('sha256').update(s).digest();

async function levelKv(t: ExecutionContext, dataDir = tempDir(t)): Promise<{ kv: Kv; dataDir: string }> {
  const kv = await openLevelKv({ dir: join(dataDir, 'metadata') });
  t.teardown(() => kv.close());
  return { kv, dataDir };
}

async function postgresKv(t: ExecutionContext): Promise<{ kv: Kv; url: string }> {
  const server = pg;
  if (server === undefined) throw new Error('PostgreSQL did not start');
  const url = await server.createDatabase(t.title);
  // Not named like a metadata service: the import guard refuses stores such sessions use.
  const kv = await openPostgresKv({ connectionString: url, pool: { max: 8, application_name: 'cairn-test' } });
  t.teardown(async () => {
    await kv.close();
    await server.dropDatabase(url);
  });
  return { kv, url };
}

async function contents(kv: Kv): Promise<string[]> {
  return (await kv.scan({})).map(([k, v]) => `${k.toString('hex')}=${v.toString('hex')}`);
}

function chunk(seed: string, offset = 0, size = 1000): m.ChunkRecord {
  return { plainHash: sha(seed), offset, size, address: sha('sealed:' + seed), storedSize: size + 28 };
}

function commit(ctx: m.ModelContext, path: string, seeds: string[], tenant = T): Promise<m.VersionRecord> {
  let offset = 0;
  const chunks = seeds.map((s) => {
    const c = chunk(s, offset);
    offset += c.size;
    return c;
  });
  return m.commitFile(ctx, { tenant, path, size: offset, mtimeMs: 1, authorDevice: 'laptop', chunks });
}

interface Populated {
  readonly linkToken: string;
  readonly sessionId: string;
  readonly jobId: string;
  /** Revision of the feed when the export was taken: a cursor issued then. */
  readonly revision: number;
}

/** Every kind of model record: files, versions, folders, moves, deletes, shares, sessions, chunk refs, feed, jobs, cluster map. */
async function populate(ctx: m.ModelContext, files = 20): Promise<Populated> {
  for (let i = 0; i < files; i++) await commit(ctx, `/docs/f${i}.txt`, [`a${i}`, `shared`]);
  for (let i = 0; i < 5; i++) await commit(ctx, `/docs/f${i}.txt`, [`b${i}`, `shared`]);
  await m.makeFolder(ctx, T, '/photos/2024');
  await commit(ctx, '/photos/2024/p.jpg', ['jpg']);
  await m.moveEntry(ctx, T, '/photos/2024', '/photos/archive');
  await m.deleteEntry(ctx, T, `/docs/f${files - 1}.txt`);
  await commit(ctx, '/other.txt', ['o'], 'globex');
  await m.putUser(ctx, T, 'bob');
  await m.grantShare(ctx, T, '/docs', 'bob', 'read');
  const link = await m.createLink(ctx, T, '/photos/archive/p.jpg', 'read', ctx.now() + 86_400_000);
  const session = await m.createSession(ctx, { tenant: T, path: '/upload.bin', mtimeMs: 1, authorDevice: 'phone' });
  await m.appendChunks(ctx, T, session.id, 0, [chunk('s0'), chunk('s1', 1000)]);
  await m.setPolicy(ctx, T, { keepLast: 10, keepDays: 7 });
  const job = await ctx.kv.transact((tx) => enqueueJob(tx, { tenant: T, kind: 'media.thumbnail', payload: '{"v":1}' }));
  await registerNode(ctx.kv, { id: 'bn-0', addr: '127.0.0.1:7500', zone: 'z0', capacityBytes: 2 ** 40 });
  const revision = await ctx.kv.transact((tx) => m.currentRevision(tx, T));
  return { linkToken: link.token, sessionId: session.id, jobId: job.id, revision };
}

/** Model-level reads that must agree between the source and the imported store. */
async function modelView(ctx: m.ModelContext, p: Populated): Promise<unknown> {
  const files = [];
  for (let i = 0; i < 19; i++) {
    const f = await m.getFile(ctx, T, `/docs/f${i}.txt`);
    const versions = await m.listVersions(ctx, T, `/docs/f${i}.txt`, { limit: 100 });
    files.push({ f, versions });
  }
  return {
    files,
    docs: await m.listFolder(ctx, T, '/docs', { limit: 1000, includeDeleted: true }),
    photo: await m.getFile(ctx, T, '/photos/archive/p.jpg'),
    globex: await m.getFile(ctx, 'globex', '/other.txt'),
    deleted: await m.statEntry(ctx, T, '/docs/f19.txt', true),
    grants: await m.listGrants(ctx, T, '/docs'),
    access: await m.checkAccess(ctx, T, '/docs/f1.txt', 'bob'),
    link: await m.resolveLink(ctx, p.linkToken),
    session: await m.getSession(ctx, T, p.sessionId),
    chunks: await m.findChunks(ctx, T, [sha('shared'), sha('a0'), sha('b0'), sha('s0'), sha('jpg')]),
    policy: await m.getPolicy(ctx, T),
    changes: await m.listChanges(ctx, T, 0, 1000),
    job: await getJob(ctx.kv, p.jobId),
    nodes: await listNodes(ctx.kv),
    map: await getClusterMap(ctx.kv),
  };
}

test('a LevelDB export imports into PostgreSQL with every record intact, and the change feed continues', async (t) => {
  t.timeout(120_000);
  const clock = { now: 1_700_000_000_000 };
  const source = await levelKv(t);
  const sctx = m.createContext(source.kv, { clock: () => clock.now });
  const p = await populate(sctx);
  const file = join(tempDir(t), 'meta.cairnexport');
  const summary = await exportStore(source.kv, file, { backend: 'level' });
  t.is(summary.entries, (await source.kv.scan({})).length);

  const target = await postgresKv(t);
  const r = await runCli(['--json', 'admin', 'import', file, '--postgres-url', target.url]);
  t.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { entries: number; sha256: string };
  t.is(out.entries, summary.entries);
  t.is(out.sha256, summary.checksum);

  t.deepEqual(await contents(target.kv), await contents(source.kv));
  const tctx = m.createContext(target.kv, { clock: () => clock.now });
  t.deepEqual(await modelView(tctx, p), await modelView(sctx, p));

  // The feed continues: the next commit takes the next revision, and a cursor from before the
  // export lists it.
  const next = await commit(tctx, '/after-import.txt', ['new']);
  t.is(next.revision, p.revision + 1);
  const page = await m.listChanges(tctx, T, p.revision, 100);
  t.deepEqual(page.changes.map((e) => e.revision), [p.revision + 1]);
  // Refs keep counting from the imported index.
  const again = await commit(tctx, '/docs/f0.txt', ['shared']);
  t.is(again.version, 3);
  const [shared] = await m.findChunks(tctx, T, [sha('shared')]);
  const [before] = await m.findChunks(sctx, T, [sha('shared')]);
  t.true(shared !== undefined && before !== undefined && shared.refs !== before.refs);
});

for (const backend of ['level', 'postgres'] as const) {
  test(`an export taken while commits go on is one consistent snapshot (${backend})`, async (t) => {
    t.timeout(120_000);
    const { kv } = backend === 'level' ? await levelKv(t) : await postgresKv(t);
    const ctx = m.createContext(kv);
    for (let i = 0; i < 100; i++) await commit(ctx, `/pre/${i}`, [`pre${i}`]);
    let stop = false;
    let committed = 0;
    const writers = Array.from({ length: 4 }, async (_, w) => {
      while (!stop) {
        await commit(ctx, `/live/${w}-${committed}`, [`live${w}-${committed}`]);
        committed++;
      }
    });
    const file = join(tempDir(t), 'live.cairnexport');
    try {
      await exportStore(kv, file, { backend, pageEntries: 7 });
    } finally {
      stop = true;
      await Promise.all(writers);
    }
    const copy = await levelKv(t);
    await importStore(copy.kv, file);
    // In one consistent state, the revision counter, the feed and the tree agree.
    const cctx = m.createContext(copy.kv);
    const revision = await copy.kv.transact((tx) => m.currentRevision(tx, T));
    const feed = await m.listChanges(cctx, T, 0, 1000);
    t.deepEqual(feed.changes.map((e) => e.revision), Array.from({ length: revision }, (_, i) => i + 1));
    const live = await m.listFolder(cctx, T, '/live', { limit: 1000 }).catch(() => ({ entries: [] }));
    const pre = await m.listFolder(cctx, T, '/pre', { limit: 1000 });
    const root = await m.listFolder(cctx, T, '/', { limit: 1000 });
    // One revision per file and per folder created on the way.
    t.is(root.entries.length + pre.entries.length + live.entries.length, revision);
    t.true(committed > 0);
  });
}

test('an import interrupted after a batch resumes where it stopped, with an identical result', async (t) => {
  t.timeout(120_000);
  const source = await levelKv(t);
  const sctx = m.createContext(source.kv);
  await populate(sctx, 40);
  const file = join(tempDir(t), 'resume.cairnexport');
  await exportStore(source.kv, file, { backend: 'level' });

  const target = await postgresKv(t);
  const failure = await t.throwsAsync(
    importStore(target.kv, file, {
      batchEntries: 25,
      onBatch: (batches) => {
        if (batches === 2) throw new Error('injected crash');
      },
    }),
  );
  t.is(failure.message, 'injected crash');
  const marker = await target.kv.get(IMPORT_MARKER_KEY);
  t.truthy(marker);
  t.is((await target.kv.scan({})).length, 1 + 50);
  // A different file is not mixed in, and an export of the half-loaded store is refused.
  await t.throwsAsync(exportStore(target.kv, join(tempDir(t), 'x'), { backend: 'postgres' }), { code: 'CAIRN_FAILED_PRECONDITION' } as never);

  const resumed = await importStore(target.kv, file, { batchEntries: 25 });
  t.true(resumed.resumed);
  t.is(resumed.loaded, resumed.entries - 50);
  t.is(await target.kv.get(IMPORT_MARKER_KEY), undefined);
  t.deepEqual(await contents(target.kv), await contents(source.kv));
});

test('an import killed with SIGKILL mid-way is finished by a re-run', async (t) => {
  t.timeout(180_000);
  const source = await levelKv(t);
  await populate(m.createContext(source.kv), 120);
  const file = join(tempDir(t), 'kill.cairnexport');
  const summary = await exportStore(source.kv, file, { backend: 'level' });
  const target = await postgresKv(t);

  const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'admin', 'import', file, '--postgres-url', target.url, '--batch-entries', '1'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let loaded = 0;
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline && child.exitCode === null) {
    const raw = await target.kv.get(IMPORT_MARKER_KEY);
    loaded = raw === undefined ? 0 : (JSON.parse(raw.toString()) as { loaded: number }).loaded;
    if (loaded >= 1) break;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  child.kill('SIGKILL');
  await exited;
  t.true(loaded >= 1 && loaded < summary.entries, `killed after ${loaded} of ${summary.entries}`);
  t.truthy(await target.kv.get(IMPORT_MARKER_KEY));

  const r = await runCli(['--json', 'admin', 'import', file, '--postgres-url', target.url]);
  t.is(r.code, 0, r.stderr);
  t.true((JSON.parse(r.stdout) as { resumed: boolean }).resumed);
  t.deepEqual(await contents(target.kv), await contents(source.kv));
});

test('a corrupt, truncated or foreign file is refused with nothing written', async (t) => {
  t.timeout(120_000);
  const source = await levelKv(t);
  await populate(m.createContext(source.kv), 5);
  const dir = tempDir(t);
  const file = join(dir, 'good.cairnexport');
  await exportStore(source.kv, file, { backend: 'level' });
  const bytes = readFileSync(file);
  const flipped = Buffer.from(bytes);
  flipped[5000] = (flipped[5000] ?? 0) ^ 0xff;
  const cases: Array<[string, Buffer, string]> = [
    ['flipped', flipped, 'CAIRN_DATA_LOSS'],
    ['truncated', bytes.subarray(0, bytes.length - 100), 'CAIRN_DATA_LOSS'],
    ['no-trailer', bytes.subarray(0, bytes.length - 32), 'CAIRN_DATA_LOSS'],
    ['header-only', bytes.subarray(0, 4096), 'CAIRN_DATA_LOSS'],
    ['foreign', Buffer.from('hello, not an export'), 'CAIRN_INVALID_ARGUMENT'],
  ];
  const target = await postgresKv(t);
  for (const [name, data, code] of cases) {
    const bad = join(dir, `${name}.cairnexport`);
    writeFileSync(bad, data);
    const err = await t.throwsAsync(importStore(target.kv, bad));
    t.true(isCairnError(err, code as 'CAIRN_DATA_LOSS'), `${name}: ${String(err)}`);
    t.deepEqual(await contents(target.kv), [], name);
    // The CLI refuses before it opens (and so creates) a LevelDB target.
    const r = await runCli(['admin', 'import', bad, '--data-dir', join(dir, `target-${name}`)]);
    t.is(r.code, code === 'CAIRN_DATA_LOSS' ? 7 : 2, `${name}: ${r.stderr}`);
    t.regex(r.stderr, new RegExp(code));
    t.false(existsSync(join(dir, `target-${name}`)), name);
  }
});

test('a non-empty target is refused without --force and replaced with it', async (t) => {
  t.timeout(120_000);
  const source = await levelKv(t);
  await populate(m.createContext(source.kv), 3);
  const dir = tempDir(t);
  const file = join(dir, 'x.cairnexport');
  await exportStore(source.kv, file, { backend: 'level' });
  const expected = await contents(source.kv);
  await source.kv.close();

  const targetDir = tempDir(t);
  const existing = await openKv({ backend: 'level', dir: join(targetDir, 'metadata') });
  await commit(m.createContext(existing), '/mine.txt', ['mine']);
  const before = await contents(existing);
  await existing.close();

  const refused = await runCli(['admin', 'import', file, '--data-dir', targetDir]);
  t.is(refused.code, 2, refused.stderr);
  t.regex(refused.stderr, /not empty.*--force.*CAIRN_FAILED_PRECONDITION/);
  const unchanged = await openKv({ backend: 'level', dir: join(targetDir, 'metadata') });
  t.deepEqual(await contents(unchanged), before);
  await unchanged.close();

  const usage = await runCli(['admin', 'import', file]);
  t.is(usage.code, 2);
  t.regex(usage.stderr, /exactly one of --data-dir/);

  const forced = await runCli(['admin', 'import', file, '--data-dir', targetDir, '--force']);
  t.is(forced.code, 0, forced.stderr);
  const replaced = await openKv({ backend: 'level', dir: join(targetDir, 'metadata') });
  t.deepEqual(await contents(replaced), expected);
  await replaced.close();

  // Export through the CLI from the imported store gives the same bytes' worth of entries.
  const again = join(dir, 'again.cairnexport');
  const r = await runCli(['--json', 'admin', 'export', again, '--data-dir', targetDir]);
  t.is(r.code, 0, r.stderr);
  t.is((JSON.parse(r.stdout) as { entries: number }).entries, expected.length);
});

for (const backend of ['level', 'postgres'] as const) {
  test(`kv.snapshot sees one point in time while writers commit (${backend})`, async (t) => {
    t.timeout(60_000);
    const { kv } = backend === 'level' ? await levelKv(t) : await postgresKv(t);
    const key = (i: number): Buffer => Buffer.from(`k${String(i).padStart(4, '0')}`);
    await kv.transact(async (tx) => {
      for (let i = 0; i < 100; i++) tx.put(key(i), Buffer.from('v0'));
    });
    const seen = await kv.snapshot(async (view) => {
      const first = await view.scan({ limit: 10 });
      // Changes committed after the view began stay invisible to it.
      await kv.transact(async (tx) => {
        for (let i = 0; i < 100; i++) tx.put(key(i), Buffer.from('v1'));
        tx.put(key(500), Buffer.from('new'));
      });
      const rest = await view.scan({ gt: first.at(-1)?.[0] ?? key(0) });
      const point = await view.get(key(500));
      return { values: [...first, ...rest].map(([, v]) => v.toString()), point };
    });
    t.is(seen.values.length, 100);
    t.true(seen.values.every((v) => v === 'v0'));
    t.is(seen.point, undefined);
    t.is((await kv.get(key(0)))?.toString(), 'v1');
    await t.throwsAsync(kv.snapshot(async () => {
      throw new Error('boom');
    }), { message: 'boom' });
    t.is((await kv.scan({})).length, 101);
  });
}

test('the store of a running embedded server exports as a consistent copy while uploads go on', async (t) => {
  t.timeout(180_000);
  const server = await startServer(t);
  const client = new CairnClient({ endpoint: server.grpc, token: server.token });
  t.teardown(() => client.close());
  const local = join(tempDir(t), 'small.txt');
  writeFileSync(local, 'hello, cairn\n');
  await client.put(local, '/before.txt');
  let stop = false;
  let uploaded = 0;
  const uploads = (async () => {
    while (!stop) {
      await client.put(local, `/during/${uploaded}.txt`);
      uploaded++;
    }
  })();
  const file = join(tempDir(t), 'live.cairnexport');
  let r: Awaited<ReturnType<typeof runCli>>;
  try {
    r = await runCli(['--json', 'admin', 'export', file, '--data-dir', server.dataDir]);
  } finally {
    stop = true;
    await uploads;
  }
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /in use by a running server/);
  const copy = await levelKv(t);
  await importStore(copy.kv, file);
  const ctx = m.createContext(copy.kv);
  t.is((await m.getFile(ctx, 'default', '/before.txt')).size, 13);
  // One point in time: the feed has every revision up to the counter, and the tree matches it.
  const revision = await copy.kv.transact((tx) => m.currentRevision(tx, 'default'));
  const feed = await m.listChanges(ctx, 'default', 0, 1000);
  t.deepEqual(feed.changes.map((e) => e.revision), Array.from({ length: revision }, (_, i) => i + 1));
  const during = await m.listFolder(ctx, 'default', '/during', { limit: 1000 }).catch(() => ({ entries: [] }));
  const root = await m.listFolder(ctx, 'default', '/', { limit: 1000 });
  t.is(root.entries.length + during.entries.length, revision);
  t.true(uploaded > 0);
});

test('a change cursor issued by the LevelDB service is accepted by a PostgreSQL service after migration', async (t) => {
  t.timeout(120_000);
  const secret = Buffer.alloc(32, 9);
  const token = await signToken(secret, { tenant: 'system', role: 'service' });
  const serve = async (options: { dataDir: string; postgresUrl?: string }): Promise<{ svc: MetadataService; client: MetadataClient }> => {
    const svc = await createMetadataService({
      ...options, host: '127.0.0.1', port: 0, credentials: ServerCredentials.createInsecure(), authSecret: secret,
      log: createLogger({ level: 'silent', name: t.title }), metrics: createMetrics({ processMetrics: false }),
    });
    const client = new MetadataClient({ address: `127.0.0.1:${svc.port}`, credentials: credentials.createInsecure(), token: () => token });
    return { svc, client };
  };
  const chunks = (seed: string): Array<{ plain_hash: Buffer; offset: number; size: number; address: Buffer; stored_size: number }> => [
    { plain_hash: sha(seed), offset: 0, size: 100, address: sha('sealed:' + seed), stored_size: 100 },
  ];
  const dataDir = tempDir(t);
  const a = await serve({ dataDir });
  let aStopped = false;
  t.teardown(async () => {
    if (aStopped) return;
    a.client.close();
    await a.svc.stop(5000);
  });
  await a.client.commitFile({ tenant: T, path: '/one', size: 100, mtime_ms: 1, author_device: 'd', chunks: chunks('one') });
  const { cursor } = await a.client.getChangeCursor({ tenant: T });
  aStopped = true;
  a.client.close();
  await a.svc.stop(5000);

  const file = join(tempDir(t), 'migrate.cairnexport');
  const exported = await runCli(['admin', 'export', file, '--data-dir', dataDir]);
  t.is(exported.code, 0, exported.stderr);
  const target = await postgresKv(t);
  const imported = await runCli(['admin', 'import', file, '--postgres-url', target.url]);
  t.is(imported.code, 0, imported.stderr);

  const b = await serve({ dataDir: tempDir(t), postgresUrl: target.url });
  t.teardown(async () => {
    b.client.close();
    await b.svc.stop(5000);
  });
  t.deepEqual((await b.client.listChanges({ tenant: T, cursor })).changes, []);
  await b.client.commitFile({ tenant: T, path: '/two', size: 100, mtime_ms: 1, author_device: 'd', chunks: chunks('two') });
  const page = await b.client.listChanges({ tenant: T, cursor });
  t.deepEqual(page.changes.map((c) => c.path), ['/two']);
  t.is(Number(page.changes[0]?.revision), 2);
});
