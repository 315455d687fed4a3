// Presigned URLs on a real embedded server: ranges equal slices of the source, conditional
// requests, HEAD, version pins, expiry, tampering (403 and nothing changes), and PUT round trips
// where a truncated body commits nothing.
import { randomInt } from 'node:crypto';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'ava';
import { isCairnError } from '../../src/client/index.js';
import { startServer, suiteScope, type ServerProcess } from '../helpers/cluster.js';
import { clientsFor, mint, putBytes, random, readAll, request, secretOf, type Endpoints, type HttpAnswer } from './helpers.js';

const suite = suiteScope('presign');
let server: ServerProcess;
let e: Endpoints;
let token: string;
const SOURCE = random(700_000); // several chunks
let v1Hash = '';

test.before(async () => {
  server = await startServer(suite);
  e = { grpc: server.grpc, http: server.http, secret: secretOf(server.dataDir) };
  token = await mint(e.secret, 'acme', 'user', 'alice');
  const { files } = clientsFor(suite, e, token);
  v1Hash = (await putBytes(files, '/media/film.bin', SOURCE)).contentHash;
});
test.after.always(() => suite.close());


async function presignGet(path: string, opts: { expiresInSeconds?: number; version?: number } = {}): Promise<string> {
  const { sharing } = clientsFor(suite, e, token);
  return e.http + (await sharing.presign(path, opts)).pathAndQuery;
}

function body(res: HttpAnswer): Buffer {
  return res.body;
}

test('a presigned GET returns the file with a strong ETag, length and Accept-Ranges', async (t) => {
  const url = await presignGet('/media/film.bin');
  const res = await request(url);
  t.is(res.status, 200);
  t.deepEqual(body(res), SOURCE);
  t.is(res.headers.get('content-length'), String(SOURCE.length));
  t.is(res.headers.get('accept-ranges'), 'bytes');
  t.is(res.headers.get('etag'), `"${v1Hash}-1"`);
  const head = await request(url, { method: 'HEAD' });
  t.is(head.status, 200);
  t.is(head.headers.get('content-length'), String(SOURCE.length));
  t.is((body(head)).length, 0);
});

test('random single ranges equal the same slice of the source', async (t) => {
  const url = await presignGet('/media/film.bin');
  for (let i = 0; i < 25; i++) {
    const a = randomInt(0, SOURCE.length);
    const b = randomInt(a, Math.min(SOURCE.length, a + randomInt(1, 300_000)));
    const res = await request(url, { headers: { range: `bytes=${a}-${b}` } });
    t.is(res.status, 206);
    t.is(res.headers.get('content-range'), `bytes ${a}-${b}/${SOURCE.length}`);
    t.is(res.headers.get('content-length'), String(b - a + 1));
    t.deepEqual(body(res), SOURCE.subarray(a, b + 1));
  }
  // Past the end is clipped; open-ended runs to the end.
  const tail = await request(url, { headers: { range: `bytes=${SOURCE.length - 10}-${SOURCE.length + 500}` } });
  t.is(tail.status, 206);
  t.deepEqual(body(tail), SOURCE.subarray(SOURCE.length - 10));
  const open = await request(url, { headers: { range: 'bytes=654321-' } });
  t.deepEqual(body(open), SOURCE.subarray(654321));
});

test('suffix ranges return the last n bytes (all of it when n exceeds the size)', async (t) => {
  const url = await presignGet('/media/film.bin');
  for (const n of [1, 100, 65_537, SOURCE.length, SOURCE.length + 1000]) {
    const res = await request(url, { headers: { range: `bytes=-${n}` } });
    t.is(res.status, 206);
    const start = Math.max(0, SOURCE.length - n);
    t.is(res.headers.get('content-range'), `bytes ${start}-${SOURCE.length - 1}/${SOURCE.length}`);
    t.deepEqual(body(res), SOURCE.subarray(start));
  }
});

test('ranges past the end are 416 with the size; malformed ranges get the whole file', async (t) => {
  const url = await presignGet('/media/film.bin');
  for (const range of [`bytes=${SOURCE.length}-`, `bytes=${SOURCE.length + 5}-${SOURCE.length + 9}`, 'bytes=-0', `bytes=${SOURCE.length}-,${SOURCE.length + 9}-`]) {
    const res = await request(url, { headers: { range } });
    t.is(res.status, 416, range);
    t.is(res.headers.get('content-range'), `bytes */${SOURCE.length}`);
  }
  for (const range of ['items=0-5', 'bytes=9-3', 'bytes=0-1,9-3']) {
    const res = await request(url, { headers: { range } });
    t.is(res.status, 200, range);
    t.is((body(res)).length, SOURCE.length);
  }
});

