// GC against the real services, as a fast-check model test: a dev cluster (metadata, gateway and
// three block nodes as separate processes, RF 3, W 2) with keep-last-1 retention, a 100 ms delete
// grace, a 200 ms GC timer and a background loop forcing GC runs (and orphan-block sweeps), while
// commands upload (often content identical to deleted or overwritten files, so chunks come back
// from the delete queue or from under GC), delete, overwrite, run GC now and read back. After every command and at the end:
// every file the model holds reads back byte-identical (SHA-256), and every block a live version
// names is on at least W block nodes and carries no GC tombstone on any node (was never deleted).
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import test from 'ava';
import fc from 'fast-check';
import { credentials } from '@grpc/grpc-js';
import { ServiceTokenSource, loadOrCreateSecret } from '../../src/common/auth.js';
import { BlockClient } from '../../src/blocknode/index.js';
import type { CairnClient } from '../../src/client/index.js';
import type { DevCluster } from '../../src/cli/dev-cluster.js';
import { AdminClient, MetadataClient } from '../../src/metadata/index.js';
import { suiteScope, tempDir } from '../helpers/cluster.js';
import { clientFor, sha256, startDevCluster } from './harness.js';

const FULL = process.env.CAIRN_TEST_FULL === '1';
const RUNS = FULL ? 12 : 4;
const MAX_COMMANDS = FULL ? 40 : 20;
const TENANT = 'gcmodel';
const WRITE_QUORUM = 2;
const PATHS = ['/a', '/b', '/c', '/d/e'] as const;

const scope = suiteScope('gc-model');
test.after.always(() => scope.close());

// A small pool of contents, so uploads keep repeating (and sharing chunks with) deleted files.
const base1 = randomBytes(180_000);
const base2 = randomBytes(90_000);
const CONTENTS: readonly Buffer[] = [base1, base2, Buffer.concat([base1, base2]), Buffer.concat([base2, base1.subarray(0, 70_000)]), randomBytes(1), Buffer.alloc(0)];

interface Model {
  /** Path → index into CONTENTS of what the file holds now. */
  readonly files: Map<string, number>;
}

interface Real {
  readonly prefix: string;
  readonly client: CairnClient;
  readonly admin: AdminClient;
  readonly metadata: MetadataClient;
  readonly blocks: BlockClient[];
  readonly stats: { uploads: number; retries: number; deletes: number; gcRuns: number; gcDeleted: number; checks: number };
}

async function retrying<T>(real: Real, what: string, fn: () => Promise<T>): Promise<T> {
  // A chunk GC is deleting right now is refused (CAIRN_UNAVAILABLE, retryable): upload again.
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= 10) throw new Error(`${what} failed ${attempt + 1} times: ${(err as Error).message}`, { cause: err });
      real.stats.retries++;
      await new Promise((r) => setTimeout(r, 200 + attempt * 100));
    }
  }
}

async function readAll(client: CairnClient, path: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of client.read(path)) if ('data' in p) parts.push(p.data);
  return Buffer.concat(parts);
}

/** The invariant: live files read back byte-identical, and none of their blocks was deleted. */
async function check(model: Model, real: Real): Promise<void> {
  real.stats.checks++;
  for (const [path, content] of model.files) {
    const full = real.prefix + path;
    const got = await readAll(real.client, full);
    if (sha256(got) !== sha256(CONTENTS[content]!)) throw new Error(`${full} reads back ${got.length} bytes that differ from the ${CONTENTS[content]!.length} bytes uploaded`);
    const file = await real.metadata.getFile({ tenant: TENANT, path: full, version: 0, chunk_offset: 0, max_chunks: 0 });
    const addresses = [...new Map(file.chunks.map((c) => [c.address.toString('hex'), c.address])).values()];
    if (addresses.length === 0) continue;
    const presence = await Promise.all(real.blocks.map((b) => b.presence(addresses)));
    addresses.forEach((a, i) => {
      const held = presence.filter((p) => p.present[i] === true).length;
      const tombstoned = presence.filter((p) => p.tombstoned[i] === true).length;
      if (tombstoned > 0) throw new Error(`block ${a.toString('hex')} of live ${full} was deleted by GC on ${tombstoned} node(s)`);
      if (held < WRITE_QUORUM) throw new Error(`block ${a.toString('hex')} of live ${full} is on ${held} node(s), fewer than W=${WRITE_QUORUM}`);
    });
  }
}

