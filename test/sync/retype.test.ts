// A path that changes kind (a file replaced by a folder of the same name, or the reverse) converges
// on both sides: live, and when the other client was stopped and catches up from its cursor. An
// edit made against the old kind is never lost: it is kept as a conflicted copy both sides see.
import test from 'ava';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openMetadataStore } from '../../src/metadata/index.js';
import { createContext, trimChanges } from '../../src/metadata/model/index.js';
import { startServer, tempDir } from '../helpers/cluster.js';
import { converged, sha256, startSync, syncOnce, type Event, type SyncProcess } from './helpers.js';

function copyOf(tree: Record<string, string>, prefix: string): string | undefined {
  return Object.keys(tree).find((k) => k.startsWith(prefix) && !k.includes('/'));
}

test('file ↔ folder changes converge both ways, live and after a catch-up, keeping edits as conflicted copies', async (t) => {
  t.timeout(240_000);
  const server = await startServer(t);
  const a = join(tempDir(t), 'a');
  const b = join(tempDir(t), 'b');
  mkdirSync(join(a, 'box'), { recursive: true });
  writeFileSync(join(a, 'doc'), 'doc is a file\n');
  writeFileSync(join(a, 'box', 'one.txt'), 'one\n');
  writeFileSync(join(a, 'x.txt'), 'x v1\n');
  writeFileSync(join(a, 'n.txt'), 'n v1\n');
  const syncs: SyncProcess[] = [];
  const start = (dir: string, device: string): SyncProcess => {
    const p = startSync(t, server, dir, '/r', ['--device', device]);
    syncs.push(p);
    return p;
  };
  let syncA = start(a, 'A');
  await syncA.waitEvent((e) => e.type === 'idle', 60_000, 'A idle');
  let syncB = start(b, 'B');
  await converged(a, b, 60_000);
  // The trees match as soon as B's downloads are renamed into place; B records each one just
  // after. Edit B only once those records exist: a file deleted in between would be a download
  // B never recorded, and removing its folder then looks like deleting something B never saw.
  for (const p of ['doc', 'box/one.txt', 'x.txt', 'n.txt']) await syncB.waitEvent((e) => e.type === 'download' && e.path === p, 30_000, `B recorded ${p}`);

  // Live, both directions at once: a file becomes a folder on A, a folder becomes a file on B.
  rmSync(join(a, 'doc'));
  mkdirSync(join(a, 'doc'));
  writeFileSync(join(a, 'doc', 'inner.txt'), 'inside doc\n');
  rmSync(join(b, 'box'), { recursive: true });
  writeFileSync(join(b, 'box'), 'box is a file now\n');
  let tree = await converged(a, b, 90_000);
  t.is(tree['doc'], 'dir');
  t.is(tree['doc/inner.txt'], sha256('inside doc\n'));
  t.is(tree['box'], sha256('box is a file now\n'));
  t.is(tree['box/one.txt'], undefined);

  // B is stopped and edits x.txt; A replaces x.txt with a folder. B catches up from its cursor:
  // the folder takes the name, B's edit survives as B's conflicted copy.
  t.is(await syncB.stop(), 0);
  writeFileSync(join(b, 'x.txt'), 'x edited on B while stopped\n');
  rmSync(join(a, 'x.txt'));
  mkdirSync(join(a, 'x.txt'));
  writeFileSync(join(a, 'x.txt', 'y'), 'y\n');
  await syncA.waitEvent((e) => e.type === 'upload' && e.path === 'x.txt/y', 60_000, 'x.txt/y uploaded');
  syncB = start(b, 'B');
  tree = await converged(a, b, 90_000);
  t.is(tree['x.txt'], 'dir');
  t.is(tree['x.txt/y'], sha256('y\n'));
  const xCopy = copyOf(tree, 'x (conflicted copy B ');
  t.truthy(xCopy, JSON.stringify(tree));
  t.is(readFileSync(join(a, xCopy!), 'utf8'), 'x edited on B while stopped\n');
  t.truthy(syncB.events.find((e) => e.type === 'conflict' && e.path === 'x.txt'));

  // A is stopped and replaces n.txt with a folder while B edits n.txt: A catches up, the folder
  // keeps the name and B's edit is moved aside on the server as A's conflicted copy.
  t.is(await syncA.stop(), 0);
  writeFileSync(join(b, 'n.txt'), 'n edited on B\n');
  await syncB.waitEvent((e) => e.type === 'upload' && e.path === 'n.txt', 60_000, 'n.txt edit uploaded');
  rmSync(join(a, 'n.txt'));
  mkdirSync(join(a, 'n.txt'));
  writeFileSync(join(a, 'n.txt', 'z'), 'z\n');
  syncA = start(a, 'A');
  tree = await converged(a, b, 90_000);
  t.is(tree['n.txt'], 'dir');
  t.is(tree['n.txt/z'], sha256('z\n'));
  const nCopy = copyOf(tree, 'n (conflicted copy A ');
  t.truthy(nCopy, JSON.stringify(tree));
  t.is(readFileSync(join(b, nCopy!), 'utf8'), 'n edited on B\n');

  // The reverse while stopped: A turns the folder doc/ into a file while B (stopped) adds a file
  // inside it. B catches up: the file takes the name, B's new file is kept in a conflicted folder.
  t.is(await syncB.stop(), 0);
  writeFileSync(join(b, 'doc', 'new-on-b.txt'), 'new on B\n');
  rmSync(join(a, 'doc'), { recursive: true });
  writeFileSync(join(a, 'doc'), 'doc is a file again\n');
  await syncA.waitEvent((e) => e.type === 'upload' && e.path === 'doc', 60_000, 'doc uploaded');
  syncB = start(b, 'B');
  tree = await converged(a, b, 90_000);
  t.is(tree['doc'], sha256('doc is a file again\n'));
  const docCopy = copyOf(tree, 'doc (conflicted copy B ');
  t.truthy(docCopy, JSON.stringify(tree));
  t.is(tree[`${docCopy}/new-on-b.txt`], sha256('new on B\n'));
  t.is(tree[`${docCopy}/inner.txt`], undefined, 'synced, unchanged files went with the folder');

  for (const p of [syncA, syncB]) t.is(await p.stop(), 0);
  for (const p of syncs) {
    const summary = p.events.at(-1)!;
    t.is(summary.type, 'summary', p.stderr().slice(-2000));
    t.is(summary['errors'], 0, JSON.stringify(p.events.filter((e: Event) => e.type === 'error')));
    t.false(p.events.some((e) => e.type === 'skip' && e.reason === 'type-clash'));
  }
});

