// The Metadata API over real gRPC (an in-process metadata service on LevelDB, so tests can move
// its clock): service-only access, AIP-158 page tokens, change cursors and their expiry,
// WatchChanges, upload sessions, and bad requests getting the right status while changing nothing.
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { credentials, ServerCredentials } from '@grpc/grpc-js';
import { signToken, type Role } from '../../src/common/auth.js';
import { isCairnError, type CairnError, type ErrorCode } from '../../src/common/errors.js';
import { createLogger } from '../../src/common/log.js';
import { createMetrics } from '../../src/common/metrics.js';
import { createMetadataService, MetadataClient, type MetadataService } from '../../src/metadata/index.js';
import type { Kv } from '../../src/metadata/kv/index.js';
import * as m from '../../src/metadata/model/index.js';

const DAY = 24 * 3600 * 1000;
const SECRET = Buffer.alloc(32, 7);
const sha = (s: string): Buffer => createHash('sha256').update(s).digest();

interface Started {
  readonly svc: MetadataService;
  readonly stop: (timeoutMs: number) => Promise<void>;
  readonly client: MetadataClient;
  readonly clock: { t: number };
  readonly ctx: m.ModelContext;
  readonly clientAs: (role: Role, tenant?: string) => Promise<MetadataClient>;
}

