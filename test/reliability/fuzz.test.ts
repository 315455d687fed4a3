// Fuzzing the public surface of a real server: every RPC of every public service (found from the
// .proto files, so new RPCs are fuzzed without touching this file) with random, oversized,
// truncated and type-confused messages and bad tokens, and the HTTP port with random requests.
// Properties: the server never crashes, every answer is a documented status, and a call that
// fails changes nothing (the tenant's change feed does not move).
import test from 'ava';
import { connect } from 'node:net';
import { request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import protobuf from 'protobufjs';
import { publicMethods, rawCall, type Method } from './rpc.js';
import { CairnClient } from '../../src/client/index.js';
import { runCli, startServer, type ServerProcess } from '../helpers/cluster.js';

const RUNS = Number(process.env['CAIRN_FUZZ_RUNS'] ?? 400);
/** Statuses the API documents for bad input (docs/errors.md), plus the transport's own. */
const ALLOWED = new Set([
  grpc.status.OK,
  grpc.status.INVALID_ARGUMENT,
  grpc.status.NOT_FOUND,
  grpc.status.OUT_OF_RANGE,
  grpc.status.FAILED_PRECONDITION,
  grpc.status.PERMISSION_DENIED,
  grpc.status.UNAUTHENTICATED,
  grpc.status.RESOURCE_EXHAUSTED,
  grpc.status.ABORTED,
  grpc.status.ALREADY_EXISTS,
  grpc.status.CANCELLED,
]);

const weirdStrings = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.constantFrom('', '/', '.', '..', '/a/../b', '/a/./b', '/a\u0000b', 'relative/path', '//double', '/trailing/', '/' + 'x'.repeat(300), '/' + 'd/'.repeat(3000), '/ünï cødé/f.txt', '\uD800', '/a\nb', 'ipv4:127.0.0.1:1', '%2e%2e', 'GET', 'PUT', '-1', '9'.repeat(40)),
  fc.string({ unit: 'binary', maxLength: 64 }).map((s) => '/' + s),
);
const u64 = fc.oneof(fc.constantFrom(0, 1, 2 ** 31, 2 ** 32, Number.MAX_SAFE_INTEGER, '18446744073709551615', '9223372036854775807'), fc.nat());
const i64 = fc.oneof(fc.constantFrom(-1, -(2 ** 53), '-9223372036854775808', '9223372036854775807'), fc.integer());
const bytes = fc.oneof(fc.uint8Array({ maxLength: 40 }), fc.constantFrom(new Uint8Array(32), new Uint8Array(33).fill(7), new Uint8Array(0)), fc.uint8Array({ minLength: 32, maxLength: 32 }));

function scalar(type: string): fc.Arbitrary<unknown> {
  switch (type) {
    case 'string':
      return weirdStrings;
    case 'bool':
      return fc.boolean();
    case 'bytes':
      return bytes;
    case 'int32':
    case 'sint32':
    case 'sfixed32':
      return fc.oneof(fc.integer(), fc.constantFrom(-1, 0, 2 ** 31 - 1, -(2 ** 31)));
    case 'uint32':
    case 'fixed32':
      return fc.oneof(fc.nat(), fc.constantFrom(0, 4294967295));
    case 'int64':
    case 'sint64':
    case 'sfixed64':
      return i64;
    case 'uint64':
    case 'fixed64':
      return u64;
    case 'double':
    case 'float':
      return fc.double();
    default:
      return fc.constant(undefined);
  }
}

function messageArb(type: protobuf.Type, depth = 0): fc.Arbitrary<Record<string, unknown>> {
  const fields: Record<string, fc.Arbitrary<unknown>> = {};
  for (const f of type.fieldsArray) {
    f.resolve();
    let a: fc.Arbitrary<unknown>;
    if (f.resolvedType instanceof protobuf.Type) a = depth < 2 ? messageArb(f.resolvedType, depth + 1) : fc.constant({});
    else if (f.resolvedType instanceof protobuf.Enum) a = fc.oneof(fc.constantFrom(...Object.values(f.resolvedType.values)), fc.integer({ min: -5, max: 1000 }));
    else a = scalar(f.type);
    if (f.repeated) a = fc.array(a, { maxLength: 4 });
    fields[f.name] = fc.option(a, { nil: undefined, freq: 3 });
  }
  return fc.record(fields);
}

