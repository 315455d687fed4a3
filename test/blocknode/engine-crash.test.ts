// Durability under kill -9: a child process acknowledges puts as they resolve and is killed
// mid-stream; on reopen every acknowledged block must read back and verify.
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

  const acked: string[] = [];
  for (const runMs of [1500, 700]) {
    acked.push(...(await runAndKill(dir, runMs)));
    const store = await BlockStore.open({ dir, segmentBytes: 2 * 1024 * 1024, inlineBytes: 2048 });
    try {
      let missing = 0;
      for (const hex of acked) {
        // get() verifies sha256(data) == address itself; a corrupt block would throw.
        if ((await store.get(Buffer.from(hex, 'hex'))) === undefined) missing++;
      }
      t.is(missing, 0, `after a ${runMs} ms run`);
      t.true(store.stats().blocks >= acked.length);
      t.deepEqual(await store.quarantined(), []);
    } finally {
      await store.close();
    }
  }
  t.true(acked.length > 10, `only ${acked.length} puts acknowledged`);
});
