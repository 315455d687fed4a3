// The metadata model's behaviour on any KV backend (factory-driven, like the KV conformance
// suite): commits and conflicts, the tree and bounded moves, delete/restore, retention and refs,
// GC's delete queue, upload sessions, the change feed, shares, and bad input changing nothing.
import { createHash } from 'node:crypto';
import test, { type ExecutionContext } from 'ava';
import { isCairnError, type CairnError, type ErrorCode } from '../../src/common/errors.js';
import type { Kv, KvTx } from '../../src/metadata/kv/index.js';
import * as m from '../../src/metadata/model/index.js';
import { under } from '../../src/metadata/model/keys.js';
import { enqueueJob, leaseJobs, queueDepth } from '../../src/metadata/model/jobs.js';
import type { KvFactory } from './kv-conformance.js';

const DAY = 24 * 3600 * 1000;
const T = 'acme';

interface Clock {
  t: number;
  now: () => number;
}

function manualClock(start = 1_700_000_000_000): Clock {
  const c: Clock = { t: start, now: () => c.t };
  return c;
}

const sha = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Chunks named by seeds (content "seed", 1000 bytes each unless sized "seed:n"), contiguous. */
function chunks(...seeds: string[]): m.ChunkRecord[] {
  let offset = 0;
  return seeds.map((seed) => {
    const [name = seed, n] = seed.split(':');
    const size = n === undefined ? 1000 : Number(n);
    const c = { plainHash: sha(name), offset, size, address: sha('sealed:' + name), storedSize: size + 28 };
    offset += size;
    return c;
  });
}

function commitInput(path: string, seeds: string[], extra: Partial<m.CommitInput> = {}): m.CommitInput {
  const list = chunks(...seeds);
  return { tenant: T, path, size: list.reduce((s, c) => s + c.size, 0), mtimeMs: 1, authorDevice: 'laptop', chunks: list, ...extra };
}

/** A Kv that counts the writes of the last committed transaction (for "bounded work" checks). */
function countingKv(kv: Kv): Kv & { lastWrites: number } {
  const out = Object.create(kv) as Kv & { lastWrites: number };
  out.lastWrites = 0;
  out.transact = <R>(fn: (tx: KvTx) => Promise<R>) =>
    kv.transact(async (tx) => {
      let writes = 0;
      const counted: KvTx = {
        get: (k) => tx.get(k),
        scan: (r) => tx.scan(r),
        put: (k, v) => {
          writes++;
          tx.put(k, v);
        },
        del: (k) => {
          writes++;
          tx.del(k);
        },
        notify: (c, p) => tx.notify(c, p),
      };
      const result = await fn(counted);
      out.lastWrites = writes;
      return result;
    });
  out.get = (k) => kv.get(k);
  out.scan = (r) => kv.scan(r);
  return out;
}

async function snapshot(kv: Kv): Promise<string[]> {
  return (await kv.scan({})).map(([k, v]) => `${k.toString('hex')}=${v.toString('hex')}`);
}

async function rejects(t: ExecutionContext, p: Promise<unknown>, code: ErrorCode): Promise<Error> {
  const err = await t.throwsAsync(p);
  t.true(isCairnError(err, code), `expected ${code}, got ${String(err)}`);
  return err;
}

async function refsOf(ctx: m.ModelContext, ...seeds: string[]): Promise<Array<number | undefined>> {
  const found = await m.findChunks(ctx, T, seeds.map((s) => sha(s)));
  return seeds.map((s) => found.find((c) => c.plainHash.equals(sha(s)))?.refs);
}