/** The parts of a multipart/byteranges body: each part's Content-Range and bytes. */
function parts(res: HttpAnswer): Array<{ range: string; data: Buffer }> {
  const m = /^multipart\/byteranges; boundary=(\S+)$/.exec(res.headers.get('content-type') ?? '');
  if (m === null) throw new Error(`not multipart: ${res.headers.get('content-type')}`);
  const text = res.body.toString('latin1');
  const out: Array<{ range: string; data: Buffer }> = [];
  const pieces = text.split(`--${m[1]}`);
  if (pieces.at(-1) !== '--\r\n') throw new Error('no closing boundary');
  for (const piece of pieces.slice(1, -1)) {
    const headerEnd = piece.indexOf('\r\n\r\n');
    const range = /content-range: (.+)\r\n/i.exec(piece.slice(0, headerEnd + 2))?.[1] ?? '';
    const data = piece.slice(headerEnd + 4).replace(/\r\n$/, '');
    out.push({ range, data: Buffer.from(data, 'latin1') });
  }
  return out;
}

test('several ranges come back as multipart/byteranges, sorted and coalesced, each part the same slice of the source', async (t) => {
  const url = await presignGet('/media/film.bin');
  for (let i = 0; i < 8; i++) {
    const a = randomInt(0, 300_000);
    const b = a + randomInt(0, 100_000);
    const c = b + 1 + randomInt(1, 50_000);
    const d = Math.min(SOURCE.length - 1, c + randomInt(0, 200_000));
    const res = await request(url, { headers: { range: `bytes=${c}-${d}, ${a}-${b}` } });
    t.is(res.status, 206);
    t.is(Number(res.headers.get('content-length')), res.body.length, 'the announced length is exact');
    const got = parts(res);
    t.deepEqual(got.map((p) => p.range), [`bytes ${a}-${b}/${SOURCE.length}`, `bytes ${c}-${d}/${SOURCE.length}`]);
    t.true(got[0]!.data.equals(SOURCE.subarray(a, b + 1)), 'first part');
    t.true(got[1]!.data.equals(SOURCE.subarray(c, d + 1)), 'second part');
  }
  const overlapping = await request(url, { headers: { range: 'bytes=10-99,50-149' } });
  t.is(overlapping.status, 206);
  t.is(overlapping.headers.get('content-range'), `bytes 10-149/${SOURCE.length}`, 'coalesced into one plain 206');
  t.true(overlapping.body.equals(SOURCE.subarray(10, 150)));
  const head = await request(url, { method: 'HEAD', headers: { range: 'bytes=0-9,100-109' } });
  t.is(head.status, 206);
  t.regex(head.headers.get('content-type') ?? '', /^multipart\/byteranges; boundary=/);
  t.is(head.body.length, 0);
});

test('If-None-Match answers 304; If-Range sends the range only while the ETag matches', async (t) => {
  const url = await presignGet('/media/film.bin');
  const etag = (await request(url, { method: 'HEAD' })).headers.get('etag')!;
  for (const inm of [etag, `W/${etag}`, `"nope", ${etag}`, '*']) {
    const res = await request(url, { headers: { 'if-none-match': inm } });
    t.is(res.status, 304, inm);
    t.is(res.headers.get('etag'), etag);
    t.is((body(res)).length, 0);
  }
  const other = await request(url, { headers: { 'if-none-match': '"0000-1"' } });
  t.is(other.status, 200);
  const matching = await request(url, { headers: { range: 'bytes=0-9', 'if-range': etag } });
  t.is(matching.status, 206);
  t.deepEqual(body(matching), SOURCE.subarray(0, 10));
  for (const ifRange of ['"stale-1"', new Date().toUTCString()]) {
    const res = await request(url, { headers: { range: 'bytes=0-9', 'if-range': ifRange } });
    t.is(res.status, 200, ifRange);
    t.deepEqual(body(res), SOURCE);
  }
});

test('a URL pinned to a version keeps serving it; an unpinned one follows the current version', async (t) => {
  const { files } = clientsFor(t, e, token);
  const first = random(5000);
  await putBytes(files, '/media/pinned.bin', first);
  const pinned = await presignGet('/media/pinned.bin', { version: 1 });
  const current = await presignGet('/media/pinned.bin');
  const second = random(6000);
  await putBytes(files, '/media/pinned.bin', second, 1);
  const p = await request(pinned);
  t.deepEqual(body(p), first);
  t.regex(p.headers.get('cache-control') ?? '', /immutable/);
  t.deepEqual(body(await request(current)), second);
});

