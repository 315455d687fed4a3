// Round trips of a batch of commits on PostgreSQL: with the folders of their paths seen before,
// a batch fetches every entry on its paths in its first round trip (one getMany statement),
// instead of one statement per path level. Counted at the wire, on a real PostgreSQL.
import { hash } from 'node:crypto';
import test from 'ava';
import pg from 'pg';
import { openPostgresKv } from '../../src/metadata/kv/index.js';
import * as m from '../../src/metadata/model/index.js';
import { startPostgres, type PostgresServer } from '../helpers/postgres.js';

let pgServer: PostgresServer | undefined;
test.before(async () => {
  pgServer = await startPostgres();
});
test.after.always(async () => {
  await pgServer?.stop();
});

/** The text of every statement sent while `fn` runs. */
async function statementsDuring(fn: () => Promise<void>): Promise<string[]> {
  const seen: string[] = [];
  const proto = pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown };
  const original = proto.query;
  proto.query = function (this: unknown, ...args: unknown[]) {
    const q = args[0];
    seen.push(typeof q === 'string' ? q : String((q as { text?: unknown }).text));
    return original.apply(this, args);
  };
  try {
    await fn();
  } finally {
    proto.query = original;
  }
  return seen;
}

/** 16 commits to /deep/er/wN/f`round`, held back until all are queued so that they form one batch. */
async function batchOfCommits(ctx: m.ModelContext, round: number): Promise<void> {
  let release!: () => void;
  let started!: () => void;
  const running = new Promise<void>((resolve) => (started = resolve));
  const held = ctx.write('acme', () => {
    started();
    return new Promise<void>((resolve) => (release = resolve));
  });
  await running;
  const commits = Array.from({ length: 16 }, (_, w) => {
    const plainHash = hash('sha256', `${w}/${round}`, 'buffer');
    return m.commitFile(ctx, { tenant: 'acme', path: `/deep/er/w${w}/f${round}`, size: 10, mtimeMs: 1, authorDevice: '', chunks: [{ plainHash, offset: 0, size: 10, address: plainHash, storedSize: 30 }] });
  });
  release();
  await held;
  await Promise.all(commits);
}

test('a batch of commits under folders seen before reads all its paths in one round trip', async (t) => {
  t.timeout(60_000);
  const kv = await openPostgresKv({ connectionString: await pgServer!.createDatabase('prefetch'), pool: { max: 4 } });
  t.teardown(() => kv.close());
  const ctx = m.createContext(kv);
  const manyReads = (statements: string[]): number => statements.filter((s) => s.startsWith('SELECT k, v FROM kv WHERE k = ANY(')).length;
  // The first batch creates the folders; the second walks its paths a level per round trip
  // (four levels) and so learns the folders' ids.
  await batchOfCommits(ctx, 0);
  t.true(manyReads(await statementsDuring(() => batchOfCommits(ctx, 1))) >= 4, 'a batch on paths not seen before walks them a level per round trip');
  const third = await statementsDuring(() => batchOfCommits(ctx, 2));
  t.is(manyReads(third), 1, 'the third batch fetched every level of its paths at once');
  for (let w = 0; w < 16; w++) t.is((await m.getFile(ctx, 'acme', `/deep/er/w${w}/f2`)).size, 10);
});
