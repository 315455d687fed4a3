// Two live `cairn sync` processes on two directories against one embedded server converge after
// creates, edits, deletes and renames of files and folders made on both sides; renames travel as
// moves (no re-upload); symlinks, ignored and swap files stay local.
import test from 'ava';
import { mkdirSync, rmSync, renameSync, symlinkSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CairnClient } from '../../src/client/index.js';
import { startServer, tempDir } from '../helpers/cluster.js';
import { converged, startSync, type Event } from './helpers.js';

const LOCAL_ONLY = (p: string): boolean => p.endsWith('.log') || p.endsWith('.swp') || p === 'link';

test('two clients converge after creates, edits, deletes and renames on both sides', async (t) => {
  t.timeout(170_000);
  const server = await startServer(t);
  const a = join(tempDir(t), 'a');
  const b = join(tempDir(t), 'b');
  mkdirSync(join(a, 'docs', 'old'), { recursive: true });
  mkdirSync(join(a, 'photos'), { recursive: true });
  writeFileSync(join(a, 'docs', 'report.txt'), 'report v1\n');
  writeFileSync(join(a, 'docs', 'old', 'notes.md'), '# notes\n');
  writeFileSync(join(a, 'photos', 'cat.jpg'), Buffer.alloc(300_000, 7));
  writeFileSync(join(a, 'empty'), '');
  writeFileSync(join(a, 'Ünïcode naïve café.txt'), 'ça va\n');
  writeFileSync(join(a, 'Case.txt'), 'case\n');
  writeFileSync(join(a, '.cairnignore'), '*.log\n');
  writeFileSync(join(a, 'debug.log'), 'ignored\n');
  writeFileSync(join(a, '.report.txt.swp'), 'swap\n');
  symlinkSync('docs/report.txt', join(a, 'link'));

  const syncA = startSync(t, server, a, '/shared', ['--device', 'A']);
  await syncA.waitEvent((e) => e.type === 'upload' && e.path === 'photos/cat.jpg', 60_000, 'first upload');
  await syncA.waitEvent((e) => e.type === 'skip' && e.path === 'link' && e.reason === 'symlink', 10_000, 'symlink warning');
  const syncB = startSync(t, server, b, '/shared', ['--device', 'B']);
  const first = await converged(a, b, 60_000, LOCAL_ONLY);
  t.is(first['empty'], 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 'empty file synced');
  t.truthy(first['Ünïcode naïve café.txt']);
  t.false(existsSync(join(b, 'debug.log')), 'ignored file stays local');
  t.false(existsSync(join(b, '.report.txt.swp')), 'swap file stays local');
  t.false(existsSync(join(b, 'link')), 'symlink skipped');

  // Changes on A.
  writeFileSync(join(a, 'docs', 'report.txt'), 'report v2 from A\n');
  mkdirSync(join(a, 'new', 'deep'), { recursive: true });
  writeFileSync(join(a, 'new', 'deep', 'file with spaces.txt'), 'deep\n');
  renameSync(join(a, 'photos', 'cat.jpg'), join(a, 'photos', 'kitten.jpg'));
  renameSync(join(a, 'docs', 'old'), join(a, 'docs', 'archive'));
  renameSync(join(a, 'Case.txt'), join(a, 'case.TXT'));
  rmSync(join(a, 'empty'));
  // Changes on B, at the same time, to other paths.
  writeFileSync(join(b, 'Ünïcode naïve café.txt'), 'ça va mieux\n');
  mkdirSync(join(b, 'from-b'));
  writeFileSync(join(b, 'from-b', 'b.txt'), 'b\n');
  writeFileSync(join(b, 'from-b', 'empty-b'), '');
  const tree = await converged(a, b, 90_000, LOCAL_ONLY);
  t.is(readFileSync(join(b, 'docs', 'report.txt'), 'utf8'), 'report v2 from A\n');
  t.is(readFileSync(join(a, 'Ünïcode naïve café.txt'), 'utf8'), 'ça va mieux\n');
  t.truthy(tree['photos/kitten.jpg']);
  t.is(tree['photos/cat.jpg'], undefined);
  t.is(tree['docs/archive/notes.md'], first['docs/old/notes.md']);
  t.is(tree['docs/old'], undefined);
  t.truthy(tree['case.TXT']);
  t.is(tree['Case.txt'], undefined);
  t.is(tree['empty'], undefined);
  t.is(tree['from-b/empty-b'], first['empty']);

  // Then B deletes a folder and renames a file into another folder.
  rmSync(join(b, 'new'), { recursive: true });
  renameSync(join(b, 'docs', 'report.txt'), join(b, 'from-b', 'report.txt'));
  const last = await converged(a, b, 90_000, LOCAL_ONLY);
  t.is(last['new'], undefined);
  t.is(last['from-b/report.txt'], tree['docs/report.txt']);
  t.is(last['docs/report.txt'], undefined);

  // Renames went as moves: no upload of the renamed paths, and the server kept the versions.
  const uploadsOf = (events: Event[], path: string): number => events.filter((e) => e.type === 'upload' && e.path === path).length;
  t.truthy(syncA.events.find((e) => e.type === 'move' && e.side === 'remote' && e.path === 'photos/kitten.jpg'));
  t.truthy(syncA.events.find((e) => e.type === 'move' && e.side === 'remote' && e.path === 'docs/archive' && e.folder === true));
  t.truthy(syncB.events.find((e) => e.type === 'move' && e.side === 'local' && e.path === 'docs/archive'));
  t.truthy(syncB.events.find((e) => e.type === 'move' && e.side === 'remote' && e.path === 'from-b/report.txt'));
  t.is(uploadsOf(syncA.events, 'photos/kitten.jpg'), 0);
  t.is(uploadsOf(syncB.events, 'from-b/report.txt'), 0);
  const client = new CairnClient({ endpoint: server.grpc, token: server.token });
  t.teardown(() => client.close());
  t.is((await client.stat('/shared/photos/kitten.jpg')).version, 1);
  t.is((await client.stat('/shared/from-b/report.txt')).version, 2);

  t.is(await syncA.stop(), 0);
  t.is(await syncB.stop(), 0);
  for (const p of [syncA, syncB]) {
    const summary = p.events.at(-1)!;
    t.is(summary.type, 'summary');
    t.is(summary['errors'], 0, p.stderr());
    t.is(summary['conflicts'], 0);
  }
});