test('an expired URL is 403', async (t) => {
  const url = await presignGet('/media/film.bin', { expiresInSeconds: 3 });
  const fresh = await request(url, { headers: { range: 'bytes=0-0' } });
  t.is(fresh.status, 206);
  await sleep(4100);
  const res = await request(url);
  t.is(res.status, 403);
  t.is(((res.json()) as { error: { code: string } }).error.code, 'CAIRN_PERMISSION_DENIED');
});

test('tampered path, version, expiry or signature, and another method, are 403 and change nothing', async (t) => {
  const { files, sharing } = clientsFor(t, e, token);
  const original = random(4000);
  await putBytes(files, '/media/t.bin', original);
  await putBytes(files, '/media/other.bin', random(10));
  const get = new URL(e.http + (await sharing.presign('/media/t.bin')).pathAndQuery);
  const put = new URL(e.http + (await sharing.presign('/media/t.bin', { method: 'PUT' })).pathAndQuery);
  const variants: Array<[string, URL]> = [];
  const edit = (name: string, base: URL, f: (u: URL) => void): void => {
    const u = new URL(base);
    f(u);
    variants.push([name, u]);
  };
  edit('path', get, (u) => (u.pathname = u.pathname.replace('t.bin', 'other.bin')));
  edit('tenant', get, (u) => (u.pathname = u.pathname.replace('/acme/', '/acmf/')));
  edit('version', get, (u) => u.searchParams.set('v', '1'));
  edit('expiry', get, (u) => u.searchParams.set('x', String(Number(u.searchParams.get('x')) + 3600)));
  edit('signature', get, (u) => {
    const s = u.searchParams.get('s')!;
    u.searchParams.set('s', (s[0] === 'A' ? 'B' : 'A') + s.slice(1));
  });
  edit('no signature', get, (u) => u.searchParams.delete('s'));
  for (const [name, u] of variants) {
    const res = await request(u);
    t.is(res.status, 403, name);
  }
  // A GET URL cannot PUT, a PUT URL cannot GET.
  const putWithGet = await request(get, { method: 'PUT', body: random(100) });
  t.is(putWithGet.status, 403);
  const getWithPut = await request(put);
  t.is(getWithPut.status, 403);
  const tamperedPut = new URL(put);
  tamperedPut.pathname = tamperedPut.pathname.replace('t.bin', 'x.bin');
  const res = await request(tamperedPut, { method: 'PUT', body: random(100) });
  t.is(res.status, 403);
  const stat = await files.stat('/media/t.bin');
  t.is(stat.version, 1);
  t.deepEqual(await readAll(files, '/media/t.bin'), original);
  const err = await t.throwsAsync(files.stat('/media/x.bin'));
  t.true(isCairnError(err, 'CAIRN_NOT_FOUND'));
});

test('a presigned PUT stores a new version, with Content-Length or chunked', async (t) => {
  const { files, sharing } = clientsFor(t, e, token);
  const data = random(400_000);
  const url = e.http + (await sharing.presign('/uploads/a.bin', { method: 'PUT', expiresInSeconds: 600 })).pathAndQuery;
  const res = await request(url, { method: 'PUT', body: data });
  t.is(res.status, 200);
  const out = (res.json()) as { file: { version: string; size: string } };
  t.is(Number(out.file.size), data.length);
  t.deepEqual(await readAll(files, '/uploads/a.bin'), data);
  t.truthy(res.headers.get('etag'));

  const second = random(300_000);
  // No Content-Length: the body goes chunked.
  const pieces = Array.from({ length: Math.ceil(second.length / 50_000) }, (_, i) => second.subarray(i * 50_000, (i + 1) * 50_000));
  const chunked = await request(url, { method: 'PUT', body: pieces });
  t.is(chunked.status, 200);
  const info = await files.stat('/uploads/a.bin');
  t.is(info.version, 2);
  t.deepEqual(await readAll(files, '/uploads/a.bin'), second);

  // Conditional PUTs: If-None-Match: * (must not exist) and If-Match (must be at that version).
  t.is((await request(url, { method: 'PUT', body: random(10), headers: { 'if-none-match': '*' } })).status, 409);
  const current = `"${info.contentHash}-2"`;
  t.is((await request(url, { method: 'PUT', body: random(10), headers: { 'if-match': `"${info.contentHash}-1"` } })).status, 409);
  t.is((await files.stat('/uploads/a.bin')).version, 2);
  const matched = await request(url, { method: 'PUT', body: random(10), headers: { 'if-match': current } });
  t.is(matched.status, 200);
  t.is((await files.stat('/uploads/a.bin')).version, 3);
});