function encode(type: protobuf.Type, value: Record<string, unknown>): Buffer {
  const clean = Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined));
  try {
    return Buffer.from(type.encode(type.fromObject(clean)).finish());
  } catch {
    return Buffer.from(type.encode(type.create({})).finish());
  }
}

type Mode = 'structured' | 'raw' | 'truncated' | 'oversized' | 'badtoken';

interface Case {
  readonly method: Method;
  readonly mode: Mode;
  readonly messages: Buffer[];
  readonly token: string;
}

async function feedHead(client: CairnClient, cursor: string): Promise<{ cursor: string; changes: number }> {
  let changes = 0;
  for (;;) {
    const page = await client.listChanges(cursor, { pageSize: 1000 });
    changes += page.changes.length;
    cursor = page.nextCursor;
    if (!page.hasMore) return { cursor, changes };
  }
}

async function token(server: ServerProcess, tenant: string, role = 'user'): Promise<string> {
  const r = await runCli(['token', 'create', '--data-dir', server.dataDir, '--tenant', tenant, '--role', role]);
  if (r.code !== 0) throw new Error(r.stderr);
  return r.stdout.trim();
}

test('every public RPC survives random, oversized, truncated and type-confused input; failures change nothing', async (t) => {
  t.timeout(170_000);
  const server = await startServer(t);
  const userToken = await token(server, 'fuzz');
  const sdk = new CairnClient({ endpoint: server.grpc, token: userToken });
  t.teardown(() => sdk.close());
  // Something to find, read and move around.
  await sdk.mkdir('/dir');
  const { Readable } = await import('node:stream');
  await sdk.putStream(Readable.from([Buffer.from('fuzz me\n'.repeat(100))]), '/dir/a.txt');
  let head = await feedHead(sdk, '');

  const methods = publicMethods();
  t.true(methods.length >= 15, `found ${methods.length} public methods`);
  const raw = new grpc.Client(server.grpc, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': 16 * 1024 * 1024 });
  t.teardown(() => raw.close());
  const badTokens = ['', 'garbage', userToken.slice(0, -4) + 'AAAA', userToken.split('.').slice(0, 2).join('.') + '.', 'Bearer x'];

  const caseArb: fc.Arbitrary<Case> = fc
    .record({ m: fc.nat({ max: methods.length - 1 }), mode: fc.constantFrom<Mode>('structured', 'structured', 'structured', 'raw', 'truncated', 'oversized', 'badtoken'), seed: fc.nat(), count: fc.integer({ min: 1, max: 3 }) })
    .chain(({ m, mode, seed, count }) => {
      const method = methods[m]!;
      const msg = messageArb(method.request).map((v) => encode(method.request, v));
      const messages: fc.Arbitrary<Buffer[]> =
        mode === 'raw'
          ? fc.array(fc.uint8Array({ maxLength: 256 }).map((u) => Buffer.from(u)), { minLength: 1, maxLength: count })
          : mode === 'truncated'
            ? fc.array(msg.map((b) => b.subarray(0, Math.max(0, b.length - 1 - (seed % Math.max(1, b.length))))), { minLength: 1, maxLength: count })
            : mode === 'oversized'
              ? fc.constant([Buffer.alloc(5 * 1024 * 1024 + (seed % 1024), 0x41)])
              : fc.array(msg, { minLength: 1, maxLength: count });
      return messages.map((ms) => ({ method, mode, messages: ms, token: mode === 'badtoken' ? badTokens[seed % badTokens.length]! : userToken }));
    });

  const seen = new Map<string, Set<number>>();
  await fc.assert(
    fc.asyncProperty(caseArb, async (c) => {
      const { code, details } = await rawCall(raw, c.method, c.messages, { token: c.token === '' ? undefined : c.token, truncate: c.mode === 'truncated', hangUpMs: 400 });
      const is = (s: grpc.status): boolean => code === (s as number);
      const key = c.method.name;
      if (!seen.has(key)) seen.set(key, new Set());
      seen.get(key)!.add(code);
      const transportParseError = is(grpc.status.INTERNAL) && /deserializ/i.test(details);
      if (!ALLOWED.has(code) && !transportParseError && !(is(grpc.status.UNIMPLEMENTED) && c.method.service !== 'cairn.v1.Files')) {
        throw new Error(`${c.method.path} (${c.mode}) answered ${grpc.status[code]}: ${details}`);
      }
      if (c.mode === 'badtoken' && !is(grpc.status.UNAUTHENTICATED) && !is(grpc.status.UNIMPLEMENTED)) throw new Error(`${c.method.path} with a bad token answered ${grpc.status[code]}`);
      const after = await feedHead(sdk, head.cursor);
      if (!is(grpc.status.OK) && after.changes > 0) throw new Error(`${c.method.path} (${c.mode}) failed with ${grpc.status[code]} but changed the tree (${after.changes} changes)`);
      head = after;
    }),
    { numRuns: RUNS, seed: Number(process.env['CAIRN_FUZZ_SEED'] ?? Date.now() % 2 ** 31), endOnFailure: true },
  );
  t.log([...seen].map(([k, v]) => `${k}: ${[...v].map((c) => grpc.status[c]).join('/')}`).join('\n'));
  t.is(server.proc.exitCode, null, 'the server is still running');
  t.false(/uncaught|unhandled/i.test(server.stderr()), server.stderr().slice(-2000));
  const info = await sdk.putStream(Readable.from([Buffer.from('still fine')]), '/after-fuzz.txt');
  t.is(info.size, 10);
});

test('the HTTP port survives random and malformed requests without a 5xx or a crash', async (t) => {
  t.timeout(120_000);
  const server = await startServer(t);
  const url = new URL(server.http);
  const methods = ['GET', 'HEAD', 'PUT', 'POST', 'DELETE', 'PATCH', 'OPTIONS'];
  const paths = fc.oneof(
    fc.constantFrom('/', '/metrics', '/healthz', '/readyz', '/v1/files/x', '/v1/presigned/a/b', '/p/../../etc/passwd', '/%00', '/%zz', '/' + 'a'.repeat(8000), '/thumbnails/x?size=-1', '/v1/files/x?sig=zz&exp=1'),
    fc.webPath(),
    fc.string({ maxLength: 60 }).map((s) => '/' + encodeURIComponent(s)),
  );
  const headers = fc.record({ range: fc.option(fc.oneof(fc.constantFrom('bytes=0-', 'bytes=-1', 'bytes=5-1', 'bytes=0-0,2-3', 'bytes=abc', 'items=0-1', 'bytes=99999999999999999999-'), fc.string({ maxLength: 20 })), { nil: undefined }), 'if-none-match': fc.option(fc.string({ maxLength: 40 }), { nil: undefined }), authorization: fc.option(fc.constantFrom('Bearer x', 'Basic Zm9vOmJhcg==', 'Bearer '), { nil: undefined }) });
  let fiveHundreds = 0;
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...methods), paths, headers, fc.uint8Array({ maxLength: 512 }), async (method, path, hdrs, body) => {
      const status = await new Promise<number>((resolve) => {
        const h = Object.fromEntries(Object.entries(hdrs).filter(([, v]) => v !== undefined && /^[\x20-\x7e]*$/.test(v))) as Record<string, string>;
        let req;
        try {
          req = request({ host: url.hostname, port: url.port, method, path, headers: h, timeout: 10_000 }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          });
        } catch {
          resolve(-1); // the client refused to send it (e.g. unescaped characters): nothing to test
          return;
        }
        req.on('error', () => resolve(-2));
        req.end(method === 'GET' || method === 'HEAD' ? undefined : Buffer.from(body));
      });
      if (status >= 500) fiveHundreds++;
      if (status >= 500) throw new Error(`${method} ${path} answered ${status}`);
    }),
    { numRuns: Math.min(RUNS, 300) },
  );
  // Malformed at the protocol level: truncated request lines, bad headers, garbage.
  for (const rawReq of ['GET /metrics', 'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n', '\x00\x01\x02garbage\r\n\r\n', 'GET / HTTP/9.9\r\n\r\n', `GET /${'x'.repeat(100_000)} HTTP/1.1\r\n\r\n`, 'PUT /v1/presigned/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n']) {
    await new Promise<void>((resolve) => {
      const s = connect(Number(url.port), url.hostname, () => s.end(rawReq));
      s.on('data', (d: Buffer) => {
        const m = /^HTTP\/1\.1 (\d+)/.exec(d.toString());
        if (m !== null && Number(m[1]) >= 500) fiveHundreds++;
      });
      s.on('error', () => resolve());
      s.on('close', () => resolve());
      setTimeout(() => s.destroy(), 2000);
    });
  }
  await sleep(100);
  t.is(fiveHundreds, 0);
  t.is(server.proc.exitCode, null, 'the server is still running');
  const health = await fetch(`${server.http}/healthz`);
  t.is(health.status, 200);
});
