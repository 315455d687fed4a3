// Runs the KV conformance suite on the PostgreSQL backend against a real embedded server,
// plus what only a shared backend has: notifications across processes, and LISTEN reconnects.
import test from 'ava';
import pg from 'pg';
import { isCairnError } from '../../src/common/errors.js';
import { openKv, openPostgresKv, type Kv } from '../../src/metadata/kv/index.js';
import { startPostgres, type PostgresServer } from '../helpers/postgres.js';
import { kvConformance } from './kv-conformance.js';

let server: PostgresServer | undefined;

test.before(async () => {
  server = await startPostgres();
});

test.after.always(async () => {
  await server?.stop();
});

async function freshDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const s = server;
  if (s === undefined) throw new Error('PostgreSQL did not start');
  const url = await s.createDatabase('kv');
  return { url, drop: () => s.dropDatabase(url) };
}

kvConformance('postgres', async () => {
  const { url, drop } = await freshDatabase();
  const kv = await openPostgresKv({ connectionString: url, pool: { max: 8 } });
  return {
    kv,
    async cleanup() {
      await kv.close();
      await drop();
    },
  };
});

const b = (s: string): Buffer => Buffer.from(s);

async function waitFor(predicate: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

test('postgres: a commit through one Kv notifies subscribers of another', async (t) => {
  t.timeout(60_000);
  const { url, drop } = await freshDatabase();
  t.teardown(drop);
  const writer = await openKv({ backend: 'postgres', url });
  const watcher = await openKv({ backend: 'postgres', url });
  t.teardown(async () => {
    await writer.close();
    await watcher.close();
  });
  const heard: string[] = [];
  t.teardown(watcher.subscribe('tree_changes', (p) => heard.push(p)));
  // The watcher's LISTEN is issued asynchronously; keep committing until it is in place.
  let n = 0;
  while (heard.length === 0) {
    if (n > 200) t.fail('no notification crossed over');
    await writer.transact(async (tx) => {
      tx.put(b('rev'), b(String(++n)));
      tx.notify('tree_changes', `rev ${n}`);
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const last = heard.at(-1);
  t.regex(last ?? '', /^rev \d+$/);
  t.is((await watcher.get(b('rev')))?.toString(), last?.split(' ')[1], 'the watcher sees the commit it was told about');
});

test('postgres: the LISTEN connection reconnects after it is killed', async (t) => {
  t.timeout(60_000);
  const { url, drop } = await freshDatabase();
  t.teardown(drop);
  const kv: Kv = await openPostgresKv({ connectionString: url, maxReconnectDelayMs: 200 });
  t.teardown(() => kv.close());
  const heard: string[] = [];
  t.teardown(kv.subscribe('jobs', (p) => heard.push(p)));
  await kv.transact(async (tx) => {
    tx.notify('jobs', 'before');
  });
  await waitFor(() => heard.includes('before'), 'first notification');
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  t.teardown(() => admin.end());
  const killed = await admin.query<{ n: number }>(
    "SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
  );
  t.is(killed.rows[0]?.n, 1);
  let n = 0;
  while (!heard.some((p) => p.startsWith('after'))) {
    if (n > 300) t.fail('no notification after reconnect');
    await kv.transact(async (tx) => {
      tx.notify('jobs', `after ${++n}`);
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  t.pass();
});

test('postgres: an unreachable server is CAIRN_UNAVAILABLE', async (t) => {
  t.timeout(30_000);
  const error = await t.throwsAsync(
    openPostgresKv({ connectionString: 'postgres://postgres:x@127.0.0.1:1/postgres', pool: { connectionTimeoutMillis: 2000 } }),
  );
  t.true(isCairnError(error, 'CAIRN_UNAVAILABLE'), String(error));
});

const KILL_KV_BACKENDS =
  "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = 'cairn-metadata'";

test('postgres: losing connections before COMMIT re-runs the transaction, then gives up as CAIRN_UNAVAILABLE', async (t) => {
  t.timeout(30_000);
  const { url, drop } = await freshDatabase();
  t.teardown(drop);
  const kv = await openPostgresKv({ connectionString: url });
  t.teardown(() => kv.close());
  await kv.transact(async (tx) => {
    tx.put(b('a'), b('1'));
  });
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  t.teardown(() => admin.end());

  let runs = 0;
  await kv.transact(async (tx) => {
    runs++;
    await tx.get(b('a'));
    // Like a failover: every connection of the pool dies under the running transaction.
    if (runs === 1) await admin.query(KILL_KV_BACKENDS);
    tx.put(b('a'), b(String(runs)));
  });
  t.is(runs, 2, 'the attempt whose connection died was re-run once');
  t.is((await kv.get(b('a')))?.toString(), '2');

  runs = 0;
  const error = await t.throwsAsync(
    kv.transact(async (tx) => {
      runs++;
      await tx.get(b('a'));
      await admin.query(KILL_KV_BACKENDS);
      // Another key: a repeated read of 'a' is answered from the transaction's read cache.
      await tx.get(b('b'));
    }),
  );
  t.true(isCairnError(error, 'CAIRN_UNAVAILABLE'), String(error));
  t.is(runs, 3, 'bounded re-runs');
  await admin.query(KILL_KV_BACKENDS);
  t.is((await kv.get(b('a')))?.toString(), '2', 'reads recover from dead pooled connections');
});

test('postgres: option mistakes throw TypeError', async (t) => {
  await t.throwsAsync(openPostgresKv({}), { instanceOf: TypeError, message: /connectionString/ });
  await t.throwsAsync(openPostgresKv({ connectionString: '' }), { instanceOf: TypeError, message: /connectionString/ });
  await t.throwsAsync(openKv({ backend: 'postgres', url: '' }), { instanceOf: TypeError, message: /config\.url/ });
});