export function modelSuite(name: string, factory: KvFactory): void {
  const open = async (t: ExecutionContext, options: m.ModelOptions = {}): Promise<{ ctx: m.ModelContext; kv: Kv; clock: Clock }> => {
    t.timeout(120_000);
    const fixture = await factory();
    t.teardown(() => fixture.cleanup());
    const clock = manualClock();
    return { ctx: m.createContext(fixture.kv, { clock: clock.now, ...options }), kv: fixture.kv, clock };
  };

  test(`${name}: commits create versions, parents and a readable chunk list`, async (t) => {
    const { ctx } = await open(t);
    const v1 = await m.commitFile(ctx, commitInput('/docs/a/report.txt', ['x', 'y', 'z:500']));
    t.is(v1.version, 1);
    t.is(v1.size, 2500);
    t.deepEqual(v1.contentHash, createHash('sha256').update(Buffer.concat([sha('x'), sha('y'), sha('z')])).digest());
    const v2 = await m.commitFile(ctx, commitInput('/docs/a/report.txt', ['x', 'w'], { baseVersion: 1 }));
    t.is(v2.version, 2);
    t.is(v2.nodeId, v1.nodeId, 'a file keeps its id across versions');
    t.deepEqual((await m.getFile(ctx, T, '/docs/a/report.txt')).chunks.map((c) => c.plainHash), [sha('x'), sha('w')]);
    const old = await m.getFile(ctx, T, '/docs/a/report.txt', 1);
    t.is(old.size, 2500);
    const window = await m.getFile(ctx, T, '/docs/a/report.txt', 1, { fromOffset: 1500, maxChunks: 1 });
    t.deepEqual(window.chunks.map((c) => c.offset), [1000], 'a window starts at the chunk holding the offset');
    t.is(window.chunkCount, 3);
    const folder = await m.statEntry(ctx, T, '/docs/a');
    t.is(folder.kind, 'dir');
    const root = await m.listFolder(ctx, T, '/', { limit: 10 });
    t.deepEqual(root.entries.map((e) => e.path), ['/docs']);
    const feed = await m.listChanges(ctx, T, 0, 100);
    t.deepEqual(feed.changes.map((c) => `${c.revision}:${c.type}:${c.path}`), ['1:mkdir:/docs', '2:mkdir:/docs/a', '3:put:/docs/a/report.txt', '4:put:/docs/a/report.txt']);
  });

  test(`${name}: a large chunk list is stored in pages and read back in windows`, async (t) => {
    const { ctx } = await open(t);
    const seeds = Array.from({ length: 2500 }, (_, i) => `c${i}:100`);
    const v = await m.commitFile(ctx, commitInput('/big.bin', seeds));
    t.is(v.chunkCount, 2500);
    const all = await m.getFile(ctx, T, '/big.bin');
    t.is(all.chunks.length, 2500);
    t.true(all.chunks.every((c, i) => c.offset === i * 100 && c.plainHash.equals(sha(`c${i}`))));
    const mid = await m.getFile(ctx, T, '/big.bin', 0, { fromOffset: 150_050, maxChunks: 3 });
    t.deepEqual(mid.chunks.map((c) => c.offset), [150_000, 150_100, 150_200]);
  });

  test(`${name}: a small chunk list lives in the version header; one past the limit gets a page of its own`, async (t) => {
    const { ctx, kv } = await open(t);
    await m.setPolicy(ctx, T, { keepLast: 1 });
    const pageKeys = async (): Promise<number> => (await kv.scan({ gte: Buffer.from('w\0'), lt: Buffer.from('w\x01') })).length;
    const small = Array.from({ length: m.INLINE_CHUNKS }, (_, i) => `s${i}:10`);
    const large = Array.from({ length: m.INLINE_CHUNKS + 1 }, (_, i) => `l${i}:10`);
    await m.commitFile(ctx, commitInput('/small', small));
    t.is(await pageKeys(), 0, 'inline: no page record');
    await m.commitFile(ctx, commitInput('/large', large));
    t.is(await pageKeys(), 1);
    for (const [path, seeds] of [['/small', small], ['/large', large]] as const) {
      const all = await m.getFile(ctx, T, path);
      t.deepEqual(all.chunks.map((c) => c.plainHash.toString('hex')), seeds.map((s) => sha(s.split(':')[0]!).toString('hex')));
      const window = await m.getFile(ctx, T, path, 0, { fromOffset: 35, maxChunks: 2 });
      t.deepEqual(window.chunks.map((c) => c.offset), [30, 40]);
    }
    // Replacing both prunes the old versions (keep last 1): their refs go, and so does the page.
    await m.commitFile(ctx, commitInput('/small', ['s-new']));
    await m.commitFile(ctx, commitInput('/large', ['l-new']));
    t.is(await pageKeys(), 0);
    t.deepEqual(await refsOf(ctx, 's0', `s${m.INLINE_CHUNKS - 1}`, 'l0', `l${m.INLINE_CHUNKS}`, 's-new', 'l-new'), [0, 0, 0, 0, 1, 1]);
  });

  test(`${name}: a stale base version is CAIRN_CONFLICT with the current version, and changes nothing`, async (t) => {
    const { ctx, kv } = await open(t);
    await m.commitFile(ctx, commitInput('/f', ['a']));
    await m.commitFile(ctx, commitInput('/f', ['b']));
    const before = await snapshot(kv);
    const err = await rejects(t, m.commitFile(ctx, commitInput('/f', ['c'], { baseVersion: 1 })), 'CAIRN_CONFLICT');
    t.is((err as { metadata?: Record<string, string> }).metadata?.['current_version'], '2');
    await rejects(t, m.commitFile(ctx, commitInput('/f', ['c'], { baseVersion: 0 })), 'CAIRN_CONFLICT');
    t.deepEqual(await snapshot(kv), before);
    t.is((await m.commitFile(ctx, commitInput('/new', ['c'], { baseVersion: 0 }))).version, 1, 'base 0: must not exist');
  });

  test(`${name}: concurrent commits on one base: exactly one wins, the rest conflict; revisions stay dense`, async (t) => {
    const { ctx } = await open(t);
    await m.commitFile(ctx, commitInput('/race', ['0']));
    const results = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => m.commitFile(ctx, commitInput('/race', [`r${i}`], { baseVersion: 1 }))));
    t.is(results.filter((r) => r.status === 'fulfilled').length, 1);
    t.true(results.every((r) => r.status === 'fulfilled' || isCairnError(r.reason, 'CAIRN_CONFLICT')));
    const free = await Promise.all(Array.from({ length: 6 }, (_, i) => m.commitFile(ctx, commitInput(`/many/${i % 2}`, [`m${i}`]))));
    const feed = await m.listChanges(ctx, T, 0, 1000);
    t.deepEqual(feed.changes.map((c) => c.revision), feed.changes.map((_, i) => i + 1), 'one event per revision, no gaps');
    t.deepEqual(new Set(free.map((v) => `${v.path}@${v.version}`)).size, 6);
  });

  test(`${name}: a busy tenant's concurrent writers all commit (none runs out of conflict retries)`, async (t) => {
    const fixture = await open(t);
    // Count transaction attempts: writers of one tenant must queue, not collide and retry.
    let calls = 0;
    let attempts = 0;
    const kv = Object.create(fixture.kv) as Kv;
    kv.transact = <R>(fn: (tx: KvTx) => Promise<R>) => {
      calls++;
      return fixture.kv.transact((tx) => {
        attempts++;
        return fn(tx);
      });
    };
    kv.get = (k) => fixture.kv.get(k);
    kv.scan = (r) => fixture.kv.scan(r);
    const ctx = m.createContext(kv, { clock: fixture.clock.now });
    const writers = Array.from({ length: 48 }, async (_, w) => {
      for (let i = 0; i < 4; i++) await m.commitFile(ctx, commitInput(`/busy/w${w}/f${i}`, [`b${w}-${i}`]));
    });
    // Failing operations batched with others change nothing and keep their own error.
    const bad = Array.from({ length: 8 }, () => m.commitFile(ctx, commitInput('/busy', ['x'], { baseVersion: 5 })));
    const results = await Promise.allSettled([...writers, ...bad]);
    t.deepEqual(results.slice(0, 48).filter((r) => r.status === 'rejected'), []);
    t.true(results.slice(48).every((r) => r.status === 'rejected' && (isCairnError(r.reason, 'CAIRN_CONFLICT') || isCairnError(r.reason, 'CAIRN_FAILED_PRECONDITION'))));
    const feed = await m.listChanges(ctx, T, 0, 1000);
    t.is(feed.changes.filter((c) => c.type === 'put').length, 48 * 4);
    t.deepEqual(feed.changes.map((c) => c.revision), feed.changes.map((_, i) => i + 1));
    t.is((await m.listFolder(ctx, T, '/busy', { limit: 1000 })).entries.length, 48);
    t.is(attempts, calls, `${attempts - calls} transaction retries`);
    t.true(calls < 48 * 4, 'concurrent writes were batched');
  });

  // Regression: on PostgreSQL, 64 committers in 64 tenants lost commits to CAIRN_TX_CONFLICT
  // after 16 retries, because SERIALIZABLE locks B-tree pages shared by neighbouring tenants' keys.
  test(`${name}: writers of many tenants commit side by side without conflict retries`, async (t) => {
    const fixture = await open(t);
    let calls = 0;
    let attempts = 0;
    const kv = Object.create(fixture.kv) as Kv;
    kv.transact = <R>(fn: (tx: KvTx) => Promise<R>) => {
      calls++;
      return fixture.kv.transact((tx) => {
        attempts++;
        return fn(tx);
      });
    };
    kv.get = (k) => fixture.kv.get(k);
    kv.scan = (r) => fixture.kv.scan(r);
    const ctx = m.createContext(kv, { clock: fixture.clock.now });
    const tenants = Array.from({ length: 32 }, (_, w) => `acme-t${String(w).padStart(2, '0')}`);
    const results = await Promise.allSettled(tenants.map(async (tenant, w) => {
      for (let i = 0; i < 6; i++) await m.commitFile(ctx, { ...commitInput(`/many/w${w}/f${i}`, [`${tenant}-${i}`]), tenant });
    }));
    t.deepEqual(results.filter((r) => r.status === 'rejected'), []);
    t.is(attempts, calls, `${attempts - calls} transaction retries`);
    for (const tenant of tenants) {
      const feed = await m.listChanges(ctx, tenant, 0, 1000);
      t.is(feed.changes.filter((c) => c.type === 'put').length, 6, tenant);
      t.deepEqual(feed.changes.map((c) => c.revision), feed.changes.map((_, i) => i + 1), tenant);
    }
  });

  test(`${name}: bad input gets a clear error and changes nothing`, async (t) => {
    const { ctx, kv } = await open(t);
    await m.commitFile(ctx, commitInput('/ok', ['a']));
    await m.makeFolder(ctx, T, '/dir');
    const before = await snapshot(kv);
    await rejects(t, m.commitFile(ctx, commitInput('/a/../b', ['a'])), 'CAIRN_INVALID_PATH');
    await rejects(t, m.commitFile(ctx, commitInput('relative', ['a'])), 'CAIRN_INVALID_PATH');
    await rejects(t, m.commitFile(ctx, commitInput('/nul\u0000', ['a'])), 'CAIRN_INVALID_PATH');
    await rejects(t, m.commitFile(ctx, { ...commitInput('/x', ['a']), tenant: 'Bad Tenant' }), 'CAIRN_INVALID_ARGUMENT');
    await rejects(t, m.commitFile(ctx, { ...commitInput('/x', ['a', 'b']), size: 5 }), 'CAIRN_INVALID_ARGUMENT');
    const gap = chunks('a', 'b');
    await rejects(t, m.commitFile(ctx, { ...commitInput('/x', ['a', 'b']), chunks: [gap[0]!, { ...gap[1]!, offset: 999 }] }), 'CAIRN_INVALID_ARGUMENT');
    await rejects(t, m.commitFile(ctx, { ...commitInput('/x', ['a']), chunks: [{ ...chunks('a')[0]!, plainHash: Buffer.alloc(5) }] }), 'CAIRN_INVALID_HASH');
    await rejects(t, m.commitFile(ctx, { ...commitInput('/x', ['a']), chunks: [{ ...chunks('unknown')[0]!, address: Buffer.alloc(0) }] }), 'CAIRN_FAILED_PRECONDITION');
    await rejects(t, m.commitFile(m.createContext(kv, { maxFileBytes: 10 }), commitInput('/x', ['a'])), 'CAIRN_FILE_TOO_LARGE');
    await rejects(t, m.commitFile(ctx, commitInput('/dir', ['a'])), 'CAIRN_FAILED_PRECONDITION');
    await rejects(t, m.commitFile(ctx, commitInput('/ok/inside', ['a'])), 'CAIRN_FAILED_PRECONDITION');
    await rejects(t, m.getFile(ctx, T, '/ok', 9), 'CAIRN_NOT_FOUND');
    await rejects(t, m.getFile(ctx, T, '/ok', -1), 'CAIRN_INVALID_ARGUMENT');
    await rejects(t, m.getFile(ctx, T, '/missing'), 'CAIRN_NOT_FOUND');
    await rejects(t, m.moveEntry(ctx, T, '/missing', '/elsewhere'), 'CAIRN_NOT_FOUND');
    await rejects(t, m.deleteEntry(ctx, T, '/ok', 7), 'CAIRN_CONFLICT');
    await rejects(t, m.restoreEntry(ctx, T, '/ok', 5), 'CAIRN_NOT_FOUND');
    await rejects(t, m.setPolicy(ctx, T, { keepLast: 0 }), 'CAIRN_INVALID_ARGUMENT');
    await rejects(t, m.grantShare(ctx, T, '/ok', 'nobody', 'read'), 'CAIRN_NOT_FOUND');
    await rejects(t, m.grantShare(ctx, T, '/ok', 'bad user!', 'read'), 'CAIRN_INVALID_ARGUMENT');
    await rejects(t, m.createLink(ctx, T, '/ok', 'read', ctx.now() - 1), 'CAIRN_INVALID_ARGUMENT');
    await rejects(t, m.appendChunks(ctx, T, 'us_nope', 0, []), 'CAIRN_INVALID_ARGUMENT');
    await rejects(t, m.getSession(ctx, T, 'us_' + 'A'.repeat(22)), 'CAIRN_NOT_FOUND');
    t.deepEqual(await snapshot(kv), before);
  });

  test(`${name}: moving a folder with many descendants rewrites a bounded number of keys`, async (t) => {
    const fixture = await open(t);
    const counting = countingKv(fixture.kv);
    const ctx = m.createContext(counting, { clock: fixture.clock.now });
    const files: string[] = [];
    for (let i = 0; i < 120; i++) files.push(`/projects/alpha/s${i % 4}/d${i % 3}/f${i}.txt`);
    for (const [i, f] of files.entries()) await m.commitFile(ctx, commitInput(f, [`f${i}`]));
    await m.commitFile(ctx, commitInput('/archive/existing', ['e']));
    const moved = await m.moveEntry(ctx, T, '/projects/alpha', '/archive/2024/alpha');
    t.log(`move wrote ${counting.lastWrites}`);
    t.true(counting.lastWrites <= 12, `the move wrote ${counting.lastWrites} keys`);
    t.is(moved.path, '/archive/2024/alpha');
    for (const [i, f] of files.entries()) {
      if (i % 17 !== 0) continue;
      const at = f.replace('/projects/alpha', '/archive/2024/alpha');
      t.deepEqual((await m.getFile(ctx, T, at)).chunks[0]!.plainHash, sha(`f${i}`));
      await rejects(t, m.getFile(ctx, T, f), 'CAIRN_NOT_FOUND');
    }
    await rejects(t, m.moveEntry(ctx, T, '/archive/2024', '/archive/2024/alpha/inner'), 'CAIRN_INVALID_ARGUMENT');
    await rejects(t, m.moveEntry(ctx, T, '/archive/2024/alpha', '/archive/existing'), 'CAIRN_ALREADY_EXISTS');
    const renamed = await m.moveEntry(ctx, T, '/archive/existing', '/archive/renamed.txt', 1);
    t.is(renamed.version, 1);
    const last = (await m.listChanges(ctx, T, 0, 10_000)).changes.at(-1)!;
    t.like(last, { type: 'move', path: '/archive/renamed.txt', fromPath: '/archive/existing', kind: 'file' });
  });

  test(`${name}: folder listing pages in name order, forward and backward, skipping tombstones`, async (t) => {
    const { ctx } = await open(t);
    for (let i = 0; i < 25; i++) await m.commitFile(ctx, commitInput(`/list/n${String(i).padStart(2, '0')}`, [`l${i}`]));
    for (const i of [3, 4, 5, 6]) await m.deleteEntry(ctx, T, `/list/n${String(i).padStart(2, '0')}`);
    const seen: string[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await m.listFolder(ctx, T, '/list', { after, limit: 5 });
      seen.push(...page.entries.map((e) => e.path.slice(6)));
      if (page.resume === undefined) break;
      after = page.resume;
    }
    t.deepEqual(seen, Array.from({ length: 25 }, (_, i) => `n${String(i).padStart(2, '0')}`).filter((n) => !['n03', 'n04', 'n05', 'n06'].includes(n)));
    const back = await m.listFolder(ctx, T, '/list', { before: 'n10', limit: 4 });
    t.deepEqual(back.entries.map((e) => e.path.slice(6)), ['n02', 'n07', 'n08', 'n09']);
    t.not(back.resume, undefined, 'there is more before the page');
    const withDeleted = await m.listFolder(ctx, T, '/list', { after: 'n02', limit: 2, includeDeleted: true });
    t.deepEqual(withDeleted.entries.map((e) => [e.path.slice(6), e.deletedMs !== undefined]), [['n03', true], ['n04', true]]);
  });

  test(`${name}: delete leaves a restorable tombstone; restore brings back files and folders`, async (t) => {
    const { ctx } = await open(t);
    await m.commitFile(ctx, commitInput('/d/file', ['one']));
    await m.commitFile(ctx, commitInput('/d/file', ['two']));
    const tomb = await m.deleteEntry(ctx, T, '/d/file', 2);
    t.is(tomb.version, 3);
    t.not(tomb.deletedMs, undefined);
    await rejects(t, m.getFile(ctx, T, '/d/file'), 'CAIRN_NOT_FOUND');
    t.is((await m.getFile(ctx, T, '/d/file', 1)).size, 1000, 'old versions of a deleted file stay readable');
    t.deepEqual((await m.listVersions(ctx, T, '/d/file', { limit: 10 })).versions.map((v) => [v.version, v.deleted]), [[3, true], [2, false], [1, false]]);
    await rejects(t, m.statEntry(ctx, T, '/d/file'), 'CAIRN_NOT_FOUND');
    t.true((await m.statEntry(ctx, T, '/d/file', true)).deletedMs !== undefined);
    const back = await m.restoreEntry(ctx, T, '/d/file');
    t.is(back.version, 4);
    const v4 = await m.getFile(ctx, T, '/d/file');
    t.deepEqual(v4.chunks.map((c) => c.plainHash), [sha('two')]);
    t.is(v4.restoredFrom, 2);
    const v5 = await m.restoreEntry(ctx, T, '/d/file', 1);
    t.deepEqual((await m.getFile(ctx, T, '/d/file', v5.version)).chunks.map((c) => c.plainHash), [sha('one')]);
    t.deepEqual(await refsOf(ctx, 'one', 'two'), [2, 2], 'a restore takes refs like a commit');

    await m.commitFile(ctx, commitInput('/d/sub/deep', ['deep']));
    await m.deleteEntry(ctx, T, '/d');
    await rejects(t, m.getFile(ctx, T, '/d/sub/deep'), 'CAIRN_NOT_FOUND');
    t.deepEqual((await m.listFolder(ctx, T, '/', { limit: 10 })).entries, []);
    await m.restoreEntry(ctx, T, '/d/sub/deep');
    t.is((await m.getFile(ctx, T, '/d/sub/deep')).version, 1, 'restoring inside a deleted folder undeletes the folders on the way');
    t.is((await m.getFile(ctx, T, '/d/file')).version, v5.version);
    await m.deleteEntry(ctx, T, '/d/sub');
    await m.commitFile(ctx, commitInput('/d/sub', ['now a file']));
    t.is((await m.statEntry(ctx, T, '/d/sub')).kind, 'file', 'a new entry displaces a tombstone of another kind');
  });

  test(`${name}: keep-last retention prunes at commit and releases refs exactly once`, async (t) => {
    const { ctx, kv } = await open(t);
    await m.setPolicy(ctx, T, { keepLast: 2 });
    for (let i = 1; i <= 5; i++) await m.commitFile(ctx, commitInput('/r', ['shared', `own${i}`]));
    t.deepEqual((await m.listVersions(ctx, T, '/r', { limit: 10 })).versions.map((v) => v.version), [5, 4]);
    t.deepEqual(await refsOf(ctx, 'shared', 'own1', 'own2', 'own3', 'own4', 'own5'), [2, 0, 0, 0, 1, 1]);
    await rejects(t, m.getFile(ctx, T, '/r', 3), 'CAIRN_NOT_FOUND');
    // Sweeps and further deletes must not release the pruned versions' refs again.
    await m.runMaintenance(ctx);
    t.deepEqual(await refsOf(ctx, 'shared', 'own4', 'own5'), [2, 1, 1]);
    t.not(await m.nextDeletionDue(ctx), undefined, 'unreferenced chunks wait in the delete queue');
    await m.deleteEntry(ctx, T, '/r');
    t.deepEqual(await refsOf(ctx, 'shared', 'own4', 'own5'), [1, 0, 1], 'the tombstone pushed v4 out of the last two');
    const before = await snapshot(kv);
    await m.runMaintenance(ctx);
    t.deepEqual(await snapshot(kv), before, 'nothing is due yet');
  });

  test(`${name}: keep-days retention and the trash purge run in the sweep`, async (t) => {
    const { ctx, clock } = await open(t);
    await m.setPolicy(ctx, T, { keepDays: 2, keepLast: 2, trashDays: 3 });
    await m.commitFile(ctx, commitInput('/k', ['k1']));
    await m.commitFile(ctx, commitInput('/k', ['k2']));
    await m.commitFile(ctx, commitInput('/k', ['k3']));
    t.deepEqual((await m.listVersions(ctx, T, '/k', { limit: 10 })).versions.map((v) => v.version), [3, 2, 1], 'keep-days keeps v1 for now');
    clock.t += 1 * DAY;
    await m.runMaintenance(ctx);
    t.is((await m.listVersions(ctx, T, '/k', { limit: 10 })).versions.length, 3);
    clock.t += 1.5 * DAY;
    const stats = await m.runMaintenance(ctx);
    t.is(stats.versionsPruned, 1);
    t.deepEqual((await m.listVersions(ctx, T, '/k', { limit: 10 })).versions.map((v) => v.version), [3, 2], 'keep-last still keeps v2');
    t.deepEqual(await refsOf(ctx, 'k1', 'k2', 'k3'), [0, 1, 1]);

    for (let i = 0; i < 70; i++) await m.commitFile(ctx, commitInput(`/trash/sub${i % 3}/f${i}`, [`t${i}`, 'k3']));
    await m.grantShare(ctx, T, '/k', (await m.putUser(ctx, T, 'bob')).user, 'read');
    await m.deleteEntry(ctx, T, '/trash');
    await m.deleteEntry(ctx, T, '/k');
    clock.t += 2 * DAY;
    t.is((await m.runMaintenance(ctx)).entriesPurged, 0, 'still inside the trash window');
    clock.t += 2 * DAY;
    t.is((await m.runMaintenance(ctx)).entriesPurged, 2);
    await rejects(t, m.restoreEntry(ctx, T, '/trash/sub0/f0'), 'CAIRN_NOT_FOUND');
    await rejects(t, m.restoreEntry(ctx, T, '/k'), 'CAIRN_NOT_FOUND');
    t.deepEqual(await refsOf(ctx, 'k2', 'k3', 't0', 't69'), [0, 0, 0, 0], 'purging released every ref');
    t.deepEqual((await m.listSharedWith(ctx, T, 'bob')).grants, []);
    t.deepEqual((await m.listFolder(ctx, T, '/', { limit: 10, includeDeleted: true })).entries, []);
  });

  test(`${name}: zero-ref chunks wait out the grace period, then GC claims and removes them`, async (t) => {
    const { ctx, clock } = await open(t, { defaultPolicy: { keepLast: 1 } });
    await m.commitFile(ctx, commitInput('/g', ['gone', 'kept']));
    await m.commitFile(ctx, commitInput('/g', ['kept', 'later']));
    t.deepEqual(await refsOf(ctx, 'gone'), [0]);
    t.deepEqual(await m.claimDeletions(ctx, 10), [], 'nothing is due inside the grace period');
    clock.t += 11 * 60 * 1000;
    const claimed = await m.claimDeletions(ctx, 10);
    t.deepEqual(claimed.map((c) => c.plainHash), [sha('gone')]);
    t.deepEqual(claimed[0]!.address, sha('sealed:gone'));
    t.true((await m.findChunks(ctx, T, [sha('gone')]))[0]?.beingDeleted, 'a claimed chunk is reported as being deleted, not as missing (a re-put could race the block deletion)');
    await rejects(t, m.commitFile(ctx, commitInput('/again', ['gone'])), 'CAIRN_UNAVAILABLE');
    t.is(await m.finishDeletions(ctx, claimed), 1);
    t.is((await m.commitFile(ctx, commitInput('/again', ['gone']))).version, 1, 'after GC the chunk is simply new again');

    await m.commitFile(ctx, commitInput('/g', ['fresh']));
    t.deepEqual(await refsOf(ctx, 'kept', 'later'), [0, 0]);
    await m.commitFile(ctx, commitInput('/h', ['kept']));
    clock.t += 11 * 60 * 1000;
    t.deepEqual((await m.claimDeletions(ctx, 10)).map((c) => c.plainHash), [sha('later')], 'a chunk referenced again during its grace period is not deleted');
    clock.t += 11 * 60 * 1000;
    t.deepEqual((await m.claimDeletions(ctx, 10)).map((c) => c.plainHash), [sha('later')], 'an unfinished claim is handed out again after its lease');
  });

  test(`${name}: upload sessions resume from their offset, pin chunks, commit once, and expire`, async (t) => {
    const { ctx, clock } = await open(t);
    const parts = chunks('s1', 's2', 's3', 's4');
    const s = await m.createSession(ctx, { tenant: T, path: '/up/file.bin', expectedSize: 4000, mtimeMs: 5, authorDevice: 'phone' });
    t.regex(s.id, /^us_/);
    await m.appendChunks(ctx, T, s.id, 0, parts.slice(0, 2));
    const resumed = await m.getSession(ctx, T, s.id);
    t.is(resumed.offset, 2000);
    const err = await rejects(t, m.appendChunks(ctx, T, s.id, 1000, parts.slice(1, 2)), 'CAIRN_FAILED_PRECONDITION');
    t.is((err as { metadata?: Record<string, string> }).metadata?.['offset'], '2000');
    await rejects(t, m.commitSession(ctx, T, s.id), 'CAIRN_SIZE_MISMATCH');
    const pinned = await m.findChunks(ctx, T, [sha('s1')]);
    t.like(pinned[0], { refs: 0, pins: 1 });
    await m.appendChunks(ctx, T, s.id, 2000, parts.slice(2));
    const v = await m.commitSession(ctx, T, s.id);
    t.is(v.size, 4000);
    t.deepEqual(v.chunks.map((c) => c.plainHash), parts.map((c) => c.plainHash));
    t.like((await m.findChunks(ctx, T, [sha('s1')]))[0], { refs: 1, pins: 0 });
    await rejects(t, m.commitSession(ctx, T, s.id), 'CAIRN_NOT_FOUND');

    const stale = await m.createSession(ctx, { tenant: T, path: '/up/other', mtimeMs: 0, authorDevice: '' });
    await m.appendChunks(ctx, T, stale.id, 0, chunks('p1', 'p1'));
    t.like((await m.findChunks(ctx, T, [sha('p1')]))[0], { pins: 1 }, 'a session pins a chunk once');
    const aborted = await m.createSession(ctx, { tenant: T, path: '/up/aborted', mtimeMs: 0, authorDevice: '' });
    await m.appendChunks(ctx, T, aborted.id, 0, chunks('p2'));
    await m.abortSession(ctx, T, aborted.id);
    t.like((await m.findChunks(ctx, T, [sha('p2')]))[0], { pins: 0 });
    clock.t += 7 * DAY + 1;
    await rejects(t, m.getSession(ctx, T, stale.id), 'CAIRN_NOT_FOUND');
    t.is((await m.runMaintenance(ctx)).sessionsExpired, 1);
    t.like((await m.findChunks(ctx, T, [sha('p1')]))[0], { pins: 0, refs: 0 });
    t.not(await m.nextDeletionDue(ctx), undefined);

    await m.commitFile(ctx, commitInput('/up/base', ['b']));
    await rejects(t, m.createSession(ctx, { tenant: T, path: '/up/base', baseVersion: 0, mtimeMs: 0, authorDevice: '' }), 'CAIRN_CONFLICT');
    const raced = await m.createSession(ctx, { tenant: T, path: '/up/base', baseVersion: 1, mtimeMs: 0, authorDevice: '' });
    await m.appendChunks(ctx, T, raced.id, 0, chunks('b2'));
    await m.commitFile(ctx, commitInput('/up/base', ['b3']));
    await rejects(t, m.commitSession(ctx, T, raced.id), 'CAIRN_CONFLICT');
    t.like((await m.findChunks(ctx, T, [sha('b2')]))[0], { pins: 1 }, 'a failed commit keeps the session and its pins');
  });

  test(`${name}: the change feed is ordered, resumes from a cursor, and expires old cursors`, async (t) => {
    const { ctx, clock } = await open(t, { changeRetentionMs: DAY });
    await m.commitFile(ctx, commitInput('/c/1', ['a']));
    await m.moveEntry(ctx, T, '/c/1', '/c/2');
    await m.deleteEntry(ctx, T, '/c/2');
    const all = await m.listChanges(ctx, T, 0, 100);
    t.deepEqual(all.changes.map((c) => c.type), ['mkdir', 'put', 'move', 'delete']);
    const part = await m.listChanges(ctx, T, 0, 2);
    t.is(part.last, 2);
    t.is(part.current, 4);
    t.deepEqual((await m.listChanges(ctx, T, part.last, 100)).changes.map((c) => c.revision), [3, 4]);
    await rejects(t, m.listChanges(ctx, T, 99, 10), 'CAIRN_INVALID_CURSOR');
    clock.t += 2 * DAY;
    await m.commitFile(ctx, commitInput('/c/3', ['b']));
    t.is((await m.runMaintenance(ctx)).changesTrimmed, 4);
    const err = await rejects(t, m.listChanges(ctx, T, 2, 10), 'CAIRN_CURSOR_EXPIRED');
    t.is((err as { metadata?: Record<string, string> }).metadata?.['current_revision'], '5');
    t.deepEqual((await m.listChanges(ctx, T, 4, 10)).changes.map((c) => c.path), ['/c/3'], 'a cursor at the floor misses nothing');
  });

  test(`${name}: shares are inherited down folders; links expire, follow moves and can be revoked`, async (t) => {
    const { ctx, clock } = await open(t);
    await m.putUser(ctx, T, 'bob', 'Bob');
    await m.commitFile(ctx, commitInput('/team/plan.txt', ['p']));
    await m.grantShare(ctx, T, '/team', 'bob', 'read', 'alice');
    t.is(await m.checkAccess(ctx, T, '/team/plan.txt', 'bob'), 'read');
    await m.grantShare(ctx, T, '/team/plan.txt', 'bob', 'write');
    t.is(await m.checkAccess(ctx, T, '/team/plan.txt', 'bob'), 'write');
    t.is(await m.checkAccess(ctx, T, '/team', 'bob'), 'read');
    t.deepEqual((await m.listSharedWith(ctx, T, 'bob')).grants.map((g) => `${g.path}:${g.permission}`).sort(), ['/team/plan.txt:write', '/team:read']);
    await m.revokeShare(ctx, T, '/team', 'bob');
    t.is(await m.checkAccess(ctx, T, '/team', 'bob'), 'none');
    await rejects(t, m.revokeShare(ctx, T, '/team', 'bob'), 'CAIRN_NOT_FOUND');

    const link = await m.createLink(ctx, T, '/team/plan.txt', 'read', clock.t + 1000);
    t.regex(link.token, /^cl_/);
    await m.moveEntry(ctx, T, '/team', '/crew');
    t.like(await m.resolveLink(ctx, link.token), { tenant: T, path: '/crew/plan.txt', permission: 'read' });
    t.deepEqual((await m.listLinks(ctx, T, '/crew/plan.txt')).map((l) => l.linkId), [link.linkId]);
    clock.t += 1001;
    await rejects(t, m.resolveLink(ctx, link.token), 'CAIRN_NOT_FOUND');
    const forever = await m.createLink(ctx, T, '/crew', 'write', 0);
    await m.revokeLink(ctx, T, '/crew', forever.linkId);
    await rejects(t, m.resolveLink(ctx, forever.token), 'CAIRN_NOT_FOUND');
    const other = await m.createLink(ctx, T, '/crew', 'read', 0);
    await m.deleteEntry(ctx, T, '/crew');
    await rejects(t, m.resolveLink(ctx, other.token), 'CAIRN_NOT_FOUND');
    await rejects(t, m.resolveLink(ctx, 'cl_' + 'x'.repeat(32)), 'CAIRN_NOT_FOUND');
    t.deepEqual((await m.listChanges(ctx, T, 0, 100)).changes.filter((c) => c.user === 'bob').map((c) => c.type), ['share', 'share', 'unshare']);
  });

  test(`${name}: the commit hook enqueues a job in the commit's transaction`, async (t) => {
    const fixture = await open(t);
    const hook: m.CommitHook = async (tx, file) => {
      if (file.path.endsWith('.jpg')) await enqueueJob(tx, { tenant: file.tenant, kind: 'media.thumb', payload: JSON.stringify({ node: file.nodeId, v: file.version }) });
    };
    const ctx = m.createContext(fixture.kv, { clock: fixture.clock.now, onCommit: hook });
    await m.commitFile(ctx, commitInput('/p.jpg', ['img']));
    await m.commitFile(ctx, commitInput('/notes.txt', ['txt']));
    await rejects(t, m.commitFile(ctx, commitInput('/p.jpg', ['img2'], { baseVersion: 0 })), 'CAIRN_CONFLICT');
    t.like((await queueDepth(fixture.kv))['media.thumb'], { ready: 1 }, 'one job: the conflicting commit enqueued nothing');
  });

  test(`${name}: a commit with a media kind enqueues one "media" job in its transaction; workers read the version by file id`, async (t) => {
    const { ctx, kv } = await open(t);
    const v1 = await m.commitFile(ctx, commitInput('/photos/a.jpg', ['img1'], { mediaKind: 'image/jpeg' }));
    await m.commitFile(ctx, commitInput('/notes.txt', ['txt']));
    await rejects(t, m.commitFile(ctx, commitInput('/photos/a.jpg', ['img2'], { baseVersion: 0, mediaKind: 'image/jpeg' })), 'CAIRN_CONFLICT');
    const before = await snapshot(kv);
    await rejects(t, m.commitFile(ctx, commitInput('/photos/b.jpg', ['img3'], { mediaKind: 'image jpeg' })), 'CAIRN_INVALID_ARGUMENT');
    await rejects(t, m.commitFile(ctx, commitInput('/photos/b.jpg', ['img3'], { mediaKind: 'x'.repeat(129) })), 'CAIRN_INVALID_ARGUMENT');
    t.deepEqual(await snapshot(kv), before, 'a bad media kind changes nothing');
    t.like((await queueDepth(kv))[m.MEDIA_JOB_KIND], { ready: 1 }, 'no job without its commit, none for the conflict');
    const session = await m.createSession(ctx, { tenant: T, path: '/photos/c.png', mtimeMs: 1, authorDevice: 'phone' });
    await m.appendChunks(ctx, T, session.id, 0, chunks('png'));
    await m.commitSession(ctx, T, session.id, { mediaKind: 'image/png' });
    await m.moveEntry(ctx, T, '/photos/a.jpg', '/archive/a.jpg');
    const leased = await leaseJobs(kv, { kinds: [m.MEDIA_JOB_KIND], worker: 'w', max: 10, leaseMs: 60_000 }, { now: ctx.now });
    const payloads = leased.map((l) => JSON.parse(l.job.payload) as m.MediaJobPayload);
    t.deepEqual(payloads.map((p) => [p.path, p.media_kind, p.version]), [['/photos/a.jpg', 'image/jpeg', 1], ['/photos/c.png', 'image/png', 1]]);
    t.deepEqual(payloads[0], { tenant: T, path: '/photos/a.jpg', file_id: v1.nodeId, version: 1, size: 1000, media_kind: 'image/jpeg' });
    const read = await m.getFileById(ctx, T, payloads[0]!.file_id, payloads[0]!.version);
    t.is(read.path, '/archive/a.jpg', 'read by id after a move');
    t.deepEqual(read.chunks.map((c) => c.plainHash), [sha('img1')]);
    await rejects(t, m.getFileById(ctx, T, 'not-an-id', 1), 'CAIRN_INVALID_ARGUMENT');
    await rejects(t, m.getFileById(ctx, T, v1.nodeId, 7), 'CAIRN_NOT_FOUND');
  });

  test(`${name}: media derivatives hold chunk refs; replacing, pruning and restoring adjust them exactly once`, async (t) => {
    const { ctx, kv } = await open(t);
    await m.setPolicy(ctx, T, { keepLast: 2 });
    const v1 = await m.commitFile(ctx, commitInput('/p.jpg', ['orig']));
    const thumb = (seed: string, name = 'thumb-256'): m.MediaDerivative => ({ name, chunks: chunks(`${seed}:300`), size: 300, width: 256, height: 192, format: 'webp' });
    const set = await m.setVersionMedia(ctx, T, { fileId: v1.nodeId }, 1, '{"width":4000}', [thumb('t1'), thumb('p1', 'poster')]);
    t.deepEqual(set.derivatives.map((d) => d.name), ['poster', 'thumb-256'], 'in name order');
    t.is(set.media, '{"width":4000}');
    t.deepEqual(await refsOf(ctx, 't1', 'p1'), [1, 1]);
    const read = await m.getFile(ctx, T, '/p.jpg');
    t.deepEqual(read.derivatives.find((d) => d.name === 'thumb-256')?.chunks.map((c) => c.address), [sha('sealed:t1')]);
    t.like(read.derivatives[1], { width: 256, height: 192, format: 'webp', size: 300 });
    // Replace: t1 released, t2 taken; p1 kept by both never passes zero.
    await m.setVersionMedia(ctx, T, '/p.jpg', 1, '', [thumb('t2'), thumb('p1', 'poster')]);
    t.deepEqual(await refsOf(ctx, 't1', 't2', 'p1'), [0, 1, 1]);
    const before = await snapshot(kv);
    await rejects(t, m.setVersionMedia(ctx, T, '/p.jpg', 1, '', [thumb('a'), thumb('b')]), 'CAIRN_INVALID_ARGUMENT');
    await rejects(t, m.setVersionMedia(ctx, T, '/p.jpg', 1, '', [{ ...thumb('a'), size: 5 }]), 'CAIRN_INVALID_ARGUMENT');
    await rejects(t, m.setVersionMedia(ctx, T, '/p.jpg', 1, '', [{ ...thumb('a'), name: 'Bad Name' }]), 'CAIRN_INVALID_ARGUMENT');
    await rejects(t, m.setVersionMedia(ctx, T, { fileId: '0123456789abcdef' }, 1, '', []), 'CAIRN_NOT_FOUND');
    t.deepEqual(await snapshot(kv), before, 'refused updates change nothing');
    // A restore carries the derivatives over with refs of its own.
    await m.commitFile(ctx, commitInput('/p.jpg', ['orig2']));
    await m.restoreEntry(ctx, T, '/p.jpg', 1);
    t.deepEqual((await m.getFile(ctx, T, '/p.jpg')).derivatives.map((d) => d.name), ['poster', 'thumb-256']);
    t.deepEqual(await refsOf(ctx, 't2', 'p1'), [1, 1], 'v1 was pruned (keep last 2) as v3 restored it: its refs went, v3 took its own');
    await m.commitFile(ctx, commitInput('/p.jpg', ['orig3']));
    await m.commitFile(ctx, commitInput('/p.jpg', ['orig4']));
    t.deepEqual(await refsOf(ctx, 't2', 'p1'), [0, 0], 'pruning the version released its derivatives');
  });

  test(`${name}: usage counters follow commits, prunes, deletes, restores and GC; a commit over the quota changes nothing`, async (t) => {
    const { ctx, kv, clock } = await open(t);
    const usage = (): Promise<m.TenantUsage> => m.getUsage(kv, T);
    await m.commitFile(ctx, commitInput('/a', ['a1']));
    await m.commitFile(ctx, commitInput('/b', ['b1', 'shared']));
    t.like(await usage(), { versionBytes: 3000, versions: 2, storedBytes: 3 * 1028, chunks: 3, quotaBytes: 0 });
    t.like(await m.setQuota(kv, T, 4500), { quotaBytes: 4500, versionBytes: 3000 });
    await m.commitFile(ctx, commitInput('/c', ['shared']));
    t.like(await usage(), { versionBytes: 4000, versions: 3, storedBytes: 3 * 1028, chunks: 3 }, 'a deduplicated chunk adds no stored bytes');
    const before = await snapshot(kv);
    const err = await rejects(t, m.commitFile(ctx, commitInput('/d', ['d1'])), 'CAIRN_QUOTA_EXCEEDED');
    t.is((err as { metadata?: Record<string, string> }).metadata?.['quota_bytes'], '4500');
    t.deepEqual(await snapshot(kv), before, 'the refused commit changed nothing');
    // Deleting keeps the bytes (the file stays restorable) until retention drops the versions.
    await m.deleteEntry(ctx, T, '/c');
    t.like(await usage(), { versionBytes: 4000, versions: 4 });
    await rejects(t, m.commitFile(ctx, commitInput('/d', ['d1'])), 'CAIRN_QUOTA_EXCEEDED');
    await rejects(t, m.restoreEntry(ctx, T, '/c'), 'CAIRN_QUOTA_EXCEEDED');
    // With keep-last 1, a commit that replaces what it prunes fits; the delete's tombstone prunes too.
    await m.setPolicy(ctx, T, { keepLast: 1 });
    await m.commitFile(ctx, commitInput('/a', ['a2']));
    t.like(await usage(), { versionBytes: 4000, versions: 4, storedBytes: 4 * 1028, chunks: 4 });
    await m.deleteEntry(ctx, T, '/b');
    t.like(await usage(), { versionBytes: 2000, versions: 4 }, 'the tombstone pushed /b v1 out: its bytes are free');
    await m.commitFile(ctx, commitInput('/d', ['d1']));
    t.like(await usage(), { versionBytes: 3000, versions: 5 });
    // A lowered quota blocks growth only: shrinking still works.
    await m.setQuota(kv, T, 1000);
    await rejects(t, m.commitFile(ctx, commitInput('/e', ['e1'])), 'CAIRN_QUOTA_EXCEEDED');
    await m.deleteEntry(ctx, T, '/d');
    t.like(await usage(), { versionBytes: 2000 });
    await m.setQuota(kv, T, 0);
    await m.commitFile(ctx, commitInput('/e', ['e1']));
    // GC removes index entries: stored bytes follow.
    const stored = (await usage()).storedBytes;
    clock.t += 11 * 60 * 1000;
    const claimed = await m.claimDeletions(ctx, 100);
    t.true(claimed.length > 0);
    t.is(await m.finishDeletions(ctx, claimed), claimed.length);
    t.is((await usage()).storedBytes, stored - claimed.reduce((n, c) => n + c.storedSize, 0));
    await rejects(t, m.setQuota(kv, T, -1), 'CAIRN_INVALID_ARGUMENT');
    await rejects(t, m.setQuota(kv, 'Bad Tenant', 10), 'CAIRN_INVALID_ARGUMENT');
  });

  test(`${name}: a released GC claim makes the chunk usable again and due later`, async (t) => {
    const { ctx, clock } = await open(t, { defaultPolicy: { keepLast: 1 } });
    await m.commitFile(ctx, commitInput('/g', ['old']));
    await m.commitFile(ctx, commitInput('/g', ['new']));
    clock.t += 11 * 60 * 1000;
    const claimed = await m.claimDeletions(ctx, 10);
    t.deepEqual(claimed.map((c) => c.plainHash), [sha('old')]);
    t.is(await m.releaseDeletions(ctx, claimed, 60_000), 1);
    t.false((await m.findChunks(ctx, T, [sha('old')]))[0]?.beingDeleted);
    t.deepEqual(await m.claimDeletions(ctx, 10), [], 'not due before the retry delay');
    clock.t += 61_000;
    const again = await m.claimDeletions(ctx, 10);
    t.deepEqual(again.map((c) => c.plainHash), [sha('old')]);
    await m.releaseDeletions(ctx, again, 60_000);
    await m.commitFile(ctx, commitInput('/h', ['old']));
    clock.t += 61_000;
    t.deepEqual(await m.claimDeletions(ctx, 10), [], 'referenced again: never claimed');
    t.is(await m.finishDeletions(ctx, again), 0, 'a stale finish removes nothing');
    t.deepEqual(await refsOf(ctx, 'old'), [1]);
  });

  test(`${name}: orphan records: grace clock, claims refuse adoption, a commit or pin restarts the clock`, async (t) => {
    const { ctx, clock } = await open(t);
    const hex = (seed: string): string => sha('sealed:' + seed).toString('hex');
    const grace = 60_000;
    const hold = 10 * 60_000;
    t.deepEqual(await m.noteOrphans(ctx, new Set([hex('a'), hex('b'), hex('c')]), grace), [], 'first seen now');
    clock.t += grace;
    await m.commitFile(ctx, commitInput('/b', ['b'])); // adopted: its record goes in the commit
    t.true((await m.referencedAddresses(ctx)).has(hex('b')));
    t.deepEqual((await m.noteOrphans(ctx, new Set([hex('a'), hex('c')]), grace)).sort(), [hex('a'), hex('c')].sort(), 'past the grace');
    t.deepEqual(await m.claimOrphans(ctx, [hex('a'), hex('c')], hold), [hex('a'), hex('c')]);
    t.deepEqual(await m.claimOrphans(ctx, [hex('a')], hold), [], 'claimed once');
    await rejects(t, m.commitFile(ctx, commitInput('/a', ['a'])), 'CAIRN_UNAVAILABLE'); // a claimed address is refused
    const s = await m.createSession(ctx, { tenant: T, path: '/up', mtimeMs: 1, authorDevice: 'd' });
    await rejects(t, m.appendChunks(ctx, T, s.id, 0, chunks('c')), 'CAIRN_UNAVAILABLE'); // and so is a pin
    t.deepEqual(await m.findChunks(ctx, T, [sha('a'), sha('c')]), [], 'the refusals changed nothing');
    await m.endOrphanClaims(ctx, [hex('c')], 0); // handed back
    await m.appendChunks(ctx, T, s.id, 0, chunks('c'));
    t.true((await m.referencedAddresses(ctx)).has(hex('c')), 'pinned now');
    await m.endOrphanClaims(ctx, [hex('a')], hold); // deleted: held
    const deletedAt = clock.t;
    clock.t += hold - 1;
    await rejects(t, m.commitFile(ctx, commitInput('/a', ['a'], { blocksSinceMs: clock.t })), 'CAIRN_UNAVAILABLE'); // held after the deletion, even for a fresh writer
    clock.t += 2;
    await m.commitFile(ctx, commitInput('/a', ['a'], { blocksSinceMs: deletedAt + m.BLOCKS_SINCE_SKEW_MS + 1 })); // written afresh after the deletion
    t.deepEqual(await m.noteOrphans(ctx, new Set(), grace), [], 'no candidates left');
    t.deepEqual(await m.noteOrphans(ctx, new Set([hex('a')]), grace), [], 'a new candidate starts a new clock');
  });

  test(`${name}: orphan deletion tombstones refuse writers that began before the deletion, past the hold, until they expire`, async (t) => {
    const { ctx, clock } = await open(t);
    const hex = (seed: string): string => sha('sealed:' + seed).toString('hex');
    const grace = 60_000;
    const hold = 10 * 60_000;
    const keep = 7 * 24 * 3_600_000;
    const skew = m.BLOCKS_SINCE_SKEW_MS;
    const all = ['old', 'fresh', 'none', 'pin', 'media'];
    // A slow upload begins writing its blocks, then the sweep deletes them as orphans.
    const uploadStarted = clock.t;
    t.deepEqual(await m.noteOrphans(ctx, new Set(all.map(hex)), grace), []);
    clock.t += grace;
    t.deepEqual((await m.noteOrphans(ctx, new Set(all.map(hex)), grace)).sort(), all.map(hex).sort());
    t.deepEqual((await m.claimOrphans(ctx, all.map(hex), hold)).sort(), all.map(hex).sort());
    await m.endOrphanClaims(ctx, all.map(hex), hold, keep);
    const deletedAt = clock.t;
    // Past the old 10-minute hold: the tombstone still refuses what it must.
    clock.t += hold + 1;
    const usage = await m.getUsage(ctx.kv, T);
    const err = await rejects(t, m.commitFile(ctx, commitInput('/old', ['old'], { blocksSinceMs: uploadStarted })), 'CAIRN_UNAVAILABLE');
    t.regex(err.message, /deleted as an orphan.*upload the file again/);
    t.true((err as CairnError).retryable);
    await rejects(t, m.commitFile(ctx, commitInput('/old', ['keep', 'old'], { blocksSinceMs: deletedAt + skew })), 'CAIRN_UNAVAILABLE'); // within the clock allowance
    await rejects(t, m.commitFile(ctx, commitInput('/none', ['none'])), 'CAIRN_UNAVAILABLE'); // no blocks_since: refused
    const s = await m.createSession(ctx, { tenant: T, path: '/up', mtimeMs: 1, authorDevice: 'd' });
    await rejects(t, m.appendChunks(ctx, T, s.id, 0, chunks('pin'), uploadStarted), 'CAIRN_UNAVAILABLE'); // pins too
    await m.commitFile(ctx, commitInput('/photo', ['photo'], { blocksSinceMs: clock.t }));
    const derivative = [{ name: 'thumb', chunks: chunks('media'), size: 1000, width: 1, height: 1, format: 'webp' }];
    await rejects(t, m.setVersionMedia(ctx, T, '/photo', 1, '{}', derivative, uploadStarted), 'CAIRN_UNAVAILABLE'); // and derivatives
    t.deepEqual(await m.findChunks(ctx, T, ['old', 'keep', 'none', 'pin', 'media'].map((x) => sha(x))), [], 'the refusals changed nothing');
    t.is((await m.statEntry(ctx, T, '/old', true).catch(() => undefined)), undefined, 'no file');
    t.is((await m.getUsage(ctx.kv, T)).chunks, usage.chunks + 1, 'only /photo counted');
    t.is((await m.getFile(ctx, T, '/photo')).derivatives.length, 0);
    // The sweep keeps live tombstones of addresses that are gone from every node.
    clock.t += 24 * 3_600_000;
    t.deepEqual(await m.noteOrphans(ctx, new Set(), grace), []);
    await rejects(t, m.commitFile(ctx, commitInput('/old', ['old'], { blocksSinceMs: uploadStarted })), 'CAIRN_UNAVAILABLE');
    // A writer that began after the deletion (+ the allowance) wrote the block afresh: accepted,
    // and its record goes.
    await m.commitFile(ctx, commitInput('/fresh', ['fresh'], { blocksSinceMs: deletedAt + skew + 1 }));
    await m.appendChunks(ctx, T, s.id, 0, chunks('pin'), deletedAt + skew + 1);
    await m.setVersionMedia(ctx, T, '/photo', 1, '{}', derivative, deletedAt + skew + 1);
    t.is((await m.findChunks(ctx, T, [sha('media')]))[0]?.refs, 1);
    await m.commitFile(ctx, commitInput('/again', ['fresh'], { blocksSinceMs: uploadStarted })); // indexed now: no record consulted
    // Re-uploaded after the deletion and not committed: a candidate again, with a new grace clock
    // (not due at once on its old first-seen time), and the tombstone kept.
    t.deepEqual(await m.noteOrphans(ctx, new Set([hex('old')]), grace), [], 're-armed');
    clock.t += grace - 1;
    t.deepEqual(await m.noteOrphans(ctx, new Set([hex('old')]), grace), [], 'a full grace again');
    await rejects(t, m.commitFile(ctx, commitInput('/old', ['old'], { blocksSinceMs: uploadStarted })), 'CAIRN_UNAVAILABLE');
    clock.t += 1;
    t.deepEqual(await m.noteOrphans(ctx, new Set([hex('old')]), grace), [hex('old')]);
    // Gone from the nodes again: the tombstone expires after the retention and the record goes.
    await m.noteOrphans(ctx, new Set(), grace);
    await rejects(t, m.commitFile(ctx, commitInput('/none', ['none'])), 'CAIRN_UNAVAILABLE');
    clock.t = deletedAt + keep + 1;
    t.deepEqual(await m.noteOrphans(ctx, new Set(), grace), []);
    const left = await ctx.kv.scan({ ...under('o'), limit: 10 });
    t.is(left.length, 0, 'expired tombstones are dropped');
    await m.commitFile(ctx, commitInput('/none', ['none']));
    await m.commitFile(ctx, commitInput('/old', ['old'], { blocksSinceMs: uploadStarted }));
  });

  test(`${name}: usage recount matches the counters and keeps the quota`, async (t) => {
    const { ctx } = await open(t, { defaultPolicy: { keepLast: 2 } });
    for (const seed of ['x1', 'x2', 'x3']) await m.commitFile(ctx, commitInput('/x', [seed, 'shared']));
    await m.commitFile(ctx, commitInput('/y', ['shared']));
    await m.deleteEntry(ctx, T, '/y');
    await m.setQuota(ctx.kv, T, 1_000_000);
    const before = await m.getUsage(ctx.kv, T);
    t.deepEqual(await m.recountUsage(ctx, T), before);
    t.is(before.quotaBytes, 1_000_000);
  });
}