test('kind changes converge through a re-list (expired cursor) and a first sync onto an existing tree', async (t) => {
  t.timeout(170_000);
  const dataDir = tempDir(t);
  let server = await startServer(t, [], { dataDir });
  const a = join(tempDir(t), 'a');
  const b = join(tempDir(t), 'b');
  const c = join(tempDir(t), 'c');
  mkdirSync(join(a, 'd'), { recursive: true });
  writeFileSync(join(a, 'f'), 'f is a file\n');
  writeFileSync(join(a, 'd', 'x.txt'), 'x\n');
  writeFileSync(join(a, 'e.txt'), 'e v1\n');
  const once = async (dir: string, device: string): Promise<Event[]> => {
    const r = await syncOnce(server, dir, '/r', ['--device', device]);
    t.is(r.code, 0, r.stderr);
    t.is(r.events.at(-1)?.['errors'], 0, JSON.stringify(r.events.filter((e) => e.type === 'error')));
    return r.events;
  };
  await once(a, 'A');
  await once(b, 'B');
  await converged(a, b, 10_000);

  // B is stopped and edits e.txt; A turns f into a folder, d into a file and e.txt into a folder.
  writeFileSync(join(b, 'e.txt'), 'e edited on B\n');
  rmSync(join(a, 'f'));
  mkdirSync(join(a, 'f'));
  writeFileSync(join(a, 'f', 'in.txt'), 'in\n');
  rmSync(join(a, 'd'), { recursive: true });
  writeFileSync(join(a, 'd'), 'd is a file\n');
  rmSync(join(a, 'e.txt'));
  mkdirSync(join(a, 'e.txt'));
  writeFileSync(join(a, 'e.txt', 'k'), 'k\n');
  await once(a, 'A');
  // The feed is trimmed past B's cursor (as in catch-up.test.ts: the stopped server's store).
  server.proc.kill('SIGTERM');
  await server.exited;
  const kv = await openMetadataStore({ backend: 'level', dataDir }, true);
  try {
    const ctx = createContext(kv, { changeRetentionMs: 1 });
    await new Promise((r) => setTimeout(r, 5));
    while ((await trimChanges(ctx, 'default')) > 0);
  } finally {
    await kv.close();
  }
  server = await startServer(t, [], { dataDir });
  const relisted = await once(b, 'B');
  t.is(relisted.find((e) => e.type === 'relist')?.['reason'], 'cursor-expired');
  await once(a, 'A');
  let tree = await converged(a, b, 10_000);
  t.is(tree['f'], 'dir');
  t.is(tree['f/in.txt'], sha256('in\n'));
  t.is(tree['d'], sha256('d is a file\n'));
  t.is(tree['e.txt'], 'dir');
  t.is(tree['e.txt/k'], sha256('k\n'));
  const eCopy = Object.keys(tree).find((k) => k.startsWith('e (conflicted copy B '));
  t.truthy(eCopy, JSON.stringify(tree));
  t.is(readFileSync(join(a, eCopy!), 'utf8'), 'e edited on B\n');

  // A first sync onto a tree that has the other kinds at those names: nothing is lost.
  mkdirSync(join(c, 'd'), { recursive: true });
  writeFileSync(join(c, 'd', 'mine.txt'), 'mine\n');
  writeFileSync(join(c, 'f'), 'a local f\n');
  const first = await once(c, 'C');
  t.is(first.find((e) => e.type === 'relist')?.['reason'], 'first-sync');
  await once(a, 'A');
  await once(b, 'B');
  tree = await converged(a, c, 10_000);
  await converged(a, b, 10_000);
  t.is(tree['d'], sha256('d is a file\n'));
  t.is(tree['f'], 'dir');
  const dCopy = Object.keys(tree).find((k) => k.startsWith('d (conflicted copy C ') && tree[k] === 'dir');
  t.truthy(dCopy, JSON.stringify(tree));
  t.is(tree[`${dCopy}/mine.txt`], sha256('mine\n'));
  const fCopy = Object.keys(tree).find((k) => k.startsWith('f (conflicted copy C '));
  t.is(fCopy === undefined ? undefined : tree[fCopy], sha256('a local f\n'));
});
