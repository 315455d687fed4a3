// Tokens: signed, scoped to a tenant and role, expiring; paths: normalised and rejected with
// CAIRN_INVALID_PATH when unsafe.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { can, loadOrCreateSecret, signToken, verifyToken } from '../../src/common/auth.js';
import { normalizePath } from '../../src/common/paths.js';
import { tempDir } from '../helpers/cluster.js';

test('a token verifies with its secret only, and carries tenant and role', async (t) => {
  const secret = randomBytes(32);
  const token = await signToken(secret, { tenant: 'acme', role: 'reader' });
  t.like(await verifyToken(secret, token), { tenant: 'acme', role: 'reader' });
  await t.throwsAsync(verifyToken(randomBytes(32), token), { message: 'invalid token' });
  const p = await verifyToken(secret, token);
  t.true(can(p, 'read'));
  t.false(can(p, 'write'));
  t.false(can({ ...p, role: 'admin' }, 'service'));
});

test('an expired token is CAIRN_TOKEN_EXPIRED', async (t) => {
  const secret = randomBytes(32);
  const token = await signToken(secret, { tenant: 'acme', role: 'user', ttlSeconds: 1 });
  await new Promise((r) => setTimeout(r, 2100));
  const err = await t.throwsAsync(verifyToken(secret, token));
  t.is((err as { code?: string }).code, 'CAIRN_TOKEN_EXPIRED');
});

test('bad token options are programmer errors; bad tenants are rejected', async (t) => {
  const secret = randomBytes(32);
  await t.throwsAsync(signToken(secret, { tenant: 'acme', role: 'root' as 'admin' }), { instanceOf: TypeError });
  await t.throwsAsync(signToken(secret, { tenant: 'acme', role: 'user', ttlSeconds: 0 }), { instanceOf: RangeError });
  await t.throwsAsync(signToken(secret, { tenant: 'Acme/../x', role: 'user' }), { message: /invalid tenant/ });
});

test('the signing secret is created once, private, and reused', (t) => {
  const path = join(tempDir(t), 'sub', 'auth.key');
  const a = loadOrCreateSecret(path);
  t.is(statSync(path).mode & 0o777, 0o600);
  t.deepEqual(loadOrCreateSecret(path), a);
  t.true(readFileSync(path, 'utf8').trim().length >= 43);
});

test('paths are normalised', (t) => {
  t.is(normalizePath('/a//b/'), '/a/b');
  t.is(normalizePath('/Cafe\u0301/x'), '/Caf\u00e9/x');
  t.is(normalizePath('/with space/ünï'), '/with space/ünï');
});

test('unsafe paths are CAIRN_INVALID_PATH', (t) => {
  for (const bad of ['', 'rel/x', '/', '//', '/a/../b', '/./a', '/a/\u0000', '/a\nb', '/' + 'x'.repeat(256), '/a'.repeat(2100)]) {
    const err = t.throws(() => normalizePath(bad), undefined, JSON.stringify(bad.slice(0, 20)));
    t.is((err as { code?: string }).code, 'CAIRN_INVALID_PATH');
  }
  t.throws(() => normalizePath(42));
});

test('normalisation is idempotent and never yields a dot segment', (t) => {
  t.notThrows(() => fc.assert(
    fc.property(fc.array(fc.string({ minLength: 0, maxLength: 12 }), { maxLength: 8 }), (segs) => {
      let p: string;
      try {
        p = normalizePath('/' + segs.join('/'));
      } catch {
        return true;
      }
      return normalizePath(p) === p && !p.split('/').slice(1).some((s) => s === '.' || s === '..' || s === '');
    }),
    { numRuns: 500 },
  ));
});

test('processes starting together on one fresh secret file all load the same secret', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-secret-race-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'auth.key');
  const module = new URL('../../src/common/auth.ts', import.meta.url).href;
  const at = Date.now() + 2500;
  const script = `const { loadOrCreateSecret } = await import(${JSON.stringify(module)}); while (Date.now() < ${at}); process.stdout.write(Buffer.from(loadOrCreateSecret(${JSON.stringify(path)})).toString('hex'));`;
  const secrets = await Promise.all(
    Array.from({ length: 8 }, () => new Promise<string>((resolve, reject) => {
      execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], (err, stdout, stderr) => (err ? reject(new Error(stderr || err.message)) : resolve(stdout)));
    })),
  );
  t.is(new Set(secrets).size, 1, 'every process holds the same secret');
  t.is(secrets[0], Buffer.from(loadOrCreateSecret(path)).toString('hex'));
  t.deepEqual(readdirSync(dir), ['auth.key'], 'no temporary file left behind');
});
