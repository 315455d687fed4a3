// Ingest: a 1 GiB random file uploaded with the SDK's delta path (client chunking and hashing,
// 16 parallel streams) to an embedded server (RF 1) versus `restic backup` of the same file into
// a fresh local repository, in the same run. ratio = restic seconds ÷ Cairn seconds (≥ 1.5).
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BenchMain } from './report.js';
import { arg, durableWriteSeconds, randomFile, startEmbedded } from './_embedded.js';

const MiB = 1024 * 1024;

function restic(args: string[], env: Record<string, string>): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('restic', args, { env: { ...process.env, ...env }, maxBuffer: 64 * MiB }, (err, _out, stderr) => (err ? reject(new Error(`restic ${args[0]} failed: ${stderr}`, { cause: err })) : resolve()));
  });
}

export const run: BenchMain = async (args) => {
  const mib = Number(arg(args, '--mib', '1024'));
  const root = await mkdtemp(join(tmpdir(), 'cairn-bench-ingest-'));
  try {
    const file = join(root, 'data.bin');
    await randomFile(file, mib * MiB);

    const repo = join(root, 'restic-repo');
    const env = { RESTIC_PASSWORD: 'bench', RESTIC_REPOSITORY: repo, RESTIC_CACHE_DIR: join(root, 'restic-cache') };
    await restic(['init', '--quiet'], env);
    let started = performance.now();
    await restic(['backup', '--quiet', file], env);
    const resticSeconds = (performance.now() - started) / 1000;

    // The floor under any durable ingest here: writing the bytes once and syncing them.
    const diskSeconds = await durableWriteSeconds(join(root, 'dd.bin'), mib * MiB);
    await rm(join(root, 'dd.bin'));

    const server = await startEmbedded(join(root, 'cairn'));
    try {
      started = performance.now();
      const res = await server.client.upload(file, '/bench/ingest.bin', { cacheDir: join(root, 'cache') });
      const cairnSeconds = (performance.now() - started) / 1000;
      if (res.info.size !== mib * MiB) throw new Error('size mismatch');
      started = performance.now();
      await server.client.put(file, '/bench/ingest-stream.bin');
      const streamSeconds = (performance.now() - started) / 1000;
      return {
        bench: 'ingest',
        ratio: resticSeconds / cairnSeconds,
        target: 1.5,
        better: 'higher',
        figures: {
          file_mib: mib,
          cairn_upload_seconds: cairnSeconds,
          cairn_upload_mb_per_s: (mib * MiB) / 1e6 / cairnSeconds,
          restic_backup_seconds: resticSeconds,
          restic_backup_mb_per_s: (mib * MiB) / 1e6 / resticSeconds,
          cairn_uploadfile_seconds: streamSeconds,
          disk_durable_write_seconds: diskSeconds,
          disk_durable_write_mb_per_s: (mib * MiB) / 1e6 / diskSeconds,
          // The best ratio any store could reach on this disk in this run (it must at least write the bytes durably once).
          ratio_ceiling_disk: resticSeconds / diskSeconds,
          chunks: res.chunks,
          chunks_sent: res.chunksSent,
        },
      };
    } finally {
      await server.stop();
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
};
