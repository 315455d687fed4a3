// System tools some tests need (ffmpeg, promtool, rsync, restic): absent, the test skips with a
// loud reason — unless CAIRN_TEST_STRICT=1 (set by .ci/run), where absence fails the test.
import { spawnSync } from 'node:child_process';
import type { ExecutionContext } from 'ava';

export function hasTool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

/**
 * Returns true when `name` is on PATH. Otherwise fails the test under strict mode, or logs a
 * loud warning and marks the test passed-with-skip-reason (AVA cannot skip at run time).
 */
export function requireTool(t: ExecutionContext, name: string, why: string): boolean {
  if (hasTool(name)) return true;
  const reason = `${name} is not installed (${why}); install it (apt-get install ${name}) or run .ci/run`;
  if (process.env['CAIRN_TEST_STRICT'] === '1') {
    t.fail(`CAIRN_TEST_STRICT=1 and ${reason}`);
    return false;
  }
  t.log(`SKIPPED: ${reason}`);
  process.stderr.write(`\n!!! SKIPPED ${t.title}: ${reason}\n`);
  t.pass();
  return false;
}
