// Tenant data keys: stored wrapped in metadata, created once even under concurrent first use,
// cached unwrapped per gateway, and useless under another master key.
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CairnError } from '../../src/common/errors.js';
import { TenantKeys, loadMasterKey, type TenantKeyStore } from '../../src/gateway/keys.js';
import { openLevelKv } from '../../src/metadata/kv/index.js';
import { getOrCreateTenantKey } from '../../src/metadata/admin-tenant-keys.js';
import type { Kv } from '../../src/metadata/kv/index.js';

async function level(t: { teardown(fn: () => Promise<void>): void }): Promise<Kv> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-tenant-keys-'));
  const kv = await openLevelKv({ dir });
  t.teardown(async () => {
    await kv.close();
    await rm(dir, { recursive: true, force: true });
  });
  return kv;
}

function storeOf(kv: Kv, calls: { n: number } = { n: 0 }): TenantKeyStore {
  return {
    getOrCreateTenantKey(tenant, candidate) {
      calls.n++;
      return getOrCreateTenantKey(kv, tenant, candidate);
    },
  };
}

test('concurrent first uses by many gateways agree on one key, created once', async (t) => {
  const kv = await level(t);
  const master = randomBytes(32);
  const gateways = Array.from({ length: 8 }, () => new TenantKeys(master, storeOf(kv)));
  const keys = await Promise.all(gateways.map((g) => g.get('acme')));
  for (const k of keys) t.true(k.equals(keys[0]!));
  t.is(keys[0]!.length, 32);
  const other = await gateways[0]!.get('globex');
  t.false(other.equals(keys[0]!), 'each tenant has its own key');
});

test('a gateway asks metadata once per tenant and caches the key', async (t) => {
  const kv = await level(t);
  const calls = { n: 0 };
  const keys = new TenantKeys(randomBytes(32), storeOf(kv, calls));
  await Promise.all([keys.get('acme'), keys.get('acme'), keys.get('acme')]);
  await keys.get('acme');
  t.is(calls.n, 1);
});

test('another master key cannot unwrap the stored key (CAIRN_DATA_LOSS), and is not cached', async (t) => {
  const kv = await level(t);
  await new TenantKeys(randomBytes(32), storeOf(kv)).get('acme');
  const calls = { n: 0 };
  const wrong = new TenantKeys(randomBytes(32), storeOf(kv, calls));
  for (let i = 0; i < 2; i++) {
    const err = await t.throwsAsync(wrong.get('acme'));
    t.true(err instanceof CairnError && err.code === 'CAIRN_DATA_LOSS', String(err));
  }
  t.is(calls.n, 2);
});

test('bad input is refused and stores nothing', async (t) => {
  const kv = await level(t);
  const bad = await t.throwsAsync(getOrCreateTenantKey(kv, 'acme', randomBytes(59)));
  t.true(bad instanceof CairnError && bad.code === 'CAIRN_INVALID_ARGUMENT');
  await t.throwsAsync(getOrCreateTenantKey(kv, 'bad tenant/name', randomBytes(60)));
  const first = await getOrCreateTenantKey(kv, 'acme', randomBytes(60));
  t.true(first.created, 'nothing was stored by the refused calls');
  const again = await getOrCreateTenantKey(kv, 'acme', randomBytes(60));
  t.false(again.created);
  t.true(again.wrapped.equals(first.wrapped));
  t.throws(() => new TenantKeys(randomBytes(16), storeOf(kv)), { instanceOf: RangeError });
});

test('the master key comes from CAIRN_MASTER_KEY, else a 0600 file created once', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-master-key-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'sub', 'master.key');
  const created = loadMasterKey(path, {});
  t.is(created.length, 32);
  t.is(statSync(path).mode & 0o777, 0o600);
  t.true(loadMasterKey(path, {}).equals(created));
  const fromEnv = randomBytes(32);
  t.true(loadMasterKey(path, { CAIRN_MASTER_KEY: fromEnv.toString('base64') }).equals(fromEnv));
  t.true(loadMasterKey(path, { CAIRN_MASTER_KEY: fromEnv.toString('base64url') }).equals(fromEnv));
  for (const bad of ['not base64 at all!', randomBytes(31).toString('base64')]) {
    const err = t.throws(() => loadMasterKey(path, { CAIRN_MASTER_KEY: bad }));
    t.true(err instanceof CairnError && err.code === 'CAIRN_FAILED_PRECONDITION');
  }
  writeFileSync(join(dir, 'short.key'), randomBytes(8).toString('base64'));
  t.throws(() => loadMasterKey(join(dir, 'short.key'), {}), { message: /8 bytes, not 32/ });
});

test('processes starting together on one fresh key file all load the same master key', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-master-race-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'master.key');
  const module = new URL('../../src/gateway/keys.ts', import.meta.url).href;
  // Eight processes, each waiting for the same instant, then creating (or reading) the key.
  const at = Date.now() + 2500;
  const script = `const { loadMasterKey } = await import(${JSON.stringify(module)}); while (Date.now() < ${at}); process.stdout.write(loadMasterKey(${JSON.stringify(path)}, {}).toString('hex'));`;
  const keys = await Promise.all(
    Array.from({ length: 8 }, () => new Promise<string>((resolve, reject) => {
      execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], (err, stdout, stderr) => (err ? reject(new Error(stderr || err.message)) : resolve(stdout)));
    })),
  );
  t.is(new Set(keys).size, 1, 'every process holds the same key');
  t.is(keys[0], loadMasterKey(path, {}).toString('hex'), 'and it is the one in the file');
  t.deepEqual(readdirSync(dir), ['master.key'], 'no temporary file left behind');
});
