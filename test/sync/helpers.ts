// Helpers for the sync tests: `cairn sync` as real child processes (live, or --once) against a
// real embedded server, their --json events, and snapshots of real directory trees.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, lstatSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, ROOT, type Scope, type ServerProcess } from '../helpers/cluster.js';

/** Sizes for the default run and, with CAIRN_TEST_FULL=1, the full sizes. */
export const FULL = process.env['CAIRN_TEST_FULL'] === '1';

export type Event = { type: string; path?: string; [k: string]: unknown };

export interface SyncProcess {
  readonly proc: ChildProcess;
  readonly events: Event[];
  readonly stderr: () => string;
  /** Resolves with the first event (from the start) matching `pred`. */
  waitEvent(pred: (e: Event) => boolean, timeoutMs?: number, what?: string): Promise<Event>;
  /** SIGINT, then the exit code. */
  stop(): Promise<number | null>;
  readonly exited: Promise<number | null>;
}

function globalArgs(server: Pick<ServerProcess, 'grpc' | 'token'>): string[] {
  return ['--endpoint', server.grpc, '--token', server.token, '--json'];
}

/** Starts a live `cairn sync` child; killed (SIGKILL) in teardown if still running. */
export function startSync(t: Scope, server: Pick<ServerProcess, 'grpc' | 'token'>, dir: string, remote: string, args: string[] = []): SyncProcess {
  const proc = spawn(process.execPath, ['--import', 'tsx', CLI, ...globalArgs(server), 'sync', dir, remote, '--rescan-interval-ms', '5000', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const events: Event[] = [];
  const waiters: Array<() => void> = [];
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    let nl;
    while ((nl = stdout.indexOf('\n')) >= 0) {
      const line = stdout.slice(0, nl);
      stdout = stdout.slice(nl + 1);
      if (line.trim() === '') continue;
      events.push(JSON.parse(line) as Event);
    }
    for (const w of [...waiters]) w();
  });
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  return {
    proc,
    events,
    stderr: () => stderr,
    exited,
    waitEvent(pred, timeoutMs = 60_000, what = 'event') {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const found = events.find(pred);
          if (found === undefined) return;
          done();
          resolve(found);
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`no ${what} within ${timeoutMs} ms; events: ${JSON.stringify(events.slice(-20))}\nstderr: ${stderr.slice(-2000)}`));
        }, timeoutMs);
        const onExit = (): void => {
          done();
          reject(new Error(`sync exited before ${what}; stderr: ${stderr.slice(-2000)}`));
        };
        const done = (): void => {
          clearTimeout(timer);
          const i = waiters.indexOf(check);
          if (i >= 0) waiters.splice(i, 1);
          proc.off('exit', onExit);
        };
        waiters.push(check);
        proc.once('exit', onExit);
        check();
      });
    },
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill('SIGINT');
      return exited;
    },
  };
}

/** Runs `cairn sync --once` to completion. */
export function syncOnce(server: Pick<ServerProcess, 'grpc' | 'token'>, dir: string, remote: string, args: string[] = []): Promise<{ code: number | null; events: Event[]; stderr: string }> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, ['--import', 'tsx', CLI, ...globalArgs(server), 'sync', dir, remote, '--once', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    proc.once('exit', (code) =>
      resolve({
        code,
        stderr,
        events: stdout
          .split('\n')
          .filter((l) => l.trim() !== '')
          .map((l) => JSON.parse(l) as Event),
      }),
    );
  });
}

/** The tree under `dir` (the state folder excluded): relative path → "dir" or the content's SHA-256. */
export function treeOf(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string): void => {
    for (const name of readdirSync(rel === '' ? dir : join(dir, rel))) {
      const r = rel === '' ? name : `${rel}/${name}`;
      if (r === '.cairn-sync') continue;
      const st = lstatSync(join(dir, r));
      if (st.isSymbolicLink()) out[r] = 'symlink';
      else if (st.isDirectory()) {
        out[r] = 'dir';
        walk(r);
      } else out[r] = createHash('sha256').update(readFileSync(join(dir, r))).digest('hex');
    }
  };
  try {
    walk('');
  } catch (err) {
    // A tree being changed under us (or not created yet): report it as a difference.
    out['(unreadable)'] = (err as Error).message;
  }
  return out;
}

/** Polls `fn` until it returns true; fails with `describe()` after `timeoutMs`. */
export async function eventually(fn: () => boolean, timeoutMs: number, describe: () => string): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > until) throw new Error(`not reached in ${timeoutMs} ms: ${describe()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Waits until the two trees are equal (symlinks, which are never synced, and `exclude`d paths left out). */
export async function converged(a: string, b: string, timeoutMs = 60_000, exclude: (path: string) => boolean = () => false): Promise<Record<string, string>> {
  const strip = (tree: Record<string, string>): Record<string, string> => Object.fromEntries(Object.entries(tree).filter(([k, v]) => v !== 'symlink' && !exclude(k)));
  let last: [Record<string, string>, Record<string, string>] = [{}, {}];
  await eventually(
    () => {
      last = [strip(treeOf(a)), strip(treeOf(b))];
      return JSON.stringify(sorted(last[0])) === JSON.stringify(sorted(last[1]));
    },
    timeoutMs,
    () => `trees differ:\n${JSON.stringify(sorted(last[0]), null, 1)}\n${JSON.stringify(sorted(last[1]), null, 1)}`,
  );
  return last[0];
}

function sorted(o: Record<string, string>): Array<[string, string]> {
  return Object.entries(o).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
}

export function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
