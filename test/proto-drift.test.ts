// src/gen must be exactly what the generator makes from proto/ with the runtime loader options:
// the check passes on the committed tree and fails when a generated file is edited.
import test from 'ava';
import { execFile } from 'node:child_process';
import { cpSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ROOT, tempDir } from './helpers/cluster.js';

const run = promisify(execFile);
const script = join(ROOT, 'scripts', 'gen-proto.ts');

test('generated types match proto/ (regenerate with `npm run proto:gen`)', async (t) => {
  await t.notThrowsAsync(run(process.execPath, ['--import', 'tsx', script, '--check'], { cwd: ROOT }));
});

test('the drift check fails on an edited generated file', async (t) => {
  const copy = join(tempDir(t), 'gen');
  cpSync(join(ROOT, 'src', 'gen'), copy, { recursive: true });
  appendFileSync(join(copy, 'cairn', 'v1', 'FileInfo.ts'), '\n// edited by hand\n');
  const err = await t.throwsAsync(run(process.execPath, ['--import', 'tsx', script, '--check', `--gen-dir=${copy}`], { cwd: ROOT }));
  t.regex((err as { stderr?: string }).stderr ?? '', /differs: src\/gen\/cairn\/v1\/FileInfo\.ts/);
});
