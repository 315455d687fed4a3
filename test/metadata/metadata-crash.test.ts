// Crash safety of commits: kill -9 a metadata server process while clients commit, restart it on
// the same store (LevelDB data dir, or the same PostgreSQL database), and check that every
// acknowledged commit is there and that nothing half-committed is visible. Several rounds.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { credentials } from '@grpc/grpc-js';
import { signToken } from '../../src/common/auth.js';
import { isCairnError } from '../../src/common/errors.js';
import type { ChangeEvent__Output } from '../../src/gen/cairn/v1/ChangeEvent.js';
import { MetadataClient } from '../../src/metadata/index.js';
import { startServer, tempDir, type ServerProcess } from '../helpers/cluster.js';
import { startPostgres, type PostgresServer } from '../helpers/postgres.js';

const sha = (s: string): Buffer => createHash('sha256').update(s).digest();
const WRITERS = 6;
const ROUNDS = 3;

let pg: PostgresServer | undefined;
test.before(async () => {
  pg = await startPostgres();
});
test.after.always(async () => {
  await pg?.stop();
});

/** Chunks of version `v` of writer `w`'s file: two per version, one shared by all versions. */
function chunksOf(w: number, v: number): Array<{ plain_hash: Buffer; offset: number; size: number; address: Buffer; stored_size: number }> {
  return [
    { plain_hash: sha(`shared-${w}`), offset: 0, size: 100, address: sha(`s-shared-${w}`), stored_size: 100 },
    { plain_hash: sha(`own-${w}-${v}`), offset: 100, size: 50, address: sha(`s-own-${w}-${v}`), stored_size: 50 },
  ];
}

async function connect(t: ExecutionContext, server: ServerProcess, secretFile: string): Promise<MetadataClient> {
  const token = await signToken(Buffer.from(readFileSync(secretFile, 'utf8').trim(), 'base64url'), { tenant: 'system', role: 'service' });
  const c = new MetadataClient({ address: server.grpc, credentials: credentials.createInsecure(), token: () => token });
  t.teardown(() => c.close());
  return c;
}

async function crashLoop(t: ExecutionContext, extraArgs: string[]): Promise<void> {
  t.timeout(240_000);
  const dataDir = tempDir(t);
  const secretFile = join(dataDir, 'auth.key');
  /** Highest acknowledged version per writer. */
  const acked = new Array<number>(WRITERS).fill(0);
  for (let round = 0; round < ROUNDS; round++) {
    const server = await startServer(t, [...extraArgs], { role: 'metadata', dataDir });
    const client = await connect(t, server, secretFile);
    await verify(t, client, acked);
    // Commit until the process dies: kill it after a varying number of acknowledgements.
    const killAfter = 20 + Math.floor(Math.random() * 40);
    let acks = 0;
    let killed = false;
    const failures: unknown[] = [];
    const writers = Array.from({ length: WRITERS }, async (_, w) => {
      for (;;) {
        const v = acked[w]! + 1;
        try {
          await client.commitFile({ tenant: 'crash', path: `/w${w}/file`, base_version: v - 1, size: 150, mtime_ms: v, author_device: `w${w}`, chunks: chunksOf(w, v) });
        } catch (err) {
          // Expected once the process is killed; before that, a failure is a bug.
          if (!killed) failures.push(err);
          return;
        }
        acked[w] = v;
        if (++acks === killAfter) {
          killed = true;
          server.proc.kill('SIGKILL');
        }
      }
    });
    await Promise.all(writers);
    t.deepEqual(failures, [], 'commits failed while the server was up');
    if (!killed) server.proc.kill('SIGKILL');
    await server.exited;
    client.close();
  }
  const server = await startServer(t, [...extraArgs], { role: 'metadata', dataDir });
  await verify(t, await connect(t, server, secretFile), acked);
  t.true(acked.reduce((a, b) => a + b, 0) >= ROUNDS * 20, 'commits were acknowledged in every round');
}

/** Every acknowledged version is present; every visible version is whole (chunks, refs, feed). */
async function verify(t: ExecutionContext, client: MetadataClient, acked: readonly number[]): Promise<void> {
  const feed: ChangeEvent__Output[] = [];
  for (let cursor = '', more = true; more;) {
    const page = await client.listChanges({ tenant: 'crash', cursor, page_size: 1000 });
    feed.push(...page.changes);
    cursor = page.next_cursor;
    more = page.has_more;
  }
  t.deepEqual(feed.map((c) => Number(c.revision)), feed.map((_, i) => i + 1), 'the change feed has no gaps');
  for (let w = 0; w < WRITERS; w++) {
    const head = await headOf(client, w);
    if (head === 0) {
      t.is(acked[w], 0, `writer ${w}: acknowledged commits are missing`);
      continue;
    }
    // An unacknowledged commit may have landed (the ack was lost with the process): at most one.
    t.true(head === acked[w] || head === acked[w]! + 1, `writer ${w}: head ${head}, acknowledged ${acked[w]}`);
    for (let v = 1; v <= head; v++) {
      const file = await client.getFile({ tenant: 'crash', path: `/w${w}/file`, version: v });
      t.deepEqual(file.chunks.map((c) => c.plain_hash), chunksOf(w, v).map((c) => c.plain_hash), `writer ${w} v${v} is whole`);
    }
    const puts = feed.filter((c) => c.path === `/w${w}/file` && c.type === 'CHANGE_TYPE_PUT').map((c) => Number(c.version));
    t.deepEqual(puts, Array.from({ length: head }, (_, i) => i + 1), `writer ${w}: one change per version`);
    const refs = await client.findChunks({ tenant: 'crash', plain_hashes: [sha(`shared-${w}`), sha(`own-${w}-${head}`)] });
    t.deepEqual(refs.chunks.map((c) => Number(c.refs)), [head, 1], `writer ${w}: refs match the versions`);
  }
  // Resume the writers from what is actually there.
  for (let w = 0; w < WRITERS; w++) (acked as number[])[w] = await headOf(client, w);
}

async function headOf(client: MetadataClient, w: number): Promise<number> {
  try {
    return Number((await client.getFile({ tenant: 'crash', path: `/w${w}/file` })).version);
  } catch (err) {
    if (isCairnError(err, 'CAIRN_NOT_FOUND')) return 0;
    throw err;
  }
}

test('LevelDB: every acknowledged commit survives kill -9, and no partial commit is visible', async (t) => {
  await crashLoop(t, []);
});

test('PostgreSQL: every acknowledged commit survives kill -9, and no partial commit is visible', async (t) => {
  if (pg === undefined) throw new Error('PostgreSQL did not start');
  const url = await pg.createDatabase('crash');
  t.teardown(() => pg?.dropDatabase(url));
  await crashLoop(t, ['--postgres-url', url]);
});
