// Encryption at rest end to end on a real embedded server: chunks are sealed per tenant before
// they reach the block node, deduplicated within a tenant only, and unreadable without the master key.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CairnClient } from '../../src/client/index.js';
import { loadOrCreateSecret, signToken } from '../../src/common/auth.js';
import { CairnError } from '../../src/common/errors.js';
import { startServer, suiteScope, tempDir, type ServerProcess } from '../helpers/cluster.js';

const suite = suiteScope('encryption');
let server: ServerProcess;

test.before(async () => {
  server = await startServer(suite);
});
test.after.always(() => suite.close());

async function storedBytes(s: ServerProcess): Promise<number> {
  const text = await (await fetch(`${s.http}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('cairn_blocknode_stored_bytes '));
  if (line === undefined) throw new Error('no cairn_blocknode_stored_bytes metric');
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p));
    else out.push(p);
  }
  return out;
}

/** Random bytes with `marker` written every 64 KiB: plaintext stored anywhere would show it. */
function markedRandom(size: number, marker: string): Buffer {
  const data = randomBytes(size);
  for (let at = 0; at + marker.length < size; at += 64 * 1024) data.write(marker, at, 'latin1');
  return data;
}

/** Text-like data that compresses well but does not repeat whole chunks. */
function compressible(size: number): Buffer {
  const lines: string[] = [];
  let n = 0;
  for (let len = 0; len < size; n++) {
    const line = `${n.toString().padStart(9, '0')} the quick brown fox jumps over the lazy dog ${(n * 7919) % 100_003}\n`;
    lines.push(line);
    len += line.length;
  }
  return Buffer.from(lines.join(''), 'latin1').subarray(0, size);
}

async function tenantClient(s: ServerProcess, tenant: string): Promise<CairnClient> {
  const token = await signToken(loadOrCreateSecret(join(s.dataDir, 'auth.key')), { tenant, role: 'user', ttlSeconds: 3600 });
  return new CairnClient({ endpoint: s.grpc, token });
}

async function putBuffer(t: { title: string; teardown(fn: () => void): void }, client: CairnClient, data: Buffer, path: string): Promise<void> {
  const dir = tempDir(t);
  const src = join(dir, 'src.bin');
  writeFileSync(src, data);
  await client.put(src, path);
}

async function getBuffer(t: { title: string; teardown(fn: () => void): void }, client: CairnClient, path: string): Promise<Buffer> {
  const dir = tempDir(t);
  await client.get(path, join(dir, 'back.bin'));
  return readFileSync(join(dir, 'back.bin'));
}

test.serial('sealed round trips are byte-identical, and the block node never holds the plaintext', async (t) => {
  const client = new CairnClient({ endpoint: server.grpc, token: server.token });
  t.teardown(() => client.close());
  const marker = 'CAIRN-PLAINTEXT-MARKER-7f3a9c';
  const random = markedRandom(6 * 1024 * 1024 + 123, marker);
  const text = compressible(3 * 1024 * 1024 + 7);
  await putBuffer(t, client, random, '/enc/random.bin');
  await putBuffer(t, client, text, '/enc/text.txt');
  t.true((await getBuffer(t, client, '/enc/random.bin')).equals(random));
  t.true((await getBuffer(t, client, '/enc/text.txt')).equals(text));

  const needles = [Buffer.from(marker, 'latin1'), text.subarray(100_000, 100_064)];
  const files = filesUnder(join(server.dataDir, 'blocks'));
  t.true(files.length > 0);
  for (const file of files) {
    const bytes = readFileSync(file);
    for (const needle of needles) t.is(bytes.indexOf(needle), -1, `${file} holds plaintext`);
  }
});

test.serial('compressible data stores fewer bytes than it has; random data does not shrink', async (t) => {
  const client = new CairnClient({ endpoint: server.grpc, token: server.token });
  t.teardown(() => client.close());
  const text = compressible(4 * 1024 * 1024);
  const before = await storedBytes(server);
  await putBuffer(t, client, text, '/enc/compress.txt');
  const afterText = await storedBytes(server);
  t.true(afterText - before < text.length * 0.7, `stored ${afterText - before} of ${text.length}`);
  const random = randomBytes(4 * 1024 * 1024);
  await putBuffer(t, client, random, '/enc/incompressible.bin');
  t.true((await storedBytes(server)) - afterText >= random.length);
  t.true((await getBuffer(t, client, '/enc/compress.txt')).equals(text));
});

test.serial('uploading the same bytes again stores no new blocks; another tenant stores its own', async (t) => {
  const a = new CairnClient({ endpoint: server.grpc, token: server.token });
  const b = await tenantClient(server, 'other');
  t.teardown(() => {
    a.close();
    b.close();
  });
  const data = randomBytes(5 * 1024 * 1024);
  const s0 = await storedBytes(server);
  await putBuffer(t, a, data, '/dedup/first.bin');
  const s1 = await storedBytes(server);
  t.true(s1 - s0 >= data.length);
  await putBuffer(t, a, data, '/dedup/second.bin');
  await putBuffer(t, a, data, '/dedup/first.bin');
  t.is(await storedBytes(server), s1, 'a second upload within the tenant stores nothing');
  // Same plaintext, other tenant: other key, other blocks (no cross-tenant dedup, no oracle).
  await putBuffer(t, b, data, '/dedup/first.bin');
  const s2 = await storedBytes(server);
  t.true(s2 - s1 >= data.length, `tenant other stored ${s2 - s1} bytes`);
  t.true((await getBuffer(t, b, '/dedup/first.bin')).equals(data));
  t.true((await getBuffer(t, a, '/dedup/second.bin')).equals(data));
});

test('a gateway with another master key cannot read old data; the right key still can', async (t) => {
  const dataDir = tempDir(t);
  const first = await startServer(t, [], { dataDir });
  let client = new CairnClient({ endpoint: first.grpc, token: first.token });
  const data = randomBytes(2 * 1024 * 1024 + 5);
  await putBuffer(t, client, data, '/keys/file.bin');
  client.close();
  first.proc.kill('SIGTERM');
  await first.exited;

  const wrong = await startServer(t, [], { dataDir, env: { CAIRN_MASTER_KEY: randomBytes(32).toString('base64') } });
  client = new CairnClient({ endpoint: wrong.grpc, token: wrong.token });
  const err = await t.throwsAsync(getBuffer(t, client, '/keys/file.bin'));
  t.true(err instanceof CairnError && err.code === 'CAIRN_DATA_LOSS', String(err));
  const up = await t.throwsAsync(putBuffer(t, client, data, '/keys/other.bin'));
  t.true(up instanceof CairnError && up.code === 'CAIRN_DATA_LOSS', String(up));
  client.close();
  wrong.proc.kill('SIGTERM');
  await wrong.exited;

  const right = await startServer(t, [], { dataDir });
  client = new CairnClient({ endpoint: right.grpc, token: right.token });
  t.teardown(() => client.close());
  t.true((await getBuffer(t, client, '/keys/file.bin')).equals(data));
});

test('a master key file is created 0600 on first start; a malformed CAIRN_MASTER_KEY stops the server', async (t) => {
  const dataDir = tempDir(t);
  const s = await startServer(t, [], { dataDir });
  t.is(statSync(join(dataDir, 'master.key')).mode & 0o777, 0o600);
  t.is(Buffer.from(readFileSync(join(dataDir, 'master.key'), 'utf8').trim(), 'base64').length, 32);
  s.proc.kill('SIGTERM');
  await s.exited;
  const err = await t.throwsAsync(startServer(t, [], { dataDir, env: { CAIRN_MASTER_KEY: 'c2hvcnQ=' } }));
  t.regex(err?.message ?? '', /master key .* 5 bytes, not 32/);
});
