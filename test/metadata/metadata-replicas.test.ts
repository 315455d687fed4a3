// Several metadata service processes serving one PostgreSQL database: a watcher on one replica sees
// commits made through another, and page tokens and cursors from one are accepted by the other.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { credentials } from '@grpc/grpc-js';
import { signToken } from '../../src/common/auth.js';
import { MetadataClient } from '../../src/metadata/index.js';
import { startServer, suiteScope, type ServerProcess } from '../helpers/cluster.js';
import { startPostgres, type PostgresServer } from '../helpers/postgres.js';

const scope = suiteScope('metadata-replicas');
let pg: PostgresServer | undefined;
let replicas: ServerProcess[] = [];
let token = '';

test.before(async () => {
  pg = await startPostgres();
  scope.teardown(() => pg?.stop());
  const url = await pg.createDatabase('replicas');
  const a = await startServer(scope, ['--postgres-url', url], { role: 'metadata' });
  const secretFile = join(a.dataDir, 'auth.key');
  const b = await startServer(scope, ['--postgres-url', url, '--auth-secret-file', secretFile], { role: 'metadata' });
  replicas = [a, b];
  token = await signToken(Buffer.from(readFileSync(secretFile, 'utf8').trim(), 'base64url'), { tenant: 'system', role: 'service' });
});

test.after.always(() => scope.close());

function client(t: { teardown(fn: () => void): void }, i: number): MetadataClient {
  const c = new MetadataClient({ address: replicas[i]!.grpc, credentials: credentials.createInsecure(), token: () => token });
  t.teardown(() => c.close());
  return c;
}

const sha = (s: string): Buffer => createHash('sha256').update(s).digest();

test('a watcher on one replica sees commits made through another', async (t) => {
  t.timeout(120_000);
  const [a, b] = [client(t, 0), client(t, 1)];
  const { cursor } = await a.getChangeCursor({ tenant: 'acme' });
  const abort = new AbortController();
  t.teardown(() => abort.abort());
  const seen: string[] = [];
  let ready!: () => void;
  const established = new Promise<void>((resolve) => (ready = resolve));
  const watching = (async () => {
    for await (const msg of a.watchChanges({ tenant: 'acme', cursor }, abort.signal)) {
      ready();
      seen.push(...msg.changes.map((c) => c.path));
      if (seen.includes('/via-b/3')) return;
    }
  })();
  await established;
  for (let i = 1; i <= 3; i++) {
    await b.commitFile({ tenant: 'acme', path: `/via-b/${i}`, size: 10, chunks: [{ plain_hash: sha(`c${i}`), offset: 0, size: 10, address: sha(`s${i}`), stored_size: 10 }] });
  }
  await watching;
  t.deepEqual(seen, ['/via-b', '/via-b/1', '/via-b/2', '/via-b/3']);
});

test('page tokens and cursors from one replica work on the other', async (t) => {
  t.timeout(120_000);
  const [a, b] = [client(t, 0), client(t, 1)];
  for (let i = 0; i < 5; i++) await a.commitFile({ tenant: 'other', path: `/p/${i}`, size: 10, chunks: [{ plain_hash: sha(`p${i}`), offset: 0, size: 10, address: sha(`q${i}`), stored_size: 10 }] });
  const first = await a.listFolder({ tenant: 'other', path: '/p', page_size: 2 });
  const second = await b.listFolder({ tenant: 'other', path: '/p', page_size: 10, page_token: first.next_page_token });
  t.deepEqual(second.entries.map((e) => e.path), ['/p/2', '/p/3', '/p/4']);
  const page = await a.listChanges({ tenant: 'other', page_size: 3 });
  const rest = await b.listChanges({ tenant: 'other', cursor: page.next_cursor });
  t.deepEqual([...page.changes, ...rest.changes].map((c) => Number(c.revision)), [1, 2, 3, 4, 5, 6]);
});
