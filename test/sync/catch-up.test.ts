// A stopped client catches up from its saved cursor (downloading exactly what changed); when the
// change feed has been trimmed past its cursor it re-lists the tree and still downloads only what
// changed. The server has no change-retention flag, so the test trims the feed of the stopped
// server's metadata store with the model's own trimChanges and a 1 ms retention.
import test from 'ava';
import { mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { openMetadataStore } from '../../src/metadata/index.js';
import { createContext, trimChanges } from '../../src/metadata/model/index.js';
import { startServer, tempDir } from '../helpers/cluster.js';
import { FULL, converged, syncOnce, type Event } from './helpers.js';

const CHANGED = FULL ? 1000 : 200;
const UNCHANGED = 50;

const count = (events: Event[], type: string): number => events.filter((e) => e.type === type).length;

test(`a stopped client catches up from its cursor after ${CHANGED} changes, and re-lists after the cursor expired`, async (t) => {
  t.timeout(FULL ? 600_000 : 170_000);
  const dataDir = tempDir(t);
  let server = await startServer(t, [], { dataDir });
  const a = join(tempDir(t), 'a');
  const b = join(tempDir(t), 'b');
  for (let i = 0; i < CHANGED; i++) {
    mkdirSync(join(a, `d${i % 10}`), { recursive: true });
    writeFileSync(join(a, `d${i % 10}`, `f${i}.txt`), `file ${i} v1\n`);
  }
  mkdirSync(join(a, 'same'));
  for (let i = 0; i < UNCHANGED; i++) writeFileSync(join(a, 'same', `s${i}.bin`), `unchanged ${i}\n`.repeat(100));
  const first = await syncOnce(server, a, '/feed', ['--device', 'A']);
  t.is(first.code, 0, first.stderr);
  const initial = await syncOnce(server, b, '/feed', ['--device', 'B']);
  t.is(initial.code, 0, initial.stderr);
  t.log(`first upload ${String(first.events.at(-1)?.['ms'])} ms, first download ${String(initial.events.at(-1)?.['ms'])} ms`);
  t.is(count(initial.events, 'download'), CHANGED + UNCHANGED);
  await converged(a, b, 10_000);

  // B is stopped; A changes every file of the first set.
  for (let i = 0; i < CHANGED; i++) writeFileSync(join(a, `d${i % 10}`, `f${i}.txt`), `file ${i} v2\n`);
  const edits = await syncOnce(server, a, '/feed', ['--device', 'A']);
  t.is(edits.code, 0, edits.stderr);
  t.is(count(edits.events, 'upload'), CHANGED);
  const caughtUp = await syncOnce(server, b, '/feed', ['--device', 'B']);
  t.is(caughtUp.code, 0, caughtUp.stderr);
  t.is(caughtUp.events.find((e) => e.type === 'start')!['resumed'], true);
  t.is(count(caughtUp.events, 'relist'), 0, 'caught up from the cursor, no listing');
  t.is(count(caughtUp.events, 'download'), CHANGED, 'downloads exactly the changed files');
  t.is(count(caughtUp.events, 'upload'), 0, 'no echo uploads');
  t.log(`edits ${String(edits.events.at(-1)?.['ms'])} ms, catch-up ${String(caughtUp.events.at(-1)?.['ms'])} ms`);
  await converged(a, b, 10_000);

  // B stopped again; A edits a few files, adds one, deletes one; then the feed is trimmed.
  for (let i = 0; i < 5; i++) writeFileSync(join(a, 'd0', `f${i * 10}.txt`), `file ${i * 10} v3\n`);
  writeFileSync(join(a, 'same', 'new.txt'), 'new\n');
  rmSync(join(a, 'same', 's0.bin'));
  t.is((await syncOnce(server, a, '/feed', ['--device', 'A'])).code, 0);
  server.proc.kill('SIGTERM');
  await server.exited;
  const kv = await openMetadataStore({ backend: 'level', dataDir }, true);
  try {
    const ctx = createContext(kv, { changeRetentionMs: 1 });
    await new Promise((r) => setTimeout(r, 5));
    let trimmed = 0;
    for (let n; (n = await trimChanges(ctx, 'default')) > 0; ) trimmed += n;
    t.true(trimmed > CHANGED, `trimmed ${trimmed} events`);
  } finally {
    await kv.close();
  }
  server = await startServer(t, [], { dataDir });

  const relisted = await syncOnce(server, b, '/feed', ['--device', 'B']);
  t.is(relisted.code, 0, relisted.stderr);
  const relist = relisted.events.find((e) => e.type === 'relist');
  t.is(relist?.['reason'], 'cursor-expired');
  const downloads = relisted.events.filter((e) => e.type === 'download').map((e) => e.path).sort();
  t.deepEqual(downloads, ['d0/f0.txt', 'd0/f10.txt', 'd0/f20.txt', 'd0/f30.txt', 'd0/f40.txt', 'same/new.txt'], 'only what changed is downloaded');
  t.deepEqual(relisted.events.filter((e) => e.type === 'delete').map((e) => e.path), ['same/s0.bin']);
  t.is(count(relisted.events, 'upload'), 0);
  await converged(a, b, 10_000);
  // And the new cursor works: a further change arrives through the feed, without a listing.
  writeFileSync(join(a, 'same', 'later.txt'), 'later\n');
  t.is((await syncOnce(server, a, '/feed', ['--device', 'A'])).code, 0);
  const after = await syncOnce(server, b, '/feed', ['--device', 'B']);
  t.is(count(after.events, 'relist'), 0);
  t.deepEqual(after.events.filter((e) => e.type === 'download').map((e) => e.path), ['same/later.txt']);
});
