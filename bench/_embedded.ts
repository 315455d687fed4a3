// Shared by the data-path benchmarks (ingest, download, delta): an embedded `cairn server` child
// process on loopback (RF 1), a client for it, and a random test file.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CairnClient } from '../src/client/index.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

let built = false;

/**
 * The node arguments that run the `cairn` CLI the way users run it: the compiled `bin/cairn.js`,
 * built here first (incrementally, so it matches the sources). Through tsx's loader a server
 * keeps the loader's state in its heap, and every full garbage collection marks it: a 1 GiB read
 * cost the server's GC threads 1.2-1.4 s of CPU from the sources, 0.6-0.9 s from the build.
 * CAIRN_BENCH_TSX=1 runs the sources through tsx instead.
 */
export function cairnCommand(): string[] {
  if (process.env['CAIRN_BENCH_TSX']) return ['--import', 'tsx', join(ROOT, 'src/cli/run.ts')];
  if (!built) {
    execFileSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.build.json')], { cwd: ROOT, stdio: 'inherit' });
    built = true;
  }
  return [join(ROOT, 'bin/cairn.js')];
}

export interface Embedded {
  readonly client: CairnClient;
  readonly endpoint: string;
  readonly token: string;
  stop(): Promise<void>;
}

export async function startEmbedded(dataDir: string): Promise<Embedded> {
  // CAIRN_BENCH_PROF=<dir> writes a V8 CPU profile of the server there (as in the thumbnails
  // bench); CAIRN_BENCH_NODE_FLAGS adds node flags (--trace-gc, …) to the server.
  const prof = process.env['CAIRN_BENCH_PROF'];
  const flags = (process.env['CAIRN_BENCH_NODE_FLAGS'] ?? '').split(/\s+/).filter((f) => f !== '');
  const proc: ChildProcess = spawn(process.execPath, [...(prof ? ['--cpu-prof', `--cpu-prof-dir=${prof}`] : []), ...flags, ...cairnCommand(), 'server', '--embedded', '--data-dir', dataDir, '--grpc-port', '0', '--http-port', '0', '--log-level', 'warn'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    proc.stdout?.on('data', (d: Buffer) => {
      if (flags.length > 0) process.stderr.write(d); // what the flags print (--trace-gc writes to stdout)
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

/** Seconds to write `bytes` to a new file in 1 MiB writes and fdatasync it (`dd conv=fdatasync`). */
export async function durableWriteSeconds(path: string, bytes: number): Promise<number> {
  const block = randomBytes(1024 * 1024);
  const started = performance.now();
  const fh = await open(path, 'w');
  try {
    for (let left = bytes; left > 0; left -= block.length) await fh.write(block, 0, Math.min(left, block.length));
    await fh.datasync();
  } finally {
    await fh.close();
  }
  return (performance.now() - started) / 1000;
}

/**
 * One core's throughput (bytes/s) for the per-byte work every read of a block must do here: the
 * block node's SHA-256 of the sealed block and the gateway's AES-256-GCM decryption, on 64 KiB
 * pieces (the chunker's average size), measured in the benchmark's own run.
 */
export function cryptoRates(): { sha256: number; aesGcmDecrypt: number } {
  const piece = randomBytes(64 * 1024);
  const pieces = 2048; // 128 MiB
  const key = randomBytes(32);
  const iv = randomBytes(12);
  let started = performance.now();
  for (let i = 0; i < pieces; i++) createHash('sha256').update(piece).digest();
  const sha256 = (pieces * piece.length) / ((performance.now() - started) / 1000);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  const sealed = cipher.update(piece);
  cipher.final();
  const tag = cipher.getAuthTag();
  started = performance.now();
  for (let i = 0; i < pieces; i++) {
    const d = createDecipheriv('aes-256-gcm', key, iv);
    d.setAuthTag(tag);
    d.update(sealed);
    d.final();
  }
  const aesGcmDecrypt = (pieces * piece.length) / ((performance.now() - started) / 1000);
  return { sha256, aesGcmDecrypt };
}
