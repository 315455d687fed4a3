// Starts a real `cairn server` child process (via tsx, from source) on port 0 and reads its
// ready line; every process is killed in t.teardown so a failing test leaves nothing behind.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

/** What the helpers need of a test: a title for names and a place to register cleanup. */
export interface Scope {
  readonly title: string;
  teardown(fn: () => void | Promise<void>): void;
}

/** A Scope for suite-wide resources (test.before): cleaned up by `close()` in test.after.always. */
export function suiteScope(title: string): Scope & { close(): Promise<void> } {
  const fns: Array<() => void | Promise<void>> = [];
  return {
    title,
    teardown: (fn) => void fns.push(fn),
    async close() {
      for (const fn of fns.reverse()) await fn();
    },
  };
}

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = join(ROOT, 'src', 'cli', 'run.ts');

export interface ServerProcess {
  readonly proc: ChildProcess;
  readonly grpc: string;
  readonly http: string;
  readonly dataDir: string;
  readonly token: string;
  readonly stderr: () => string;
  /** Resolves with the exit code once the process has exited. */
  readonly exited: Promise<number | null>;
}

export function tempDir(t: Scope, prefix = 'cairn-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix + t.title.replace(/[^\w]+/g, '-').slice(0, 40) + '-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export async function startServer(t: Scope, args: string[] = [], options: { dataDir?: string; env?: Record<string, string>; role?: string } = {}): Promise<ServerProcess> {
  const dataDir = options.dataDir ?? tempDir(t);
  const role = options.role === undefined ? ['--embedded'] : ['--role', options.role];
  const proc = spawn(process.execPath, ['--import', 'tsx', CLI, 'server', ...role, '--data-dir', dataDir, '--grpc-port', '0', '--http-port', '0', '--log-level', 'warn', ...args], {
    cwd: ROOT,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  let stdout = '';
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server not ready in 60 s; stderr:\n${stderr}`)), 60_000);
    proc.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      const ready = stdout.split('\n').find((l) => l.includes('ready'));
      if (ready !== undefined) {
        clearTimeout(timer);
        resolve(ready);
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before ready; stderr:\n${stderr}`));
    });
  });
  const grpc = /grpc=(\S+)/.exec(line)?.[1];
  const http = /http=(\S+)/.exec(line)?.[1];
  if (grpc === undefined || http === undefined) throw new Error(`unexpected ready line: ${line}`);
  const token = options.role === undefined ? (JSON.parse(readFileSync(join(dataDir, 'client.json'), 'utf8')) as { token: string }).token : '';
  return { proc, grpc, http, dataDir, token, stderr: () => stderr, exited };
}

/** Runs the CLI to completion and returns its exit code and output. */
export function runCli(args: string[], env: Record<string, string | undefined> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    proc.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}
