// Durability under kill -9: a child process acknowledges puts as they resolve (while deleting and
// compacting) and is killed mid-stream; on reopen every acknowledged, undeleted block must verify.
import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BlockStore } from '../../src/blocknode/engine/index.js';

const fixture = fileURLToPath(new URL('../fixtures/blockstore-writer.ts', import.meta.url));

async function runAndKill(dir: string, runMs: number): Promise<string[]> {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const started = Date.now();
  // tsx start-up is slow on a loaded machine: wait for the ready line, bounded.
  while (!out.startsWith('ready\n')) {
    if (child.exitCode !== null || Date.now() - started > 30_000) {
      child.kill('SIGKILL');
      throw new Error(`writer did not start: ${err}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  await new Promise((r) => setTimeout(r, runMs));
  child.kill('SIGKILL');
  await exited;
  // Only whole lines were acknowledged; a partial last line is ignored.
  return out.split('\n').slice(1, -1);
}

test('every block acknowledged before kill -9 survives', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-crash-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));

  const acked = new Set<string>();
  let everAcked = 0;
  let deleted = 0;
  for (const runMs of [1500, 700]) {
    for (const line of await runAndKill(dir, runMs)) {
      if (line.startsWith('-')) {
        acked.delete(line.slice(1));
        deleted++;
      } else {
        acked.add(line);
        everAcked++;
      }
    }
    const store = await BlockStore.open({ dir, segmentBytes: 2 * 1024 * 1024, inlineBytes: 2048 });
    try {
      let missing = 0;
      for (const hex of acked) {
        // get() verifies sha256(data) == address itself; a corrupt block would throw.
        if ((await store.get(Buffer.from(hex, 'hex'))) === undefined) missing++;
      }
      t.is(missing, 0, `after a ${runMs} ms run`);
      t.true(store.stats().blocks >= acked.size);
      t.deepEqual(await store.quarantined(), []);
    } finally {
      await store.close();
    }
  }
  // The segments alone must tell the same story: rebuild the index from scratch and compare.
  const reopened = await BlockStore.open({ dir });
  const blocks = reopened.stats().blocks;
  await reopened.close();
  await rm(join(dir, 'index'), { recursive: true, force: true });
  const rebuilt = await BlockStore.open({ dir });
  try {
    t.is(rebuilt.stats().blocks, blocks);
    for (const hex of acked) t.truthy(await rebuilt.get(Buffer.from(hex, 'hex')));
  } finally {
    await rebuilt.close();
  }
  t.log(`${everAcked} puts acknowledged, ${deleted} deletes announced`);
  t.true(everAcked > 10, `only ${everAcked} puts acknowledged`);
});