/** Sends a PUT by hand: headers, then `sent` bytes, then either closes the socket or waits for the answer. */
function rawPut(url: URL, headers: Record<string, string>, payload: Buffer, closeEarly: boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname, () => {
      const head = [`PUT ${url.pathname}${url.search} HTTP/1.1`, `Host: ${url.host}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), '', ''].join('\r\n');
      socket.write(head);
      socket.write(payload, () => {
        if (closeEarly) socket.destroy();
      });
    });
    let answer = '';
    socket.on('data', (d: Buffer) => {
      answer += d.toString('latin1');
      if (answer.includes('\r\n\r\n')) socket.destroy();
    });
    socket.on('close', () => resolve(answer));
    socket.on('error', reject);
  });
}

test('a PUT whose body is cut short commits nothing; an oversized or unsized one is refused', async (t) => {
  const { files, sharing } = clientsFor(t, e, token);
  const url = new URL(e.http + (await sharing.presign('/uploads/cut.bin', { method: 'PUT' })).pathAndQuery);
  await rawPut(url, { 'content-length': '500000' }, random(200_000), true);
  // The server may still be reading what was sent; give it every chance to (wrongly) commit.
  await sleep(500);
  const err = await t.throwsAsync(files.stat('/uploads/cut.bin'));
  t.true(isCairnError(err, 'CAIRN_NOT_FOUND'));

  const tooBig = await rawPut(url, { 'content-length': String(20 * 1024 ** 3) }, Buffer.alloc(0), false);
  t.regex(tooBig, /^HTTP\/1\.1 413/);
  const unsized = await rawPut(url, { connection: 'close' }, Buffer.alloc(0), false);
  t.regex(unsized, /^HTTP\/1\.1 400/);
  const stillMissing = await t.throwsAsync(files.stat('/uploads/cut.bin'));
  t.true(isCairnError(stillMissing, 'CAIRN_NOT_FOUND'));
});

test('bearer GETs serve the caller tenant\'s files; without a token they are 401', async (t) => {
  const ok = await request(`${e.http}/v1/files/media/film.bin`, { headers: { authorization: `Bearer ${token}`, range: 'bytes=100-199' } });
  t.is(ok.status, 206);
  t.deepEqual(body(ok), SOURCE.subarray(100, 200));
  const anon = await request(`${e.http}/v1/files/media/film.bin`);
  t.is(anon.status, 401);
  // Another tenant's token finds nothing at the same path.
  const other = await request(`${e.http}/v1/files/media/film.bin`, { headers: { authorization: `Bearer ${await mint(e.secret, 'globex')}` } });
  t.is(other.status, 404);
});

test('presign validates its input and another tenant cannot presign this tenant\'s files', async (t) => {
  const { sharing } = clientsFor(t, e, token);
  const tooLong = await t.throwsAsync(sharing.presign('/media/film.bin', { expiresInSeconds: 8 * 24 * 3600 }));
  t.true(isCairnError(tooLong, 'CAIRN_INVALID_ARGUMENT'));
  const missing = await t.throwsAsync(sharing.presign('/media/nothing.bin'));
  t.true(isCairnError(missing, 'CAIRN_NOT_FOUND'));
  const badPath = await t.throwsAsync(sharing.presign('media/../x'));
  t.true(isCairnError(badPath, 'CAIRN_INVALID_PATH'));
  const putVersion = await t.throwsAsync(sharing.presign('/media/film.bin', { method: 'PUT', version: 1 }));
  t.true(isCairnError(putVersion, 'CAIRN_INVALID_ARGUMENT'));
  const reader = clientsFor(t, e, await mint(e.secret, 'acme', 'reader', 'rita'));
  const readerPut = await t.throwsAsync(reader.sharing.presign('/media/film.bin', { method: 'PUT' }));
  t.true(isCairnError(readerPut, 'CAIRN_PERMISSION_DENIED'));

  const globexToken = await mint(e.secret, 'globex', 'user', 'gina');
  const own = clientsFor(t, e, globexToken);
  const notTheirs = await t.throwsAsync(own.sharing.presign('/media/film.bin'));
  t.true(isCairnError(notTheirs, 'CAIRN_NOT_FOUND'));
  const viaHeader = clientsFor(t, e, globexToken, 'acme');
  const denied = await t.throwsAsync(viaHeader.sharing.presign('/media/film.bin'));
  t.true(isCairnError(denied, 'CAIRN_PERMISSION_DENIED'));
});