class Upload implements fc.AsyncCommand<Model, Real> {
  constructor(readonly path: string, readonly content: number) {}
  check(_model: Readonly<Model>): boolean {
    return true;
  }
  async run(model: Model, real: Real): Promise<void> {
    const data = CONTENTS[this.content]!;
    await retrying(real, `upload ${this.path}`, () => real.client.putStream(Readable.from([data]), real.prefix + this.path, { size: data.length }));
    real.stats.uploads++;
    model.files.set(this.path, this.content);
    await check(model, real);
  }
  toString(): string {
    return `upload(${this.path}, #${this.content})`;
  }
}

class Overwrite extends Upload {
  override check(model: Readonly<Model>): boolean {
    return model.files.has(this.path) && model.files.get(this.path) !== this.content;
  }
  override toString(): string {
    return `overwrite(${this.path}, #${this.content})`;
  }
}

class Delete implements fc.AsyncCommand<Model, Real> {
  constructor(readonly path: string) {}
  check(model: Readonly<Model>): boolean {
    return model.files.has(this.path);
  }
  async run(model: Model, real: Real): Promise<void> {
    await real.client.delete(real.prefix + this.path);
    real.stats.deletes++;
    model.files.delete(this.path);
    await check(model, real);
  }
  toString(): string {
    return `delete(${this.path})`;
  }
}

class GcNow implements fc.AsyncCommand<Model, Real> {
  /** Waits past the delete grace first when `wait`. */
  constructor(readonly wait: boolean) {}
  check(): boolean {
    return true;
  }
  async run(model: Model, real: Real): Promise<void> {
    if (this.wait) await new Promise((r) => setTimeout(r, 150));
    real.stats.gcDeleted += (await real.admin.runGarbageCollection(60_000)).finished;
    real.stats.gcRuns++;
    await check(model, real);
  }
  toString(): string {
    return `gc(${this.wait ? 'after grace' : 'now'})`;
  }
}

class ReadBack implements fc.AsyncCommand<Model, Real> {
  check(): boolean {
    return true;
  }
  async run(model: Model, real: Real): Promise<void> {
    await check(model, real);
  }
  toString(): string {
    return 'readBack';
  }
}

const path = fc.constantFrom(...PATHS);
const content = fc.integer({ min: 0, max: CONTENTS.length - 1 });
const commands = [
  fc.tuple(path, content).map(([p, c]) => new Upload(p, c)),
  fc.tuple(path, content).map(([p, c]) => new Upload(p, c)),
  fc.tuple(path, content).map(([p, c]) => new Upload(p, c)),
  fc.tuple(path, content).map(([p, c]) => new Overwrite(p, c)),
  path.map((p) => new Delete(p)),
  path.map((p) => new Delete(p)),
  fc.boolean().map((w) => new GcNow(w)),
  fc.constant(new ReadBack()),
];

async function startCluster(): Promise<DevCluster> {
  return startDevCluster(scope, {
    extraArgs: {
      blocknode: ['--anti-entropy-interval-ms', '500', '--rebalance-settle-ms', '1000', '--scrub-interval-ms', '0', '--reserve-bytes', '0'],
      // Orphan sweeps run too (every fifth background run) and must leave every live block alone.
      // The orphan grace outlasts a run, so a block a refused upload attempt left behind is not
      // deleted mid-test (content identical to it would then be refused for the deletion hold);
      // deleting orphans is covered by test/metadata/orphans.test.ts.
      metadata: ['--delete-grace-ms', '100', '--gc-interval-ms', '200', '--orphan-grace-ms', '600000'],
    },
  });
}

