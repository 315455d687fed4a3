// Configuration precedence (flags > CAIRN_* env > config file > defaults), validation once with
// errors that name the option, and a frozen result.
import test from 'ava';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, envName, flagName } from '../../src/common/config.js';
import { loadServerConfig, serverConfigSchema } from '../../src/server/config.js';
import { ROOT, runCli, tempDir } from '../helpers/cluster.js';

test('names: flags are kebab-case, env vars CAIRN_UPPER_SNAKE', (t) => {
  t.is(flagName('grpcPort'), '--grpc-port');
  t.is(envName('grpcPort'), 'CAIRN_GRPC_PORT');
  t.is(envName('tlsCa'), 'CAIRN_TLS_CA');
});

test('precedence: flag > env > file > default', (t) => {
  const file = join(tempDir(t), 'cairn.json');
  writeFileSync(file, JSON.stringify({ grpcPort: 1111, httpPort: 2222, logLevel: 'debug', dataDir: '/from/file' }));
  const c = loadServerConfig({ file, env: { CAIRN_GRPC_PORT: '3333', CAIRN_HTTP_PORT: '4444' }, flags: { grpcPort: '5555' } });
  t.is(c.grpcPort, 5555, 'flag beats env and file');
  t.is(c.httpPort, 4444, 'env beats file');
  t.is(c.logLevel, 'debug', 'file beats default');
  t.is(c.dataDir, '/from/file');
  t.is(c.host, '127.0.0.1', 'default');
  t.is(c.maxFileBytes, 10 * 1024 ** 3);
});

test('the config file can be named by CAIRN_CONFIG', (t) => {
  const file = join(tempDir(t), 'c.json');
  writeFileSync(file, JSON.stringify({ role: 'blocknode' }));
  t.is(loadServerConfig({ env: { CAIRN_CONFIG: file } }).role, 'blocknode');
});

test('the result is frozen', (t) => {
  const c = loadServerConfig({ env: {} });
  t.true(Object.isFrozen(c));
  t.throws(() => {
    (c as { grpcPort: number }).grpcPort = 1;
  });
});

test('a bad value names the option, its flag, its env var and where it came from', (t) => {
  const fromEnv = t.throws(() => loadServerConfig({ env: { CAIRN_GRPC_PORT: '70000' } }), { instanceOf: ConfigError });
  t.is(fromEnv?.option, 'grpcPort');
  t.regex(fromEnv?.message ?? '', /grpcPort = "70000" \(from CAIRN_GRPC_PORT; set with --grpc-port or CAIRN_GRPC_PORT\)/);
  const fromFlag = t.throws(() => loadServerConfig({ env: {}, flags: { logLevel: 'loud' } }), { instanceOf: ConfigError });
  t.regex(fromFlag?.message ?? '', /logLevel = "loud" \(from --log-level/);
  t.throws(() => loadServerConfig({ env: { CAIRN_ALLOW_PLAINTEXT: 'maybe' } }), { message: /allowPlaintext/ });
  t.throws(() => loadServerConfig({ env: { CAIRN_GRPC_PORT: '12abc' } }), { message: /grpcPort/ });
});

test('config files: unknown keys, bad JSON and missing files are named', (t) => {
  const dir = tempDir(t);
  const unknown = join(dir, 'u.json');
  writeFileSync(unknown, JSON.stringify({ grpcPrt: 1 }));
  t.throws(() => loadServerConfig({ file: unknown, env: {} }), { message: /unknown option "grpcPrt"/ });
  const bad = join(dir, 'b.json');
  writeFileSync(bad, '{ nope');
  t.throws(() => loadServerConfig({ file: bad, env: {} }), { message: /not valid JSON/ });
  t.throws(() => loadServerConfig({ file: join(dir, 'missing.json'), env: {} }), { message: /cannot read config file/ });
});

test('`cairn server` with a bad value exits non-zero and names the option', async (t) => {
  const r = await runCli(['server', '--embedded', '--data-dir', tempDir(t), '--grpc-port', '70000']);
  t.is(r.code, 2);
  t.regex(r.stderr, /grpcPort = "70000" \(from --grpc-port/);
  const e = await runCli(['server', '--data-dir', tempDir(t)], { CAIRN_LOG_LEVEL: 'loud' });
  t.is(e.code, 2);
  t.regex(e.stderr, /CAIRN_LOG_LEVEL/);
});

test('the README configuration table lists every option with its flag and env var', (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  for (const key of Object.keys(serverConfigSchema.shape)) {
    t.true(readme.includes(`| \`${flagName(key)}\` | \`${envName(key)}\` | \`${key}\` |`), `README lacks a row for ${key}`);
  }
});
