// Tenant isolation on a real server: every public RPC (found from the .proto files) is called
// with a well-formed request aimed at tenant B's paths, chunk hashes, upload ids and cursor,
// under each of: no token, an expired token, a tampered token, tenant A's token, and B's own
// read-only (reader) token. Unauthenticated calls must be UNAUTHENTICATED; nothing but B's own
// writers may change B's tree, and no answer to anybody else may carry B's bytes.
// A statistical test then checks there is no cross-tenant dedup oracle in FindMissingChunks.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { publicMethods, rawCall } from './rpc.js';
import { loadOrCreateSecret, signToken } from '../../src/common/auth.js';
import { CairnClient, CairnSharing } from '../../src/client/index.js';
import { AdminClient } from '../../src/metadata/index.js';
import { startDevCluster } from './harness.js';
import { chunkBuffer } from '../../src/chunking/index.js';
import { loadProto } from '../../src/common/proto.js';
import { startServer } from '../helpers/cluster.js';

interface Target {
  readonly paths: string[];
  readonly hashes: Buffer[];
  readonly uploadId: string;
  readonly cursor: string;
}

/** A plausible request for `type`, every field aimed at tenant B's things. */
function requestFor(type: protobuf.Type, target: Target, depth = 0): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of type.fieldsArray) {
    f.resolve();
    const name = f.name;
    let v: unknown;
    if (f.resolvedType instanceof protobuf.Type) v = depth < 2 ? requestFor(f.resolvedType, target, depth + 1) : undefined;
    else if (f.resolvedType instanceof protobuf.Enum) v = Object.values(f.resolvedType.values)[1] ?? 0;
    else if (f.type === 'string') {
      if (/path$/.test(name)) v = name.startsWith('to') ? '/moved-by-intruder' : target.paths[0];
      else if (/upload_id|session/.test(name)) v = target.uploadId;
      else if (/cursor/.test(name)) v = target.cursor;
      else if (/token/.test(name)) v = '';
      else if (/user|grantee|principal/.test(name)) v = 'b/alice';
      else if (/method/.test(name)) v = 'GET';
      else v = '';
    } else if (f.type === 'bytes') v = target.hashes[0];
    else if (f.type === 'bool') v = false;
    else if (/version/.test(name)) v = 1;
    else if (/size|limit|page_size|expires/.test(name)) v = 100;
    else v = 0;
    if (f.repeated) v = f.type === 'bytes' ? target.hashes : v === undefined ? [] : [v];
    if (v !== undefined) out[name] = v;
  }
  return out;
}

