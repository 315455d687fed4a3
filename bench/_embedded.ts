// Shared by the data-path benchmarks (ingest, download, delta): an embedded `cairn server` child
// process on loopback (RF 1), a client for it, and a random test file.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CairnClient } from '../src/client/index.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

export interface Embedded {
  readonly client: CairnClient;
  readonly endpoint: string;
  readonly token: string;
  stop(): Promise<void>;
}

export async function startEmbedded(dataDir: string): Promise<Embedded> {
  const proc: ChildProcess = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli/run.ts'), 'server', '--embedded', '--data-dir', dataDir, '--grpc-port', '0', '--http-port', '0', '--log-level', 'warn'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const ready = out.split('\n').find((l) => l.includes('ready'));
      if (ready !== undefined) resolve(ready);
    });
    proc.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  const endpoint = /grpc=(\S+)/.exec(line)?.[1];
  if (endpoint === undefined) throw new Error(`unexpected ready line ${line}`);
  const { token } = JSON.parse(await readFile(join(dataDir, 'client.json'), 'utf8')) as { token: string };
  const client = new CairnClient({ endpoint, token });
  return {
    client,
    endpoint,
    token,
    async stop() {
      client.close();
      const exited = new Promise((resolve) => proc.once('exit', resolve));
      proc.kill('SIGTERM');
      await exited;
    },
  };
}

/** Writes `bytes` of random data to `path` in 64 MiB pieces. */
export async function randomFile(path: string, bytes: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    for (let left = bytes; left > 0; ) {
      const n = Math.min(left, 64 * 1024 * 1024);
      await fh.write(randomBytes(n));
      left -= n;
    }
  } finally {
    await fh.close();
  }
}

export function arg(args: readonly string[], name: string, fallback: string): string {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : fallback;
}
