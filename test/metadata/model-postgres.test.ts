// Runs the metadata model suite on the PostgreSQL backend (a real embedded server).
import test from 'ava';
import { openPostgresKv } from '../../src/metadata/kv/index.js';
import { startPostgres, type PostgresServer } from '../helpers/postgres.js';
import type { KvFactory } from './kv-conformance.js';
import { modelSuite } from './model-suite.js';

let server: PostgresServer | undefined;

test.before(async () => {
  server = await startPostgres();
});

test.after.always(async () => {
  await server?.stop();
});

const postgres: KvFactory = async () => {
  const s = server;
  if (s === undefined) throw new Error('PostgreSQL did not start');
  const url = await s.createDatabase('model');
  const kv = await openPostgresKv({ connectionString: url, pool: { max: 8 } });
  return {
    kv,
    async cleanup() {
      await kv.close();
      await s.dropDatabase(url);
    },
  };
};

modelSuite('postgres', postgres);
