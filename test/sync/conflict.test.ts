// Concurrent edits of one file on two live devices: exactly one conflicted copy, named after the
// losing device, on both sides, and both edits survive. A local edit against a remote delete wins.
import test from 'ava';
import { mkdirSync, readFileSync, readdirSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, tempDir } from '../helpers/cluster.js';
import { converged, startSync, syncOnce } from './helpers.js';

const COPY = /^report \(conflicted copy (A|B) \d{4}-\d{2}-\d{2} \d{6}\)\.txt$/;

test('concurrent edits of the same file give exactly one conflicted copy and lose nothing', async (t) => {
  t.timeout(170_000);
  const server = await startServer(t);
  const a = join(tempDir(t), 'a');
  const b = join(tempDir(t), 'b');
  mkdirSync(a);
  writeFileSync(join(a, 'report.txt'), 'base\n');
  const syncA = startSync(t, server, a, '/team', ['--device', 'A']);
  await syncA.waitEvent((e) => e.type === 'upload' && e.path === 'report.txt', 30_000, 'upload');
  const syncB = startSync(t, server, b, '/team', ['--device', 'B']);
  await converged(a, b);

  // Both devices edit the same file at the same moment.
  writeFileSync(join(a, 'report.txt'), 'edit from A\n');
  writeFileSync(join(b, 'report.txt'), 'edit from B\n');
  const tree = await converged(a, b, 60_000);
  const copies = Object.keys(tree).filter((p) => COPY.test(p));
  t.is(copies.length, 1, JSON.stringify({ tree, a: syncA.events, b: syncB.events }, null, 1));
  const contents = [readFileSync(join(a, 'report.txt'), 'utf8'), readFileSync(join(a, copies[0]!), 'utf8')].sort();
  t.deepEqual(contents, ['edit from A\n', 'edit from B\n'], 'both edits survive');
  // The copy is named after the device whose edit lost the race, and holds that device's edit.
  const loser = COPY.exec(copies[0]!)![1]!;
  t.is(readFileSync(join(a, copies[0]!), 'utf8'), `edit from ${loser}\n`);
  t.is(readdirSync(b).filter((n) => COPY.test(n)).length, 1);
  const reported = [...syncA.events, ...syncB.events].filter((e) => e.type === 'conflict');
  t.is(reported.length, 1, 'the run reports the conflict once');
  t.is(reported[0]!['copy'], copies[0]);
  await syncA.stop();
  await syncB.stop();
  t.is(syncA.events.at(-1)!['conflicts'] as number + (syncB.events.at(-1)!['conflicts'] as number), 1);
});

test('an edit made offline against a remote delete is kept, and a delete against a remote edit loses', async (t) => {
  t.timeout(170_000);
  const server = await startServer(t);
  const a = join(tempDir(t), 'a');
  const b = join(tempDir(t), 'b');
  mkdirSync(a);
  writeFileSync(join(a, 'kept.txt'), 'v1\n');
  writeFileSync(join(a, 'edited.txt'), 'v1\n');
  t.is((await syncOnce(server, a, '/x', ['--device', 'A'])).code, 0);
  t.is((await syncOnce(server, b, '/x', ['--device', 'B'])).code, 0);
  // A deletes kept.txt while B edits it; B deletes edited.txt while A edits it.
  rmSync(join(a, 'kept.txt'));
  writeFileSync(join(b, 'kept.txt'), 'v2 from B\n');
  writeFileSync(join(a, 'edited.txt'), 'v2 from A\n');
  rmSync(join(b, 'edited.txt'));
  for (const [dir, dev] of [[a, 'A'], [b, 'B'], [a, 'A']] as const) {
    const run = await syncOnce(server, dir, '/x', ['--device', dev]);
    t.is(run.code, 0, run.stderr);
  }
  const tree = await converged(a, b, 10_000);
  t.deepEqual(Object.keys(tree).sort(), ['edited.txt', 'kept.txt']);
  t.is(readFileSync(join(a, 'kept.txt'), 'utf8'), 'v2 from B\n');
  t.is(readFileSync(join(b, 'edited.txt'), 'utf8'), 'v2 from A\n');
});
