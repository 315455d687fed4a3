// The client finds endpoint and token field by field: flags, CAIRN_* env, the user config file,
// then $CAIRN_DATA_DIR/client.json (default ./data/client.json).
import test from 'ava';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { resolveClientSettings } from '../../src/client/index.js';
import { tempDir } from '../helpers/cluster.js';

function setup(t: Parameters<typeof tempDir>[0]): { env: Record<string, string>; userFile: string; dataFile: string } {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'home', '.config', 'cairn'), { recursive: true });
  mkdirSync(join(dir, 'data'));
  return { env: { HOME: join(dir, 'home'), CAIRN_DATA_DIR: join(dir, 'data') }, userFile: join(dir, 'home', '.config', 'cairn', 'config.json'), dataFile: join(dir, 'data', 'client.json') };
}

test('client.json of the data dir is the last resort', (t) => {
  const { env, dataFile } = setup(t);
  writeFileSync(dataFile, JSON.stringify({ endpoint: 'data:1', token: 'data-token' }));
  const s = resolveClientSettings({}, env);
  t.is(s.endpoint, 'data:1');
  t.is(s.token, 'data-token');
});

test('the user config beats client.json, env beats both, flags beat all — field by field', (t) => {
  const { env, userFile, dataFile } = setup(t);
  writeFileSync(dataFile, JSON.stringify({ endpoint: 'data:1', token: 'data-token' }));
  writeFileSync(userFile, JSON.stringify({ endpoint: 'user:1' }));
  t.is(resolveClientSettings({}, env).endpoint, 'user:1');
  t.is(resolveClientSettings({}, env).token, 'data-token');
  t.is(resolveClientSettings({}, { ...env, CAIRN_ENDPOINT: 'env:1' }).endpoint, 'env:1');
  t.is(resolveClientSettings({ endpoint: 'flag:1', token: 'flag-token' }, { ...env, CAIRN_ENDPOINT: 'env:1', CAIRN_TOKEN: 'env-token' }).token, 'flag-token');
});

test('with nothing configured the error says where to look', (t) => {
  const { env } = setup(t);
  const err = t.throws(() => resolveClientSettings({}, env));
  t.is((err as { code?: string }).code, 'CAIRN_FAILED_PRECONDITION');
  t.regex(err?.message ?? '', /npm start/);
});

test('a broken config file is reported, not ignored', (t) => {
  const { env, userFile } = setup(t);
  writeFileSync(userFile, '{ broken');
  t.throws(() => resolveClientSettings({}, env), { message: /not valid JSON/ });
});