test('every public RPC × {no token, expired, tampered, forged, other tenant, read-only role, read-only share, no share} is denied or confined', async (t) => {
  t.timeout(170_000);
  const cluster = await startDevCluster(t, { nodes: 1, replicationFactor: 1, writeQuorum: 1 });
  const server = { grpc: cluster.gatewayEndpoints[0]!, http: cluster.get('gateway-1').http };
  const secret = loadOrCreateSecret(cluster.secretPath);
  const tokenB = await signToken(secret, { tenant: 'tenant-b', role: 'user', subject: 'bob' });
  const readerB = await signToken(secret, { tenant: 'tenant-b', role: 'reader', subject: 'rita' });
  const tokenA = await signToken(secret, { tenant: 'tenant-a', role: 'user', subject: 'mallory' });
  const tokenC = await signToken(secret, { tenant: 'tenant-c', role: 'user', subject: 'eve' });
  const expired = await signToken(secret, { tenant: 'tenant-b', role: 'user', ttlSeconds: 1 });
  const [head, payload, sig] = tokenB.split('.') as [string, string, string];
  const flipped = payload.slice(0, 10) + (payload[10] === 'A' ? 'B' : 'A') + payload.slice(11);
  const tampered = [head, flipped, sig].join('.');
  const forged = await signToken(new Uint8Array(32).fill(9), { tenant: 'tenant-b', role: 'admin' });

  const b = new CairnClient({ endpoint: server.grpc, token: tokenB });
  t.teardown(() => b.close());
  const marker = randomBytes(48).toString('hex');
  const secretBytes = Buffer.from(`${marker}\n`.repeat(2000));
  await b.mkdir('/private');
  await b.putStream(Readable.from([secretBytes]), '/private/secret.txt');
  const hashes = chunkBuffer(secretBytes).map((c) => createHash('sha256').update(secretBytes.subarray(c.offset, c.offset + c.length)).digest());
  let cursor = '';
  for (;;) {
    const page = await b.listChanges(cursor, { pageSize: 1000 });
    cursor = page.nextCursor;
    if (!page.hasMore) break;
  }
  const target: Target = { paths: ['/private/secret.txt', '/private'], hashes, uploadId: 'u-' + randomBytes(8).toString('hex'), cursor };
  // mallory@tenant-a gets a read-only grant on /private; eve@tenant-c gets nothing.
  const adminToken = await signToken(secret, { tenant: 'tenant-b', role: 'admin', subject: 'admin' });
  const admin = new AdminClient({ address: cluster.metadataEndpoints[0]!, credentials: grpc.credentials.createInsecure(), token: () => Promise.resolve(adminToken) });
  t.teardown(() => admin.close());
  await admin.createUser({ tenant: 'tenant-b', user: 'mallory@tenant-a' });
  const sharing = new CairnSharing({ endpoint: server.grpc, token: tokenB });
  t.teardown(() => sharing.close());
  await sharing.share('/private', 'tenant-a/mallory', 'read');
  const link = await sharing.shareLink('/private/secret.txt', { expiresInSeconds: 1 });
  await new Promise((r) => setTimeout(r, 2100)); // let the 1-second token and link expire
  const linkUrl = new URL(link.url, server.http);
  const expiredLink = await fetch(linkUrl);
  t.true([403, 404, 410].includes(expiredLink.status), `an expired link share answers ${expiredLink.status}`);
  t.false((await expiredLink.text()).includes(marker));

  const raw = new grpc.Client(server.grpc, grpc.credentials.createInsecure());
  t.teardown(() => raw.close());
  const creds: Array<[string, string | undefined, string?]> = [
    ['none', undefined],
    ['expired', expired],
    ['tampered', tampered],
    ['forged', forged],
    ['link-as-bearer', link.token],
    ['other-tenant', tokenA],
    ['reader', readerB],
    ['read-share', tokenA, 'tenant-b'],
    ['no-share', tokenC, 'tenant-b'],
  ];
  const matrix: string[] = [];
  let methods = 0;
  for (const m of publicMethods()) {
    const { service, request: type } = m;
    const body = Buffer.from(type.encode(type.fromObject(requestFor(type, target))).finish());
    const row: string[] = [];
    let served = true;
    for (const [kind, token, owner] of creds) {
      const before = (await b.listChanges(target.cursor, { pageSize: 1000 })).changes.length;
      const out = await rawCall(raw, m, [body], { token, owner, hangUpMs: 600 });
      if (out.code === (grpc.status.UNIMPLEMENTED as number)) {
        served = false;
        break;
      }
      row.push(`${kind}=${grpc.status[out.code]}`);
      const after = (await b.listChanges(target.cursor, { pageSize: 1000 })).changes.length;
      t.is(after, before, `${service}/${m.name} as ${kind} changed tenant B's tree`);
      if (['none', 'expired', 'tampered', 'forged', 'link-as-bearer'].includes(kind)) t.is(out.code, grpc.status.UNAUTHENTICATED, `${service}/${m.name} as ${kind}: ${out.details}`);
      if (kind === 'other-tenant' || kind === 'no-share') t.false(out.body.includes(marker), `${service}/${m.name} leaked tenant B's bytes to ${kind}`);
      if (kind === 'no-share') t.not(out.code, grpc.status.OK, `${service}/${m.name} served tenant B's tree without a share`);
      if ((kind === 'read-share' || kind === 'reader') && out.code !== (grpc.status.OK as number)) t.true([grpc.status.PERMISSION_DENIED, grpc.status.NOT_FOUND, grpc.status.INVALID_ARGUMENT, grpc.status.FAILED_PRECONDITION, grpc.status.CANCELLED].includes(out.code), `${service}/${m.name} as ${kind}: ${grpc.status[out.code]} ${out.details}`);
    }
    if (served) {
      methods++;
      matrix.push(`${service.split('.').pop()}/${m.name}: ${row.join(' ')}`);
    }
  }
  t.log(matrix.join('\n'));
  t.true(methods >= 20, `${methods} public methods checked`);
  // Tenant B's data is untouched and still B's.
  const parts: Buffer[] = [];
  for await (const p of b.read('/private/secret.txt')) if ('data' in p) parts.push(p.data);
  t.true(Buffer.concat(parts).equals(secretBytes));
});