async function start(t: ExecutionContext, options: m.ModelOptions = {}): Promise<Started> {
  t.timeout(60_000);
  const dir = mkdtempSync(join(tmpdir(), 'cairn-metadata-svc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const clock = { t: 1_700_000_000_000 };
  const now = (): number => clock.t;
  const svc = await createMetadataService({
    dataDir: dir, host: '127.0.0.1', port: 0, credentials: ServerCredentials.createInsecure(), authSecret: SECRET,
    log: createLogger({ level: 'silent', name: t.title }), metrics: createMetrics({ processMetrics: false }),
    model: { clock: now, ...options }, watchPollMs: 200,
  });
  let stopped = false;
  t.teardown(async () => {
    if (!stopped) await svc.stop(5000);
  });
  const clientAs = async (role: Role, tenant = 'system'): Promise<MetadataClient> => {
    const token = await signToken(SECRET, { tenant, role });
    const c = new MetadataClient({ address: `127.0.0.1:${svc.port}`, credentials: credentials.createInsecure(), token: () => token });
    t.teardown(() => c.close());
    return c;
  };
  const client = await clientAs('service');
  const stop = async (timeoutMs: number): Promise<void> => {
    stopped = true;
    await svc.stop(timeoutMs);
  };
  return { svc, stop, client, clock, ctx: m.createContext(svc.kv, { clock: now, ...options }), clientAs };
}

function chunkRefs(...seeds: string[]): Array<{ plain_hash: Buffer; offset: number; size: number; address: Buffer; stored_size: number }> {
  return seeds.map((s, i) => ({ plain_hash: sha(s), offset: i * 100, size: 100, address: sha('sealed:' + s), stored_size: 100 }));
}

async function commit(c: MetadataClient, path: string, seeds: string[], tenant = 'acme'): Promise<void> {
  await c.commitFile({ tenant, path, size: seeds.length * 100, mtime_ms: 1, author_device: 'd', chunks: chunkRefs(...seeds) });
}

async function fails(t: ExecutionContext, p: Promise<unknown>, code: ErrorCode): Promise<CairnError> {
  const err = await t.throwsAsync(p);
  t.true(isCairnError(err, code), `expected ${code}, got ${String(err)}`);
  return err as CairnError;
}

async function snapshot(kv: Kv): Promise<string[]> {
  return (await kv.scan({})).map(([k, v]) => `${k.toString('hex')}=${v.toString('hex')}`);
}

test('only component service tokens may call the Metadata API', async (t) => {
  const { client, clientAs } = await start(t);
  await commit(client, '/x', ['x']);
  for (const role of ['admin', 'user', 'reader'] as const) {
    const other = await clientAs(role, 'acme');
    await fails(t, other.getFile({ tenant: 'acme', path: '/x' }), 'CAIRN_PERMISSION_DENIED');
  }
});

test('folder listings page with opaque tokens bound to tenant and request, and by name', async (t) => {
  const { client } = await start(t);
  const names = Array.from({ length: 23 }, (_, i) => `f${String(i).padStart(2, '0')}`);
  for (const n of names) await commit(client, `/dir/${n}`, [n]);
  await commit(client, '/dir2/only', ['o']);
  const seen: string[] = [];
  const tokens: string[] = [];
  let token = '';
  do {
    const page = await client.listFolder({ tenant: 'acme', path: '/dir', page_size: 10, page_token: token });
    seen.push(...page.entries.map((e) => e.path.slice(5)));
    token = page.next_page_token;
    if (token !== '') tokens.push(token);
  } while (token !== '');
  t.deepEqual(seen, names);
  t.is(tokens.length, 2);
  const first = tokens[0]!;

  const all = await client.listFolder({ tenant: 'acme', path: '/dir', page_size: 5000 });
  t.is(all.entries.length, 23, 'a page size above 1000 is lowered, not refused');
  t.false(all.has_more);
  t.is((await client.listFolder({ tenant: 'acme', path: '/dir' })).entries.length, 23, 'default page size 100');

  await fails(t, client.listFolder({ tenant: 'acme', path: '/dir', page_size: -1 }), 'CAIRN_INVALID_ARGUMENT');
  const [body = '', mac = ''] = first.split('.');
  const forged = Buffer.from(JSON.stringify({ a: 'f20' })).toString('base64url') + '.' + mac;
  await fails(t, client.listFolder({ tenant: 'acme', path: '/dir', page_token: forged }), 'CAIRN_INVALID_PAGE_TOKEN');
  await fails(t, client.listFolder({ tenant: 'acme', path: '/dir', page_token: body + '.' + mac.slice(1) + 'A' }), 'CAIRN_INVALID_PAGE_TOKEN');
  await fails(t, client.listFolder({ tenant: 'acme', path: '/dir', page_token: 'garbage' }), 'CAIRN_INVALID_PAGE_TOKEN');
  await fails(t, client.listFolder({ tenant: 'acme', path: '/dir2', page_token: first }), 'CAIRN_INVALID_PAGE_TOKEN');
  await fails(t, client.listFolder({ tenant: 'acme', path: '/dir', page_token: first, include_deleted: true }), 'CAIRN_INVALID_PAGE_TOKEN');
  await fails(t, client.listFolder({ tenant: 'other', path: '/dir', page_token: first }), 'CAIRN_INVALID_PAGE_TOKEN');
  await fails(t, client.listFolder({ tenant: 'acme', path: '/dir', page_token: first, previous_last: 'f01' }), 'CAIRN_INVALID_ARGUMENT');

  const after = await client.listFolder({ tenant: 'acme', path: '/dir', page_size: 3, previous_last: 'f04' });
  t.deepEqual(after.entries.map((e) => e.path), ['/dir/f05', '/dir/f06', '/dir/f07']);
  t.true(after.has_more);
  const before = await client.listFolder({ tenant: 'acme', path: '/dir', page_size: 3, previous_first: 'f05' });
  t.deepEqual(before.entries.map((e) => e.path), ['/dir/f02', '/dir/f03', '/dir/f04']);
  t.true(before.has_more);
  const fromStart = await client.listFolder({ tenant: 'acme', path: '/dir', page_size: 3, previous_first: 'f02' });
  t.deepEqual(fromStart.entries.map((e) => e.path), ['/dir/f00', '/dir/f01']);
  t.false(fromStart.has_more);
  const onward = await client.listFolder({ tenant: 'acme', path: '/dir', page_size: 2, page_token: fromStart.next_page_token });
  t.deepEqual(onward.entries.map((e) => e.path), ['/dir/f02', '/dir/f03'], "a backward page's token continues forward");

  for (let i = 0; i < 4; i++) await commit(client, '/dir/f00', [`v${i}`]);
  const v1 = await client.listVersions({ tenant: 'acme', path: '/dir/f00', page_size: 2 });
  t.deepEqual(v1.versions.map((v) => Number(v.version)), [5, 4]);
  const v2 = await client.listVersions({ tenant: 'acme', path: '/dir/f00', page_size: 2, page_token: v1.next_page_token });
  t.deepEqual(v2.versions.map((v) => Number(v.version)), [3, 2]);
  await fails(t, client.listVersions({ tenant: 'acme', path: '/dir/f01', page_token: v1.next_page_token }), 'CAIRN_INVALID_PAGE_TOKEN');
});

test('change cursors resume, are bound to their tenant, and expire with a snapshot cursor', async (t) => {
  const { client, clock, ctx } = await start(t, { changeRetentionMs: DAY });
  const start0 = await client.getChangeCursor({ tenant: 'acme' });
  t.is(Number(start0.revision), 0);
  await commit(client, '/a', ['a']);
  await commit(client, '/b', ['b']);
  const page = await client.listChanges({ tenant: 'acme', cursor: start0.cursor, page_size: 1 });
  t.deepEqual(page.changes.map((c) => [c.type, c.path]), [['CHANGE_TYPE_PUT', '/a']]);
  t.true(page.has_more);
  const rest = await client.listChanges({ tenant: 'acme', cursor: page.next_cursor });
  t.deepEqual(rest.changes.map((c) => c.path), ['/b']);
  t.false(rest.has_more);
  await fails(t, client.listChanges({ tenant: 'acme', cursor: 'nonsense' }), 'CAIRN_INVALID_CURSOR');
  const otherTenant = await client.getChangeCursor({ tenant: 'other' });
  await fails(t, client.listChanges({ tenant: 'acme', cursor: otherTenant.cursor }), 'CAIRN_INVALID_CURSOR');
  await fails(t, client.listChanges({ tenant: 'acme', cursor: page.next_cursor.replace(/^./, (ch) => (ch === 'e' ? 'f' : 'e')) }), 'CAIRN_INVALID_CURSOR');

  clock.t += 2 * DAY;
  await commit(client, '/c', ['c']);
  await m.runMaintenance(ctx);
  const expired = await fails(t, client.listChanges({ tenant: 'acme', cursor: start0.cursor }), 'CAIRN_CURSOR_EXPIRED');
  const snapshotCursor = expired.metadata['snapshot_cursor'];
  t.truthy(snapshotCursor);
  await commit(client, '/d', ['d']);
  const resumed = await client.listChanges({ tenant: 'acme', cursor: snapshotCursor! });
  t.deepEqual(resumed.changes.map((c) => c.path), ['/d'], 'the snapshot cursor resumes after the current state');
});

test('WatchChanges sends a first message, then every commit in order; stopping the service ends it', async (t) => {
  const { stop, client } = await start(t);
  await commit(client, '/before', ['0']);
  const { cursor } = await client.getChangeCursor({ tenant: 'acme' });
  const abort = new AbortController();
  t.teardown(() => abort.abort());
  const got: string[] = [];
  let messages = 0;
  let ready!: () => void;
  const established = new Promise<void>((resolve) => (ready = resolve));
  const watching = (async () => {
    for await (const msg of client.watchChanges({ tenant: 'acme', cursor }, abort.signal)) {
      messages++;
      ready();
      got.push(...msg.changes.map((c) => `${c.type}:${c.path}`));
      if (got.length >= 4) return;
    }
  })();
  await established;
  await commit(client, '/w/1', ['1']);
  await client.moveEntry({ tenant: 'acme', from_path: '/w/1', to_path: '/w/2' });
  await client.deleteEntry({ tenant: 'acme', path: '/w/2' });
  await watching;
  t.deepEqual(got, ['CHANGE_TYPE_CREATE_FOLDER:/w', 'CHANGE_TYPE_PUT:/w/1', 'CHANGE_TYPE_MOVE:/w/2', 'CHANGE_TYPE_DELETE:/w/2']);
  t.true(messages >= 2);

  const late = new AbortController();
  const open = client.watchChanges({ tenant: 'acme', cursor: '' }, late.signal);
  t.truthy((await open.next()).value, 'the watch is established');
  // A watch never ends on its own: stopping must end it rather than wait out the shutdown timeout.
  await stop(600_000);
  late.abort();
  t.pass();
});

test('a watch from an expired cursor fails with CAIRN_CURSOR_EXPIRED', async (t) => {
  const { client, clock, ctx } = await start(t, { changeRetentionMs: DAY });
  const { cursor } = await client.getChangeCursor({ tenant: 'acme' });
  await commit(client, '/old', ['o']);
  clock.t += 2 * DAY;
  await m.runMaintenance(ctx);
  const abort = new AbortController();
  t.teardown(() => abort.abort());
  const err = await t.throwsAsync(async () => {
    for await (const _ of client.watchChanges({ tenant: 'acme', cursor }, abort.signal)) t.fail('no message expected');
  });
  t.true(isCairnError(err, 'CAIRN_CURSOR_EXPIRED'), String(err));
});

test('upload sessions over the wire; bad requests get the right status and change nothing', async (t) => {
  const { client, svc } = await start(t);
  const s = await client.createUploadSession({ tenant: 'acme', path: '/s/big.bin', size: 300, mtime_ms: 9, author_device: 'phone' });
  const id = s.session!.session_id;
  await client.appendUploadChunks({ tenant: 'acme', session_id: id, offset: 0, chunks: chunkRefs('p', 'q') });
  t.is(Number((await client.getUploadSession({ tenant: 'acme', session_id: id })).session!.offset), 200);
  const resume = await fails(t, client.appendUploadChunks({ tenant: 'acme', session_id: id, offset: 0, chunks: chunkRefs('p') }), 'CAIRN_FAILED_PRECONDITION');
  t.is(resume.metadata['offset'], '200');
  const third = { ...chunkRefs('r')[0]!, offset: 200 };
  await client.appendUploadChunks({ tenant: 'acme', session_id: id, offset: 200, chunks: [third] });
  const found = await client.findChunks({ tenant: 'acme', plain_hashes: [sha('p'), sha('zzz')] });
  t.deepEqual(found.chunks.map((c) => [c.plain_hash.toString('hex'), Number(c.pins)]), [[sha('p').toString('hex'), 1]]);

  const before = await snapshot(svc.kv);
  await fails(t, client.commitFile({ tenant: 'acme', session_id: id, chunks: chunkRefs('x') }), 'CAIRN_INVALID_ARGUMENT');
  await fails(t, client.commitFile({ tenant: 'acme', path: '/a/../b', size: 100, chunks: chunkRefs('x') }), 'CAIRN_INVALID_PATH');
  await fails(t, client.commitFile({ tenant: 'acme', path: '/b', size: '9007199254740993', chunks: chunkRefs('x') }), 'CAIRN_INVALID_ARGUMENT');
  await fails(t, client.getFile({ tenant: 'acme', path: '/s/big.bin' }), 'CAIRN_NOT_FOUND');
  await fails(t, client.findChunks({ tenant: 'acme', plain_hashes: [Buffer.alloc(3)] }), 'CAIRN_INVALID_HASH');
  await fails(t, client.grantShare({ tenant: 'acme', path: '/s', user: 'bob' }), 'CAIRN_INVALID_ARGUMENT');
  await fails(t, client.listShares({ tenant: 'acme' }), 'CAIRN_INVALID_ARGUMENT');
  await fails(t, client.restoreEntry({ tenant: 'acme', path: '/s', version: 3 }), 'CAIRN_NOT_FOUND');
  await fails(t, client.resolveLinkShare({ token: 'cl_nope' }), 'CAIRN_NOT_FOUND');
  await fails(t, client.getEntry({ tenant: 'BAD', path: '/' }), 'CAIRN_INVALID_ARGUMENT');
  t.deepEqual(await snapshot(svc.kv), before);

  const file = await client.commitFile({ tenant: 'acme', session_id: id });
  t.is(Number(file.size), 300);
  t.is(Number(file.chunk_count), 3);
  t.is(file.path, '/s/big.bin');
  const window = await client.getFile({ tenant: 'acme', path: '/s/big.bin', chunk_offset: 150, max_chunks: 1 });
  t.deepEqual(window.chunks.map((c) => Number(c.offset)), [100]);
  const entry = await client.getEntry({ tenant: 'acme', path: '/s' });
  t.is(entry.entry?.kind, 'ENTRY_KIND_FOLDER');
  await fails(t, client.restoreEntry({ tenant: 'acme', path: '/s', version: 3 }), 'CAIRN_INVALID_ARGUMENT');
  const link = await client.createLinkShare({ tenant: 'acme', path: '/s/big.bin', permission: 'SHARE_PERMISSION_READ' });
  t.like((await client.resolveLinkShare({ token: link.token })).link, { tenant: 'acme', path: '/s/big.bin', permission: 'SHARE_PERMISSION_READ' });
});

test('media over the wire: media_kind enqueues a job with the commit; workers read by file_id and record derivatives', async (t) => {
  const { client, svc, ctx } = await start(t);
  const v = await client.commitFile({ tenant: 'acme', path: '/p.jpg', size: 100, mtime_ms: 1, author_device: 'd', chunks: chunkRefs('img'), media_kind: 'image/jpeg' });
  const before = await snapshot(svc.kv);
  await fails(t, client.commitFile({ tenant: 'acme', path: '/q.jpg', size: 100, mtime_ms: 1, author_device: 'd', chunks: chunkRefs('img'), media_kind: 'bad kind' }), 'CAIRN_INVALID_ARGUMENT');
  t.deepEqual(await snapshot(svc.kv), before);
  const { leaseJobs } = await import('../../src/metadata/model/jobs.js');
  const [job] = await leaseJobs(svc.kv, { kinds: ['media'], worker: 'w', max: 5, leaseMs: 60_000 }, { now: ctx.now });
  const payload = JSON.parse(job!.job.payload) as m.MediaJobPayload;
  t.deepEqual(payload, { tenant: 'acme', path: '/p.jpg', file_id: v.node_id, version: 1, size: 100, media_kind: 'image/jpeg' });
  await client.moveEntry({ tenant: 'acme', from_path: '/p.jpg', to_path: '/moved.jpg' });
  const read = await client.getFile({ tenant: 'acme', file_id: payload.file_id, version: payload.version });
  t.is(read.path, '/moved.jpg');
  t.deepEqual(read.chunks.map((c) => c.plain_hash), [sha('img')]);
  await fails(t, client.getFile({ tenant: 'acme', path: '/moved.jpg', file_id: payload.file_id, version: 1 }), 'CAIRN_INVALID_ARGUMENT');
  const [thumb] = chunkRefs('thumb');
  const set = await client.setVersionMedia({
    tenant: 'acme', file_id: payload.file_id, version: 1, media_json: '{"width":800}',
    derivatives: [{ name: 'thumb-128', chunks: [thumb!], size: 100, width: 128, height: 96, format: 'webp' }],
  });
  t.is(set.file?.derivatives[0]?.name, 'thumb-128');
  const again = await client.getFile({ tenant: 'acme', path: '/moved.jpg' });
  t.is(again.media_json, '{"width":800}');
  t.like(again.derivatives[0], { name: 'thumb-128', size: '100', width: 128, height: 96, format: 'webp' });
  t.deepEqual(again.derivatives[0]?.chunks[0]?.address, sha('sealed:thumb'));
  const found = await client.findChunks({ tenant: 'acme', plain_hashes: [sha('thumb')] });
  t.is(found.chunks[0]?.refs, '1', 'the derivative holds a ref, so GC keeps it');
});

test('blocks_since_ms over gRPC: a block the orphan sweep deleted after the writer began is refused to commits, pins and derivatives, past the hold', async (t) => {
  const { client, clock, ctx, svc } = await start(t, { deletionLeaseMs: 60_000 });
  const hex = (s: string): string => sha('sealed:' + s).toString('hex');
  const gone = ['f', 'p', 'd'].map(hex);
  const began = clock.t;
  // The sweep deletes the blocks as orphans (driven through the model on the service's store).
  await m.noteOrphans(ctx, new Set(gone), 1000);
  clock.t += 1000;
  t.deepEqual((await m.noteOrphans(ctx, new Set(gone), 1000)).sort(), [...gone].sort());
  await m.claimOrphans(ctx, gone, 60_000);
  await m.endOrphanClaims(ctx, gone, 60_000, 7 * DAY);
  const deletedAt = clock.t;
  clock.t += 60_001; // past the hold
  const before = await snapshot(svc.kv);
  const commitF = (since?: number): Promise<unknown> => client.commitFile({ tenant: 'acme', path: '/f', size: 100, mtime_ms: 1, author_device: 'd', chunks: chunkRefs('f'), ...(since !== undefined ? { blocks_since_ms: since } : {}) });
  const err = await fails(t, commitF(began), 'CAIRN_UNAVAILABLE');
  t.regex(err.message, /deleted as an orphan .*upload the file again/);
  t.is(err.metadata['plain_hash'], sha('f').toString('hex'));
  t.is(err.retryAfterMs, deletedAt + m.BLOCKS_SINCE_SKEW_MS + 1000 - clock.t, 'retry once a fresh start is past the deletion + allowance');
  await fails(t, commitF(), 'CAIRN_UNAVAILABLE');
  t.deepEqual(await snapshot(svc.kv), before, 'the refused commits changed nothing');
  const session = (await client.createUploadSession({ tenant: 'acme', path: '/up', mtime_ms: 1, author_device: 'd' })).session!;
  const afterSession = await snapshot(svc.kv);
  await fails(t, client.appendUploadChunks({ tenant: 'acme', session_id: session.session_id, offset: 0, chunks: chunkRefs('p'), blocks_since_ms: began }), 'CAIRN_UNAVAILABLE');
  t.deepEqual(await snapshot(svc.kv), afterSession, 'the refused pin changed nothing');
  await commit(client, '/photo', ['photo']);
  const afterPhoto = await snapshot(svc.kv);
  const derivatives = [{ name: 'thumb', chunks: chunkRefs('d'), size: 100, width: 1, height: 1, format: 'webp' }];
  await fails(t, client.setVersionMedia({ tenant: 'acme', path: '/photo', version: 1, media_json: '{}', derivatives, blocks_since_ms: began }), 'CAIRN_UNAVAILABLE');
  t.deepEqual(await snapshot(svc.kv), afterPhoto, 'the refused derivatives changed nothing');
  await fails(t, commitF(-1), 'CAIRN_INVALID_ARGUMENT');
  // Writers that began after the deletion (+ the clock allowance) wrote the blocks afresh.
  const fresh = deletedAt + m.BLOCKS_SINCE_SKEW_MS + 1;
  await commitF(fresh);
  await client.appendUploadChunks({ tenant: 'acme', session_id: session.session_id, offset: 0, chunks: chunkRefs('p'), blocks_since_ms: fresh });
  const v = await client.setVersionMedia({ tenant: 'acme', path: '/photo', version: 1, media_json: '{}', derivatives, blocks_since_ms: fresh });
  t.is(v.file?.derivatives.length, 1);
});

test('gateways refuse to commit an upload whose first block write is older than the tombstone retention allows', async (t) => {
  const { checkBlocksAge } = await import('../../src/gateway/files.js');
  const { MAX_UPLOAD_BLOCKS_AGE_MS, DEFAULT_ORPHAN_TOMBSTONE_MS } = await import('../../src/metadata/index.js');
  t.true(MAX_UPLOAD_BLOCKS_AGE_MS + m.BLOCKS_SINCE_SKEW_MS < DEFAULT_ORPHAN_TOMBSTONE_MS, 'a tombstone outlives every upload that may commit');
  const now = 1_700_000_000_000;
  t.notThrows(() => checkBlocksAge(now - MAX_UPLOAD_BLOCKS_AGE_MS, now));
  const err = t.throws(() => checkBlocksAge(now - MAX_UPLOAD_BLOCKS_AGE_MS - 1, now));
  t.true(isCairnError(err, 'CAIRN_UNAVAILABLE'));
  t.regex(err.message, /upload the file again/);
});
