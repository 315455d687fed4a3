// In-process checks of the sync client's naming and ignore rules, and of the engine against a
// real server for the edges a two-device test does not reach: files over the size limit are
// reported (never silently skipped), newly ignored files are not deleted remotely.
import test from 'ava';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CairnClient } from '../../src/client/index.js';
import { silentLogger } from '../../src/common/log.js';
import { conflictedCopyName, runSync, type SyncEvent } from '../../src/sync/index.js';
import { IgnoreRules } from '../../src/sync/ignore-rules.js';
import { keyOf, remoteOf } from '../../src/sync/names.js';
import { startServer, tempDir } from '../helpers/cluster.js';

test('conflicted copy names keep the extension and hidden names', (t) => {
  const at = new Date(2026, 10, 22, 1, 2, 3);
  t.is(conflictedCopyName('docs/report.txt', 'laptop', at), 'docs/report (conflicted copy laptop 2026-11-22 010203).txt');
  t.is(conflictedCopyName('.bashrc', 'pc', at), '.bashrc (conflicted copy pc 2026-11-22 010203)');
  t.is(conflictedCopyName('a/archive.tar.gz', 'pc', at, 2), 'a/archive.tar (conflicted copy pc 2026-11-22 010203 2).gz');
  t.is(conflictedCopyName('Makefile', 'pc', at), 'Makefile (conflicted copy pc 2026-11-22 010203)');
});

test('keys map to and from remote paths under the root', (t) => {
  t.is(keyOf('/', '/a/b'), 'a/b');
  t.is(keyOf('/x', '/x/a'), 'a');
  t.is(keyOf('/x', '/x'), '');
  t.is(keyOf('/x', '/xy/a'), null);
  t.is(remoteOf('/', 'a/b'), '/a/b');
  t.is(remoteOf('/x', 'a'), '/x/a');
});

test('default ignores cover swap and temporary files; .cairnignore adds gitignore patterns', async (t) => {
  const dir = tempDir(t);
  const rules = new IgnoreRules();
  for (const name of ['.report.txt.swp', 'notes.txt~', '.#draft', '~$budget.xlsx', 'x.cairn-ab12.part', '.DS_Store']) t.true(rules.ignores(name, false), name);
  t.true(rules.ignores('.cairn-sync', true));
  t.false(rules.ignores('report.txt', false));
  writeFileSync(join(dir, '.cairnignore'), 'build/\n*.o\n!keep.o\n');
  t.true(await rules.reload(dir));
  t.true(rules.ignores('build', true));
  t.true(rules.ignores('build/x.txt', false));
  t.true(rules.ignores('src/a.o', false));
  t.false(rules.ignores('keep.o', false));
  t.false(await rules.reload(dir), 'unchanged rules are not rebuilt');
});

test('files over the size limit are reported, and newly ignored files stay on the server', async (t) => {
  t.timeout(120_000);
  const server = await startServer(t);
  const dir = join(tempDir(t), 'a');
  mkdirSync(dir);
  writeFileSync(join(dir, 'small.txt'), 'small\n');
  writeFileSync(join(dir, 'large.bin'), Buffer.alloc(5000, 1));
  writeFileSync(join(dir, 'later-ignored.log'), 'log\n');
  const client = new CairnClient({ endpoint: server.grpc, token: server.token });
  t.teardown(() => client.close());
  const once = async (): Promise<SyncEvent[]> => {
    const events: SyncEvent[] = [];
    await runSync({ client, localRoot: dir, remoteRoot: '/edge', stateDir: join(dir, '.cairn-sync'), device: 'T', log: silentLogger(), maxFileBytes: 4096, once: true, signal: new AbortController().signal, onEvent: (e) => events.push(e) });
    return events;
  };
  const first = await once();
  t.deepEqual(first.filter((e) => e.type === 'skip'), [{ type: 'skip', path: 'large.bin', reason: 'too-large', size: 5000 }]);
  t.deepEqual(first.filter((e) => e.type === 'upload').map((e) => e.path).sort(), ['later-ignored.log', 'small.txt']);
  writeFileSync(join(dir, '.cairnignore'), '*.log\n');
  const second = await once();
  t.is(second.filter((e) => e.type === 'delete').length, 0, 'an ignored file is not a deleted one');
  t.is((await client.stat('/edge/later-ignored.log')).version, 1);
  t.truthy(second.find((e) => e.type === 'skip' && e.reason === 'too-large'), 'reported again on every run');
});