test('no cross-tenant dedup oracle: a chunk another tenant stores is answered like one nobody stores', async (t) => {
  t.timeout(120_000);
  const server = await startServer(t);
  const secret = loadOrCreateSecret(join(server.dataDir, 'auth.key'));
  const ownerToken = await signToken(secret, { tenant: 'owner', role: 'user' });
  const owner = new CairnClient({ endpoint: server.grpc, token: ownerToken });
  const Files = loadProto().proto.cairn.v1.Files;
  const files = new Files(server.grpc, grpc.credentials.createInsecure());
  t.teardown(() => {
    owner.close();
    files.close();
  });
  const findMissing = (token: string, plainHashes: Buffer[]): Promise<Buffer[]> => {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token}`);
    return new Promise((resolve, reject) => files.FindMissingChunks({ plain_hashes: plainHashes }, md, (err, res) => (err !== null || res === undefined ? reject(err ?? new Error('no response')) : resolve(res.missing))));
  };
  const proberToken = await signToken(secret, { tenant: 'prober', role: 'user' });
  const data = randomBytes(4 * 1024 * 1024);
  await owner.putStream(Readable.from([data]), '/owned.bin');
  const owned = chunkBuffer(data).map((c) => createHash('sha256').update(data.subarray(c.offset, c.offset + c.length)).digest());
  t.true(owned.length > 20);
  // Owner sees its own chunks as present (the oracle would exist if the prober did too).
  t.is((await findMissing(ownerToken, owned)).length, 0);

  const samples: Record<'owned' | 'fresh', number[]> = { owned: [], fresh: [] };
  for (let i = 0; i < 300; i++) {
    const kind = i % 2 === 0 ? 'owned' : 'fresh';
    const hash = kind === 'owned' ? owned[i % owned.length]! : randomBytes(32);
    const start = process.hrtime.bigint();
    const missing = await findMissing(proberToken, [hash]);
    samples[kind].push(Number(process.hrtime.bigint() - start) / 1e6);
    t.is(missing.length, 1, 'the prober is told it lacks the chunk either way');
  }
  // Timing: the two distributions must be indistinguishable. Mann–Whitney U, two-sided, |z| < 3.3.
  const all = [...samples.owned.map((v) => ({ v, g: 0 })), ...samples.fresh.map((v) => ({ v, g: 1 }))].sort((x, y) => x.v - y.v);
  let rankSum = 0;
  all.forEach((x, i) => {
    if (x.g === 0) rankSum += i + 1;
  });
  const n1 = samples.owned.length;
  const n2 = samples.fresh.length;
  const u = rankSum - (n1 * (n1 + 1)) / 2;
  const z = (u - (n1 * n2) / 2) / Math.sqrt((n1 * n2 * (n1 + n2 + 1)) / 12);
  const median = (xs: number[]): number => [...xs].sort((a, b2) => a - b2)[xs.length >> 1]!;
  t.log(`median owned ${median(samples.owned).toFixed(3)} ms, fresh ${median(samples.fresh).toFixed(3)} ms, Mann–Whitney z = ${z.toFixed(2)}`);
  t.true(Math.abs(z) < 3.3, `timing differs between owned and fresh chunks (z = ${z.toFixed(2)})`);
});
