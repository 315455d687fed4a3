// Crash durability of the LevelDB KV: a writer process is killed with SIGKILL mid-stream; every
// commit it acknowledged must survive, and no two-key commit may be visible half-applied.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { openLevelKv } from '../../src/metadata/kv/index.js';

const fixture = fileURLToPath(new URL('../fixtures/kv-writer.ts', import.meta.url));

test('level: acknowledged commits survive kill -9, and none is torn', async (t) => {
  t.timeout(60_000);
  const dir = await mkdtemp(join(tmpdir(), 'cairn-kv-crash-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));

  const child = spawn(process.execPath, ['--import', 'tsx', fixture, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<NodeJS.Signals | number | null>((resolve) => {
    child.once('exit', (code, signal) => resolve(signal ?? code));
  });
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const acknowledged = new Set<number>();
  let buffered = '';
  let ready!: () => void;
  const isReady = new Promise<void>((resolve) => {
    ready = resolve;
  });
  child.stdout.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) {
      if (line === 'ready') ready();
      else if (line !== '') acknowledged.add(Number(line));
    }
  });

  let timer: NodeJS.Timeout | undefined;
  const startup = await Promise.race([
    isReady.then(() => 'ready'),
    exited.then((how) => `exited early (${String(how)}): ${stderr}`),
    new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve('no ready line within 30 s'), 30_000);
    }),
  ]);
  clearTimeout(timer);
  t.is(startup, 'ready');
  // Kill at a moment with commits in flight: after ~1 s, and once there is something to check
  // (a starved machine may need longer to acknowledge the first commits).
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const deadline = Date.now() + 20_000;
  while (acknowledged.size < 50 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  child.kill('SIGKILL');
  t.is(await exited, 'SIGKILL');
  t.true(acknowledged.size > 0, `the writer acknowledged nothing: ${stderr}`);

  const kv = await openLevelKv({ dir });
  t.teardown(() => kv.close());
  const halves = new Map<string, number>();
  for (const [key, value] of await kv.scan({ gte: Buffer.from('pair/'), lt: Buffer.from('pair0') })) {
    const [, id, half] = key.toString().split('/');
    t.is(value.toString(), id ?? '');
    t.true(half === 'a' || half === 'b');
    halves.set(id ?? '', (halves.get(id ?? '') ?? 0) + 1);
  }
  const torn = [...halves].filter(([, count]) => count !== 2).map(([id]) => id);
  t.deepEqual(torn, [], 'commits with only one of their two keys');
  const lost = [...acknowledged].filter((n) => !halves.has(String(n).padStart(8, '0')));
  t.deepEqual(lost, [], 'acknowledged commits missing after the crash');
  t.log(`${acknowledged.size} acknowledged, ${halves.size} present after kill -9`);
});
