// One real PostgreSQL per test file for the suites that run on both backends: registers its
// start and stop hooks and returns a KvFactory that gives every test a fresh database.
import test from 'ava';
import { openPostgresKv } from '../../src/metadata/kv/index.js';
import { startPostgres, type PostgresServer } from '../helpers/postgres.js';
import type { KvFactory } from './kv-conformance.js';

export function postgresKvFactory(databaseHint: string): KvFactory {
  let server: PostgresServer | undefined;
  test.before(async () => {
    server = await startPostgres();
  });
  test.after.always(async () => {
    await server?.stop();
  });
  return async () => {
    const s = server;
    if (s === undefined) throw new Error('PostgreSQL did not start');
    const url = await s.createDatabase(databaseHint);
    const kv = await openPostgresKv({ connectionString: url, pool: { max: 8 } });
    return {
      kv,
      async cleanup() {
        await kv.close();
        await s.dropDatabase(url);
      },
    };
  };
}
