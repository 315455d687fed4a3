// A local edit made in the instant between a download landing at its path and the sync state
// recording it is not mistaken for the downloaded version: the record describes the downloaded
// bytes, so the next scan sees the edit and uploads it.
import test from 'ava';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CairnClient } from '../../src/client/index.js';
import { createLogger } from '../../src/common/log.js';
import { runSync } from '../../src/sync/index.js';
import { startServer, tempDir } from '../helpers/cluster.js';

test('an edit right after a download is placed is uploaded, not recorded as the download', async (t) => {
  t.timeout(60_000);
  const server = await startServer(t);
  const client = new CairnClient({ endpoint: server.grpc, token: server.token });
  t.teardown(() => client.close());
  const src = join(tempDir(t), 'f.txt');
  writeFileSync(src, 'from the server\n');
  await client.put(src, '/r/f.txt');

  const local = join(tempDir(t), 'b');
  mkdirSync(local);
  const stateDir = tempDir(t);
  const edit = 'edited the moment it arrived, and longer\n';
  let edited = 0;
  const base = { client, localRoot: local, remoteRoot: '/r', stateDir, device: 'B', log: createLogger({ level: 'silent', name: 'download-window' }), once: true };
  const first = await runSync({
    ...base,
    signal: new AbortController().signal,
    afterPlace: async (key, path) => {
      if (key !== 'f.txt') return;
      writeFileSync(path, edit);
      edited++;
    },
  });
  t.is(edited, 1);
  t.is(first.stats.downloaded, 1);
  // The run's own scan (or the next run's) finds the edit and sends it.
  const second = await runSync({ ...base, signal: new AbortController().signal });
  t.is(first.stats.uploaded + second.stats.uploaded, 1, JSON.stringify({ first: first.stats, second: second.stats }));
  t.is(readFileSync(join(local, 'f.txt'), 'utf8'), edit);
  const out = join(tempDir(t), 'back.txt');
  await client.get('/r/f.txt', out);
  t.is(readFileSync(out, 'utf8'), edit);
});
