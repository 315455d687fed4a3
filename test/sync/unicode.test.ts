// Local names that are not NFC (macOS-style NFD) sync under their NFC remote path, keep their
// on-disk form, do not loop, and take remote changes in place; an NFC and an NFD twin for one
// remote path are reported as a conflict and neither is synced. Real `cairn sync --once` runs.
import test from 'ava';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CairnClient } from '../../src/client/index.js';
import { startServer, tempDir } from '../helpers/cluster.js';
import { sha256, startSync, syncOnce, type Event } from './helpers.js';

const NFD_FILE = 'cafe\u0301.txt';
const NFC_FILE = 'caf\u00e9.txt';
const NFD_DIR = 're\u0301sume\u0301';
const NFC_DIR = 'r\u00e9sum\u00e9';
const transfers = (events: Event[]): Event[] => events.filter((e) => e.type === 'upload' || e.type === 'download' || e.type === 'delete' || e.type === 'move' || e.type === 'mkdir');

test('NFD local names sync under their NFC remote path without loops or twins; NFC/NFD twins are a conflict', async (t) => {
  t.timeout(150_000);
  const server = await startServer(t);
  const client = new CairnClient({ endpoint: server.grpc, token: server.token });
  t.teardown(() => client.close());
  const a = join(tempDir(t), 'a');
  const b = join(tempDir(t), 'b');
  mkdirSync(join(a, NFD_DIR), { recursive: true });
  mkdirSync(b);
  writeFileSync(join(a, NFD_FILE), 'v1 from A\n');
  writeFileSync(join(a, NFD_DIR, 'cv.txt'), 'cv v1\n');

  // A's NFD names go up under NFC paths.
  let run = await syncOnce(server, a, '/u', ['--device', 'A']);
  t.is(run.code, 0, run.stderr);
  t.truthy(run.events.find((e) => e.type === 'upload' && e.path === NFC_FILE));
  t.truthy(run.events.find((e) => e.type === 'upload' && e.path === `${NFC_DIR}/cv.txt`));
  t.false(run.events.some((e) => e.type === 'skip' && e.reason === 'invalid-name'));
  t.is((await client.stat(`/u/${NFC_FILE}`)).contentHash.length, 64);
  t.is((await client.stat(`/u/${NFC_DIR}/cv.txt`)).size, 6);

  // No loop: a second run (a rescan) sends and fetches nothing.
  run = await syncOnce(server, a, '/u', ['--device', 'A']);
  t.is(run.code, 0, run.stderr);
  t.deepEqual(transfers(run.events), []);

  // Device B gets NFC names; its edits land on A's existing NFD file and folder, with no NFC twin.
  run = await syncOnce(server, b, '/u', ['--device', 'B']);
  t.is(run.code, 0, run.stderr);
  t.deepEqual(readdirSync(b).filter((n) => n !== '.cairn-sync').sort(), [NFC_FILE, NFC_DIR].sort());
  writeFileSync(join(b, NFC_FILE), 'v2 from B\n');
  writeFileSync(join(b, NFC_DIR, 'cv.txt'), 'cv v2 from B\n');
  run = await syncOnce(server, b, '/u', ['--device', 'B']);
  t.is(run.code, 0, run.stderr);
  run = await syncOnce(server, a, '/u', ['--device', 'A']);
  t.is(run.code, 0, run.stderr);
  t.truthy(run.events.find((e) => e.type === 'download' && e.path === NFC_FILE));
  t.false(run.events.some((e) => e.type === 'conflict'), JSON.stringify(run.events));
  t.deepEqual(readdirSync(a).filter((n) => n !== '.cairn-sync').sort(), [NFD_FILE, NFD_DIR].sort(), 'no NFC twin next to the NFD names');
  t.deepEqual(readdirSync(join(a, NFD_DIR)), ['cv.txt']);
  t.is(readFileSync(join(a, NFD_FILE), 'utf8'), 'v2 from B\n');
  t.is(readFileSync(join(a, NFD_DIR, 'cv.txt'), 'utf8'), 'cv v2 from B\n');
  // And again no loop on either side.
  for (const [dir, device] of [[a, 'A'], [b, 'B']] as const) {
    run = await syncOnce(server, dir, '/u', ['--device', device]);
    t.is(run.code, 0, run.stderr);
    t.deepEqual(transfers(run.events), [], device);
  }

  // An edit of the NFD file on A goes up to the NFC path.
  writeFileSync(join(a, NFD_FILE), 'v3 from A\n');
  run = await syncOnce(server, a, '/u', ['--device', 'A']);
  t.truthy(run.events.find((e) => e.type === 'upload' && e.path === NFC_FILE));
  t.is((await client.stat(`/u/${NFC_FILE}`)).contentHash, sha256(Buffer.from(sha256('v3 from A\n'), 'hex')));
  run = await syncOnce(server, b, '/u', ['--device', 'B']);
  t.is(run.code, 0, run.stderr);
  t.is(readFileSync(join(b, NFC_FILE), 'utf8'), 'v3 from A\n');

  // Live, through the watcher and a periodic rescan (every 5 s here): still nothing to send.
  const live = startSync(t, server, a, '/u', ['--device', 'A']);
  await live.waitEvent((e) => e.type === 'idle', 60_000, 'live idle');
  await new Promise((resolve) => setTimeout(resolve, 7_000));
  t.is(await live.stop(), 0);
  t.deepEqual(transfers(live.events), [], 'no re-upload or re-download on rescans');
  t.is(live.events.at(-1)?.['errors'], 0);

  // An NFC twin next to the NFD file: reported as a conflict; neither is sent, nothing is deleted.
  const before = await client.stat(`/u/${NFC_FILE}`);
  writeFileSync(join(a, NFC_FILE), 'a twin in NFC\n');
  run = await syncOnce(server, a, '/u', ['--device', 'A']);
  t.is(run.code, 0, run.stderr);
  const clash = run.events.find((e) => e.type === 'conflict' && e.path === NFC_FILE);
  t.truthy(clash, JSON.stringify(run.events));
  t.is(clash!['reason'], 'name-clash');
  t.deepEqual([...(clash!['names'] as string[])].sort(), [NFC_FILE, NFD_FILE].sort());
  t.deepEqual(transfers(run.events), []);
  const after = await client.stat(`/u/${NFC_FILE}`);
  t.is(after.version, before.version);
  t.is(readFileSync(join(a, NFD_FILE), 'utf8'), 'v3 from A\n');
  t.is(sha256(readFileSync(join(a, NFC_FILE))), sha256('a twin in NFC\n'));
  // A remote change to the clashed path does not pick one of the twins either.
  writeFileSync(join(b, NFC_FILE), 'v4 from B\n');
  run = await syncOnce(server, b, '/u', ['--device', 'B']);
  t.is(run.code, 0, run.stderr);
  run = await syncOnce(server, a, '/u', ['--device', 'A']);
  t.false(run.events.some((e) => e.type === 'download' && e.path === NFC_FILE));
  t.is(readFileSync(join(a, NFD_FILE), 'utf8'), 'v3 from A\n');
  t.is(readFileSync(join(a, NFC_FILE), 'utf8'), 'a twin in NFC\n');
});