test.serial('GC concurrent with uploads, deletes and dedup resurrections never deletes a live block', async (t) => {
  t.timeout(FULL ? 1_200_000 : 180_000);
  const cluster = await startCluster();
  const secret = loadOrCreateSecret(cluster.secretPath);
  const tokens = new ServiceTokenSource(secret);
  const serviceToken = (): Promise<string> => tokens.token();
  const metadataAddr = cluster.metadataEndpoints[0]!;
  const systemAdmin = await cluster.token('system', 'admin');
  const admin = new AdminClient({ address: metadataAddr, credentials: credentials.createInsecure(), token: () => systemAdmin });
  const tenantAdmin = await cluster.token(TENANT, 'admin');
  const ownAdmin = new AdminClient({ address: metadataAddr, credentials: credentials.createInsecure(), token: () => tenantAdmin });
  const metadata = new MetadataClient({ address: metadataAddr, credentials: credentials.createInsecure(), token: serviceToken });
  const blocks = [...cluster.processes.values()].filter((p) => p.role === 'blocknode').map((p) => new BlockClient({ address: p.grpc, credentials: credentials.createInsecure(), token: serviceToken, timeoutMs: 30_000 }));
  t.teardown(() => {
    admin.close();
    ownAdmin.close();
    metadata.close();
    for (const b of blocks) b.close();
  });
  t.is(blocks.length, 3);
  // Short retention through the Admin API: an overwrite or delete releases the old chunks at once.
  t.deepEqual((await ownAdmin.setRetentionPolicy('', { keepLast: 1, trashDays: 0 })).policy, { keepLast: 1, trashDays: 0 });
  const client = await clientFor(scope, cluster, 0, TENANT);

  // GC also runs in the background the whole time, forced as often as it can go.
  let stop = false;
  let backgroundRuns = 0;
  let backgroundDeleted = 0;
  let orphansSeen = 0;
  let orphansDeleted = 0;
  const background = (async () => {
    while (!stop) {
      const r = await admin.runGarbageCollection(60_000, { sweepOrphans: backgroundRuns % 5 === 0 });
      backgroundRuns++;
      backgroundDeleted += r.finished;
      orphansSeen += r.orphansSeen;
      orphansDeleted += r.orphansDeleted;
      await new Promise((res) => setTimeout(res, 50));
    }
  })();

  const stats = { uploads: 0, retries: 0, deletes: 0, gcRuns: 0, gcDeleted: 0, checks: 0 };
  let run = 0;
  try {
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { maxCommands: MAX_COMMANDS, size: 'max' }), async (cmds) => {
        const real: Real = { prefix: `/run${run++}`, client, admin, metadata, blocks, stats };
        const model: Model = { files: new Map() };
        await fc.asyncModelRun(() => ({ model, real }), cmds);
        // Every run ends by uploading and deleting one more file, so each run deletes something
        // whatever the generator drew (a short command list may hold no delete at all).
        await new Upload('/last', 2).run(model, real);
        await new Delete('/last').run(model, real);
        // At the end: past the grace, GC once more, then everything the model holds is intact.
        await new Promise((r) => setTimeout(r, 150));
        stats.gcDeleted += (await admin.runGarbageCollection(60_000)).finished;
        await check(model, real);
      }),
      { numRuns: RUNS, endOnFailure: true },
    );
  } finally {
    stop = true;
    await background;
  }
  // Whether a random run freed anything depends on what it re-uploaded (dedup resurrects
  // chunks), so prove GC live with a unique file: overwritten (keep-last-1 prunes the first
  // version at commit), then deleted. Whoever collects them — the service's own GC timer or a
  // forced run — every block of both versions must leave every block node.
  const proofDir = tempDir(scope, 'cairn-gc-proof-');
  const dead: Buffer[] = [];
  for (const name of ['first.bin', 'second.bin']) {
    writeFileSync(join(proofDir, name), randomBytes(300_000));
    const up = await client.upload(join(proofDir, name), '/gc-proof/unique.bin', { cacheDir: join(proofDir, 'cache') });
    const v = await metadata.getFile({ tenant: TENANT, path: '/gc-proof/unique.bin', version: up.info.version, chunk_offset: 0, max_chunks: 0 });
    dead.push(...v.chunks.map((c) => c.address));
  }
  await client.delete('/gc-proof/unique.bin');
  const proofDeadline = Date.now() + 60_000;
  let left = dead.length;
  while (left > 0 && Date.now() < proofDeadline) {
    await new Promise((r) => setTimeout(r, 200));
    await admin.runGarbageCollection(60_000);
    const present = await Promise.all(blocks.map((b) => b.hasBlocks(dead)));
    left = dead.filter((_, i) => present.some((p) => p[i] === true)).length;
  }
  const proofDeleted = dead.length - left;
  const usage = await admin.getTenantUsage(TENANT);
  t.log(`${RUNS} runs: ${stats.uploads} uploads (${stats.retries} retried), ${stats.deletes} deletes, ${stats.gcRuns} GC commands deleting ${stats.gcDeleted} chunks, ${backgroundRuns} background GC runs deleting ${backgroundDeleted} chunks, orphan sweeps seeing ${orphansSeen} unreferenced blocks and deleting ${orphansDeleted}, ${stats.checks} invariant checks, ${proofDeleted} of ${dead.length} blocks of the unique file collected; tenant now ${usage.chunks} chunks`);
  t.true(stats.deletes > 0, 'the runs deleted files');
  t.true(dead.length > 0);
  t.is(left, 0, `GC removed every block of a deleted unique file from every node (${left} of ${dead.length} left)`);
  t.true(stats.checks > 0);
});
